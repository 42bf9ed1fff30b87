"""SQL for member profiles; the computation is ledger.refresh_profiles (ledger_service/sql/profiles.sql)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_PROGRAMS = "SELECT id, code FROM ledger.programs WHERE $1::text IS NULL OR code = $1 ORDER BY id"
_REFRESH = "SELECT last_id, members FROM ledger.refresh_profiles($1, $2, $3, $4)"
_FINISH = "SELECT ledger.finish_profiles($1, $2)"
_MEMBER = """
SELECT a.id, a.program_id FROM ledger.accounts a JOIN ledger.programs g ON g.id = a.program_id
WHERE g.code = $1 AND a.kind = 'member' AND a.member_ref = $2
"""
_PROFILE = "SELECT * FROM ledger.member_profiles WHERE account_id = $1"
_LOCK = "SELECT pg_advisory_lock(hashtextextended('profiles:' || $1::int, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('profiles:' || $1::int, 0))"


async def programs(conn: asyncpg.Connection, code: str | None) -> list[asyncpg.Record]:
    return list(await conn.fetch(_PROGRAMS, code))


async def refresh(
    conn: asyncpg.Connection, program_id: int, after: int, limit: int, now: datetime
) -> tuple[int | None, int]:
    """Profiles of the next `limit` members after account `after`: (last account id done, how many)."""
    row = await conn.fetchrow(_REFRESH, program_id, after, limit, now)
    assert row is not None
    return row["last_id"], row["members"]


async def finish(conn: asyncpg.Connection, program_id: int, now: datetime) -> None:
    await conn.execute(_FINISH, program_id, now)


async def lock_program(conn: asyncpg.Connection, program_id: int) -> None:
    await conn.execute(_LOCK, program_id)


async def unlock_program(conn: asyncpg.Connection, program_id: int) -> None:
    await conn.execute(_UNLOCK, program_id)


async def member(conn: asyncpg.Connection, program: str, member_ref: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_MEMBER, program, member_ref)


async def profile(conn: asyncpg.Connection, account_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_PROFILE, account_id)
