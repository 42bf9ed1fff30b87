"""The conversion saga (DESIGN §5): debit the member in the source program, credit them in the target,
and reverse the debit if the credit can never succeed. Only the domain steps live here; storing each
status before its step, keys, retries, leases, recovery and the Idempotency-Key's answer are the shared
runner's (services/saga.py).

Statuses, each recorded (with a history event) before the step it announces. Two are only events, never
a transaction of their own: a new conversion is stored `debiting` at once (history `created`, `debiting`),
and the credit is sent from `debited`, its outcome recording `crediting` first (rows stored `created` or
`crediting` are still driven):

    created -> debiting -> debited -> crediting -> completed
                  |                       |
                  v                       v
              rejected              compensating -> compensated
         (debit refused:                  |
          nothing moved)                  v
                                        failed (the reversal was refused: an operator must look)

Ledger keys: `conversion:{id}:debit`, `conversion:{id}:credit`, `conversion:{id}:compensate`; each body is
built from the stored row only. A refusal is final: a refused debit ends in `rejected`, a refused credit
compensates. No answer from the ledger leaves the status as it is (an unanswered credit stores `crediting`)
and the runner retries with backoff: a debited conversion is always carried forward, never abandoned.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from conversion_service.conversions import repository
from conversion_service.conversions.schemas import (
    FINAL,
    UNFINISHED,
    ConversionError,
    ConversionEvent,
    ConversionOut,
    ConversionSummary,
)
from conversion_service.quotes.schemas import AppliedRate, applied_rate
from conversion_service.settings import ConversionSettings
from services.errors import DomainError, ledger_refusal
from services.saga import (
    Answer,
    Event,
    LedgerCall,
    Outcome,
    Retry,
    SagaDefinition,
    SagaTable,
    Step,
    Transition,
    retry_later,
)

log = logging.getLogger("jifen.conversion.saga")

TABLE = SagaTable(
    table="conversion.conversions",
    events="conversion.conversion_events",
    event_fk="conversion_id",
    unfinished=UNFINISHED,
    final=FINAL,
    columns={
        "debit_txn_id": "uuid",
        "credit_txn_id": "uuid",
        "compensation_txn_id": "uuid",
        "error_status": "int",
        "error_code": "text",
        "error_detail": "text",
    },
)


# --- the answers a conversion gives ------------------------------------------------------------------


# Fields of a conversion named as their columns.
_AS_STORED = (
    "id", "status", "quote_id", "from_program", "to_program", "member_ref", "from_points", "fee_points",
    "to_points", "attempts", "created_at", "updated_at", "finished_at",
)  # fmt: skip


def summary(row: asyncpg.Record) -> ConversionSummary:
    error = None
    if row["error_code"] is not None:
        error = ConversionError(
            status=row["error_status"], code=row["error_code"], detail=row["error_detail"]
        )
    return ConversionSummary(
        **{k: row[k] for k in _AS_STORED},
        rate=AppliedRate(**applied_rate(row)),
        debit_transaction_id=row["debit_txn_id"],
        credit_transaction_id=row["credit_txn_id"],
        compensation_transaction_id=row["compensation_txn_id"],
        error=error,
        next_attempt_at=None if row["status"] in FINAL else row["next_attempt_at"],
    )


async def load(conn: asyncpg.Connection, conversion_id: Any) -> ConversionOut | None:
    row = await repository.get(conn, conversion_id)
    if row is None:
        return None
    history = [ConversionEvent.model_validate(event) for event in orjson.loads(row["history"])]
    return ConversionOut(**dict(summary(row)), history=history)


def render(conversion: ConversionOut) -> Answer:
    """The answer of POST /v1/conversions for a conversion with this status: 201 completed, 202 still in
    progress (the ledger is unreachable: it is retried in the background), or the ledger's refusal as
    problem+json with its own status and code (services.errors.ledger_refusal), the conversion attached."""
    body = conversion.model_dump(mode="json")
    status, error = conversion.status, conversion.error
    if status == "completed":
        return Answer(201, body)
    if status not in FINAL:
        return Answer(202, body)
    assert error is not None
    problem: DomainError
    if status == "rejected":
        detail = f"The ledger refused the debit of {conversion.from_program}: {error.detail}"
        problem = ledger_refusal(error.status, error.code, detail, extra={"conversion": body})
    elif status == "compensated":
        detail = (
            f"{conversion.to_program} refused the credit ({error.code}: {error.detail}); the debit of "
            f"{conversion.from_points} {conversion.from_program} points was reversed."
        )
        problem = ledger_refusal(error.status, error.code, detail, extra={"conversion": body})
    else:
        problem = DomainError(
            f"{conversion.to_program} refused the credit ({error.code}) and the ledger refused to reverse "
            "the debit; the conversion needs an operator.",
            status=502,
            code="conversion_failed",
            extra={"conversion": body},
        )
    return Answer.problem(problem)


async def answer(conn: asyncpg.Connection, row: asyncpg.Record) -> Answer:
    conversion = await load(conn, row["id"])
    assert conversion is not None
    return render(conversion)


# --- the ledger calls, from the stored row only ------------------------------------------------------


def _leg(key: str, path: str, row: asyncpg.Record, program: str, points: int, **fields: Any) -> LedgerCall:
    """A leg of the conversion in one program, on the program's conversion clearing account."""
    body = {
        "program": program,
        "member_ref": row["member_ref"],
        "points": points,
        "reference": str(row["id"]),
        "clearing": "conversion",
        **fields,
    }
    return LedgerCall(key, path, body)


