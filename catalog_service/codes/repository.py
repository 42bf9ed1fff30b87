"""SQL for voucher codes (the allocation itself is part of a redemption: redemptions/repository.py)."""

from __future__ import annotations

import asyncpg

_REWARD = "SELECT id, type, program FROM catalog.rewards WHERE sku = $1"
_INSERT = """
INSERT INTO catalog.voucher_codes (reward_id, code)
SELECT $1, c FROM unnest($2::text[]) AS c
ON CONFLICT (code) DO NOTHING
RETURNING code
"""
_AVAILABLE = "SELECT count(*) FROM catalog.voucher_codes WHERE reward_id = $1 AND status = 'available'"


async def reward(conn: asyncpg.Connection, sku: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_REWARD, sku)


async def insert_codes(conn: asyncpg.Connection, reward_id: int, codes: list[str]) -> set[str]:
    """Inserts the codes not already stored (for any reward); returns those inserted."""
    return {r["code"] for r in await conn.fetch(_INSERT, reward_id, codes)}


async def available(conn: asyncpg.Connection, reward_id: int) -> int:
    n: int = await conn.fetchval(_AVAILABLE, reward_id)
    return n
