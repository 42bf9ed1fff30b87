"""Background upkeep in every conversion process: drop idempotency keys past their retention and
quotes long expired (conversions keep their own copy of a quote's amounts and rate)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from conversion_service.conversions.service import IDEMPOTENCY
from conversion_service.quotes import repository as quotes
from services.db import Database

log = logging.getLogger("jifen.conversion.housekeeping")

EVERY_S = 3600.0
QUOTE_RETENTION_DAYS = 30
BATCH = 5000


class Housekeeper:
    def __init__(self, db: Database, *, retention_days: int) -> None:
        self.db = db
        self.retention_days = retention_days
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="conversion-housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> tuple[int, int]:
        async with self.db.driver() as conn:
            keys = await IDEMPOTENCY.purge(conn, self.retention_days)
        expired = 0
        while True:
            async with self.db.driver() as conn:
                n = await quotes.purge_expired(conn, QUOTE_RETENTION_DAYS, BATCH)
            expired += n
            if n < BATCH:
                return keys, expired

    async def _run(self) -> None:
        while True:
            try:
                keys, expired = await self.run_once()
                if keys or expired:
                    log.info("purged old records", extra={"idempotency_keys": keys, "quotes": expired})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping pass failed; will retry")
            await asyncio.sleep(EVERY_S)
