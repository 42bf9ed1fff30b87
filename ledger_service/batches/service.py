"""Card-issuer batches: streamed upload into staging (parsed, tokenized, priced), then set-based
posting in chunks by a background processor that survives restarts."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from ledger_service.batches import repository
from ledger_service.batches.parsing import CardTokenizer, FileParser, HeaderError, LineSplitter, Row
from ledger_service.batches.schemas import REJECTION_REASONS, BatchList, BatchOut, Rejection, RejectionPage
from ledger_service.metrics import LEDGER_OPERATIONS
from ledger_service.postings.schemas import Purchase
from ledger_service.rules import engine
from ledger_service.rules import repository as rules_repository
from ledger_service.rules.service import ProgramRules, RuleBook
from services.auth import Principal
from services.db import Database
from services.errors import BadRequest, DomainError, Forbidden, NotFound, Unprocessable
from services.idempotency import IdempotencyInUse, IdempotencyReused
from services.pagination import decode_cursor, page_of

log = logging.getLogger("jifen.ledger.batches")

STAGE_ROWS = 20_000
FORMATS = {"text/csv": "csv", "application/csv": "csv", "application/x-ndjson": "ndjson",
           "application/ndjson": "ndjson", "application/jsonl": "ndjson"}  # fmt: skip


def format_of(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    fmt = FORMATS.get(media)
    if fmt is None:
        raise DomainError(
            "Upload a file as text/csv (with a header line) or application/x-ndjson.",
            code="unsupported_media_type",
            status=415,
        )
    return fmt


def to_out(row: Any, by_reason: dict[str, int] | None = None) -> BatchOut:
    data = dict(row)
    data["rejected_by_reason"] = by_reason or {}
    rows = data["rows"] or 0
    data["progress"] = 1.0 if data["status"] == "completed" else (data["processed"] / rows if rows else 0.0)
    return BatchOut.model_validate(data)


class Pricer:
    """Gives each earn row its points: as given, or priced by the program's rules in force at
    occurred_at (tiers looked up once per chunk); marks rows it cannot post."""

    def __init__(self, db: Database, rules: RuleBook) -> None:
        self.db = db
        self.rules = rules
        self._programs: dict[str, ProgramRules | None] = {}

    async def _program(self, code: str) -> ProgramRules | None:
        if code not in self._programs:
            try:
                self._programs[code] = await self.rules.program_rules(code)
            except NotFound:
                self._programs[code] = None
        return self._programs[code]

    async def price(self, rows: list[Row]) -> None:
        tier_needed: dict[str, set[str]] = {}
        for row in rows:
            if row.reject is not None or row.program is None:
                continue
            program = await self._program(row.program)
            if program is None:
                row.reject = "unknown_program"
            elif row.currency is not None and row.currency != program.currency:
                row.reject = "currency_mismatch"
            elif row.type == "earn" and row.points is None:
                version = program.at(row.occurred_at or datetime.now(UTC))
                if version is None:
                    row.reject = "no_earning_rules"
                elif engine.needs_member(version.rules):
                    tier_needed.setdefault(row.program, set()).add(row.member_ref or "")
        facts: dict[tuple[str, str], engine.Member] = {}
        if tier_needed:
            async with self.db.driver() as conn:
                for code, members in tier_needed.items():
                    for ref, member in (await rules_repository.members(conn, code, sorted(members))).items():
                        facts[(code, ref)] = member
        for row in rows:
            if row.reject is not None or row.type != "earn" or row.points is not None:
                continue
            assert row.program is not None and row.amount_minor is not None and row.currency is not None
            program = self._programs[row.program]
            assert program is not None
            at = row.occurred_at or datetime.now(UTC)
            version = program.at(at)
            assert version is not None
            purchase = Purchase.model_construct(
                amount_minor=row.amount_minor, currency=row.currency, merchant_id=row.merchant_id,
                mcc=row.mcc, channel=row.channel,  # type: ignore[arg-type]  # validated by the parser
            )  # fmt: skip
            member = facts.get((row.program, row.member_ref or ""), engine.BASIC)
            priced = engine.price(version.rules, version.version, purchase, member, at)
            row.points = priced.points
            row.rule_set_id = version.id
            row.pending_days = priced.breakdown.get("pending_days")


async def upload(
    db: Database,
    rules: RuleBook,
    pii_key: bytes,
    principal: Principal,
    key: str,
    content_type: str | None,
    body: AsyncIterator[bytes],
) -> tuple[int, BatchOut, bool]:
    """Streams the file into staging and answers (202, batch, replayed). Same key and same bytes
    replay the first answer; the same key with other bytes is refused."""
    fmt = format_of(content_type)
    digest = hashlib.sha256(b"batch\n" + fmt.encode() + b"\n")
    async with db.driver() as conn:
        if not await repository.lock_key(conn, principal.key_id, key):
            raise IdempotencyInUse()
        try:
            previous = await repository.idempotency_get(conn, principal.key_id, key)
            if previous is not None:
                async for chunk in body:
                    digest.update(chunk)
                if bytes(previous["request_hash"]) != digest.digest():
                    raise IdempotencyReused()
                return previous["status"], BatchOut.model_validate_json(previous["body"]), True
            batch_id = uuid.uuid4()
            await repository.create(conn, batch_id, principal.key_id, fmt)
            try:
                rows, last_line = await _stage(
                    conn, db, rules, pii_key, principal, batch_id, fmt, body, digest
                )
            except BaseException as exc:
                reason = str(exc) if isinstance(exc, HeaderError) else "upload interrupted"
                await repository.fail_upload(conn, batch_id, reason)
                if isinstance(exc, HeaderError):
                    raise BadRequest(str(exc), code="invalid_batch_header") from None
                raise
            async with conn.transaction():
                row = await repository.mark_received(conn, batch_id, rows, last_line, digest.hexdigest())
                out = to_out(row)
                await repository.idempotency_put(
                    conn, principal.key_id, key, digest.digest(), 202, out.model_dump_json()
                )
            LEDGER_OPERATIONS.labels("batch_upload", "received").inc()
            return 202, out, False
        finally:
            await repository.unlock_key(conn, principal.key_id, key)


async def _stage(
    conn: Any,
    db: Database,
    rules: RuleBook,
    pii_key: bytes,
    principal: Principal,
    batch_id: UUID,
    fmt: str,
    body: AsyncIterator[bytes],
    digest: Any,
) -> tuple[int, int]:
    """Stages every line; returns (data rows, the file's last line number)."""
    parser = FileParser(fmt, CardTokenizer(pii_key))
    splitter = LineSplitter()
    pricer = Pricer(db, rules)
    pending: list[Row] = []

    async def flush() -> None:
        allowed = principal.programs
        for row in pending:
            if allowed is not None and row.reject is None and row.program not in allowed:
                row.reject = "program_forbidden"
            if principal.partner is not None and row.reject is None:  # a partner-bound key's rows
                if row.partner is None:
                    row.partner = principal.partner
                elif row.partner != principal.partner:
                    row.reject = "partner_forbidden"
        await pricer.price(pending)
        async with conn.transaction():  # staged lines become visible to the processor with their count
            await repository.stage(conn, [r.record(batch_id) for r in pending])
            await repository.staged(conn, batch_id, parser.line)  # every line up to it is staged
        pending.clear()

    async for chunk in body:
        digest.update(chunk)
        pending.extend(parser.rows(splitter.feed(chunk)))
        if len(pending) >= STAGE_ROWS:
            await flush()
    pending.extend(parser.rows(splitter.close()))
    if fmt == "csv" and parser.header is None:
        raise HeaderError("The file is empty: a CSV upload starts with a header line.")
    await flush()
    return parser.data_rows, parser.line


async def get_batch(db: Database, principal: Principal, batch_id: UUID) -> BatchOut:
    async with db.driver() as conn:
        row = await repository.get(conn, batch_id)
        _visible(row, principal, batch_id)
        by_reason = await repository.rejected_by_reason(conn, [batch_id])
    return to_out(row, by_reason.get(batch_id))


async def list_batches(
    db: Database, principal: Principal, *, status: str | None, limit: int, cursor: str | None
) -> BatchList:
    """Newest first. A key sees the batches it uploaded; an admin key sees all."""
    before = decode_cursor(cursor) or 2**63 - 1
    own = None if principal.has("ledger:admin") else principal.key_id
    async with db.driver() as conn:
        rows = await repository.list_batches(
            conn, before=before, api_key_id=own, status=status, limit=limit + 1
        )
        page, next_cursor = page_of(rows, limit, "seq")
        by_reason = await repository.rejected_by_reason(conn, [r["id"] for r in page])
    return BatchList(
        data=[to_out(r, by_reason.get(r["id"])) for r in page],
        next_cursor=next_cursor,
    )


def _visible(row: Any, principal: Principal, batch_id: UUID) -> None:
    if row is None:
        raise NotFound(f"No batch with id {batch_id}.", code="batch_not_found")
    if row["api_key_id"] != principal.key_id and not principal.has("ledger:admin"):
        raise Forbidden(
            "Only the API key that uploaded a batch (or an admin) may read it.", code="batch_forbidden"
        )


async def get_rejections(
    db: Database,
    principal: Principal,
    batch_id: UUID,
    *,
    limit: int,
    cursor: str | None,
    reason: str | None = None,
) -> RejectionPage:
    if reason is not None and reason not in REJECTION_REASONS:
        raise Unprocessable(
            f"reason: {reason!r} is not a rejection reason; one of: {', '.join(REJECTION_REASONS)}.",
            code="validation_error",
            extra={"errors": [{"field": "reason", "message": "not a rejection reason"}]},
        )
    after = decode_cursor(cursor) or 0
    async with db.driver() as conn:
        row = await repository.get(conn, batch_id)
        _visible(row, principal, batch_id)
        rows = await repository.rejections(conn, batch_id, after, limit + 1, reason)
    page, next_cursor = page_of(rows, limit, "line")
    return RejectionPage(
        data=[Rejection.model_validate(dict(r)) for r in page],
        next_cursor=next_cursor,
    )


def replay_body(out: BatchOut) -> bytes:
    return orjson.dumps(out.model_dump(mode="json"))
