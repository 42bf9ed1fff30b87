"""The background processor of batches: claims a batch with a lease (so one process works on it),
posts its earn rows in chunks, then its reversals, each chunk one database transaction that also
moves the batch's cursor, so a restart resumes exactly where the last commit left off."""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import asyncpg

from ledger_service.batches import repository
from ledger_service.metrics import LEDGER_OPERATIONS
from services.db import Database

log = logging.getLogger("jifen.ledger.batches")

EARN_CHUNK = 20_000
FOLLOW_INTERVAL_S = 0.1
REVERSAL_CHUNK = 50  # each reversal is a subtransaction; stay under PostgreSQL's cache of 64
_COUNTS = ("rows", "posted", "duplicates", "rejected", "points_posted")


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
                batch_id = await repository.claim(conn)
            if batch_id is None:
                return finished
            if await self._process(batch_id):
                finished += 1

    @staticmethod
    async def _reversals(conn: asyncpg.Connection, batch_id: UUID, after: int, until: int) -> None:
        """The reverse rows up to line `until`, after the earns they may refer to."""
        while True:
            done = await repository.process_reversals(conn, batch_id, after, until, REVERSAL_CHUNK)
            after = done["next_after"]
            if done["rows_done"] < REVERSAL_CHUNK:
                return

    async def _process(self, batch_id: UUID) -> bool:
        """Posts what is staged; returns True once the batch is complete. While the upload is
        still arriving it follows it, posting each staged chunk, until the last line."""
        async with self.db.driver() as conn:
            while True:
                b = await repository.progress(conn, batch_id)
                if b["status"] == "failed" or b["stage"] == "done":
                    return False
                if b["stage"] == "earns":
                    if b["next_line"] < b["staged"]:
                        end = min(b["next_line"] + self.earn_chunk, b["staged"])
                        await repository.process_earns(conn, batch_id, b["next_line"], end)
                        await self._reversals(conn, batch_id, b["reversals_after"], end)
                        continue
                    if b["status"] == "receiving":
                        await repository.renew(conn, batch_id)
                        await asyncio.sleep(FOLLOW_INTERVAL_S)
                        continue
                    await repository.set_stage(conn, batch_id, "reversals")
                    continue
                await repository.renew(conn, batch_id)
                await self._reversals(conn, batch_id, b["reversals_after"], b["last_line"])
                if not await repository.complete(conn, batch_id):
                    # A second processor (this one's lease ran out during a stall) is on the reverse
                    # rows; the chunk functions apply each part once, so follow until it is done.
                    await asyncio.sleep(FOLLOW_INTERVAL_S)
                    continue
                LEDGER_OPERATIONS.labels("batch", "completed").inc()
                done = await repository.progress(conn, batch_id)
                log.info(
                    f"batch completed: {done['rows']:,} rows, {done['posted']:,} posted, "
                    f"{done['duplicates']:,} duplicates, {done['rejected']:,} rejected",
                    extra={"batch": str(batch_id), **{k: done[k] for k in _COUNTS}},
                )
                return True
