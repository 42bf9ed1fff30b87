"""Demo rewards, with stock and voucher codes, loaded by `jifen run` into a catalog without any reward
(so a restart, or a catalog in real use, is left as it is). Active for a year from loading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from catalog_service.codes import repository as codes
from catalog_service.rewards import repository as rewards
from services.db import Database

VOUCHER_CODES = 50


def demo_rewards(now: datetime) -> list[dict[str, Any]]:
    window = {"active_from": now - timedelta(days=1), "active_to": now + timedelta(days=365)}
    return [
        {"sku": "STARBUCKS-TALL", "name": "Starbucks tall latte e-coupon", "type": "voucher",
         "program": "WLT", "price_points": 2500, "stock": VOUCHER_CODES, "per_member_limit": 5,
         "category": "coffee", "merchant": "starbucks", **window},
        {"sku": "JFB-POWERBANK", "name": "10,000 mAh power bank", "type": "physical", "program": "JFB",
         "price_points": 9900, "cash_price_minor": 1990, "currency": "CNY", "stock": 20,
         "per_member_limit": 1, "category": "electronics", **window},
        {"sku": "MU-LOUNGE", "name": "China Eastern lounge pass", "type": "service", "program": "MU",
         "price_points": 3000, "category": "travel", **window},
    ]  # fmt: skip


async def load_demo(db: Database, *, now: datetime | None = None) -> list[str]:
    now = now or datetime.now(UTC)
    specs = demo_rewards(now)
    async with db.driver() as conn, conn.transaction():
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM catalog.rewards)"):
            return []
        for spec in specs:
            row = await rewards.insert(conn, spec)
            assert row is not None
            if spec["type"] == "voucher":
                await codes.insert_codes(
                    conn, row["id"], [f"SBX-DEMO-{i:04d}" for i in range(1, VOUCHER_CODES + 1)]
                )
    return [f"Loaded demo rewards: {', '.join(s['sku'] for s in specs)}"]
