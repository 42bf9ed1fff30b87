"""Demo exchange rates between the demo programs, loaded by `jifen run` into a conversion service
without any rate (so a restart, or a service in real use, is left as it is)."""

from __future__ import annotations

from conversion_service.rates import repository
from services.db import Database

# (from, to, from_points, to_points, fee_bps, min_from_points): 5 WLT -> 1 JFB with 2% (DESIGN §5).
DEMO_RATES = (
    ("WLT", "JFB", 5, 1, 200, 1000),
    ("JFB", "WLT", 1, 4, 300, 100),
    ("JFB", "CAIBEI", 1, 1, 100, 100),
    ("CAIBEI", "JFB", 1, 1, 100, 100),
    ("BOC", "MU", 25, 1, 0, 2500),
    ("BOC", "WLT", 2, 1, 100, 1000),
)


async def load_demo(db: Database) -> list[str]:
    async with db.driver() as conn, conn.transaction():
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM conversion.rates)"):
            return []
        for from_program, to_program, from_points, to_points, fee_bps, min_from in DEMO_RATES:
            await repository.insert(
                conn,
                from_program=from_program,
                to_program=to_program,
                from_points=from_points,
                to_points=to_points,
                fee_bps=fee_bps,
                min_from_points=min_from,
                daily_limit_from_points=None,
                effective_from=None,
                api_key_id=0,  # the demo loader, not an API key
            )
    return [f"Loaded demo rates: {', '.join(f'{f}->{t}' for f, t, *_ in DEMO_RATES)}"]
