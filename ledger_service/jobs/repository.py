"""SQL for batch jobs: lot expiry and tier review (set-based functions of migration 0002)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_EXPIRE = "SELECT * FROM ledger.expire_lots($1, $2, $3, $4, $5)"
_REVIEW = "SELECT * FROM ledger.review_tiers($1, $2, $3)"
_PROGRAM = "SELECT id FROM ledger.programs WHERE code = $1"

EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


async def program_id(conn: asyncpg.Connection, code: str) -> int | None:
    found: int | None = await conn.fetchval(_PROGRAM, code)
    return found


async def expire_batch(
    conn: asyncpg.Connection,
    as_of: datetime,
    limit: int,
    after_at: datetime,
    after_id: int,
    program: int | None = None,
) -> asyncpg.Record:
    row = await conn.fetchrow(_EXPIRE, as_of, limit, after_at, after_id, program)
    assert row is not None
    return row


async def review_batch(
    conn: asyncpg.Connection, after: int, limit: int, program: int | None = None
) -> asyncpg.Record:
    row = await conn.fetchrow(_REVIEW, after, limit, program)
    assert row is not None
    return row
