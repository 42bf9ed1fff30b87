"""SQL for partners, their terms, statements and positions. Postings at partners live in the ledger's
SQL (sql/partners.sql); this module reads them and keeps the partners' configuration."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

_PARTNER_COLUMNS = "id, code, name, roles, status, created_at, updated_at"

_INSERT = f"""
INSERT INTO ledger.partners (code, name, roles, status) VALUES ($1, $2, $3, $4)
ON CONFLICT (code) DO NOTHING RETURNING {_PARTNER_COLUMNS}
"""
_GET = f"SELECT {_PARTNER_COLUMNS} FROM ledger.partners WHERE code = $1"
_LIST = f"""
SELECT {_PARTNER_COLUMNS} FROM ledger.partners
WHERE id > $1 AND ($3::text IS NULL OR code = $3)
  AND ($4::text IS NULL OR id IN (SELECT pp.partner_id FROM ledger.partner_programs pp
                                  JOIN ledger.programs g ON g.id = pp.program_id WHERE g.code = $4))
ORDER BY id LIMIT $2
"""
_UPDATE = f"""
UPDATE ledger.partners
SET name = coalesce($2, name), roles = coalesce($3, roles), status = coalesce($4, status), updated_at = now()
WHERE code = $1 RETURNING {_PARTNER_COLUMNS}
"""

_PROGRAM = "SELECT id, code, timezone FROM ledger.programs WHERE code = $1"

_TERMS_COLUMNS = """t.id, p.code AS partner, g.code AS program, t.issue_points, t.issue_cash_minor,
    t.accept_points, t.accept_cash_minor, t.currency, t.period, t.funding, t.credit_limit_minor,
    t.effective_from, t.created_at,
    row_number() OVER (PARTITION BY t.partner_id, t.program_id ORDER BY t.effective_from) AS version"""

# A new version may not reach back into a period already on a statement (it would reprice it).
_CLOSED_UNTIL = """
SELECT max(period_end) FROM ledger.statement_lines WHERE partner_id = $1 AND program_id = $2
"""
_INSERT_TERMS = """
INSERT INTO ledger.partner_terms (partner_id, program_id, issue_points, issue_cash_minor, accept_points,
    accept_cash_minor, currency, period, funding, credit_limit_minor, effective_from)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11, now()))
