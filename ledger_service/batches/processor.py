"""The background processor of batches: claims a batch with a lease (so one process drives it),
then posts its earn rows by member partition, `workers` partitions at once, each chunk of a
partition one database transaction that also moves that partition's cursor, so a restart (or
another worker, after one died mid-chunk) resumes exactly where the last commit left off. The
driver posts the reverse rows behind them, up to where every partition has got to."""

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
WORKERS = 2
PARTS = 4
FOLLOW_INTERVAL_S = 0.1
REVERSAL_CHUNK = 50  # each reversal is a subtransaction; stay under PostgreSQL's cache of 64
_COUNTS = ("rows", "posted", "duplicates", "rejected", "points_posted")
# A chunk that lost a lock conflict with another writer (PostgreSQL rolled it back) is posted again.
_RETRY = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


class BatchProcessor:
    def __init__(
        self, db: Database, *, earn_chunk: int = EARN_CHUNK, workers: int = WORKERS, parts: int = PARTS
    ) -> None:
        self.db = db
        self.earn_chunk = earn_chunk  # rows of one partition per transaction, about
        self.workers = max(1, workers)
        self.parts = max(parts, self.workers)  # at least one partition per worker

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
            try:
                done = await repository.process_reversals(conn, batch_id, after, until, REVERSAL_CHUNK)
            except _RETRY as exc:
                log.warning(f"batch reversals retried: {exc}", extra={"batch": str(batch_id)})
                continue
            after = done["next_after"]
            if done["rows_done"] < REVERSAL_CHUNK:
                return

    async def _post_parts(self, batch_id: UUID, parts: int) -> None:
        """One worker: chunks of whichever partition is free, until every staged line of the file is
        posted. Each partition's rows are `1 / parts` of its lines."""
        lines = self.earn_chunk * parts
        async with self.db.driver() as conn:
            while True:
                try:
                    done = await repository.process_part(conn, batch_id, lines)
                except _RETRY as exc:
                    log.warning(f"batch chunk retried: {exc}", extra={"batch": str(batch_id)})
                    continue
                if done["part"] is not None:
                    continue
                b = await repository.progress(conn, batch_id)
                if b["status"] == "failed" or b["stage"] != "earns":
                    return
                if b["status"] != "receiving" and b["next_line"] >= b["staged"]:
                    return
                # The upload is still arriving, or the partitions left are another worker's.
                await asyncio.sleep(FOLLOW_INTERVAL_S)

    async def _process(self, batch_id: UUID) -> bool:
        """Posts what is staged; returns True once the batch is complete. While the upload is
        still arriving it follows it, posting each staged chunk, until the last line."""
        async with self.db.driver() as conn:
            b = await repository.progress(conn, batch_id)
            if b["status"] == "failed" or b["stage"] == "done":
                return False
            parts = await repository.init_parts(conn, batch_id, self.parts)
        async with asyncio.TaskGroup() as group:
            for _ in range(self.workers if b["stage"] == "earns" else 0):
                group.create_task(self._post_parts(batch_id, parts))
            driven = group.create_task(self._drive(batch_id))
        return driven.result()

    async def _drive(self, batch_id: UUID) -> bool:
        """The reverse rows behind the partitions, the stages, the lease and the completion."""
        async with self.db.driver() as conn:
            while True:
                b = await repository.progress(conn, batch_id)
                if b["status"] == "failed" or b["stage"] == "done":
                    return False
                if b["stage"] == "earns":
                    if b["reversals_after"] < b["next_line"]:
                        await self._reversals(conn, batch_id, b["reversals_after"], b["next_line"])
                        continue
                    if b["status"] == "receiving" or b["next_line"] < b["staged"]:
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
