"""SQL for quotes."""

from __future__ import annotations

from uuid import UUID

import asyncpg

_COLUMNS = """id, from_program, to_program, member_ref, from_points, fee_points, to_points, rate_source,
    rate_version, rate_from_points, rate_to_points, fee_bps, min_from_points, daily_limit_from_points,
    api_key_id, expires_at, created_at"""

_INSERT = f"""
INSERT INTO conversion.quotes (id, from_program, to_program, member_ref, from_points, fee_points, to_points,
    rate_source, rate_version, rate_from_points, rate_to_points, fee_bps, min_from_points,
    daily_limit_from_points, api_key_id, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, now() + make_interval(secs => $16))
RETURNING {_COLUMNS}
"""
_GET = f"SELECT {_COLUMNS} FROM conversion.quotes WHERE id = $1"
# The quote's row lock serializes conversions that use it; `expired` is judged by the database's clock.
_LOCK = f"SELECT {_COLUMNS}, expires_at <= now() AS expired FROM conversion.quotes WHERE id = $1 FOR UPDATE"
_PURGE = """
DELETE FROM conversion.quotes WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM conversion.quotes WHERE expires_at < now() - make_interval(days => $1) LIMIT $2))
"""


# The values of _INSERT's $1-$15, in order ($16 is the time to live).
_INSERTED = (
    "id", "from_program", "to_program", "member_ref", "from_points", "fee_points", "to_points", "rate_source",
    "rate_version", "rate_from_points", "rate_to_points", "fee_bps", "min_from_points",
    "daily_limit_from_points", "api_key_id",
)  # fmt: skip


async def insert(conn: asyncpg.Connection, values: dict[str, object], ttl_s: int) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(_INSERT, *(values[k] for k in _INSERTED), ttl_s)
    return row


async def get(conn: asyncpg.Connection, quote_id: UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(_GET, quote_id)
    return row


async def lock(conn: asyncpg.Connection, quote_id: UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(_LOCK, quote_id)
    return row


async def purge_expired(conn: asyncpg.Connection, older_than_days: int, batch: int) -> int:
    status: str = await conn.execute(_PURGE, older_than_days, batch)
    return int(status.rsplit(maxsplit=1)[-1])
