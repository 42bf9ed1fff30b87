"""The background processor of batches: claims a batch with a lease (so one process works on it),
posts its earn rows in chunks, then its reversals, each chunk one database transaction that also
moves the batch's cursor, so a restart resumes exactly where the last commit left off."""

from __future__ import annotations

import logging

import asyncpg

from ledger_service.batches import repository
from services.db import Database
from services.metrics import LEDGER_OPERATIONS

log = logging.getLogger("jifen.ledger.batches")

EARN_CHUNK = 20_000
REVERSAL_CHUNK = 50  # each reversal is a subtransaction; stay under PostgreSQL's cache of 64


class BatchProcessor:
    def __init__(self, db: Database, *, earn_chunk: int = EARN_CHUNK) -> None:
        self.db = db
        self.earn_chunk = earn_chunk

    async def run_once(self) -> int:
        """Processes every batch that is due; returns how many were finished."""
        finished = 0
        async with self.db.driver() as conn:
            await repository.fail_stale_uploads(conn)
        while True:
            async with self.db.driver() as conn:
                batch = await repository.claim(conn)
            if batch is None:
                return finished
            await self._process(batch)
            finished += 1

    async def _process(self, batch: asyncpg.Record) -> None:
        batch_id, rows = batch["id"], int(batch["rows"])
        stage, cursor, reversals_after = (
            batch["stage"],
            int(batch["next_line"]),
            int(batch["reversals_after"]),
        )
        async with self.db.driver() as conn:
            if stage == "earns":
                while cursor < rows:
                    end = min(cursor + self.earn_chunk, rows)
                    await repository.process_earns(conn, batch_id, cursor, end)
                    cursor = end
                await repository.set_stage(conn, batch_id, "reversals")
            while True:
                done = await repository.process_reversals(conn, batch_id, reversals_after, REVERSAL_CHUNK)
                reversals_after = done["next_after"]
                if done["rows_done"] < REVERSAL_CHUNK:
                    break
            await repository.complete(conn, batch_id)
        LEDGER_OPERATIONS.labels("batch", "completed").inc()
        log.info("batch completed", extra={"batch": str(batch_id), "rows": rows})