ON CONFLICT (partner_id, program_id, effective_from) DO NOTHING
RETURNING id
"""
_ENSURE_ACCOUNTS = "SELECT 1 FROM ledger.partner_program($1, $2)"
_TERMS = f"""
SELECT * FROM (
    SELECT {_TERMS_COLUMNS}
    FROM ledger.partner_terms t JOIN ledger.partners p ON p.id = t.partner_id
    JOIN ledger.programs g ON g.id = t.program_id
    WHERE t.partner_id = $1
) x WHERE $2::bigint IS NULL OR x.id = $2
ORDER BY x.program, x.effective_from
"""

_TERMS_OF = f"""
SELECT {_TERMS_COLUMNS}, t.partner_id
FROM ledger.partner_terms t JOIN ledger.partners p ON p.id = t.partner_id
JOIN ledger.programs g ON g.id = t.program_id
WHERE t.partner_id = ANY ($1::int[]) AND ($2::text[] IS NULL OR g.code = ANY ($2))
ORDER BY p.id, g.code, t.effective_from
"""
# Counters: the partner_programs row plus its slots (ledger_service/sql/partners.sql).
_COUNTERS = """
SELECT pp.partner_id, g.code AS program, pp.funded_points, pp.issued_points, pp.open_cash
FROM ledger.partner_totals pp JOIN ledger.programs g ON g.id = pp.program_id
WHERE pp.partner_id = ANY ($1::int[]) AND ($2::text[] IS NULL OR g.code = ANY ($2))
ORDER BY pp.partner_id, g.code
"""

_LINE_COLUMNS = """l.id, l.settlement_id, p.code AS partner, g.code AS program, l.period_start, l.period_end,
    l.points_issued, l.points_issued_reversed, l.points_accepted, l.points_accepted_reversed,
    l.cash_due_from_partner_minor, l.cash_due_to_partner_minor, l.net_minor, l.currency, l.transactions"""
_LINE_FROM = """ledger.statement_lines l JOIN ledger.partners p ON p.id = l.partner_id
    JOIN ledger.programs g ON g.id = l.program_id"""

_NEW_SETTLEMENT = (
    "INSERT INTO ledger.settlements (id, as_of) VALUES (ledger.new_id(), $1) RETURNING id, created_at"
)
_PAIRS = "SELECT partner_id, program_id FROM ledger.partner_programs ORDER BY partner_id, program_id"
_SETTLE = f"""
SELECT {_LINE_COLUMNS}
FROM ledger.settle_partner($1, $2, $3, $4) l JOIN ledger.partners p ON p.id = l.partner_id
JOIN ledger.programs g ON g.id = l.program_id
"""
_SETTLEMENTS = """
SELECT id, as_of, created_at, row_number() OVER (ORDER BY created_at DESC, id DESC) AS n
FROM ledger.settlements ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT $2
"""
_SETTLEMENT = "SELECT id, as_of, created_at FROM ledger.settlements WHERE id = $1"
_SETTLEMENT_LINES = f"""
SELECT {_LINE_COLUMNS} FROM {_LINE_FROM}
WHERE l.settlement_id = ANY ($1::uuid[]) AND ($2::text[] IS NULL OR g.code = ANY ($2))
ORDER BY p.code, g.code, l.period_start
"""
_PARTNER_LINES = f"""
SELECT {_LINE_COLUMNS} FROM {_LINE_FROM}
WHERE l.partner_id = $1 AND ($4::text[] IS NULL OR g.code = ANY ($4))
ORDER BY l.period_start DESC, g.code, l.id OFFSET $2 LIMIT $3
"""

# The open position: every transaction of the partner on no statement yet, in the period it will be
# settled in: its own, or the first open one when its own is closed (a late posting). The period is
# that of the terms in force now; figures as a statement line computes them (ledger.partner_figures).
_POSITION = """
WITH pp AS (
    SELECT pp.*, g.code, g.timezone, ledger.partner_terms_at(pp.partner_id, pp.program_id, now()) AS t,
           (SELECT max(l.period_end) FROM ledger.statement_lines l
            WHERE l.partner_id = pp.partner_id AND l.program_id = pp.program_id) AS closed_until
    FROM ledger.partner_totals pp JOIN ledger.programs g ON g.id = pp.program_id
    WHERE pp.partner_id = $1 AND ($2::text[] IS NULL OR g.code = ANY ($2))
), open AS (
    SELECT pp.program_id, greatest(ledger.period_start(x.occurred_at, (pp.t).period, pp.timezone),
                                   coalesce(pp.closed_until, '-infinity')) AS period_start, f.*
    FROM pp JOIN ledger.transactions x
        ON x.partner_id = pp.partner_id AND x.program_id = pp.program_id AND x.statement_line_id IS NULL,
    LATERAL ledger.partner_figures(x.partner_id, x.program_id, x.type, x.kind, x.points, x.occurred_at) f
), periods AS (
    SELECT o.program_id, o.period_start, count(*) AS transactions,
           sum(o.issued) AS points_issued, sum(o.issued_reversed) AS points_issued_reversed,
           sum(o.accepted) AS points_accepted, sum(o.accepted_reversed) AS points_accepted_reversed,
           ledger.half_up(coalesce(sum(o.cash_from), 0)) AS cash_due_from_partner_minor,
           ledger.half_up(coalesce(sum(o.cash_to), 0)) AS cash_due_to_partner_minor
    FROM open o GROUP BY 1, 2
)
SELECT pp.code AS program, pp.funded_points, pp.issued_points, pp.open_cash, (pp.t).funding AS funding,
       (pp.t).currency AS currency, (pp.t).credit_limit_minor AS credit_limit_minor,
       coalesce(jsonb_agg(jsonb_build_object(
           'period_start', ledger.ts(s.period_start),
           'period_end', ledger.ts(ledger.period_end(s.period_start, (pp.t).period, pp.timezone)),
           'transactions', s.transactions,
           'points_issued', s.points_issued, 'points_issued_reversed', s.points_issued_reversed,
           'points_accepted', s.points_accepted, 'points_accepted_reversed', s.points_accepted_reversed,
           'cash_due_from_partner_minor', s.cash_due_from_partner_minor,
           'cash_due_to_partner_minor', s.cash_due_to_partner_minor,
           'net_minor', s.cash_due_from_partner_minor - s.cash_due_to_partner_minor)
           ORDER BY s.period_start) FILTER (WHERE s.program_id IS NOT NULL), '[]')::text AS periods
