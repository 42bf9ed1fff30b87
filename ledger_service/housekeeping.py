"""Background work inside every ledger process, each on its own period:
release expired holds, sequence the event feed, deliver webhooks, expire lots, review tiers,
drop old idempotency keys.

Safe with several processes: holds and webhooks are claimed with SKIP LOCKED, the sequencer is
a single advisory-lock holder, expiry locks accounts, and each batch is one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ledger_service.batches.processor import BatchProcessor
from ledger_service.events.service import WebhookDeliverer, sequence
from ledger_service.jobs.service import run_expiry, run_tier_review
from services.db import Database
from services.settings import Settings

log = logging.getLogger("jifen.ledger.housekeeping")

SWEEP_BATCH = 1000
KEY_PURGE_BATCH = 5000


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
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.deliverer = WebhookDeliverer(db)
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: list[tuple[str, float, Callable[[], Awaitable[object]]]] = [
            ("holds", settings.hold_sweep_interval_s, lambda: expire_due_holds(db)),
            ("events", settings.event_sequence_interval_s, lambda: sequence(db)),
            ("webhooks", settings.webhook_interval_s, self.deliverer.run_once),
            ("expiry", settings.expiry_interval_s, lambda: run_expiry(db)),
            ("tiers", settings.tier_review_interval_s, lambda: run_tier_review(db)),
            (
                "batches",
                settings.batch_interval_s,
                BatchProcessor(db, earn_chunk=settings.batch_chunk_rows).run_once,
            ),
            ("keys", 3600.0, lambda: purge_idempotency_keys(db, settings.idempotency_retention_days)),
        ]

    def start(self) -> None:
        for name, interval, job in self._jobs:
            self._tasks.append(asyncio.create_task(self._every(name, interval, job), name=f"ledger-{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.deliverer.aclose()

    @staticmethod
    async def _every(name: str, interval: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                result = await job()
                if result:
                    log.debug("housekeeping", extra={"job": name, "result": str(result)})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping job failed; will retry", extra={"job": name})
            await asyncio.sleep(interval)
