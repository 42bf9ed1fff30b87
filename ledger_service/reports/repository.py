"""SQL for program reports: every figure is a sum over postings on member accounts, computed in
`numeric` (sum(bigint) is numeric; a cast back to bigint would let one stored value past its range
make the report fail) and returned as Python ints."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

_PROGRAM = "SELECT id, cash_points, cash_minor, currency FROM ledger.programs WHERE code = $1"

# Member-side postings of transactions created in [from, to), by transaction type and kind.
_FLOWS = """
SELECT t.type, coalesce(t.kind, '') AS kind, sum(po.amount) AS amount, count(DISTINCT t.id) AS n
FROM ledger.transactions t
JOIN ledger.postings po ON po.txn_id = t.id
JOIN ledger.accounts a ON a.id = po.account_id AND a.kind = 'member'
WHERE t.program_id = $1 AND t.created_at >= $2 AND t.created_at < $3
GROUP BY t.type, coalesce(t.kind, '')
"""

_OUTSTANDING = """
SELECT coalesce(sum(po.amount), 0)
FROM ledger.postings po
JOIN ledger.accounts a ON a.id = po.account_id AND a.kind = 'member'
WHERE a.program_id = $1 AND po.created_at < $2
"""

_BY_MERCHANT = """
SELECT t.merchant_id, sum(po.amount) AS points, count(DISTINCT t.id) AS transactions
FROM ledger.transactions t
JOIN ledger.postings po ON po.txn_id = t.id
JOIN ledger.accounts a ON a.id = po.account_id AND a.kind = 'member'
WHERE t.program_id = $1 AND t.type = 'earn' AND t.merchant_id IS NOT NULL
  AND t.created_at >= $2 AND t.created_at < $3
GROUP BY t.merchant_id ORDER BY points DESC, t.merchant_id LIMIT $4
"""


def _ints(row: asyncpg.Record) -> dict[str, Any]:
    """The row with its numeric sums as ints (they are whole numbers of points)."""
    return {k: int(v) if isinstance(v, Decimal) else v for k, v in row.items()}


async def program(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_PROGRAM, code)


async def flows(
    conn: asyncpg.Connection, program_id: int, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    return [_ints(r) for r in await conn.fetch(_FLOWS, program_id, start, end)]


async def outstanding(conn: asyncpg.Connection, program_id: int, at: datetime) -> int:
    return int(await conn.fetchval(_OUTSTANDING, program_id, at))


async def by_merchant(
    conn: asyncpg.Connection, program_id: int, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    return [_ints(r) for r in await conn.fetch(_BY_MERCHANT, program_id, start, end, limit)]


# Outstanding from the accounts' running balances (equal to the postings' sum: an invariant the
# ledger's tests check), and how many members hold an account, for many programs at once.
_SUMMARIES = """
SELECT p.code, coalesce(sum(a.balance), 0) AS outstanding, count(a.id) AS members
FROM ledger.programs p
LEFT JOIN ledger.accounts a ON a.program_id = p.id AND a.kind = 'member'
WHERE p.code = ANY ($1::text[])
GROUP BY p.code
"""


async def summaries(conn: asyncpg.Connection, codes: list[str]) -> dict[str, dict[str, Any]]:
    return {r["code"]: _ints(r) for r in await conn.fetch(_SUMMARIES, codes)}
