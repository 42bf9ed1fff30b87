"""SQL for rewards."""

from __future__ import annotations

from typing import Any

import asyncpg

_ACTIVE = "(coalesce(r.active_from <= now(), true) AND coalesce(now() < r.active_to, true))"
_COLUMNS = f"""r.id, r.sku, r.name, r.description, r.type, r.program, r.price_points, r.cash_price_minor,
    r.currency, r.stock, r.per_member_limit, r.active_from, r.active_to, r.category, r.merchant,
    r.created_at, r.updated_at, {_ACTIVE} AS active,
    CASE WHEN r.type = 'voucher' THEN (SELECT count(*) FROM catalog.voucher_codes c
                                       WHERE c.reward_id = r.id AND c.status = 'available') END
        AS codes_available"""

_INSERT = f"""
WITH r AS (
    INSERT INTO catalog.rewards (sku, name, description, type, program, price_points, cash_price_minor,
        currency, stock, stock_total, per_member_limit, active_from, active_to, category, merchant)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14)
    ON CONFLICT (sku) DO NOTHING
    RETURNING *
)
SELECT {_COLUMNS} FROM r
"""
_GET = f"SELECT {_COLUMNS} FROM catalog.rewards r WHERE r.sku = $1"
_LOCK = "SELECT * FROM catalog.rewards WHERE sku = $1 FOR UPDATE"
# Units of the reward held by live redemptions that took them from stock (they come back on release).
_HELD = """SELECT coalesce(sum(stock_taken), 0) FROM catalog.redemptions
    WHERE reward_id = $1 AND status IN ('debiting', 'fulfilled', 'cancelling')"""
_LIST = f"""
SELECT {_COLUMNS} FROM catalog.rewards r
WHERE r.id > $1
  AND ($2::text IS NULL OR r.program = $2)
  AND ($3::text IS NULL OR r.category = $3)
  AND ($4::text IS NULL OR r.merchant = $4)
  AND ($5::text IS NULL OR r.type = $5)
  AND ($6::boolean IS NULL OR {_ACTIVE} = $6)
  AND ($7::bigint IS NULL OR r.price_points <= $7)
  AND ($8::text[] IS NULL OR r.program = ANY ($8::text[]))
ORDER BY r.id
LIMIT $9
"""
_UPDATABLE = (
    "name", "description", "price_points", "cash_price_minor", "currency", "per_member_limit",
    "active_from", "active_to", "category", "merchant",
)  # fmt: skip


async def insert(conn: asyncpg.Connection, v: dict[str, Any]) -> asyncpg.Record | None:
    """The new reward, or None if the sku is taken."""
    return await conn.fetchrow(
        _INSERT,
        v["sku"], v["name"], v.get("description"), v["type"], v["program"], v["price_points"],
        v.get("cash_price_minor"), v.get("currency"), v.get("stock"), v.get("per_member_limit"),
        v.get("active_from"), v.get("active_to"), v.get("category"), v.get("merchant"),
    )  # fmt: skip


async def get(conn: asyncpg.Connection, sku: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET, sku)


async def lock(conn: asyncpg.Connection, sku: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_LOCK, sku)


async def update(
    conn: asyncpg.Connection, reward_id: int, changes: dict[str, Any], *, set_stock: bool
) -> asyncpg.Record:
    """Applies `changes` to a reward locked by `lock`. Setting `stock` also sets `stock_total` to the new
    stock plus the units live redemptions hold, so `stock + held = stock_total` stays true."""
    assignments: list[str] = []
    args: list[Any] = [reward_id]
    for column in _UPDATABLE:
        if column in changes:
            args.append(changes[column])
            assignments.append(f"{column} = ${len(args)}")
    if set_stock:
        stock = changes["stock"]
        held = 0 if stock is None else int(await conn.fetchval(_HELD, reward_id))
        args.append(stock)
        assignments.append(f"stock = ${len(args)}")
        args.append(None if stock is None else stock + held)
        assignments.append(f"stock_total = ${len(args)}")
    sql = (
        f"WITH r AS (UPDATE catalog.rewards SET {', '.join(assignments)}, updated_at = now()"
        f" WHERE id = $1 RETURNING *) SELECT {_COLUMNS} FROM r"
    )
    row = await conn.fetchrow(sql, *args)
    assert row is not None
    return row


async def list_rewards(
    conn: asyncpg.Connection,
    *,
    after: int,
    limit: int,
    program: str | None,
    category: str | None,
    merchant: str | None,
    type_: str | None,
    active: bool | None,
    max_price: int | None,
    programs: list[str] | None,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(_LIST, after, program, category, merchant, type_, active, max_price, programs, limit)
    )
