"""SQL for redemptions: reservation, saga steps, voucher code allocation, reads.

Locks are taken in this order: redemption row, then member usage row (allowance), then reward row
(stock), then voucher codes. A new redemption takes no existing redemption row, and its codes before the
allowance and the reward row: codes it claims are available ones, which no other transaction waits for
(claims skip locked codes, and a release or void touches only codes of its own redemption), so that
cannot deadlock. The reward row is the one hot lock (every redemption of a limited reward decrements
it), so a reservation takes it last, just before COMMIT.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import orjson

from services.idempotency import IdempotencyStore
from services.saga import Answer, Operation

_REWARD = """
SELECT id, sku, type, program, price_points, cash_price_minor, currency, stock, per_member_limit,
       (coalesce(active_from <= now(), true) AND coalesce(now() < active_to, true)) AS active
FROM catalog.rewards WHERE sku = $1
"""
# The reward as _REWARD reads it, and `claim`: it is sold out for this request ($7 sku, $8 program, $9
# quantity), and nothing else refuses it first (service._refused_at_sight, in the same order).
_REWARD_SOLD_OUT = """
SELECT *, (program = $8 AND active AND (per_member_limit IS NULL OR $9 <= per_member_limit)
           AND stock < $9) AS claim
FROM (
    SELECT id, sku, type, program, price_points, cash_price_minor, currency, stock, per_member_limit,
           (coalesce(active_from <= now(), true) AND coalesce(now() < active_to, true)) AS active
    FROM catalog.rewards WHERE sku = $7
) r
"""
# Stock: a decrement under the reward's row lock, never below zero: the column's CHECK refuses it.
_TAKE_STOCK = "UPDATE catalog.rewards SET stock = stock - {quantity:d} WHERE id = {reward_id:d}"
_STOCK_CHECK = "rewards_stock_check"
# The whole reservation but the stock, in one statement (the stock is taken by the statement sent with
# the COMMIT, take_stock_sql). Its codes first ($16: the reward is a voucher): `q` available codes nobody
# else is claiming right now (SKIP LOCKED: concurrent claims never wait for each other). Only if there are
# enough, the member's allowance: the usage row, incremented only while it stays within the limit ($17,
# NULL: none). Only if that was taken, the redemption (`debiting`, leased), its event, and the codes
# become its own. So a refusal writes nothing, and needs no savepoint to roll back to: `enough` false is
# out of codes, unless `over` (the member's usage as this statement sees it) says the limit is what
# refuses, which is checked first on the way in; `enough` with no row is the limit.
_RESERVE = """
WITH pick AS MATERIALIZED (
    SELECT id FROM catalog.voucher_codes
    WHERE $16::boolean AND reward_id = $2 AND status = 'available'
    ORDER BY id LIMIT $7 FOR UPDATE SKIP LOCKED
), enough AS (
    SELECT NOT $16::boolean OR count(*) = $7 AS ok FROM pick
), a AS (
    INSERT INTO catalog.member_usage AS u (reward_id, member_ref, used)
    SELECT $2, $6, $7 FROM enough WHERE enough.ok
    ON CONFLICT (reward_id, member_ref) DO UPDATE SET used = u.used + EXCLUDED.used
        WHERE $17::bigint IS NULL OR u.used + EXCLUDED.used <= $17
    RETURNING used
), r AS (
    INSERT INTO catalog.redemptions (id, reward_id, sku, reward_type, program, member_ref, quantity, points,
        cash_minor, currency, stock_taken, status, api_key_id, idempotency_key, lease_until)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'debiting', $12, $13,
           now() + make_interval(secs => $14)
    FROM a
    RETURNING *
), e AS (
    INSERT INTO catalog.redemption_events (redemption_id, status, event, detail)
    SELECT id, status, 'reserved', $15::jsonb FROM r
), c AS (
    UPDATE catalog.voucher_codes v SET status = 'reserved', redemption_id = r.id
    FROM r WHERE v.id IN (SELECT id FROM pick)
)
SELECT enough.ok AS enough,
       $17::bigint IS NOT NULL AND coalesce((
           SELECT used FROM catalog.member_usage WHERE reward_id = $2 AND member_ref = $6), 0) + $7 > $17
           AS over,
       r.*
FROM enough LEFT JOIN r ON true
"""
_GET = "SELECT * FROM catalog.redemptions WHERE id = $1"
_LOCK = "SELECT * FROM catalog.redemptions WHERE id = $1 FOR UPDATE"
_START_CANCEL = """
UPDATE catalog.redemptions SET status = 'cancelling', cancel_api_key_id = $2, cancel_idempotency_key = $3,
    lease_until = now() + make_interval(secs => $4), updated_at = now()
WHERE id = $1
RETURNING *
"""
_EVENT = """
INSERT INTO catalog.redemption_events (redemption_id, status, event, detail) VALUES ($1, $2, $3, $4::jsonb)
"""
_RETURN_STOCK = "UPDATE catalog.rewards SET stock = stock + $2 WHERE id = $1"
_RETURN_ALLOWANCE = (
    "UPDATE catalog.member_usage SET used = used - $3 WHERE reward_id = $1 AND member_ref = $2"
)
_RELEASE_CODES = """
UPDATE catalog.voucher_codes SET status = 'available', redemption_id = NULL
WHERE redemption_id = $1 AND status = 'reserved'
"""
_ISSUE_CODES = """
WITH u AS (
    UPDATE catalog.voucher_codes SET status = 'issued', issued_at = now()
    WHERE redemption_id = $1 AND status = 'reserved'
    RETURNING id, code
)
SELECT code FROM u ORDER BY id
"""
_VOID_CODES = (
    "UPDATE catalog.voucher_codes SET status = 'void' WHERE redemption_id = $1 AND status = 'issued'"
)
_CODES_OF = """
SELECT redemption_id, code FROM catalog.voucher_codes
WHERE redemption_id = ANY ($1::uuid[]) AND status IN ('issued', 'void')
ORDER BY id
"""
_EVENTS = """
SELECT status, event, detail::text AS detail, created_at FROM catalog.redemption_events
WHERE redemption_id = $1 ORDER BY id
"""
_LIST = """
SELECT * FROM catalog.redemptions
WHERE ($1::text IS NULL OR member_ref = $1) AND seq < $2
  AND ($3::text IS NULL OR program = $3)
  AND ($4::text IS NULL OR status = $4)
  AND ($5::text[] IS NULL OR program = ANY ($5::text[]))
