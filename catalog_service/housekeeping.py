"""Background work in every catalog process: drop Idempotency-Keys past their retention (30 days
at least, DESIGN §3). Safe with several processes: each batch is one statement."""

from __future__ import annotations

from catalog_service.redemptions.repository import purge_idempotency_keys
from services.db import Database
from services.periodic import Periodic

PURGE_BATCH = 5000
PURGE_EVERY_S = 3600.0


async def purge_keys(db: Database, retention_days: int) -> int:
    total = 0
    while True:
        async with db.driver() as conn:
            n = await purge_idempotency_keys(conn, retention_days, PURGE_BATCH)
        total += n
        if n < PURGE_BATCH:
            return total


class Housekeeper(Periodic):
    def __init__(self, db: Database, *, retention_days: int, interval_s: float = PURGE_EVERY_S) -> None:
        super().__init__("catalog", [("keys", interval_s, lambda: purge_keys(db, retention_days))])
