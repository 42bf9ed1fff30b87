"""SQL for earning-rule versions."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ledger_service.rules.engine import Member

_LOCK_PROGRAM = "SELECT id, currency FROM ledger.programs WHERE code = $1 FOR UPDATE"
_LATEST = """SELECT version, effective_from FROM ledger.rule_sets WHERE program_id = $1
             ORDER BY version DESC LIMIT 1"""
_INSERT = """INSERT INTO ledger.rule_sets (program_id, version, effective_from, body, api_key_id)
             VALUES ($1, $2, $3, $4::jsonb, $5)
             RETURNING id, version, effective_from, body::text AS body, created_at"""
_ALL = """SELECT r.id, r.version, r.effective_from, r.body::text AS body, r.created_at, p.currency
          FROM ledger.programs p LEFT JOIN ledger.rule_sets r ON r.program_id = p.id
          WHERE p.code = $1 ORDER BY r.version"""
# A member's tier and segments, for rules that match them (batches ask for many members at once).
_MEMBERS = """
SELECT a.member_ref, a.tier,
       ARRAY(SELECT s.code FROM ledger.segment_members m JOIN ledger.segments s ON s.id = m.segment_id
             WHERE m.account_id = a.id) AS segments
FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
WHERE p.code = $1 AND a.kind = 'member' AND a.member_ref = ANY ($2::text[])
"""


async def lock_program(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_LOCK_PROGRAM, code)


async def latest(conn: asyncpg.Connection, program_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_LATEST, program_id)


async def insert(
    conn: asyncpg.Connection,
    program_id: int,
    version: int,
    effective_from: datetime,
    body: str,
    api_key_id: int,
) -> asyncpg.Record:
    row = await conn.fetchrow(_INSERT, program_id, version, effective_from, body, api_key_id)
    assert row is not None
    return row


async def all_versions(conn: asyncpg.Connection, code: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(_ALL, code))


async def members(conn: asyncpg.Connection, code: str, member_refs: list[str]) -> dict[str, Member]:
    """Tier and segments of these members of a program; a member not found yet is basic, in none."""
    rows = await conn.fetch(_MEMBERS, code, member_refs)
    return {r["member_ref"]: Member(r["tier"] or "basic", frozenset(r["segments"])) for r in rows}