ORDER BY seq DESC
LIMIT $6
"""


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


# --- reservation (one transaction with the Idempotency-Key record) ---------------------------------


async def reward_for_redemption(conn: asyncpg.Connection, sku: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_REWARD, sku)


async def reward_or_sold_out(
    conn: asyncpg.Connection,
    store: IdempotencyStore,
    op: Operation,
    sku: str,
    program: str,
    quantity: int,
    refusal: Answer,
) -> tuple[asyncpg.Record | None, bool | None]:
    """The reward (reward_for_redemption) and, in the same statement, `refusal` recorded as the key's
    answer if the reward is sold out for this request: (reward, IdempotencyStore.claim_new_when's
    outcome)."""
    return await store.claim_new_when(
        conn, _REWARD_SOLD_OUT, (sku, program, quantity), op.api_key_id, op.key, op.request_hash,
        refusal.status, refusal.body,
    )  # fmt: skip


def take_stock_sql(reward_id: int, quantity: int) -> str:
    """The decrement as one statement without parameters (integers only), to be sent with a COMMIT."""
    return _TAKE_STOCK.format(reward_id=int(reward_id), quantity=int(quantity))


def is_stock_exhausted(exc: asyncpg.PostgresError) -> bool:
    """The decrement was refused: fewer units were left than it takes."""
    return isinstance(exc, asyncpg.CheckViolationError) and exc.constraint_name == _STOCK_CHECK


async def reserve(
    conn: asyncpg.Connection, v: dict[str, Any], *, limit: int | None, voucher: bool, lease_s: float
) -> tuple[asyncpg.Record | None, str | None]:
    """The reservation (_RESERVE): the redemption row, or None and what refused it (`limit_exceeded`,
    `out_of_stock`); nothing is written then."""
    row = await conn.fetchrow(
        _RESERVE,
        v["id"], v["reward_id"], v["sku"], v["reward_type"], v["program"], v["member_ref"], v["quantity"],
        v["points"], v["cash_minor"], v["currency"], v["stock_taken"], v["api_key_id"], v["idempotency_key"],
        lease_s, _json({"stock_taken": v["stock_taken"], "quantity": v["quantity"]}), voucher, limit,
    )  # fmt: skip
    assert row is not None
    if row["id"] is not None:
        return row, None
    return None, "out_of_stock" if not row["enough"] and not row["over"] else "limit_exceeded"


# --- saga steps (their statuses are stored by the saga runner, services/saga.py) -------------------


async def get(conn: asyncpg.Connection, redemption_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET, redemption_id)


async def lock(conn: asyncpg.Connection, redemption_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(_LOCK, redemption_id)


async def start_cancel(
    conn: asyncpg.Connection, redemption_id: UUID, api_key_id: int, key: str, *, lease_s: float
) -> asyncpg.Record:
    row = await conn.fetchrow(_START_CANCEL, redemption_id, api_key_id, key, lease_s)
    assert row is not None
    return row


async def add_event(
    conn: asyncpg.Connection, redemption_id: UUID, status: str, event: str, detail: dict[str, Any] | None
) -> None:
    await conn.execute(_EVENT, redemption_id, status, event, _json(detail))


async def return_stock_and_allowance(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    """Gives back what the redemption holds: its member's allowance, its units of stock (in lock order)."""
    await conn.execute(_RETURN_ALLOWANCE, row["reward_id"], row["member_ref"], row["quantity"])
    if row["stock_taken"]:
        await conn.execute(_RETURN_STOCK, row["reward_id"], row["stock_taken"])


async def release_reserved_codes(conn: asyncpg.Connection, redemption_id: UUID) -> None:
    """Codes claimed but never shown go back to the pool."""
    await conn.execute(_RELEASE_CODES, redemption_id)


async def issue_codes(conn: asyncpg.Connection, redemption_id: UUID) -> list[str]:
    return [r["code"] for r in await conn.fetch(_ISSUE_CODES, redemption_id)]


async def void_codes(conn: asyncpg.Connection, redemption_id: UUID) -> None:
    await conn.execute(_VOID_CODES, redemption_id)


# --- reads --------------------------------------------------------------------------------------------


async def codes_of(conn: asyncpg.Connection, redemption_ids: list[UUID]) -> dict[UUID, list[str]]:
    out: dict[UUID, list[str]] = {}
    if not redemption_ids:
        return out
    for r in await conn.fetch(_CODES_OF, redemption_ids):
        out.setdefault(r["redemption_id"], []).append(r["code"])
    return out


async def events(conn: asyncpg.Connection, redemption_id: UUID) -> list[dict[str, Any]]:
    return [
        {**dict(r), "detail": None if r["detail"] is None else orjson.loads(r["detail"])}
        for r in await conn.fetch(_EVENTS, redemption_id)
    ]


async def list_for_member(
    conn: asyncpg.Connection,
    member_ref: str | None,
    *,
    before: int,
    limit: int,
    program: str | None,
    status: str | None,
    programs: list[str] | None,
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_LIST, member_ref, before, program, status, programs, limit))
