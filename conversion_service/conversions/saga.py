"""The conversion saga (DESIGN §5): debit the member in the source program, credit them in the target,
and reverse the debit if the credit can never succeed.

States, each stored (with a history event) before the step it announces:

    created -> debiting -> debited -> crediting -> completed
                  |                       |
                  v                       v
              rejected              compensating -> compensated
         (debit refused:                  |
          nothing moved)                  v
                                        failed (the reversal was refused: an operator must look)

Every ledger call carries a key derived from the conversion id (`conversion:{id}:debit|credit|compensate`)
and a body built only from the stored row, so repeating a step is always safe: the ledger replays.
- A 4xx from the ledger is final: a refused debit ends in `rejected`, a refused credit compensates.
- No answer (timeouts, connection errors, 5xx, after the client's own retries) leaves the state as it
  is and schedules a retry with exponential backoff (`next_attempt_at`); recovery picks it up.
- Each step starts under the row lock (SELECT ... FOR UPDATE) and takes a lease; a driver finds a
  conversion leased by another and leaves it alone, and recovery only takes conversions whose lease has
  run out, so a crashed driver's conversion resumes after `lease_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from conversion_service.conversions import repository
from conversion_service.conversions.schemas import TERMINAL_STATES
from conversion_service.metrics import CONVERSIONS_FINISHED, SAGA_STEPS
from conversion_service.settings import ConversionSettings
from services.db import Database
from services.ledger_client import LedgerClient, LedgerRejected, LedgerUnavailable

log = logging.getLogger("jifen.conversion.saga")

# state found -> (state to store before the call, if it changes; the step to run)
_STEPS: dict[str, tuple[str | None, str]] = {
    "created": ("debiting", "debit"),
    "debiting": (None, "debit"),
    "debited": ("crediting", "credit"),
    "crediting": (None, "credit"),
    "compensating": (None, "compensate"),
}
_IN_FLIGHT = {"debit": "debiting", "credit": "crediting", "compensate": "compensating"}
# (step, the ledger accepted it) -> the state stored with its outcome
_NEXT = {
    ("debit", True): "debited",
    ("debit", False): "rejected",
    ("credit", True): "completed",
    ("credit", False): "compensating",
    ("compensate", True): "compensated",
    ("compensate", False): "failed",
}


def new_owner(kind: str) -> str:
    return f"{kind}:{uuid.uuid4().hex}"


def ledger_key(conversion_id: UUID, step: str) -> str:
    return f"conversion:{conversion_id}:{step}"


def ledger_call(step: str, row: asyncpg.Record) -> tuple[str, dict[str, Any]]:
    """The ledger path and body of a step, from the stored row only (so every retry sends the same)."""
    cid = str(row["id"])
    if step == "debit":
        return "/v1/burn", {
            "program": row["from_program"],
            "member_ref": row["member_ref"],
            "points": row["from_points"],
            "reference": cid,
            "reason": f"conversion to {row['to_program']}",
            "clearing": "conversion",
            "metadata": {
                "conversion_id": cid,
                "to_program": row["to_program"],
                "fee_points": row["fee_points"],
            },
        }
    if step == "credit":
        return "/v1/earn", {
            "program": row["to_program"],
            "member_ref": row["member_ref"],
            "points": row["to_points"],
            "kind": "bonus",
            "reference": cid,
            "clearing": "conversion",
            "metadata": {"conversion_id": cid, "from_program": row["from_program"]},
        }
    assert step == "compensate" and row["debit_txn_id"] is not None
    return f"/v1/transactions/{row['debit_txn_id']}/reverse", {
        "points": row["from_points"],
        "reason": f"conversion {cid} compensated: {row['to_program']} refused the credit "
        f"({row['error_code']})",
    }


@dataclass(frozen=True)
class _Result:
    txn_id: UUID | None = None
    replayed: bool = False
    rejected: LedgerRejected | None = None
    unavailable: str | None = None


class ConversionSaga:
    def __init__(self, db: Database, ledger: LedgerClient, settings: ConversionSettings) -> None:
        self.db = db
        self.ledger = ledger
        self.settings = settings

    # --- recovery hooks (services.saga.SagaRecovery) ---------------------------------------------

    async def find_due(self, limit: int) -> list[UUID]:
        async with self.db.driver() as conn:
            return await repository.due(conn, limit)

    async def resume(self, conversion_id: UUID) -> None:
        await self.drive(conversion_id, new_owner("recovery"))

    # --- driving -----------------------------------------------------------------------------------

    async def drive(self, conversion_id: UUID, owner: str) -> None:
        """Advances the conversion as far as it goes now. Returns when it is finished, when the ledger
        could not be reached (a retry is scheduled), or when another driver holds its lease."""
        while True:
            started = await self._start_step(conversion_id, owner)
            if started is None:
                return
            step, row = started
            result = await self._call(step, row)
            if not await self._finish_step(conversion_id, owner, step, result):
                return

    async def _start_step(self, conversion_id: UUID, owner: str) -> tuple[str, asyncpg.Record] | None:
        async with self.db.driver() as conn, conn.transaction():
            row = await repository.lock(conn, conversion_id)
            if row is None or row["state"] in TERMINAL_STATES:
                return None
            if row["leased"] and row["lease_owner"] != owner:
                return None  # another driver is on it
            enter, step = _STEPS[row["state"]]
            state = enter or row["state"]
            row = await repository.advance(
                conn, conversion_id, state, owner=owner, lease_s=self.settings.lease_s, event=enter
            )
            return step, row

    async def _call(self, step: str, row: asyncpg.Record) -> _Result:
        path, body = ledger_call(step, row)
        try:
            reply = await self.ledger.post(path, body, key=ledger_key(row["id"], step))
        except LedgerRejected as exc:
            SAGA_STEPS.labels(step, "rejected").inc()
            return _Result(rejected=exc)
        except LedgerUnavailable as exc:
            SAGA_STEPS.labels(step, "unavailable").inc()
            return _Result(unavailable=str(exc))
        SAGA_STEPS.labels(step, "ok").inc()
        return _Result(txn_id=UUID(str(reply.body["id"])), replayed=reply.replayed)

    async def _finish_step(self, conversion_id: UUID, owner: str, step: str, result: _Result) -> bool:
        """Stores the step's outcome; True to go on with the next step."""
        lease_s = self.settings.lease_s
        async with self.db.driver() as conn, conn.transaction():
            row = await repository.lock(conn, conversion_id)
            if row is None or row["state"] != _IN_FLIGHT[step]:
                return True  # another driver recorded this step first (same key, same answer): re-read
            if result.unavailable is not None:
                delay = self._backoff(row["attempts"])
                detail = {"step": step, "error": result.unavailable, "retry_in_s": round(delay, 3)}
                await repository.retry_later(conn, conversion_id, delay, detail)
                log.warning(
                    "ledger unreachable; conversion step will be retried",
                    extra={"conversion": str(conversion_id), "step": step, "retry_in_s": round(delay, 3)},
                )
                return False
            rejected = result.rejected
            state = _NEXT[step, rejected is None]
            txn_field = {
                "debit": "debit_txn_id",
                "credit": "credit_txn_id",
                "compensate": "compensation_txn_id",
            }
            fields: dict[str, Any] = {}
            if rejected is None:
                fields[txn_field[step]] = result.txn_id
                detail = {"ledger_transaction_id": str(result.txn_id)}
                if result.replayed:
                    detail["replayed"] = True
            else:
                if step != "compensate":  # the refusal the conversion is about; a failed reversal is logged
                    fields["error"] = (rejected.status, rejected.code, rejected.detail)
                detail = {"status": rejected.status, "code": rejected.code, "detail": rejected.detail}
            await repository.advance(
                conn, conversion_id, state, owner=owner, lease_s=lease_s, event=state, detail=detail, **fields
            )
            if state in ("rejected", "compensated"):
                await self._release_daily(conn, row)
        if state == "failed":
            log.error(
                "the ledger refused to reverse a conversion's debit; an operator must settle it",
                extra={"conversion": str(conversion_id), "error": str(rejected)},
            )
        if state in TERMINAL_STATES:
            CONVERSIONS_FINISHED.labels(state).inc()
            return False
        if state == "debited":
            await self._after_debit()
        return True

    async def _release_daily(self, conn: asyncpg.Connection, row: asyncpg.Record) -> None:
        """Nothing moved in the end: give the points back to the member's daily limit."""
        if row["limit_day"] is not None:
            await repository.release_daily(
                conn,
                row["from_program"],
                row["to_program"],
                row["member_ref"],
                row["limit_day"],
                row["from_points"],
            )

    def _backoff(self, attempts: int) -> float:
        delay = min(self.settings.retry_max_s, self.settings.retry_base_s * 2 ** min(attempts, 30))
        return float(delay * (0.75 + 0.5 * random.random()))

    async def _after_debit(self) -> None:
        """TEST ONLY: the faults of JIFEN_CONVERSION_FAULT, right after the debit's state is stored."""
        fault = self.settings.fault
        if fault is None:
            return
        if fault == "crash_after_debit":
            log.warning("JIFEN_CONVERSION_FAULT=crash_after_debit: exiting now")
            os._exit(1)
        if fault.startswith("pause_after_debit:"):
            await asyncio.sleep(float(fault.split(":", 1)[1]))
