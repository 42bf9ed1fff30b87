"""The redemption saga: stored state, one ledger call per step, compensation, resumption.

    debiting --burn posted--------------------------> fulfilled --cancel--> cancelling --refund--> cancelled
        |  \\--burn refused (e.g. insufficient_points): release stock, allowance, codes --> failed
        \\----ledger unreachable (outcome unknown): release at once --> refunding --> failed
                                    (the burn is replayed with its key to learn its outcome; a posted
                                     burn is then reversed with the refund key)

Every state is stored (with an event) before the step that follows it, in the transaction that also
moves stock, allowance and codes, under the redemption's row lock; a step applies only if the row is
still in the state it started from, so two drivers of one saga (a live request and recovery after a
lease ran out) can never both apply it. Ledger calls carry keys derived from the redemption id:
`redemption:{id}:debit` for the burn, `redemption:{id}:refund` for its reversal (the same key and body
for a failed saga's compensation and for a cancel, so a debit is refunded at most once).

The process driving a saga holds a lease (`lease_until`); saga recovery resumes unfinished sagas whose
lease ran out, i.e. whose process died. When a saga ends, the answer its Idempotency-Key replays is
written in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg

from catalog_service.common import Answer, problem
from catalog_service.faults import Faults
from catalog_service.metrics import SAGA_TRANSITIONS
from catalog_service.redemptions import repository
from catalog_service.redemptions.schemas import redemption_json
from services.db import Database
from services.ledger_client import LedgerClient, LedgerRejected, LedgerUnavailable

log = logging.getLogger("jifen.catalog.saga")

REFUND_REJECTED_RETRY_S = 300.0
MAX_STEPS = 8

# A step's transaction; returns the final answer it recorded for an Idempotency-Key, if any.
Step = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable[Answer | None]]
# (the saga moved, so drive on; the final answer this driver recorded, if any)
Progress = tuple[bool, Answer | None]


def debit_key(redemption_id: UUID) -> str:
    return f"redemption:{redemption_id}:debit"


def refund_key(redemption_id: UUID) -> str:
    return f"redemption:{redemption_id}:refund"


def burn_body(row: asyncpg.Record) -> dict[str, Any]:
    """Built only from stored fields: a retry sends exactly the same body under the same key."""
    return {
        "program": row["program"],
        "member_ref": row["member_ref"],
        "points": row["points"],
        "reference": str(row["id"]),
        "reason": f"redemption of {row['sku']} x{row['quantity']}",
        "metadata": {"sku": row["sku"], "quantity": row["quantity"]},
    }


def refund_body(redemption_id: UUID) -> dict[str, Any]:
    return {"reason": f"refund of redemption {redemption_id}"}


class RedemptionSaga:
    def __init__(
        self, db: Database, ledger: LedgerClient, *, lease_s: float, retry_s: float, faults: Faults
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.lease_s = lease_s
        self.retry_s = retry_s
        self.faults = faults

    # --- recovery -------------------------------------------------------------------------------------

    async def find_due(self, limit: int) -> list[UUID]:
        async with self.db.driver() as conn:
            return await repository.due(conn, limit)

    async def resume(self, redemption_id: UUID) -> None:
        await self.claim_and_drive(redemption_id)

    async def claim_and_drive(self, redemption_id: UUID) -> bool:
        """Drives a saga whose lease ran out; False if another process holds it (or it is finished)."""
        async with self.db.driver() as conn:
            claimed = await repository.claim_lease(conn, redemption_id, self.lease_s)
        if claimed:
            log.info("resuming redemption", extra={"redemption_id": str(redemption_id)})
            await self.drive(redemption_id)
        return claimed

    # --- driving --------------------------------------------------------------------------------------

    async def drive(self, redemption_id: UUID, row: asyncpg.Record | None = None) -> Answer | None:
        """Advances the saga until it finishes or must wait (the ledger is unreachable). Returns the
        final answer this call recorded for the operation's Idempotency-Key, if it recorded one.
        `row`: the redemption as the caller just wrote it, which saves reading it again."""
        answer: Answer | None = None
        for _ in range(MAX_STEPS):
            if row is None:
                async with self.db.driver() as conn:
                    row = await repository.get(conn, redemption_id)
                if row is None:
                    return answer
            status = row["status"]
            if status == "debiting":
                more, recorded = await self._debit(row)
            elif status == "refunding":
                more, recorded = await self._settle_refund(row)
            elif status == "cancelling":
                more, recorded = await self._refund_cancel(row)
            else:
                return answer
            answer = recorded or answer
            if not more:
                return answer
            row = None
        return answer

    async def _apply(self, redemption_id: UUID, expected: str, step: Step) -> Progress:
        """Runs `step` in one transaction under the row lock, if the saga is still in `expected`."""
        async with self.db.driver() as conn, conn.transaction():
            row = await repository.lock(conn, redemption_id)
            if row is None or row["status"] != expected:
                log.info(
                    "saga step skipped: another driver moved it",
                    extra={"redemption_id": str(redemption_id), "expected": expected},
                )
                return False, None
            return True, await step(conn, row)

    async def _park(self, redemption_id: UUID, delay_s: float, event: dict[str, Any] | None = None) -> None:
        async with self.db.driver() as conn, conn.transaction():
            await repository.park(conn, redemption_id, delay_s)
            if event is not None:
                row = await repository.get(conn, redemption_id)
                assert row is not None
                await repository.add_event(conn, redemption_id, row["status"], event.pop("event"), event)

    # --- debiting -------------------------------------------------------------------------------------

    async def _debit(self, row: asyncpg.Record) -> Progress:
        rid: UUID = row["id"]
        self.faults.hit("crash_before_debit", row["member_ref"])
        try:
            reply = await self.ledger.post("/v1/burn", burn_body(row), key=debit_key(rid))
        except LedgerRejected as exc:
            return await self._apply(rid, "debiting", self._debit_refused(exc))
        except LedgerUnavailable as exc:
            log.warning(
                "debit outcome unknown; undoing", extra={"redemption_id": str(rid), "error": str(exc)}
            )
            _, answer = await self._apply(rid, "debiting", self._debit_unknown(str(exc)))
            return False, answer
        self.faults.hit("crash_after_debit", row["member_ref"])
        return await self._apply(rid, "debiting", self._fulfil(UUID(str(reply.body["id"])), reply.replayed))

    def _fulfil(self, burn_txn_id: UUID, replayed: bool) -> Step:
        async def step(conn: asyncpg.Connection, row: asyncpg.Record) -> Answer:
            rid = row["id"]
            codes = await repository.issue_codes(conn, rid)
            new = await repository.set_state(conn, rid, "fulfilled", burn_txn_id=burn_txn_id, fulfilled=True)
            debited = {"burn_transaction_id": str(burn_txn_id), "replayed": replayed}
            await repository.add_events(
                conn,
                rid,
                [("debiting", "debited", debited), ("fulfilled", "fulfilled", {"voucher_codes": len(codes)})],
            )
            answer = Answer(201, redemption_json(new, codes))
            await repository.record_final(
                conn, row["api_key_id"], row["idempotency_key"], answer.status, answer.body
            )
            SAGA_TRANSITIONS.labels("fulfilled").inc()
            return answer

        return step

    def _debit_refused(self, exc: LedgerRejected) -> Step:
        """The ledger refused the burn for good: nothing was debited; release everything."""
        if exc.code == "insufficient_points":
            status, code, detail = 422, "insufficient_points", exc.detail
        else:
            status, code = 502, "ledger_rejected"
            detail = f"The ledger refused the debit: {exc.code}: {exc.detail}"

        async def step(conn: asyncpg.Connection, row: asyncpg.Record) -> Answer:
            rid = row["id"]
            await repository.return_stock_and_allowance(conn, row)
            await repository.release_reserved_codes(conn, rid)
            new = await repository.set_state(
                conn, rid, "failed", failure_code=code, failure_detail=detail, finished=True
            )
            await repository.add_event(
                conn, rid, "failed", "debit_refused", {"ledger_status": exc.status, "ledger_code": exc.code}
            )
            answer = Answer(
                status,
                problem(status, code, detail, redemption_id=str(rid), redemption=redemption_json(new, [])),
            )
            await repository.record_final(
                conn, row["api_key_id"], row["idempotency_key"], answer.status, answer.body
            )
            SAGA_TRANSITIONS.labels("failed").inc()
            return answer

        return step

    def _debit_unknown(self, error: str) -> Step:
        """The burn may or may not have been posted. The redemption will not be fulfilled: release stock,
        allowance and codes now; the refunding step settles the burn once the ledger answers."""
        detail = (
            "The ledger could not be reached, so the redemption was not completed and its stock was "
            "released; any points taken are refunded automatically. Retry with a new Idempotency-Key."
        )

        async def step(conn: asyncpg.Connection, row: asyncpg.Record) -> Answer:
            rid = row["id"]
            await repository.return_stock_and_allowance(conn, row)
            await repository.release_reserved_codes(conn, rid)
            new = await repository.set_state(
                conn,
                rid,
                "refunding",
                lease_s=self.retry_s,
                failure_code="ledger_unavailable",
                failure_detail="The ledger could not be reached during the debit.",
            )
            await repository.add_event(conn, rid, "refunding", "debit_unknown", {"error": error[:500]})
            answer = Answer(
                503,
                problem(
                    503,
                    "ledger_unavailable",
                    detail,
                    redemption_id=str(rid),
                    redemption=redemption_json(new, []),
                ),
            )
            await repository.record_final(
                conn, row["api_key_id"], row["idempotency_key"], answer.status, answer.body
            )
            SAGA_TRANSITIONS.labels("refunding").inc()
            return answer

        return step

    # --- refunding (compensation) ---------------------------------------------------------------------

    async def _settle_refund(self, row: asyncpg.Record) -> Progress:
        """refunding: learn whether the burn was posted (replaying it under its key), then reverse it."""
        rid: UUID = row["id"]
        burn_txn_id: UUID | None = row["burn_txn_id"]
        if burn_txn_id is None:
            try:
                reply = await self.ledger.post("/v1/burn", burn_body(row), key=debit_key(rid))
            except LedgerRejected as exc:
                return await self._apply(rid, "refunding", self._nothing_debited(exc))
            except LedgerUnavailable:
                await self._park(rid, self.retry_s)
                return False, None
            settled = UUID(str(reply.body["id"]))
            burn_txn_id = settled

            async def resolved(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
                await repository.set_state(conn, row["id"], "refunding", burn_txn_id=settled)
                detail = {"burn_transaction_id": str(settled), "replayed": reply.replayed}
                await repository.add_event(conn, row["id"], "refunding", "debit_resolved", detail)

            moved, _ = await self._apply(rid, "refunding", resolved)
            if not moved:
                return False, None
        refund_txn_id = await self._refund(row, burn_txn_id)
        if refund_txn_id is None:
            return False, None

        async def refunded(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
            await repository.set_state(conn, row["id"], "failed", refund_txn_id=refund_txn_id, finished=True)
            detail = {"refund_transaction_id": str(refund_txn_id)}
            await repository.add_event(conn, row["id"], "failed", "refunded", detail)
            SAGA_TRANSITIONS.labels("failed").inc()

        return await self._apply(rid, "refunding", refunded)

    def _nothing_debited(self, exc: LedgerRejected) -> Step:
        async def step(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
            await repository.set_state(conn, row["id"], "failed", finished=True)
            detail = {"ledger_code": exc.code, "ledger_status": exc.status}
            await repository.add_event(conn, row["id"], "failed", "debit_not_posted", detail)
            SAGA_TRANSITIONS.labels("failed").inc()

        return step

    async def _refund(self, row: asyncpg.Record, burn_txn_id: UUID) -> UUID | None:
        """Reverses the burn under the refund key; None (and the saga parked) if that cannot happen now."""
        rid: UUID = row["id"]
        try:
            reply = await self.ledger.post(
                f"/v1/transactions/{burn_txn_id}/reverse", refund_body(rid), key=refund_key(rid)
            )
        except LedgerRejected as exc:
            log.error(
                "the ledger refused a refund; retrying later, needs attention",
                extra={"redemption_id": str(rid), "ledger_code": exc.code, "detail": exc.detail},
            )
            await self._park(
                rid,
                REFUND_REJECTED_RETRY_S,
                {"event": "refund_refused", "ledger_status": exc.status, "ledger_code": exc.code},
            )
            return None
        except LedgerUnavailable:
            await self._park(rid, self.retry_s)
            return None
        self.faults.hit("crash_after_refund", row["member_ref"])
        return UUID(str(reply.body["id"]))

    # --- cancelling -----------------------------------------------------------------------------------

    async def _refund_cancel(self, row: asyncpg.Record) -> Progress:
        """cancelling: refund the points, then restock and give the member's allowance back."""
        refund_txn_id = await self._refund(row, row["burn_txn_id"])
        if refund_txn_id is None:
            return False, None

        async def cancelled(conn: asyncpg.Connection, row: asyncpg.Record) -> Answer | None:
            rid = row["id"]
            await repository.return_stock_and_allowance(conn, row)
            new = await repository.set_state(
                conn, rid, "cancelled", refund_txn_id=refund_txn_id, finished=True
            )
            detail = {"refund_transaction_id": str(refund_txn_id), "restocked": row["stock_taken"]}
            await repository.add_event(conn, rid, "cancelled", "refunded", detail)
            SAGA_TRANSITIONS.labels("cancelled").inc()
            if row["cancel_idempotency_key"] is None:
                return None
            codes = (await repository.codes_of(conn, [rid])).get(rid, [])
            answer = Answer(200, redemption_json(new, codes))
            await repository.record_final(
                conn, row["cancel_api_key_id"], row["cancel_idempotency_key"], answer.status, answer.body
            )
            return answer

        return await self._apply(row["id"], "cancelling", cancelled)
