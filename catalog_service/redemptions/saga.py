"""The redemption saga (DESIGN §6): take the points, give the codes; undo everything if the points cannot
be taken; refund and restock on cancel. Only the domain steps live here; storing each status before its
step, keys, retries, leases, recovery and the Idempotency-Key's answer are the shared runner's
(services/saga.py).

    debiting --burn posted--------------------------> fulfilled --cancel--> cancelling --refund--> cancelled
        |  \\--burn refused (e.g. insufficient_points): release stock, allowance, codes --> failed
        \\----ledger unreachable (outcome unknown): release at once --> refunding --> failed
                                    (the burn is replayed with its key to learn its outcome; a posted
                                     burn is then reversed with the refund key)

Each step's writes (stock, allowance, codes) are in the transaction that stores its status, under the
redemption's row lock. Ledger keys: `redemption:{id}:debit` for the burn (and its replay while
refunding), `redemption:{id}:refund` for its reversal: the same key and body for a failed saga's
compensation and for a cancel, so a debit is refunded at most once.

Unlike a conversion, a redemption does not wait for an unreachable ledger: the member is at a checkout,
so the redemption is undone at once and answered `503 ledger_unavailable` (retry with a new key). A
cancel is accepted (`202`) and completes on its own.
"""

from __future__ import annotations

import logging

import asyncpg

from catalog_service.faults import Faults
from catalog_service.redemptions import repository
from catalog_service.redemptions.schemas import UNFINISHED, redemption_json
from services.errors import LEDGER_PASSED_THROUGH
from services.ledger_client import LedgerUnavailable
from services.saga import (
    Answer,
    LedgerCall,
    Outcome,
    Retry,
    SagaDefinition,
    SagaTable,
    Step,
    Transition,
)

log = logging.getLogger("jifen.catalog.saga")

REFUND_REFUSED_RETRY_S = 300.0  # a refund the ledger refuses (which should not happen): try again, loudly

TABLE = SagaTable(
    table="catalog.redemptions",
    events="catalog.redemption_events",
    event_fk="redemption_id",
    unfinished=UNFINISHED,
    final=frozenset({"failed", "cancelled"}),
    columns={
        "burn_txn_id": "uuid",
        "refund_txn_id": "uuid",
        "failure_code": "text",
        "failure_detail": "text",
        "fulfilled_at": "now",
    },
)

# The runner's fault points -> the JIFEN_CATALOG_FAULT names (catalog_service/faults.py).
FAULT_POINTS = {
    "before_debit": "crash_before_debit",
    "after_debit": "crash_after_debit",
    "after_refund": "crash_after_refund",
}

UNKNOWN_DETAIL = (
    "The ledger could not be reached, so the redemption was not completed and its stock was released; "
    "any points taken are refunded automatically. Retry with a new Idempotency-Key."
)


# --- the ledger calls, from the stored row only ------------------------------------------------------


def burn(row: asyncpg.Record) -> LedgerCall:
    return LedgerCall(
        "debit",
        "/v1/burn",
        {
            "program": row["program"],
            "member_ref": row["member_ref"],
            "points": row["points"],
            "reference": str(row["id"]),
            "reason": f"redemption of {row['sku']} x{row['quantity']}",
            "metadata": {"sku": row["sku"], "quantity": row["quantity"]},
        },
    )


def refund(row: asyncpg.Record) -> LedgerCall:
    assert row["burn_txn_id"] is not None
    return LedgerCall(
        "refund",
        f"/v1/transactions/{row['burn_txn_id']}/reverse",
        {"reason": f"refund of redemption {row['id']}"},
    )


async def _with_codes(conn: asyncpg.Connection, row: asyncpg.Record, status: int) -> Answer:
    codes = (await repository.codes_of(conn, [row["id"]])).get(row["id"], [])
    return Answer(status, redemption_json(row, codes))


async def _cancelled_answer(conn: asyncpg.Connection, row: asyncpg.Record) -> Answer:
    return await _with_codes(conn, row, 200)


