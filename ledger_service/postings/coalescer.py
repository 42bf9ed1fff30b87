"""Group commit for the ledger's write path.

Concurrent requests in one process are gathered for at most `window_s` (or until `max_batch`)
and applied by `ledger.execute_batch` as one database transaction: one round trip and one WAL
flush for the lot, while each request keeps its own idempotency record, result and error.

Batching adapts to load: at most `max_inflight` batches run at once; while they do, new requests
queue, and a worker that finishes takes whatever has queued without waiting. A batch that fails
as a whole (a deadlock between two batches, a dropped connection) is retried one request at a
time, each its own transaction, so one request's trouble never becomes its neighbours' error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from ledger_service.metrics import LEDGER_BATCH_SIZE
from services.db import Database

log = logging.getLogger("jifen.ledger.coalescer")

_BATCH = "SELECT i, status, body, replayed FROM ledger.execute_batch($1::jsonb)"
ROOM_SHORT = "JF001"  # raised by ledger.take_partner_rooms


@dataclass(frozen=True)
class Request:
    api_key_id: int
    key: str
    fingerprint: bytes
    op: str
    payload: bytes  # canonical JSON of the arguments
    programs: list[str] | None
    scopes: list[str]
    lock_order: tuple[str, str]  # batches apply requests in this order, so batches lock alike

    def as_json(self) -> dict[str, Any]:
        return {
            "k": self.api_key_id,
            "key": self.key,
            "h": self.fingerprint.hex(),
            "op": self.op,
            "a": orjson.Fragment(self.payload),
            "p": self.programs,
            "s": self.scopes,
        }


Result = tuple[int, str, bool]  # status, body, replayed
Single = Callable[[Request], Awaitable[Result]]


@dataclass
class _Pending:
    request: Request
    future: asyncio.Future[Result] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Coalescer:
    def __init__(
        self,
        db: Database,
        single: Single,
        *,
        window_s: float = 0.001,
        max_batch: int = 48,
        max_inflight: int = 8,
    ) -> None:
        # max_batch stays below 64: each request is a subtransaction, and more than 64 per
        # transaction overflow PostgreSQL's per-backend subtransaction cache.
        self.db = db
        self.single = single
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: list[_Pending] = []
        self._workers = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, request: Request) -> Result:
        pending = _Pending(request)
        self._queue.append(pending)
        self._kick()
        return await pending.future

    def _kick(self) -> None:
        if not self._queue or self._workers >= self.max_inflight:
            return
        if len(self._queue) >= self.max_batch or self.window_s <= 0:
            self._spawn()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._queue and self._workers < self.max_inflight:
            self._spawn()

    def _spawn(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._workers += 1
        task = asyncio.create_task(self._work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._apply(batch)
        finally:
            self._workers -= 1
            self._kick()

    async def _apply(self, batch: list[_Pending]) -> None:
        LEDGER_BATCH_SIZE.observe(len(batch))
        # A lone earn goes the batch's way too: at a checked partner that is the path that takes from a
        # slot's room instead of locking the partner (ledger.take_partner_rooms).
        if len(batch) == 1 and batch[0].request.op != "earn":
            await self._one(batch[0])
            return
        ordered = sorted(batch, key=lambda p: p.request.lock_order)
        body = orjson.dumps([p.request.as_json() for p in ordered]).decode()
        try:
            async with self.db.driver() as conn:
                rows = await conn.fetch(_BATCH, body)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            # JF001: a partner's room on the connection's slot did not cover the batch, an expected
            # turn to the exact check (ledger.take_partner_rooms), not a fault.
            level = logging.INFO if getattr(exc, "sqlstate", None) == ROOM_SHORT else logging.WARNING
            log.log(
                level,
                "batch failed as a whole; retrying one by one",
                extra={"size": len(batch), "error": repr(exc)},
            )
            await asyncio.gather(*(self._one(p) for p in ordered))
            return
        except BaseException as exc:
            for p in ordered:
                if not p.future.done():
                    p.future.set_exception(exc)
            raise
        for row in rows:
            pending = ordered[row["i"]]
            if not pending.future.done():
                pending.future.set_result((row["status"], row["body"], row["replayed"]))

    async def _one(self, pending: _Pending) -> None:
        try:
            result = await self.single(pending.request)
        except BaseException as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not pending.future.done():
                pending.future.set_result(result)
