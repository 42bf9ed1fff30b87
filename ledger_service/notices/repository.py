"""SQL for expiry notices; the job itself is ledger.send_expiry_notices (ledger_service/sql/notices.sql)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_PROGRAM_ID = "SELECT id FROM ledger.programs WHERE code = $1"
_SEND = "SELECT lots, events FROM ledger.send_expiry_notices($1, $2, $3)"


async def program_id(conn: asyncpg.Connection, code: str) -> int | None:
    value: int | None = await conn.fetchval(_PROGRAM_ID, code)
    return value


async def send(
    conn: asyncpg.Connection, program_id: int | None, as_of: datetime, limit: int
) -> tuple[int, int]:
    row = await conn.fetchrow(_SEND, program_id, as_of, limit)
    assert row is not None
    return row["lots"], row["events"]
