"""SQL for rate versions. Rows are inserted, never updated."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_COLUMNS = """p.id AS pair_id, p.from_program, p.to_program, r.version, r.from_points, r.to_points, r.fee_bps,
    r.min_from_points, r.daily_limit_from_points, r.effective_from, r.created_at"""

# The pair's version counter is bumped under the pair's row lock, so versions are 1, 2, 3... per pair.
_INSERT = """
WITH pair AS (
    INSERT INTO conversion.rate_pairs AS p (from_program, to_program) VALUES ($1, $2)
    ON CONFLICT (from_program, to_program) DO UPDATE SET versions = p.versions + 1
    RETURNING id, versions
)
INSERT INTO conversion.rates (pair_id, version, from_points, to_points, fee_bps, min_from_points,
                              daily_limit_from_points, effective_from, api_key_id)
SELECT pair.id, pair.versions, $3, $4, $5, $6, $7, greatest(coalesce($8::timestamptz, now()), now()), $9
FROM pair
RETURNING pair_id, version, from_points, to_points, fee_bps, min_from_points, daily_limit_from_points,
    effective_from, created_at, $1::text AS from_program, $2::text AS to_program
"""

_IN_FORCE = f"""
SELECT {_COLUMNS} FROM conversion.rate_pairs p
CROSS JOIN LATERAL (
    SELECT * FROM conversion.rates r
    WHERE r.pair_id = p.id AND r.effective_from <= coalesce($1::timestamptz, now())
    ORDER BY r.effective_from DESC, r.version DESC LIMIT 1
) r
"""
_ONE_IN_FORCE = _IN_FORCE + " WHERE p.from_program = $2 AND p.to_program = $3"
_LIST_IN_FORCE = (
    _IN_FORCE
    + """ WHERE p.id > $2
    AND ($3::text IS NULL OR p.from_program = $3) AND ($4::text IS NULL OR p.to_program = $4)
    AND ($5::text[] IS NULL OR (p.from_program = ANY ($5) AND p.to_program = ANY ($5)))
    ORDER BY p.id LIMIT $6"""
)
_VERSIONS = f"""
SELECT {_COLUMNS} FROM conversion.rate_pairs p JOIN conversion.rates r ON r.pair_id = p.id
WHERE p.from_program = $1 AND p.to_program = $2 AND r.version < $3
ORDER BY r.version DESC LIMIT $4
"""


async def insert(
    conn: asyncpg.Connection,
    *,
    from_program: str,
    to_program: str,
    from_points: int,
    to_points: int,
    fee_bps: int,
    min_from_points: int,
    daily_limit_from_points: int | None,
    effective_from: datetime | None,
    api_key_id: int,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        _INSERT,
        from_program,
        to_program,
        from_points,
        to_points,
        fee_bps,
        min_from_points,
        daily_limit_from_points,
        effective_from,
        api_key_id,
    )
    return row


async def in_force(
    conn: asyncpg.Connection, from_program: str, to_program: str, at: datetime | None
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(_ONE_IN_FORCE, at, from_program, to_program)
    return row


async def list_in_force(
    conn: asyncpg.Connection,
    *,
    at: datetime | None,
    after: int,
    limit: int,
    from_program: str | None,
    to_program: str | None,
    programs: list[str] | None,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        _LIST_IN_FORCE, at, after, from_program, to_program, programs, limit
    )
    return rows


async def versions(
    conn: asyncpg.Connection, from_program: str, to_program: str, *, before: int, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(_VERSIONS, from_program, to_program, before, limit)
    return rows
