"""Partners, terms and fundings, settlement and positions (DESIGN §8).

The postings at a partner, the prepaid and credit checks and the closing of periods are the ledger's
SQL (sql/partners.sql); this module checks requests, calls it and shapes the answers."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from ledger_service.deps import check_not_future
from ledger_service.partners import repository
from ledger_service.partners.schemas import (
    CSV_COLUMNS,
    FundingIn,
    PartnerIn,
    PartnerList,
    PartnerOut,
    PartnerPatch,
    PartnerStanding,
    Position,
    Price,
    ProgramPosition,
    ProgramStanding,
    Settlement,
    SettlementList,
    StandingList,
    StatementLine,
    StatementList,
    TermsIn,
    TermsList,
    TermsOut,
)
from ledger_service.postings.engine import Outcome, PostingEngine
from services.auth import Principal
from services.db import Database
from services.errors import Conflict, NotFound, Unprocessable
from services.pagination import decode_cursor, encode_cursor, page_of


def _partner_missing(code: str) -> NotFound:
    return NotFound(f"No partner with code {code}.", code="partner_not_found")


def _partner_out(row: asyncpg.Record) -> PartnerOut:
    return PartnerOut.model_validate(dict(row))


async def _partner_row(conn: asyncpg.Connection, code: str) -> asyncpg.Record:
    row = await repository.get_partner(conn, code)
    if row is None:
        raise _partner_missing(code)
    return row


async def create_partner(db: Database, body: PartnerIn) -> PartnerOut:
    async with db.driver() as conn:
        row = await repository.insert_partner(conn, body.code, body.name, list(body.roles), body.status)
    if row is None:
        raise Conflict(f"A partner with code {body.code} already exists.", code="partner_exists")
    return _partner_out(row)


async def get_partner(db: Database, principal: Principal, code: str) -> PartnerOut:
    principal.require_partner(code)
    async with db.driver() as conn:
        return _partner_out(await _partner_row(conn, code))


async def list_partners(db: Database, principal: Principal, *, limit: int, cursor: str | None) -> PartnerList:
    after = decode_cursor(cursor) or 0
    async with db.driver() as conn:
        rows = await repository.list_partners(conn, after=after, limit=limit + 1, only=principal.partner)
    page, next_cursor = page_of(rows, limit, "id")
    return PartnerList(
        data=[_partner_out(r) for r in page],
        next_cursor=next_cursor,
    )


async def update_partner(db: Database, code: str, patch: PartnerPatch) -> PartnerOut:
    async with db.driver() as conn:
        row = await repository.update_partner(
            conn, code, patch.name, None if patch.roles is None else list(patch.roles), patch.status
        )
    if row is None:
        raise _partner_missing(code)
    return _partner_out(row)


def _terms_out(row: asyncpg.Record) -> TermsOut:
    return TermsOut(
        partner=row["partner"],
        program=row["program"],
        version=row["version"],
        issue_price=Price(points=row["issue_points"], cash_minor=row["issue_cash_minor"]),
        accept_price=Price(points=row["accept_points"], cash_minor=row["accept_cash_minor"]),
        currency=row["currency"],
        period=row["period"],
        funding=row["funding"],
        credit_limit_minor=row["credit_limit_minor"],
        effective_from=row["effective_from"],
        created_at=row["created_at"],
    )


async def put_terms(db: Database, principal: Principal, code: str, program: str, body: TermsIn) -> TermsOut:
    """A new version of the terms; never an edit. It may not start inside a closed period."""
    principal.require_program(program)
    async with db.driver() as conn, conn.transaction():
        partner = await _partner_row(conn, code)
        prog = await repository.program(conn, program)
        if prog is None:
            raise NotFound(f"No program with code {program}.", code="program_not_found")
        values = body.model_dump()
        values["effective_from"] = body.effective_from or datetime.now(UTC)
        closed = await repository.closed_until(conn, partner["id"], prog["id"])
        if closed is not None and values["effective_from"] < closed:
            raise Unprocessable(
                f"Periods up to {closed.isoformat()} are settled; new terms may start from then on.",
                code="terms_in_closed_period",
            )
        terms_id = await repository.insert_terms(conn, partner["id"], prog["id"], values)
        if terms_id is None:
            raise Conflict(
                "A version of these terms starts at that instant already; versions are never edited.",
                code="terms_version_exists",
            )
        rows = await repository.terms(conn, partner["id"], terms_id)
    return _terms_out(rows[0])


async def list_terms(db: Database, principal: Principal, code: str) -> TermsList:
    principal.require_partner(code)
    async with db.driver() as conn:
        partner = await _partner_row(conn, code)
        rows = await repository.terms(conn, partner["id"])
    visible = principal.programs
    return TermsList(data=[_terms_out(r) for r in rows if visible is None or r["program"] in visible])


async def fund(engine: PostingEngine, principal: Principal, code: str, body: FundingIn, key: str) -> Outcome:
    """A prepaid partner buys points: through the ledger's write path, so it is idempotent."""
    principal.require_partner(code)
    principal.require_program(body.program)
    return await engine.execute("fund", {"partner": code, **body.model_dump(mode="json")}, principal, key)