async def _release(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    """The redemption will not be fulfilled: stock, allowance and the codes nobody saw go back."""
    await repository.return_stock_and_allowance(conn, row)
    await repository.release_reserved_codes(conn, row["id"])


# --- debiting ----------------------------------------------------------------------------------------


async def _fulfil(conn: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Transition:
    codes = await repository.issue_codes(conn, row["id"])
    debited = {"burn_transaction_id": str(outcome.txn_id), "replayed": outcome.replayed}

    async def fulfilled(_: asyncpg.Connection, new: asyncpg.Record) -> Answer:
        return Answer(201, redemption_json(new, codes))  # the codes just issued: no read of them again

    return Transition(
        "fulfilled",
        {"voucher_codes": len(codes)},
        before=[("debited", debited)],
        values={"burn_txn_id": outcome.txn_id, "fulfilled_at": True},
        answer=fulfilled,
    )


async def _debit_refused(conn: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Transition:
    """The ledger refused the burn for good: nothing was debited; release everything. The answer is the
    ledger's own status and code (services.errors.ledger_refusal)."""
    refused = outcome.refused
    assert refused is not None
    detail = None if refused.status in LEDGER_PASSED_THROUGH else f"The ledger refused the debit: {refused}"
    failure = refused.problem(detail)
    await _release(conn, row)

    async def answer(conn: asyncpg.Connection, new: asyncpg.Record) -> Answer:
        redemption = redemption_json(new, [])
        return Answer.problem(refused.problem(detail, redemption_id=str(new["id"]), redemption=redemption))

    return Transition(
        "failed",
        {"ledger_status": refused.status, "ledger_code": refused.code},
        event="debit_refused",
        values={"failure_code": failure.code, "failure_detail": failure.detail},
        answer=answer,
    )


async def _debit_unknown(conn: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Transition:
    """The burn may or may not have been posted. The redemption will not be fulfilled: release stock,
    allowance and codes now, answer 503; the refunding steps settle the burn once the ledger answers."""
    await _release(conn, row)

    async def answer(conn: asyncpg.Connection, new: asyncpg.Record) -> Answer:
        error = LedgerUnavailable().problem(
            UNKNOWN_DETAIL, redemption_id=str(new["id"]), redemption=redemption_json(new, [])
        )
        return Answer.problem(error)

    return Transition(
        "refunding",
        {"error": (outcome.unreachable or "")[:500]},
        event="debit_unknown",
        values={
            "failure_code": "ledger_unavailable",
            "failure_detail": "The ledger could not be reached during the debit.",
        },
        answer=answer,
        wait=True,
    )


# --- refunding (compensation) ------------------------------------------------------------------------


async def _debit_resolved(_: asyncpg.Connection, __: asyncpg.Record, outcome: Outcome) -> Transition:
    """The burn, replayed under its key, was posted (then or now): it is reversed next."""
    detail = {"burn_transaction_id": str(outcome.txn_id), "replayed": outcome.replayed}
    return Transition("refunding", detail, event="debit_resolved", values={"burn_txn_id": outcome.txn_id})


async def _nothing_debited(_: asyncpg.Connection, __: asyncpg.Record, outcome: Outcome) -> Transition:
    assert outcome.refused is not None
    detail = {"ledger_code": outcome.refused.code, "ledger_status": outcome.refused.status}
    return Transition("failed", detail, event="debit_not_posted")


async def _refunded(_: asyncpg.Connection, __: asyncpg.Record, outcome: Outcome) -> Transition:
    detail = {"refund_transaction_id": str(outcome.txn_id)}
    return Transition("failed", detail, event="refunded", values={"refund_txn_id": outcome.txn_id})


async def _refund_refused(_: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Retry:
    refused = outcome.refused
    assert refused is not None
    log.error(
        "the ledger refused a refund; retrying later, needs attention",
        extra={"redemption_id": str(row["id"]), "ledger_code": refused.code, "detail": refused.detail},
    )
    return Retry(
        str(refused),
        delay_s=REFUND_REFUSED_RETRY_S,
        event="refund_refused",
        detail={"ledger_status": refused.status, "ledger_code": refused.code},
    )


# --- cancelling --------------------------------------------------------------------------------------


async def _cancelled(conn: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Transition:
    """Refunded: restock and give the member's allowance back."""
    await repository.return_stock_and_allowance(conn, row)
    detail = {"refund_transaction_id": str(outcome.txn_id), "restocked": row["stock_taken"]}
    return Transition(
        "cancelled",
        detail,
        event="refunded",
        values={"refund_txn_id": outcome.txn_id},
        answer=_cancelled_answer,
    )


DEBIT = Step("debit", _fulfil, call=burn, refused=_debit_refused, unreachable=_debit_unknown)
RESOLVE_DEBIT = Step("resolve_debit", _debit_resolved, call=burn, refused=_nothing_debited)
REFUND = Step("refund", _refunded, call=refund, refused=_refund_refused)
CANCEL = Step("refund", _cancelled, call=refund, refused=_refund_refused)


class RedemptionSaga(SagaDefinition):
    kind = "redemption"
    table = TABLE

    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    def step(self, row: asyncpg.Record) -> Step | None:
        status = row["status"]
        if status == "debiting":
            return DEBIT
        if status == "refunding":
            return REFUND if row["burn_txn_id"] is not None else RESOLVE_DEBIT
        if status == "cancelling":
            return CANCEL
        return None

    def operation(self, row: asyncpg.Record) -> tuple[int, str] | None:
        if row["status"] in ("cancelling", "cancelled"):
            key: str | None = row["cancel_idempotency_key"]
            return None if key is None else (row["cancel_api_key_id"], key)
        return row["api_key_id"], row["idempotency_key"]

    async def progress(self, conn: asyncpg.Connection, row: asyncpg.Record) -> Answer:
        """Not settled yet (a cancel waiting for the ledger): 202 with the redemption as it stands."""
        return await _with_codes(conn, row, 202)

    async def fault(self, point: str, row: asyncpg.Record) -> None:
        name = FAULT_POINTS.get(point)
        if name is not None:
            self.faults.hit(name, row["member_ref"])
