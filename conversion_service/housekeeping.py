"""Background upkeep in every conversion process: drop idempotency keys past their retention and
quotes long expired (conversions keep their own copy of a quote's amounts and rate)."""

from __future__ import annotations

from conversion_service.quotes import repository as quotes
from services.db import Database
from services.idempotency import purge_expired_keys
from services.periodic import Periodic

EVERY_S = 3600.0
QUOTE_RETENTION_DAYS = 30
BATCH = 5000


class Housekeeper(Periodic):
    def __init__(self, db: Database, *, retention_days: int) -> None:
        self.db = db
        self.retention_days = retention_days
        super().__init__("conversion", [("purge", EVERY_S, self.run_once)])

    async def run_once(self) -> tuple[int, int]:
        keys = await purge_expired_keys(self.db, "conversion", self.retention_days)
        expired = 0
        while True:
            async with self.db.driver() as conn:
                n = await quotes.purge_expired(conn, QUOTE_RETENTION_DAYS, BATCH)
            expired += n
            if n < BATCH:
                return keys, expired