# --- settlement ------------------------------------------------------------------------------------


def _int(value: Decimal | int) -> int:
    return int(value)


# The line's counts and sums: SQL sums arrive as numeric (Decimal); the model's int fields name them.
_LINE_INTS = tuple(name for name, f in StatementLine.model_fields.items() if f.annotation is int)


def _line(row: asyncpg.Record | dict[str, Any]) -> StatementLine:
    data = dict(row)
    for name in _LINE_INTS:
        data[name] = _int(data[name])
    return StatementLine.model_validate(data)


async def settle(db: Database, as_of: datetime | None) -> Settlement:
    """Closes every partner period that ended by as_of. Each partner and program closes in its own
    database transaction under its own advisory lock, so two runs at once close each period once."""
    check_not_future(as_of, ": open periods would close")
    as_of = as_of or datetime.now(UTC)
    lines: list[StatementLine] = []
    async with db.driver() as conn:
        head = await repository.new_settlement(conn, as_of)
        for pair in await repository.partner_programs(conn):
            rows = await repository.settle_partner(
                conn, head["id"], pair["partner_id"], pair["program_id"], as_of
            )
            lines.extend(_line(r) for r in rows)
    return Settlement(id=head["id"], as_of=as_of, created_at=head["created_at"], lines=lines)


async def _with_lines(
    conn: asyncpg.Connection, heads: Sequence[asyncpg.Record], principal: Principal
) -> list[Settlement]:
    rows = await repository.settlement_lines(conn, [h["id"] for h in heads], principal.program_list())
    by_id: dict[UUID, list[StatementLine]] = {h["id"]: [] for h in heads}
    for r in rows:
        if principal.partner is None or r["partner"] == principal.partner:
            by_id[r["settlement_id"]].append(_line(r))
    return [
        Settlement(id=h["id"], as_of=h["as_of"], created_at=h["created_at"], lines=by_id[h["id"]])
        for h in heads
    ]


async def list_settlements(
    db: Database, principal: Principal, *, limit: int, cursor: str | None
) -> SettlementList:
    offset = decode_cursor(cursor) or 0
    async with db.driver() as conn:
        heads = await repository.settlements(conn, offset=offset, limit=limit + 1)
        data = await _with_lines(conn, heads[:limit], principal)
    return SettlementList(
        data=data, next_cursor=encode_cursor(offset + limit) if len(heads) > limit else None
    )


async def get_settlement(db: Database, principal: Principal, settlement_id: UUID) -> Settlement:
    async with db.driver() as conn:
        head = await repository.settlement(conn, settlement_id)
        if head is None:
            raise NotFound(f"No settlement with id {settlement_id}.", code="settlement_not_found")
        return (await _with_lines(conn, [head], principal))[0]


