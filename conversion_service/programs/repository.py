"""SQL for per-program settings."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

_UPSERT = """
INSERT INTO conversion.program_settings (program, allow_derived_rates, derived_fee_bps)
VALUES ($1, $2, $3)
ON CONFLICT (program) DO UPDATE SET allow_derived_rates = EXCLUDED.allow_derived_rates,
    derived_fee_bps = EXCLUDED.derived_fee_bps, updated_at = now()
RETURNING program, allow_derived_rates, derived_fee_bps, updated_at
"""
_GET = """
SELECT program, allow_derived_rates, derived_fee_bps, updated_at FROM conversion.program_settings
WHERE program = ANY ($1::text[])
"""


async def upsert(conn: asyncpg.Connection, program: str, allow: bool, fee_bps: int) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(_UPSERT, program, allow, fee_bps)
    return row


async def get_many(conn: asyncpg.Connection, programs: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(_GET, list(programs))
    return {row["program"]: row for row in rows}
