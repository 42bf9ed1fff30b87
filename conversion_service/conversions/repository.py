"""SQL for conversions, their history and the per-member daily usage."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
import orjson

_TERMINAL = "('completed', 'rejected', 'compensated', 'failed')"

_COLUMNS = """id, seq, state, quote_id, from_program, to_program, member_ref, from_points, fee_points,
    to_points, rate_source, rate_version, rate_from_points, rate_to_points, fee_bps, limit_day, debit_txn_id,
    credit_txn_id, compensation_txn_id, error_status, error_code, error_detail, attempts, next_attempt_at,
    lease_owner, lease_until, api_key_id, created_at, updated_at, finished_at"""

# The conversion and its first history event, in one statement.
_INSERT = f"""
WITH c AS (
    INSERT INTO conversion.conversions (id, state, quote_id, from_program, to_program, member_ref,
        from_points, fee_points, to_points, rate_source, rate_version, rate_from_points, rate_to_points,
        fee_bps, limit_day, api_key_id, lease_owner, lease_until)
    VALUES ($1, 'created', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
            now() + make_interval(secs => $17))
    RETURNING {_COLUMNS}
), e AS (
    INSERT INTO conversion.conversion_events (conversion_id, event, state) SELECT id, 'created', state FROM c
)
SELECT * FROM c
"""
# A conversion with its history (as JSON), in one round trip.
_GET = f"""
SELECT {_COLUMNS}, (
    SELECT coalesce(json_agg(
        json_build_object('event', e.event, 'state', e.state, 'at', e.at, 'detail', e.detail) ORDER BY e.id
    ), '[]')
    FROM conversion.conversion_events e WHERE e.conversion_id = c.id
)::text AS history
FROM conversion.conversions c WHERE c.id = $1
"""
_QUOTE_USED = "SELECT EXISTS (SELECT 1 FROM conversion.conversions WHERE quote_id = $1)"
_DRIVEN_BY_REQUEST = f"""
SELECT state NOT IN {_TERMINAL} AND lease_owner LIKE 'request:%' AND lease_until > now()
FROM conversion.conversions WHERE id = $1
"""
# The row lock taken before every step; `leased`: another driver's lease is still running.
_LOCK = f"""
SELECT {_COLUMNS}, (lease_until IS NOT NULL AND lease_until > now()) AS leased
FROM conversion.conversions WHERE id = $1 FOR UPDATE
"""
# One statement for every transition: the new state, this driver's lease (cleared in a final state),
# whichever ledger transaction or error the step produced, and the history event if there is one.
_ADVANCE = f"""
WITH c AS (
    UPDATE conversion.conversions SET
        state = $2,
        lease_owner = CASE WHEN $2 IN {_TERMINAL} THEN NULL ELSE $3 END,
        lease_until = CASE WHEN $2 IN {_TERMINAL} THEN NULL ELSE now() + make_interval(secs => $4) END,
        debit_txn_id = coalesce($5, debit_txn_id),
        credit_txn_id = coalesce($6, credit_txn_id),
        compensation_txn_id = coalesce($7, compensation_txn_id),
        error_status = coalesce($8, error_status),
        error_code = coalesce($9, error_code),
        error_detail = coalesce($10, error_detail),
        finished_at = CASE WHEN $2 IN {_TERMINAL} THEN now() END,
        updated_at = now()
    WHERE id = $1
    RETURNING {_COLUMNS}
), e AS (
    INSERT INTO conversion.conversion_events (conversion_id, event, state, detail)
    SELECT id, $11, state, $12::jsonb FROM c WHERE $11::text IS NOT NULL
)
SELECT * FROM c
"""
# The ledger could not be reached: give up the lease, retry after `delay`, and say so in the history.
_RETRY_LATER = """
WITH c AS (
    UPDATE conversion.conversions SET attempts = attempts + 1,
        next_attempt_at = now() + make_interval(secs => $2),
        lease_owner = NULL, lease_until = NULL, updated_at = now()
    WHERE id = $1
    RETURNING id, state
)
INSERT INTO conversion.conversion_events (conversion_id, event, state, detail)
SELECT id, 'retry_scheduled', state, $3::jsonb FROM c
"""
_DUE = f"""
SELECT id FROM conversion.conversions
WHERE state NOT IN {_TERMINAL} AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until <= now())
ORDER BY next_attempt_at LIMIT $1
"""
_LIST = f"""
SELECT {_COLUMNS} FROM conversion.conversions
WHERE seq < $1 AND ($2::text IS NULL OR member_ref = $2) AND ($3::text IS NULL OR state = $3)
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


def _json(detail: Mapping[str, Any] | None) -> str | None:
    return None if detail is None else orjson.dumps(detail).decode()


async def insert(
    conn: asyncpg.Connection, values: Mapping[str, Any], *, owner: str, lease_s: float
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        _INSERT,
        values["id"],
        values["quote_id"],
        values["from_program"],
        values["to_program"],
        values["member_ref"],
        values["from_points"],
        values["fee_points"],
        values["to_points"],
        values["rate_source"],
        values["rate_version"],
        values["rate_from_points"],
        values["rate_to_points"],
        values["fee_bps"],
        values["limit_day"],
        values["api_key_id"],
        owner,
        lease_s,
    )
    return row


async def get(conn: asyncpg.Connection, conversion_id: UUID) -> asyncpg.Record | None:
    """The conversion row, with `history` (its events, oldest first) as JSON text."""
    row: asyncpg.Record | None = await conn.fetchrow(_GET, conversion_id)
    return row


async def quote_used(conn: asyncpg.Connection, quote_id: UUID) -> bool:
    return bool(await conn.fetchval(_QUOTE_USED, quote_id))


async def driven_by_request(conn: asyncpg.Connection, conversion_id: UUID) -> bool:
    """Is the request that created the conversion still driving it (its lease running)?"""
    return bool(await conn.fetchval(_DRIVEN_BY_REQUEST, conversion_id))


async def lock(conn: asyncpg.Connection, conversion_id: UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(_LOCK, conversion_id)
    return row


async def advance(
    conn: asyncpg.Connection,
    conversion_id: UUID,
    state: str,
    *,
    owner: str,
    lease_s: float,
    debit_txn_id: UUID | None = None,
    credit_txn_id: UUID | None = None,
    compensation_txn_id: UUID | None = None,
    error: tuple[int, str, str] | None = None,
    event: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> asyncpg.Record:
    """Moves the conversion to `state` (under the row lock the caller holds), recording `event`."""
    status, code, message = error if error is not None else (None, None, None)
    row: asyncpg.Record = await conn.fetchrow(
        _ADVANCE,
        conversion_id,
        state,
        owner,
        lease_s,
        debit_txn_id,
        credit_txn_id,
        compensation_txn_id,
        status,
        code,
        message,
        event,
        _json(detail),
    )
    return row


async def retry_later(
    conn: asyncpg.Connection, conversion_id: UUID, delay_s: float, detail: Mapping[str, Any]
) -> None:
    await conn.execute(_RETRY_LATER, conversion_id, delay_s, _json(detail))


async def due(conn: asyncpg.Connection, limit: int) -> list[UUID]:
    return [r["id"] for r in await conn.fetch(_DUE, limit)]


async def list_conversions(
    conn: asyncpg.Connection,
    *,
    before: int,
    member_ref: str | None,
    state: str | None,
    programs: list[str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(_LIST, before, member_ref, state, programs, limit)
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