def debit(row: asyncpg.Record) -> LedgerCall:
    to, fee = row["to_program"], row["fee_points"]
    metadata = {"conversion_id": str(row["id"]), "to_program": to, "fee_points": fee}
    reason = f"conversion to {to}"
    return _leg(
        "debit", "/v1/burn", row, row["from_program"], row["from_points"], reason=reason, metadata=metadata
    )


def credit(row: asyncpg.Record) -> LedgerCall:
    metadata = {"conversion_id": str(row["id"]), "from_program": row["from_program"]}
    return _leg(
        "credit", "/v1/earn", row, row["to_program"], row["to_points"], kind="bonus", metadata=metadata
    )


def compensation(row: asyncpg.Record) -> LedgerCall:
    assert row["debit_txn_id"] is not None
    return LedgerCall(
        "compensate",
        f"/v1/transactions/{row['debit_txn_id']}/reverse",
        {
            "points": row["from_points"],
            "reason": f"conversion {row['id']} compensated: {row['to_program']} refused the credit "
            f"({row['error_code']})",
        },
    )


def _posted(outcome: Outcome) -> dict[str, Any]:
    detail: dict[str, Any] = {"ledger_transaction_id": str(outcome.txn_id)}
    if outcome.replayed:
        detail["replayed"] = True
    return detail


def _refusal(outcome: Outcome) -> dict[str, Any]:
    assert outcome.refused is not None
    r = outcome.refused
    return {"status": r.status, "code": r.code, "detail": r.detail}


def _error(outcome: Outcome) -> dict[str, Any]:
    """The refusal a conversion is about, for its `error`."""
    assert outcome.refused is not None
    r = outcome.refused
    return {"error_status": r.status, "error_code": r.code, "error_detail": r.detail}


