"""Segments: create (criteria checked and compiled), evaluate against member profiles (materialized,
with entered / left events), list and export."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ledger_service.segments import repository
from ledger_service.segments.criteria import CriteriaError, compile_criteria
from ledger_service.segments.schemas import (
    SegmentIn,
    SegmentMember,
    SegmentMemberPage,
    SegmentOut,
    SegmentPage,
    SegmentRefresh,
)
from services.db import Database
from services.errors import Conflict, NotFound, Unprocessable
from services.pagination import decode_cursor, page_of

EXPORT_PAGE = 10_000


@dataclass(frozen=True)
class Evaluated:
    segment_id: int
    member_count: int
    entered: int
    left: int
    refreshed_at: datetime


def _out(row: Any) -> SegmentOut:
    data = dict(row)
    data["criteria"] = orjson.loads(data["criteria"])
    return SegmentOut.model_validate(data)


def check_criteria(criteria: Any) -> None:
    try:
        compile_criteria(criteria, base=repository.EVALUATE_BASE)
    except CriteriaError as exc:
        raise Unprocessable(
            f"Invalid criteria: {exc}",
            code="invalid_criteria",
            extra={"errors": [{"field": exc.path, "message": str(exc)}]},
        ) from exc


async def evaluate(db: Database, segment_id: int, program_id: int, criteria: Any, now: datetime) -> Evaluated:
    """Re-materializes one segment on the profiles as they are, in one transaction; the segment row
    is locked first, so two processes evaluating it take turns."""
    compiled = compile_criteria(criteria, base=repository.EVALUATE_BASE)
    async with db.driver() as conn, conn.transaction():
        await repository.lock(conn, segment_id)
        row = await repository.evaluate(conn, compiled.sql, now, segment_id, program_id, compiled.params)
    return Evaluated(segment_id, row["member_count"], row["entered"], row["left_"], row["refreshed_at"])


async def evaluate_program(db: Database, program_id: int, now: datetime) -> list[Evaluated]:
    async with db.driver() as conn:
        rows = await repository.of_program(conn, program_id)
    return [await evaluate(db, r["id"], program_id, orjson.loads(r["criteria"]), now) for r in rows]


async def _segment(db: Database, program: str, code: str) -> Any:
    async with db.driver() as conn:
        row = await repository.get(conn, program, code)
    if row is None:
        raise NotFound(f"No segment {code} in program {program}.", code="segment_not_found")
    return row


async def create(db: Database, program: str, body: SegmentIn) -> SegmentOut:
    check_criteria(body.criteria)
    async with db.driver() as conn:
        program_id = await conn.fetchval("SELECT id FROM ledger.programs WHERE code = $1", program)
        if program_id is None:
            raise NotFound(f"No program with code {program}.", code="program_not_found")
        row = await repository.create(
            conn, program_id, body.code, body.name, orjson.dumps(body.criteria).decode()
        )
    if row is None:
        raise Conflict(f"Program {program} has a segment {body.code} already.", code="segment_exists")
    await evaluate(db, row["id"], program_id, body.criteria, datetime.now(UTC))
    return _out(await _segment(db, program, body.code))


async def get(db: Database, program: str, code: str) -> SegmentOut:
    return _out(await _segment(db, program, code))


async def list_segments(db: Database, program: str, limit: int, cursor: str | None) -> SegmentPage:
    after = decode_cursor(cursor) or 0
    async with db.driver() as conn:
        rows = await repository.list_page(conn, program, after, limit + 1)
    page, next_cursor = page_of(rows, limit, "id")
    return SegmentPage(data=[_out(r) for r in page], next_cursor=next_cursor)


async def refresh(db: Database, program: str, code: str) -> SegmentRefresh:
    """The program's profiles recomputed now, then this segment evaluated on them."""
    from ledger_service.profiles.service import refresh_program  # profiles refresh segments too

    row = await _segment(db, program, code)
    async with db.driver() as conn:
        program_id = await conn.fetchval("SELECT id FROM ledger.programs WHERE code = $1", program)
    now = datetime.now(UTC)
    await refresh_program(db, program_id, now)
    result = await evaluate(db, row["id"], program_id, orjson.loads(row["criteria"]), now)
    return SegmentRefresh(
        program=program,
        segment=code,
        member_count=result.member_count,
        entered=result.entered,
        left=result.left,
        refreshed_at=result.refreshed_at,
    )


async def members(db: Database, program: str, code: str, limit: int, cursor: str | None) -> SegmentMemberPage:
    row = await _segment(db, program, code)
    after = decode_cursor(cursor) or 0
    async with db.driver() as conn:
        rows = await repository.members(conn, row["id"], after, limit + 1)
    page, next_cursor = page_of(rows, limit, "account_id")
    return SegmentMemberPage(
        data=[SegmentMember(member_ref=r["member_ref"], entered_at=r["entered_at"]) for r in page],
        next_cursor=next_cursor,
    )


async def members_csv(db: Database, program: str, code: str) -> AsyncIterator[bytes]:
    """Every member of the segment as CSV (member_ref, entered_at), read page by page."""
    row = await _segment(db, program, code)

    async def lines() -> AsyncIterator[bytes]:
        yield b"member_ref,entered_at\r\n"
        after = 0
        while True:
            async with db.driver() as conn:
                rows = await repository.members(conn, row["id"], after, EXPORT_PAGE)
            if not rows:
                return
            out = io.StringIO()
            writer = csv.writer(out)
            for r in rows:
                writer.writerow([r["member_ref"], r["entered_at"].isoformat().replace("+00:00", "Z")])
            yield out.getvalue().encode()
            after = rows[-1]["account_id"]

    return lines()


async def member_segments(db: Database, program: str, member_ref: str) -> list[str]:
    async with db.driver() as conn:
        return await repository.member_segments(conn, program, member_ref)
