"""Background work inside every ledger process, each on its own period:
release expired holds and due pending points, sequence the event feed, deliver webhooks, expire
lots, review tiers, drop old idempotency keys.

Safe with several processes: holds and webhooks are claimed with SKIP LOCKED, the sequencer is
a single advisory-lock holder, expiry locks accounts, and each batch is one transaction.
"""

from __future__ import annotations

import logging

from ledger_service.batches.processor import BatchProcessor
from ledger_service.events.service import WebhookDeliverer, sequence
from ledger_service.jobs.service import run_expiry, run_tier_review
from ledger_service.notices.service import run_notices
from ledger_service.profiles.service import run_profiles
from services.db import Database
from services.idempotency import purge_expired_keys
from services.periodic import Periodic
from services.settings import Settings

log = logging.getLogger("jifen.ledger.housekeeping")

SWEEP_BATCH = 1000


async def expire_due_holds(db: Database) -> int:
    """Expires every hold past its expiry; returns how many."""
    total = 0
    while True:
        async with db.driver() as conn:
            n: int = await conn.fetchval("SELECT ledger.expire_due_holds($1)", SWEEP_BATCH)
        total += n
        if n < SWEEP_BATCH:
            return total


async def release_due_pending(db: Database) -> int:
    """Releases pending points whose time has come, so accounts.pending stays current for readers
    (a debit releases its own member's lazily anyway); returns how many points."""
    total = 0
    while True:
        async with db.driver() as conn:
            n: int = await conn.fetchval("SELECT ledger.release_due_pending($1)", SWEEP_BATCH)
        total += n
        if n == 0:
            return total


class Housekeeper(Periodic):
    def __init__(self, db: Database, settings: Settings) -> None:
        self.deliverer = WebhookDeliverer(db)
        super().__init__(
            "ledger",
            [
                ("holds", settings.hold_sweep_interval_s, lambda: expire_due_holds(db)),
                ("pending", settings.pending_release_interval_s, lambda: release_due_pending(db)),
                ("events", settings.event_sequence_interval_s, lambda: sequence(db)),
                ("webhooks", settings.webhook_interval_s, self.deliverer.run_once),
                ("expiry", settings.expiry_interval_s, lambda: run_expiry(db)),
                ("tiers", settings.tier_review_interval_s, lambda: run_tier_review(db)),
                ("profiles", settings.profile_refresh_interval_s, lambda: run_profiles(db)),
                ("notices", settings.notice_interval_s, lambda: run_notices(db)),
                (
                    "batches",
                    settings.batch_interval_s,
                    BatchProcessor(
                        db,
                        earn_chunk=settings.batch_chunk_rows,
                        workers=settings.batch_workers,
                        parts=settings.batch_partitions,
                    ).run_once,
                ),
                (
                    "keys",
                    3600.0,
                    lambda: purge_expired_keys(db, "ledger", settings.idempotency_retention_days),
                ),
            ],
        )

    async def stop(self) -> None:
        await super().stop()
        await self.deliverer.aclose()
