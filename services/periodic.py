"""Background jobs of a service process, each on its own period. A job that fails is logged and
run again at its next period; stopping cancels them all. Every service's housekeeping uses it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

log = logging.getLogger("jifen.periodic")

Job = tuple[str, float, Callable[[], Awaitable[object]]]  # name, interval in seconds, the work


async def cancel_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancels background tasks, then waits for each to end (all cancelled first: none waits on another)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Periodic:
    def __init__(self, service: str, jobs: Sequence[Job]) -> None:
        self.service = service
        self.jobs = list(jobs)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for name, interval, job in self.jobs:
            self._tasks.append(
                asyncio.create_task(self._every(name, interval, job), name=f"{self.service}-{name}")
            )

    async def stop(self) -> None:
        await cancel_tasks(self._tasks)
        self._tasks.clear()

    async def _every(self, name: str, interval: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                result = await job()
                if result:
                    log.debug(
                        "housekeeping", extra={"service": self.service, "job": name, "result": str(result)}
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "housekeeping job failed; will retry", extra={"service": self.service, "job": name}
                )
            await asyncio.sleep(interval)
