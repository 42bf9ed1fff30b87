"""The ledger's write path: the one home of every earn, burn, hold, capture, void, reversal,
transfer and adjustment.

Each operation is a single call of `ledger.execute` (migration 0002): one round trip, one
database transaction holding the postings, balances and the idempotency record together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from starlette.responses import Response

from ledger_service.metrics import LEDGER_OPERATIONS, LEDGER_POINTS
from ledger_service.postings.coalescer import Coalescer, Request
from services.auth import Principal
from services.db import Database
from services.errors import DomainError
from services.idempotency import REPLAYED_HEADER, canonical_json, fingerprint

log = logging.getLogger("jifen.ledger.engine")

_EXECUTE = (
    "SELECT status, body::text AS body, replayed FROM ledger.execute($1, $2, $3, $4, $5::jsonb, $6, $7)"
)
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


class LedgerBusy(DomainError):
    status, code = 503, "ledger_busy"


@dataclass(frozen=True)
class Outcome:
    status: int
    body: str
    replayed: bool

    def response(self) -> Response:
        headers = {REPLAYED_HEADER: "true"} if self.replayed else None
        return Response(self.body, status_code=self.status, media_type="application/json", headers=headers)

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data


def _lock_order(args: dict[str, Any]) -> tuple[str, str]:
    """Requests of a batch are applied sorted by the member they lock first, so two batches take
    member rows in the same order; requests found by id (hold, transaction) go last."""
    program = args.get("program")
    if program is not None:
        members = [
            m for m in (args.get("member_ref"), args.get("from_member_ref"), args.get("to_member_ref")) if m
        ]
        return (str(program), min(members) if members else "")
    return ("~", str(args.get("hold_id") or args.get("transaction_id") or ""))


class PostingEngine:
    """One write path for every caller: single requests, coalesced requests, sagas of the other
    services (over HTTP). With `coalesce` on, concurrent requests share database transactions."""

    def __init__(
        self, db: Database, *, coalesce: bool = True, window_s: float = 0.001, max_batch: int = 48
    ) -> None:
        self.db = db
        self.coalescer = (
            Coalescer(db, self._single, window_s=window_s, max_batch=max_batch, max_inflight=db.pool_size)
            if coalesce
            else None
        )

    async def _single(self, request: Request) -> tuple[int, str, bool]:
        async with self.db.driver() as conn:
            row = await conn.fetchrow(
                _EXECUTE,
                request.api_key_id,
                request.key,
                request.fingerprint,
                request.op,
                request.payload.decode(),
                request.programs,
                request.scopes,
            )
        assert row is not None
        return row["status"], row["body"], row["replayed"]

    async def execute(
        self,
        op: str,
        args: dict[str, Any],
        principal: Principal,
        key: str,
        derived: dict[str, Any] | None = None,
    ) -> Outcome:
        """Applies `op` once per (API key, idempotency key); raises DomainError for a refusal.

        `args` is the client's request (its fingerprint decides "same body"); `derived` adds what the
        service computed from it (points priced by the rules), which may differ on a retry."""
        canonical = canonical_json(args)
        request = Request(
            api_key_id=principal.key_id,
            key=key,
            fingerprint=fingerprint(op, canonical),
            op=op,
            payload=canonical if not derived else canonical_json({**args, **derived}),
            programs=principal.program_list(),
            scopes=sorted(principal.scopes),
            lock_order=_lock_order(args),
        )
        try:
            # Operations found by id (capture, void, reverse) join batches too: a batch with any
            # of them locks documents, then members, each by id, before applying (execute_batch).
            if self.coalescer is not None:
                status, body, replayed = await self.coalescer.submit(request)
            else:
                status, body, replayed = await self._single(request)
        except _RETRYABLE as exc:
            LEDGER_OPERATIONS.labels(op, "retryable").inc()
            log.warning("ledger operation hit a lock conflict", extra={"op": op, "error": repr(exc)})
            raise LedgerBusy(
                "The ledger could not apply this now; retry with the same Idempotency-Key.",
                headers={"Retry-After": "1"},
            ) from exc
        if status >= 400:
            problem = orjson.loads(body)
            LEDGER_OPERATIONS.labels(op, problem["code"]).inc()
            headers = {REPLAYED_HEADER: "true"} if replayed else {}
            if problem["code"] == "idempotency_key_in_use":
                headers["Retry-After"] = "1"
            raise DomainError(problem["detail"], code=problem["code"], status=status, headers=headers)
        LEDGER_OPERATIONS.labels(op, "replayed" if replayed else "applied").inc()
        if not replayed:
            points = (derived or args).get("points")
            if points is None and derived and "variants" in derived:  # priced by the ledger
                points = orjson.loads(body).get("points")
            if isinstance(points, int):
                LEDGER_POINTS.labels(op).inc(abs(points))
        return Outcome(status, body, replayed)