async def _release_daily(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
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


# --- the steps ---------------------------------------------------------------------------------------


async def _to_debiting(_: asyncpg.Connection, __: asyncpg.Record, ___: Outcome) -> Transition:
    return Transition("debiting")


async def _debited(_: asyncpg.Connection, __: asyncpg.Record, outcome: Outcome) -> Transition:
    return Transition("debited", _posted(outcome), values={"debit_txn_id": outcome.txn_id})


async def _debit_refused(conn: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Transition:
    await _release_daily(conn, row)
    return Transition("rejected", _refusal(outcome), values=_error(outcome), answer=answer)


def _crediting(row: asyncpg.Record) -> list[Event]:
    """The `crediting` event a credit sent from `debited` records first (the status it skipped)."""
    return [("crediting", None)] if row["status"] == "debited" else []


async def _completed(_: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Transition:
    return Transition(
        "completed",
        _posted(outcome),
        before=_crediting(row),
        values={"credit_txn_id": outcome.txn_id},
        answer=answer,
    )


async def _credit_refused(_: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Transition:
    return Transition("compensating", _refusal(outcome), before=_crediting(row), values=_error(outcome))


async def _credit_unknown(
    conn: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome
) -> Transition | Retry:
    """No answer to a credit sent from `debited`: store `crediting` now, with the retry's backoff."""
    if row["status"] != "debited":
        return await retry_later(conn, row, outcome)
    error = (outcome.unreachable or "the ledger could not be reached")[:500]
    return Transition(
        "crediting",
        {"step": "credit", "error": error},
        event="retry_scheduled",
        before=_crediting(row),
        wait=True,
    )


async def _compensated(conn: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Transition:
    await _release_daily(conn, row)
    return Transition(
        "compensated", _posted(outcome), values={"compensation_txn_id": outcome.txn_id}, answer=answer
    )


async def _reversal_refused(_: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome) -> Transition:
    log.error(
        "the ledger refused to reverse a conversion's debit; an operator must settle it",
        extra={"conversion": str(row["id"]), "error": str(outcome.refused)},
    )
    # the conversion's `error` stays the credit's refusal; the reversal's is in the history
    return Transition("failed", _refusal(outcome), answer=answer)


# The debit is `pure` (services/saga.py, Step): its posted or unanswered outcome is stored by one
# conditional statement. The credit's outcome settles the request, so it is stored with its answer.
STEPS: Mapping[str, Step] = {
    "created": Step("begin", _to_debiting),
    "debiting": Step("debit", _debited, call=debit, refused=_debit_refused, pure=True),
    # The debit's status is stored (recovery starts from it), but `crediting` would only announce the
    # credit, whose ledger key is the same whenever it is sent: a credit goes out from `debited` at once,
    # and its outcome records `crediting` before its own status, so the history reads as it always did.
    "debited": Step("credit", _completed, call=credit, refused=_credit_refused, unreachable=_credit_unknown),
    "crediting": Step("credit", _completed, call=credit, refused=_credit_refused),
    "compensating": Step("compensate", _compensated, call=compensation, refused=_reversal_refused),
}


class ConversionSaga(SagaDefinition):
    kind = "conversion"
    table = TABLE

    def __init__(self, settings: ConversionSettings) -> None:
        self.settings = settings

    def step(self, row: asyncpg.Record) -> Step | None:
        return STEPS.get(row["status"])

    async def progress(self, conn: asyncpg.Connection, row: asyncpg.Record) -> Answer:
        return await answer(conn, row)

    def headers(self, answer: Answer) -> Mapping[str, str]:
        body = answer.body if isinstance(answer.body, dict) else {}
        conversion = body if answer.status < 400 else body.get("conversion")
        if isinstance(conversion, dict) and "id" in conversion:
            return {"Location": f"/v1/conversions/{conversion['id']}"}
        return {}

    async def fault(self, point: str, row: asyncpg.Record) -> None:
        """TEST ONLY: JIFEN_CONVERSION_FAULT, right after the debit's status is stored."""
        fault = self.settings.fault
        if fault is None or point != "at_debited":
            return
        if fault == "crash_after_debit":
            log.warning("JIFEN_CONVERSION_FAULT=crash_after_debit: exiting now")
            os._exit(1)
        if fault.startswith("pause_after_debit:"):
            await asyncio.sleep(float(fault.split(":", 1)[1]))
