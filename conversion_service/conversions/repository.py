"""SQL for conversions, their history and the per-member daily usage."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg

_COLUMNS = """id, seq, status, quote_id, from_program, to_program, member_ref, from_points, fee_points,
    to_points, rate_source, rate_version, rate_from_points, rate_to_points, fee_bps, limit_day, debit_txn_id,
    credit_txn_id, compensation_txn_id, error_status, error_code, error_detail, attempts, next_attempt_at,
    lease_until, api_key_id, idempotency_key, created_at, updated_at, finished_at"""

# The conversion (leased to the request creating it) and its first history events, in one statement. It
# is stored `debiting` at once: `created` would only announce the debit, and the debit's ledger key is the
# same whenever it is sent, so recovery of a `debiting` conversion does what recovery of a `created` one
# did, one transaction sooner. The history still reads `created`, `debiting`.
_INSERT = f"""
WITH c AS (
    INSERT INTO conversion.conversions (id, status, quote_id, from_program, to_program, member_ref,
        from_points, fee_points, to_points, rate_source, rate_version, rate_from_points, rate_to_points,
        fee_bps, limit_day, api_key_id, idempotency_key, lease_until)
    VALUES ($1, 'debiting', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
            now() + make_interval(secs => $17))
    RETURNING {_COLUMNS}
), e AS (
    INSERT INTO conversion.conversion_events (conversion_id, event, status)
    SELECT c.id, x.status, x.status FROM c, (VALUES (1, 'created'), (2, 'debiting')) AS x (n, status)
    ORDER BY x.n
)
SELECT * FROM c
"""
# A conversion with its history (as JSON), in one round trip.
_GET = f"""
SELECT {_COLUMNS}, (
    SELECT coalesce(json_agg(
        json_build_object('event', e.event, 'status', e.status, 'at', e.at, 'detail', e.detail) ORDER BY e.id
    ), '[]')
    FROM conversion.conversion_events e WHERE e.conversion_id = c.id
)::text AS history
FROM conversion.conversions c WHERE c.id = $1
"""
_QUOTE_USED = "SELECT EXISTS (SELECT 1 FROM conversion.conversions WHERE quote_id = $1)"
_LIST = f"""
SELECT {_COLUMNS} FROM conversion.conversions
WHERE seq < $1 AND ($2::text IS NULL OR member_ref = $2) AND ($3::text IS NULL OR status = $3)
    AND ($4::text[] IS NULL OR (from_program = ANY ($4) AND to_program = ANY ($4)))
ORDER BY seq DESC LIMIT $5
"""
# Race-free daily limit: the conditional upsert holds the usage row's lock, so of two concurrent
# conversions only those that still fit under the limit get a row back.
_CONSUME = """
INSERT INTO conversion.daily_usage AS u (from_program, to_program, member_ref, day, from_points)
VALUES ($1, $2, $3, (now() AT TIME ZONE 'UTC')::date, $4)
ON CONFLICT (from_program, to_program, member_ref, day) DO UPDATE
    SET from_points = u.from_points + EXCLUDED.from_points
    WHERE u.from_points + EXCLUDED.from_points <= $5
RETURNING day
"""
_USED = """
SELECT coalesce(from_points, 0) FROM conversion.daily_usage
WHERE from_program = $1 AND to_program = $2 AND member_ref = $3 AND day = (now() AT TIME ZONE 'UTC')::date
"""
_RELEASE = """
UPDATE conversion.daily_usage SET from_points = from_points - $5
WHERE from_program = $1 AND to_program = $2 AND member_ref = $3 AND day = $4
"""


# The values of _INSERT's $1-$16, in order ($17 is the lease).
_INSERTED = (
    "id", "quote_id", "from_program", "to_program", "member_ref", "from_points", "fee_points", "to_points",
    "rate_source", "rate_version", "rate_from_points", "rate_to_points", "fee_bps", "limit_day", "api_key_id",
    "idempotency_key",
)  # fmt: skip


async def insert(conn: asyncpg.Connection, values: Mapping[str, Any], *, lease_s: float) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(_INSERT, *(values[k] for k in _INSERTED), lease_s)
    return row


async def get(conn: asyncpg.Connection, conversion_id: UUID) -> asyncpg.Record | None:
    """The conversion row, with `history` (its events, oldest first) as JSON text."""
    row: asyncpg.Record | None = await conn.fetchrow(_GET, conversion_id)
    return row


async def quote_used(conn: asyncpg.Connection, quote_id: UUID) -> bool:
    return bool(await conn.fetchval(_QUOTE_USED, quote_id))


async def list_conversions(
    conn: asyncpg.Connection,
    *,
    before: int,
    member_ref: str | None,
    status: str | None,
    programs: list[str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(_LIST, before, member_ref, status, programs, limit)
    return rows


async def consume_daily(
    conn: asyncpg.Connection, from_program: str, to_program: str, member_ref: str, points: int, limit: int
) -> date | None:
    """Adds `points` to today's usage if it stays within `limit` (points <= limit); the day, or None."""
    day: date | None = await conn.fetchval(_CONSUME, from_program, to_program, member_ref, points, limit)
    return day


async def used_today(conn: asyncpg.Connection, from_program: str, to_program: str, member_ref: str) -> int:
    used: int | None = await conn.fetchval(_USED, from_program, to_program, member_ref)
    return used or 0


async def release_daily(
    conn: asyncpg.Connection, from_program: str, to_program: str, member_ref: str, day: date, points: int
) -> None:
    await conn.execute(_RELEASE, from_program, to_program, member_ref, day, points)