FROM pp LEFT JOIN periods s ON s.program_id = pp.program_id
GROUP BY pp.code, pp.funded_points, pp.issued_points, pp.open_cash, pp.t
ORDER BY pp.code
"""


async def insert_partner(
    conn: asyncpg.Connection, code: str, name: str, roles: list[str], status: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(_INSERT, code, name, roles, status)


async def get_partner(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET, code)


async def list_partners(
    conn: asyncpg.Connection, *, after: int, limit: int, only: str | None, program: str | None = None
) -> list[asyncpg.Record]:
    """Oldest first; `only` one partner (a partner-bound key), `program` those with terms or funds there."""
    return list(await conn.fetch(_LIST, after, limit, only, program))


async def update_partner(
    conn: asyncpg.Connection, code: str, name: str | None, roles: list[str] | None, status: str | None
) -> asyncpg.Record | None:
    return await conn.fetchrow(_UPDATE, code, name, roles, status)


async def program(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_PROGRAM, code)


async def closed_until(conn: asyncpg.Connection, partner_id: int, program_id: int) -> datetime | None:
    value: datetime | None = await conn.fetchval(_CLOSED_UNTIL, partner_id, program_id)
    return value


async def insert_terms(
    conn: asyncpg.Connection, partner_id: int, program_id: int, t: dict[str, Any]
) -> int | None:
    terms_id: int | None = await conn.fetchval(
        _INSERT_TERMS,
        partner_id,
        program_id,
        t["issue_price"]["points"],
        t["issue_price"]["cash_minor"],
        t["accept_price"]["points"],
        t["accept_price"]["cash_minor"],
        t["currency"],
        t["period"],
        t["funding"],
        t["credit_limit_minor"],
        t["effective_from"],
    )
    if terms_id is not None:
        await conn.execute(_ENSURE_ACCOUNTS, partner_id, program_id)
    return terms_id


async def terms(
    conn: asyncpg.Connection, partner_id: int, only_id: int | None = None
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_TERMS, partner_id, only_id))


async def terms_of(
    conn: asyncpg.Connection, partner_ids: list[int], programs: list[str] | None
) -> list[asyncpg.Record]:
    """Every version of the terms of these partners, oldest first per program."""
    return list(await conn.fetch(_TERMS_OF, partner_ids, programs))


async def counters(
    conn: asyncpg.Connection, partner_ids: list[int], programs: list[str] | None
) -> list[asyncpg.Record]:
    """The prepaid and credit counters of these partners at each program they have terms or funds in."""
    return list(await conn.fetch(_COUNTERS, partner_ids, programs))


async def new_settlement(conn: asyncpg.Connection, as_of: datetime) -> asyncpg.Record:
    row = await conn.fetchrow(_NEW_SETTLEMENT, as_of)
    assert row is not None
    return row


async def partner_programs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(_PAIRS))


async def settle_partner(
    conn: asyncpg.Connection, settlement: UUID, partner_id: int, program_id: int, as_of: datetime
) -> list[asyncpg.Record]:
    """One partner and program in one database transaction (its locks are held only that long)."""
    async with conn.transaction():
        return list(await conn.fetch(_SETTLE, settlement, partner_id, program_id, as_of))


async def settlements(conn: asyncpg.Connection, *, offset: int, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(_SETTLEMENTS, offset, limit))


async def settlement(conn: asyncpg.Connection, settlement_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(_SETTLEMENT, settlement_id)


async def settlement_lines(
    conn: asyncpg.Connection, ids: list[UUID], programs: list[str] | None
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_SETTLEMENT_LINES, ids, programs))


async def partner_lines(
    conn: asyncpg.Connection, partner_id: int, *, offset: int, limit: int, programs: list[str] | None
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_PARTNER_LINES, partner_id, offset, limit, programs))


async def position(
    conn: asyncpg.Connection, partner_id: int, programs: list[str] | None
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_POSITION, partner_id, programs))
