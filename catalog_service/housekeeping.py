"""Background work in every catalog process: drop Idempotency-Keys past their retention (30 days
at least, DESIGN §3). Safe with several processes: each batch is one statement."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from catalog_service.redemptions.repository import purge_idempotency_keys
from services.db import Database

log = logging.getLogger("jifen.catalog.housekeeping")

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


class Housekeeper:
    def __init__(self, db: Database, *, retention_days: int, interval_s: float = PURGE_EVERY_S) -> None:
        self.db = db
        self.retention_days = retention_days
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="catalog-housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                purged = await purge_keys(self.db, self.retention_days)
                if purged:
                    log.info("purged idempotency keys", extra={"keys": purged})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping pass failed; will retry")
            await asyncio.sleep(self.interval_s)
