"""Background work inside every ledger process: release expired holds, drop old idempotency keys.

Safe with several processes: the hold sweep uses SKIP LOCKED and each batch is one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.db import Database

log = logging.getLogger("jifen.ledger.housekeeping")

SWEEP_BATCH = 1000
KEY_PURGE_BATCH = 5000
KEY_PURGE_EVERY_S = 3600.0


async def expire_due_holds(db: Database) -> int:
    """Expires every hold past its expiry; returns how many."""
    total = 0
    while True:
        async with db.driver() as conn:
            n: int = await conn.fetchval("SELECT ledger.expire_due_holds($1)", SWEEP_BATCH)
        total += n
        if n < SWEEP_BATCH:
            return total


async def purge_idempotency_keys(db: Database, retention_days: int) -> int:
    total = 0
    while True:
        async with db.driver() as conn:
            status: str = await conn.execute(
                """DELETE FROM ledger.idempotency_keys WHERE ctid = ANY (ARRAY(
                       SELECT ctid FROM ledger.idempotency_keys
                       WHERE created_at < now() - make_interval(days => $1) LIMIT $2))""",
                retention_days,
                KEY_PURGE_BATCH,
            )
        n = int(status.rsplit(maxsplit=1)[-1])
        total += n
        if n < KEY_PURGE_BATCH:
            return total


class Housekeeper:
    def __init__(self, db: Database, *, sweep_interval_s: float, retention_days: int) -> None:
        self.db = db
        self.sweep_interval_s = sweep_interval_s
        self.retention_days = retention_days
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        since_purge = KEY_PURGE_EVERY_S
        while True:
            try:
                expired = await expire_due_holds(self.db)
                if expired:
                    log.info("released expired holds", extra={"holds": expired})
                if since_purge >= KEY_PURGE_EVERY_S:
                    since_purge = 0.0
                    purged = await purge_idempotency_keys(self.db, self.retention_days)
                    if purged:
                        log.info("purged idempotency keys", extra={"keys": purged})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping pass failed; will retry")
            await asyncio.sleep(self.sweep_interval_s)
            since_purge += self.sweep_interval_s
