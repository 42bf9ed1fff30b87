"""SQL for the ledger's read side."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

_PROGRAM_ID = "SELECT id FROM ledger.programs WHERE code = $1"

_MEMBER = """
SELECT p.id AS program_id, p.tiers::text AS tiers, a.id AS account_id, a.balance, a.held, a.lifetime_earned,
       ledger.pending_now(a.id, a.pending) AS pending,
       coalesce((SELECT jsonb_agg(jsonb_build_object('points', r.points,
                                                     'release_at', ledger.ts(r.pending_until))
                                  ORDER BY r.pending_until)::text
                 FROM (SELECT pending_until, sum(remaining) AS points FROM ledger.lots
                       WHERE a.pending > 0 AND account_id = a.id AND pending_until IS NOT NULL
                         AND remaining > 0 AND pending_until > now()
                       GROUP BY pending_until ORDER BY pending_until LIMIT $3) r), '[]') AS releases,
       coalesce(a.tier, 'basic') AS tier, a.tier_since,
       CASE WHEN a.id IS NULL THEN 0 ELSE ledger.qualifying_points(p, a.id) END AS qualifying_points,
       coalesce((SELECT jsonb_agg(jsonb_build_object('points', e.points,
                                                     'expires_at', ledger.ts(e.expires_at))
                                  ORDER BY e.expires_at)::text
                 FROM (SELECT expires_at, sum(remaining) AS points FROM ledger.lots
                       WHERE account_id = a.id AND remaining > 0 AND expires_at IS NOT NULL
                       GROUP BY expires_at ORDER BY expires_at LIMIT $3) e), '[]') AS expiring
FROM ledger.programs p
LEFT JOIN ledger.accounts a ON a.program_id = p.id AND a.kind = 'member' AND a.member_ref = $2
WHERE p.code = $1
"""

_TIER_HISTORY = """
SELECT h.id, h.from_tier, h.to_tier, h.qualifying_points, h.reason, h.created_at
FROM ledger.tier_history h
JOIN ledger.accounts a ON a.id = h.account_id
WHERE a.program_id = $1 AND a.kind = 'member' AND a.member_ref = $2 AND h.id < $3
ORDER BY h.id DESC LIMIT $4
"""

_STATEMENT = """
SELECT po.id AS posting_id, po.amount, t.id AS transaction_id, t.type, t.points,
       t.reference, t.reason, t.kind,
       CASE WHEN t.type = 'transfer' AND t.member_ref <> $2 THEN t.member_ref ELSE t.counterparty_ref END
           AS counterparty_ref,
       t.original_id, t.hold_id, t.created_at
FROM ledger.accounts a
JOIN ledger.postings po ON po.account_id = a.id
JOIN ledger.transactions t ON t.id = po.txn_id
WHERE a.program_id = $1 AND a.kind = 'member' AND a.member_ref = $2 AND po.id < $3
ORDER BY po.id DESC
LIMIT $4
"""

_TRANSACTION = """
SELECT t.*, p.code AS program
FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id
WHERE t.id = $1
"""

_POSTINGS = """
SELECT po.account_id, a.kind AS account_kind, NULLIF(a.member_ref, '') AS member_ref, po.amount
FROM ledger.postings po JOIN ledger.accounts a ON a.id = po.account_id
WHERE po.txn_id = $1 ORDER BY po.id
"""

_HOLD = """
SELECT h.*, p.code AS program, a.balance, a.held AS account_held
FROM ledger.holds h
JOIN ledger.programs p ON p.id = h.program_id
JOIN ledger.accounts a ON a.id = h.account_id
WHERE h.id = $1
"""


async def member(
    conn: asyncpg.Connection, program: str, member_ref: str, *, expiring: int = 12
) -> asyncpg.Record | None:
    return await conn.fetchrow(_MEMBER, program, member_ref, expiring)


async def tier_history(
    conn: asyncpg.Connection, program_id: int, member_ref: str, *, before: int, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_TIER_HISTORY, program_id, member_ref, before, limit))


async def program_id(conn: asyncpg.Connection, program: str) -> int | None:
    value: int | None = await conn.fetchval(_PROGRAM_ID, program)
    return value


async def statement(
    conn: asyncpg.Connection, program_id: int, member_ref: str, *, before: int, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_STATEMENT, program_id, member_ref, before, limit))


async def transaction(conn: asyncpg.Connection, txn_id: UUID) -> tuple[Any, list[asyncpg.Record]]:
    row = await conn.fetchrow(_TRANSACTION, txn_id)
    if row is None:
        return None, []
    return row, list(await conn.fetch(_POSTINGS, txn_id))


async def hold(conn: asyncpg.Connection, hold_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(_HOLD, hold_id)


_LOTS = """
SELECT l.id, l.points, l.remaining, l.expires_at, l.created_at, l.txn_id
FROM ledger.lots l
JOIN ledger.accounts a ON a.id = l.account_id
WHERE a.program_id = $1 AND a.kind = 'member' AND a.member_ref = $2 AND l.remaining > 0
ORDER BY l.expires_at NULLS LAST, l.id
LIMIT $3
"""

_ACTIVE_HOLDS = """
SELECT h.id, h.points, h.reference, h.expires_at, h.created_at
FROM ledger.holds h
JOIN ledger.accounts a ON a.id = h.account_id
WHERE a.program_id = $1 AND a.kind = 'member' AND a.member_ref = $2 AND h.status = 'held'
ORDER BY h.created_at DESC
LIMIT $3
"""


async def open_lots(
    conn: asyncpg.Connection, program_id: int, member_ref: str, limit: int
) -> list[asyncpg.Record]:
    """A member's lots with points left, soonest expiry first (lots that never expire last)."""
    return list(await conn.fetch(_LOTS, program_id, member_ref, limit))


async def active_holds(
    conn: asyncpg.Connection, program_id: int, member_ref: str, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_ACTIVE_HOLDS, program_id, member_ref, limit))
