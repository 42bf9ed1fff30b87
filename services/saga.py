"""Resuming sagas: every service with multi-step work across HTTP (conversions, redemptions) keeps
each saga's state in its own table and lets this runner pick unfinished ones up on start-up and on
a schedule, so a crash between two steps never leaves a saga stranded.

The service supplies two coroutines: `find_due(limit)` returns ids of unfinished sagas that are due
(not being driven by a live request, e.g. `updated_at` older than a lease), and `resume(id)` drives one
saga forward by one or more steps; `resume` must be safe to call twice at once for the same saga
(take a row lock, re-read the state) and its ledger calls carry keys derived from the saga id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("jifen.saga")

Id = TypeVar("Id")


class SagaRecovery(Generic[Id]):
    def __init__(
        self,
        name: str,
        find_due: Callable[[int], Awaitable[Sequence[Id]]],
        resume: Callable[[Id], Awaitable[None]],
        *,
        interval_s: float = 2.0,
        batch: int = 100,
        concurrency: int = 8,
    ) -> None:
        self.name = name
        self.find_due = find_due
        self.resume = resume
        self.interval_s = interval_s
        self.batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"saga-recovery-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> int:
        """Resumes every due saga once; returns how many were attempted."""
        ids = await self.find_due(self.batch)

        async def one(saga_id: Id) -> None:
            async with self._limit:
                try:
                    await self.resume(saga_id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception(
                        "resuming saga failed; will retry", extra={"saga": self.name, "id": str(saga_id)}
                    )

        await asyncio.gather(*(one(i) for i in ids))
        return len(ids)

    async def _loop(self) -> None:
        while True:
            try:
                n = await self.run_once()
                if n:
                    log.info("resumed sagas", extra={"saga": self.name, "count": n})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("saga recovery pass failed", extra={"saga": self.name})
            await asyncio.sleep(self.interval_s)
