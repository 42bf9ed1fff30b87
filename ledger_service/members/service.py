"""The ledger's read side: member view, statement, transaction, hold."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol
from uuid import UUID

import asyncpg
import orjson

from ledger_service.members import repository
from ledger_service.members.schemas import (
    Expiring,
    MemberOut,
    NextTier,
    PostingOut,
    Release,
    Statement,
    StatementEntry,
    TierChange,
    TierHistory,
    TransactionDetail,
)
from ledger_service.postings.schemas import BalanceAfter, HoldOut
from services.auth import Principal
from services.db import Database
from services.errors import NotFound
from services.pagination import decode_cursor, encode_cursor

NO_CURSOR = 2**63 - 1


class MemberRows(Protocol):
    def __call__(
        self, conn: asyncpg.Connection, program_id: int, member_ref: str, *, before: int, limit: int
    ) -> Awaitable[list[asyncpg.Record]]: ...


def _program_missing(code: str) -> NotFound:
    return NotFound(f"No program with code {code}.", code="program_not_found")


def next_tier(tiers: list[dict[str, object]], qualifying: int) -> NextTier | None:
    for tier in tiers:  # by increasing min_points
        min_points = int(str(tier["min_points"]))
        if min_points > qualifying:
            return NextTier(
                code=str(tier["code"]), min_points=min_points, points_needed=min_points - qualifying
            )
    return None


async def member_view(db: Database, program: str, member_ref: str) -> MemberOut:
    async with db.driver() as conn:
        row = await repository.member(conn, program, member_ref)
    if row is None:
        raise _program_missing(program)
    balance, held, pending = row["balance"] or 0, row["held"] or 0, row["pending"] or 0
    qualifying = int(row["qualifying_points"])
    return MemberOut(
        program=program,
        member_ref=member_ref,
        balance=balance,
        held=held,
        pending=pending,
        available=balance - held - pending,
        releases=[Release.model_validate(e) for e in orjson.loads(row["releases"])],
        tier=row["tier"],
        tier_since=row["tier_since"],
        qualifying_points=qualifying,
        next_tier=next_tier(orjson.loads(row["tiers"]), qualifying),
        lifetime_earned=row["lifetime_earned"] or 0,
        expiring=[Expiring.model_validate(e) for e in orjson.loads(row["expiring"])],
    )


async def _member_rows(
    db: Database, program: str, member_ref: str, fetch: MemberRows, *, limit: int, cursor: str | None
) -> tuple[list[asyncpg.Record], bool]:
    """One page of a member's rows (newest first, keyset cursor) and whether more follow."""
    before = decode_cursor(cursor) or NO_CURSOR
    async with db.driver() as conn:
        program_id = await repository.program_id(conn, program)
        if program_id is None:
            raise _program_missing(program)
        rows = await fetch(conn, program_id, member_ref, before=before, limit=limit + 1)
    return rows[:limit], len(rows) > limit


async def tier_history(
    db: Database, program: str, member_ref: str, *, limit: int, cursor: str | None
) -> TierHistory:
    fetch = repository.tier_history
    page, more = await _member_rows(db, program, member_ref, fetch, limit=limit, cursor=cursor)
    return TierHistory(
        data=[TierChange.model_validate(dict(r)) for r in page],
        next_cursor=encode_cursor(page[-1]["id"]) if more else None,
    )


async def statement(
    db: Database, program: str, member_ref: str, *, limit: int, cursor: str | None
) -> Statement:
    page, more = await _member_rows(db, program, member_ref, repository.statement, limit=limit, cursor=cursor)
    return Statement(
        data=[StatementEntry.model_validate(dict(r)) for r in page],
        next_cursor=encode_cursor(page[-1]["posting_id"]) if more else None,
    )


async def transaction(db: Database, principal: Principal, txn_id: UUID) -> TransactionDetail:
    async with db.driver() as conn:
        row, postings = await repository.transaction(conn, txn_id)
    if row is None:
        raise NotFound(f"No transaction with id {txn_id}.", code="transaction_not_found")
    principal.require_program(row["program"])
    data = dict(row)
    metadata = data.pop("metadata")
    return TransactionDetail.model_validate(
        {
            **data,
            "to_member_ref": data["counterparty_ref"],
            "metadata": orjson.loads(metadata) if isinstance(metadata, str) else metadata,
            "postings": [PostingOut.model_validate(dict(p)) for p in postings],
        }
    )


async def hold(db: Database, principal: Principal, hold_id: UUID) -> HoldOut:
    async with db.driver() as conn:
        row = await repository.hold(conn, hold_id)
    if row is None:
        raise NotFound(f"No hold with id {hold_id}.", code="hold_not_found")
    principal.require_program(row["program"])
    data = dict(row)
    return HoldOut.model_validate(
        {
            **data,
            "capture_transaction_id": data["capture_txn_id"],
            "balance_after": BalanceAfter(
                balance=data["balance"],
                held=data["account_held"],
                available=data["balance"] - data["account_held"],
            ),
        }
    )
