"""SQL for segments. A segment's condition is compiled from its criteria (segments.criteria) and
inserted into _EVALUATE as `{condition}`: field names from a fixed table, every value a bound parameter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = (
    "s.id, g.code AS program, s.code, s.name, s.criteria::text AS criteria, s.member_count, s.refreshed_at,"
    " s.created_at"
)
_CREATE = f"""
WITH s AS (
    INSERT INTO ledger.segments (program_id, code, name, criteria) VALUES ($1, $2, $3, $4)
    ON CONFLICT (program_id, code) DO NOTHING RETURNING *
)
SELECT {_COLUMNS} FROM s JOIN ledger.programs g ON g.id = s.program_id
"""
_GET = f"""SELECT {_COLUMNS} FROM ledger.segments s JOIN ledger.programs g ON g.id = s.program_id
           WHERE g.code = $1 AND s.code = $2"""
_LIST = f"""SELECT {_COLUMNS} FROM ledger.segments s JOIN ledger.programs g ON g.id = s.program_id
            WHERE g.code = $1 AND s.id > $2 ORDER BY s.id LIMIT $3"""
_OF_PROGRAM = (
    "SELECT id, code, criteria::text AS criteria FROM ledger.segments WHERE program_id = $1 ORDER BY id"
)
_LOCK = "SELECT id FROM ledger.segments WHERE id = $1 FOR UPDATE"
_MEMBERS = """SELECT account_id, member_ref, entered_at FROM ledger.segment_members
              WHERE segment_id = $1 AND account_id > $2 ORDER BY account_id LIMIT $3"""
_MEMBER_SEGMENTS = """
SELECT coalesce(array_agg(s.code), '{}') FROM ledger.segment_members m
JOIN ledger.segments s ON s.id = m.segment_id
WHERE m.account_id = (SELECT a.id FROM ledger.accounts a JOIN ledger.programs g ON g.id = a.program_id
                      WHERE g.code = $1 AND a.kind = 'member' AND a.member_ref = $2)
"""

# $1 evaluation time, $2 segment id, $3 program id, then the condition's own parameters. Members who
# enter or leave get an event each, in the same transaction as the change.
_EVALUATE = """
WITH matching AS MATERIALIZED (
    SELECT p.account_id, p.member_ref
    FROM ledger.member_profiles p JOIN ledger.programs g ON g.id = p.program_id
    WHERE p.program_id = $3 AND {condition}
), entered AS (
    INSERT INTO ledger.segment_members (segment_id, account_id, member_ref)
    SELECT $2, m.account_id, m.member_ref FROM matching m
    ON CONFLICT DO NOTHING
    RETURNING account_id, member_ref
), gone AS (
    DELETE FROM ledger.segment_members s
    WHERE s.segment_id = $2 AND NOT EXISTS (SELECT 1 FROM matching m WHERE m.account_id = s.account_id)
    RETURNING account_id, member_ref
), seg AS (
    SELECT g.code AS program, s.code AS segment
    FROM ledger.segments s JOIN ledger.programs g ON g.id = s.program_id WHERE s.id = $2
), events AS (
    INSERT INTO ledger.outbox (type, program_id, payload)
    SELECT x.type, $3, jsonb_build_object('program', seg.program, 'segment', seg.segment,
                                          'member_ref', x.member_ref, 'at', $1::timestamptz)
    FROM (SELECT 'segment.entered' AS type, member_ref, account_id FROM entered
          UNION ALL SELECT 'segment.left', member_ref, account_id FROM gone) x, seg
    ORDER BY x.type, x.account_id
)
UPDATE ledger.segments
SET member_count = (SELECT count(*) FROM matching), refreshed_at = $1, updated_at = now()
WHERE id = $2
RETURNING member_count, refreshed_at,
          (SELECT count(*) FROM entered) AS entered, (SELECT count(*) FROM gone) AS left_
"""


async def create(conn: asyncpg.Connection, program_id: int, code: str, name: str, criteria: str) -> Any:
    return await conn.fetchrow(_CREATE, program_id, code, name, criteria)


async def get(conn: asyncpg.Connection, program: str, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET, program, code)


async def list_page(conn: asyncpg.Connection, program: str, after: int, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(_LIST, program, after, limit))


async def of_program(conn: asyncpg.Connection, program_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(_OF_PROGRAM, program_id))


async def lock(conn: asyncpg.Connection, segment_id: int) -> None:
    await conn.execute(_LOCK, segment_id)


# The condition's parameters follow ours: compile it with base=EVALUATE_BASE.
EVALUATE_BASE = 3


async def evaluate(
    conn: asyncpg.Connection,
    condition: str,
    now: datetime,
    segment_id: int,
    program_id: int,
    params: list[Any],
) -> asyncpg.Record:
    row = await conn.fetchrow(_EVALUATE.format(condition=condition), now, segment_id, program_id, *params)
    assert row is not None
    return row


async def members(conn: asyncpg.Connection, segment_id: int, after: int, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(_MEMBERS, segment_id, after, limit))


async def member_segments(conn: asyncpg.Connection, program: str, member_ref: str) -> list[str]:
    value: list[str] = await conn.fetchval(_MEMBER_SEGMENTS, program, member_ref)
    return value
