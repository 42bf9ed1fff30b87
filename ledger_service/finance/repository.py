"""SQL for finance: every figure from postings on member accounts and from lots, summed in numeric so
that no stored value can make a report fail."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_PROGRAM = "SELECT id, code, cash_points, cash_minor, currency FROM ledger.programs WHERE code = $1"

# Member-side postings: what the program owes its members moves only through these.
_OPENING = """
SELECT coalesce(sum(po.amount), 0)::numeric
FROM ledger.postings po JOIN ledger.accounts a ON a.id = po.account_id AND a.kind = 'member'
WHERE a.program_id = $1 AND po.created_at < $2
"""

# Per period of posting time: issued net of clawbacks, redeemed net of refunds, expired, and the rest
# (adjustments; transfers, which net to zero inside a program).
_FLOWS = """
SELECT date_trunc($4, po.created_at AT TIME ZONE 'UTC') AS period,
       coalesce(sum(po.amount) FILTER (WHERE t.type = 'earn' OR (t.type = 'reversal' AND t.kind = 'earn')), 0)
           ::numeric AS issued,
       coalesce(-sum(po.amount) FILTER (WHERE t.type IN ('burn', 'capture')
                                           OR (t.type = 'reversal' AND t.kind IN ('burn', 'capture'))), 0)
           ::numeric AS redeemed,
       coalesce(-sum(po.amount) FILTER (WHERE t.type = 'expiry'), 0)::numeric AS expired,
       coalesce(sum(po.amount) FILTER (WHERE t.type IN ('adjustment', 'transfer')), 0)::numeric AS adjusted
FROM ledger.postings po
JOIN ledger.accounts a ON a.id = po.account_id AND a.kind = 'member'
JOIN ledger.transactions t ON t.id = po.txn_id
WHERE a.program_id = $1 AND po.created_at >= $2 AND po.created_at < $3
GROUP BY 1
"""

# Open lots by when they expire, counted from $2; lots already due and not yet expired by the job
# count as expiring within three months.
_AGING = """
SELECT CASE WHEN l.expires_at IS NULL THEN 'never'
            WHEN l.expires_at < $2::timestamptz + interval '3 months' THEN '0-3m'
            WHEN l.expires_at < $2::timestamptz + interval '6 months' THEN '3-6m'
            WHEN l.expires_at < $2::timestamptz + interval '12 months' THEN '6-12m'
            ELSE '12m+' END AS bucket,
       sum(l.remaining)::numeric AS points
FROM ledger.lots l
WHERE l.program_id = $1 AND l.remaining > 0
GROUP BY 1
"""

# Members below zero (allow_negative programs) hold no lots; their debt lowers what is owed.
_NEGATIVE = """
SELECT coalesce(sum(a.balance), 0)::numeric FROM ledger.accounts a
WHERE a.program_id = $1 AND a.kind = 'member' AND a.balance < 0
"""

# Issuance cohorts: the lots of earns, by month of issue, and what their points became. A lot's
# moves say who took its points (net of what a refund gave back); what left a lot otherwise left it by
# expiry (rolled-over points included: they continue in a lot of their own, outside the cohort).
_COHORTS = """
WITH c AS (
    SELECT l.id, l.points, l.remaining, l.created_at,
           date_trunc('month', l.created_at AT TIME ZONE 'UTC') AS month
    FROM ledger.lots l JOIN ledger.transactions t ON t.id = l.txn_id AND t.type = 'earn'
    WHERE l.program_id = $1 AND l.created_at >= $2 AND l.created_at < $3
), lots AS (
    SELECT month, sum(points)::numeric AS issued, sum(remaining)::numeric AS outstanding, count(*) AS lots
    FROM c GROUP BY month
), moved AS (
    SELECT c.month, mv.points - mv.restored AS net, t.type,
           CASE WHEN t.type IN ('burn', 'capture') THEN t.created_at - c.created_at END AS redeemed_after
    FROM c JOIN ledger.lot_moves mv ON mv.lot_id = c.id JOIN ledger.transactions t ON t.id = mv.txn_id
), moves AS (
    SELECT month, sum(net) AS consumed,
           sum(net) FILTER (WHERE redeemed_after IS NOT NULL) AS redeemed,
           sum(net) FILTER (WHERE type = 'reversal') AS reversed,
           sum(net) FILTER (WHERE type = 'transfer') AS transferred,
           sum(net) FILTER (WHERE redeemed_after < interval '1 month') AS r1,
           sum(net) FILTER (WHERE redeemed_after < interval '3 months') AS r3,
           sum(net) FILTER (WHERE redeemed_after < interval '6 months') AS r6,
           sum(net) FILTER (WHERE redeemed_after < interval '12 months') AS r12
    FROM moved GROUP BY month
)
SELECT lots.month, lots.lots, lots.issued, lots.outstanding,
       coalesce(m.consumed, 0)::numeric AS consumed, coalesce(m.redeemed, 0)::numeric AS redeemed,
       coalesce(m.reversed, 0)::numeric AS reversed, coalesce(m.transferred, 0)::numeric AS transferred,
       coalesce(m.r1, 0)::numeric AS r1, coalesce(m.r3, 0)::numeric AS r3,
       coalesce(m.r6, 0)::numeric AS r6, coalesce(m.r12, 0)::numeric AS r12
FROM lots LEFT JOIN moves m ON m.month = lots.month
ORDER BY lots.month
"""


async def program(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_PROGRAM, code)


async def opening(conn: asyncpg.Connection, program_id: int, at: datetime) -> int:
    return int(await conn.fetchval(_OPENING, program_id, at))


async def flows(
    conn: asyncpg.Connection, program_id: int, start: datetime, end: datetime, period: str
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_FLOWS, program_id, start, end, period))


async def aging(conn: asyncpg.Connection, program_id: int, as_of: datetime) -> dict[str, int]:
    rows = await conn.fetch(_AGING, program_id, as_of)
    return {r["bucket"]: int(r["points"]) for r in rows}


async def negative_balances(conn: asyncpg.Connection, program_id: int) -> int:
    return int(await conn.fetchval(_NEGATIVE, program_id))


async def cohorts(
    conn: asyncpg.Connection, program_id: int, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_COHORTS, program_id, start, end))
