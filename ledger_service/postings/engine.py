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

from services.auth import Principal
from services.db import Database
from services.errors import DomainError
from services.idempotency import REPLAYED_HEADER, canonical_json, fingerprint
from services.metrics import LEDGER_OPERATIONS, LEDGER_POINTS

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


class PostingEngine:
    def __init__(self, db: Database) -> None:
        self.db = db

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
        payload = canonical if not derived else canonical_json({**args, **derived})
        try:
            async with self.db.driver() as conn:
                row = await conn.fetchrow(
                    _EXECUTE,
                    principal.key_id,
                    key,
                    fingerprint(op, canonical),
                    op,
                    payload.decode(),
                    principal.program_list(),
                    sorted(principal.scopes),
                )
        except _RETRYABLE as exc:
            LEDGER_OPERATIONS.labels(op, "retryable").inc()
            log.warning("ledger operation hit a lock conflict", extra={"op": op, "error": repr(exc)})
            raise LedgerBusy(
                "The ledger could not apply this now; retry with the same Idempotency-Key.",
                headers={"Retry-After": "1"},
            ) from exc
        assert row is not None
        status: int = row["status"]
        body: str = row["body"]
        replayed: bool = row["replayed"]
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
            if isinstance(points, int):
                LEDGER_POINTS.labels(op).inc(abs(points))
        return Outcome(status, body, replayed)