async def statements(
    db: Database, principal: Principal, code: str, *, limit: int, cursor: str | None
) -> StatementList:
    principal.require_partner(code)
    offset = decode_cursor(cursor) or 0
    async with db.driver() as conn:
        partner = await _partner_row(conn, code)
        rows = await repository.partner_lines(
            conn, partner["id"], offset=offset, limit=limit + 1, programs=principal.program_list()
        )
    return StatementList(
        data=[_line(r) for r in rows[:limit]],
        next_cursor=encode_cursor(offset + limit) if len(rows) > limit else None,
    )


def _credit_used(open_cash: Decimal) -> int:
    return math.floor(open_cash + Decimal("0.5"))  # half up, as statement lines round


async def standings(
    db: Database, principal: Principal, *, program: str | None, limit: int, cursor: str | None
) -> StandingList:
    """A page of partners (those at `program` when named), each with the terms in force now and its
    prepaid and credit counters per program: what a list of partners can show without computing open
    periods (that is `position`)."""
    after = decode_cursor(cursor) or 0
    programs = principal.program_list()
    if program is not None:
        principal.require_program(program)
        programs = [program]
    now = datetime.now(UTC)
    async with db.driver() as conn:
        rows = await repository.list_partners(
            conn, after=after, limit=limit + 1, only=principal.partner, program=program
        )
        page, next_cursor = page_of(rows, limit, "id")
        ids = [r["id"] for r in page]
        versions = await repository.terms_of(conn, ids, programs)
        counters = await repository.counters(conn, ids, programs)
    in_force: dict[tuple[int, str], asyncpg.Record] = {}
    for v in versions:  # oldest first per program: the last one started is in force
        if v["effective_from"] <= now:
            in_force[(v["partner_id"], v["program"])] = v
    by_partner: dict[int, list[ProgramStanding]] = {i: [] for i in ids}
    for c in counters:
        terms = in_force.get((c["partner_id"], c["program"]))
        prepaid = terms is not None and terms["funding"] == "prepaid"
        by_partner[c["partner_id"]].append(
            ProgramStanding(
                program=c["program"],
                terms=None if terms is None else _terms_out(terms),
                funded_points=c["funded_points"],
                issued_points=c["issued_points"],
                prepaid_points=c["funded_points"] - c["issued_points"] if prepaid else None,
                credit_limit_minor=None if terms is None else terms["credit_limit_minor"],
                credit_used_minor=_credit_used(c["open_cash"]),
            )
        )
    return StandingList(
        data=[PartnerStanding(partner=_partner_out(r), programs=by_partner[r["id"]]) for r in page],
        next_cursor=next_cursor,
    )


async def position(db: Database, principal: Principal, code: str) -> Position:
    principal.require_partner(code)
    async with db.driver() as conn:
        partner = await _partner_row(conn, code)
        rows = await repository.position(conn, partner["id"], principal.program_list())
    programs = []
    for r in rows:
        periods = [
            _line({"partner": code, "program": r["program"], "currency": r["currency"], **p})
            for p in orjson.loads(r["periods"])
        ]
        prepaid = r["funding"] == "prepaid"
        programs.append(
            ProgramPosition(
                program=r["program"],
                funding=r["funding"],
                currency=r["currency"],
                funded_points=r["funded_points"],
                issued_points=r["issued_points"],
                prepaid_points=r["funded_points"] - r["issued_points"] if prepaid else None,
                credit_limit_minor=r["credit_limit_minor"],
                credit_used_minor=_credit_used(r["open_cash"]),
                open_periods=periods,
            )
        )
    return Position(partner=code, status=partner["status"], programs=programs)


def lines_csv(lines: Sequence[StatementLine]) -> str:
    """The same lines as CSV, one row per line, in CSV_COLUMNS order (timestamps RFC 3339 UTC)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in lines:
        data = line.model_dump()
        writer.writerow(
            [
                data[c].astimezone(UTC).isoformat().replace("+00:00", "Z")
                if isinstance(data[c], datetime)
                else data[c]
                for c in CSV_COLUMNS
            ]
        )
    return out.getvalue()
