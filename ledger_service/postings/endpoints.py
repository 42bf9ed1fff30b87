"""Routes for ledger writes. Each needs an Idempotency-Key and answers with the engine's body.

Every route here is also served by the fast lane (services/fastlane.py, `@fast_lane`), which reads
its path, body, scopes and this very function from the route: there is no second list to keep in step.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel
from starlette.responses import Response

from ledger_service.deps import Admin, Burner, Earner
from ledger_service.postings import service
from ledger_service.postings.schemas import (
    AdjustmentIn,
    BurnIn,
    CaptureIn,
    EarnIn,
    HoldIn,
    HoldOut,
    ReverseIn,
    TransactionOut,
    TransferIn,
    VoidIn,
)
from services.auth import Principal, require
from services.fastlane import AppState, fast_lane
from services.idempotency import idempotency_key
from services.openapi import problems

router = APIRouter(tags=["points"])

Key = Annotated[str, Depends(idempotency_key)]
E = TypeVar("E", bound=Callable[..., Coroutine[Any, Any, Response]])
# The codes each write can answer with, besides auth, validation and idempotency (services/openapi.py).
PROGRAM = ("program_not_found", "program_forbidden", "ledger_busy")
LIMITED = ("points_limit_exceeded",)  # the program's max_points_per_transaction
PARTNER = (
    "partner_not_found",
    "partner_forbidden",
    "partner_suspended",
    "partner_terms_missing",
    "partner_funds_exhausted",
    "partner_credit_exceeded",
)
DEBIT = (*PROGRAM, *PARTNER, *LIMITED, "insufficient_points", "occurred_at_out_of_range")
EARN_PROBLEMS = problems(
    *PROGRAM,
    *PARTNER,
    *LIMITED,
    "no_earning_rules",
    "currency_mismatch",
    "occurred_in_future",
    "occurred_at_out_of_range",
)
BURN_PROBLEMS = HOLD_PROBLEMS = problems(*DEBIT)
CAPTURE_PROBLEMS = problems(
    *DEBIT, "hold_not_found", "hold_expired", "hold_not_active", "capture_exceeds_hold"
)
VOID_PROBLEMS = problems(
    "hold_not_found", "program_forbidden", "hold_expired", "hold_not_active", "ledger_busy"
)
REVERSE_PROBLEMS = problems(
    "transaction_not_found",
    "program_forbidden",
    "partner_forbidden",
    "not_reversible",
    "reversal_exceeds_original",
    "clawback_not_pending",
    "insufficient_points",
    "ledger_busy",
)
TRANSFER_PROBLEMS = problems(*PROGRAM, *LIMITED, "insufficient_points", "same_member")
ADJUST_PROBLEMS = problems(*PROGRAM, *LIMITED, "insufficient_points")


def write(
    path: str,
    summary: str,
    responses: dict[int | str, dict[str, Any]],
    *,
    response_model: type[BaseModel] = TransactionOut,
    status_code: int = 201,
    **extra: Any,
) -> Callable[[E], E]:
    """A ledger write: POST with an Idempotency-Key, answered with the engine's body (201 and the
    transaction unless told otherwise), and served by the fast lane as well as by FastAPI."""

    def register(endpoint: E) -> E:
        router.post(
            path,
            status_code=status_code,
            response_model=response_model,
            summary=summary,
            responses=responses,
            **extra,
        )(fast_lane(endpoint))
        return endpoint

    return register


@write(
    "/v1/earn", "Credit a member with points, given or priced by the program's earning rules", EARN_PROBLEMS
)
async def earn(body: EarnIn, principal: Earner, key: Key, state: AppState) -> Response:
    return (await service.earn(state.engine, state.rules, body, principal, key)).response()


@write("/v1/burn", "Debit a member's available points", BURN_PROBLEMS)
async def burn(body: BurnIn, principal: Burner, key: Key, state: AppState) -> Response:
    return (await service.burn(state.engine, body, principal, key)).response()


@write(
    "/v1/holds",
    "Authorize (hold) points for a later capture",
    HOLD_PROBLEMS,
    response_model=HoldOut,
    tags=["holds"],
)
async def create_hold(body: HoldIn, principal: Burner, key: Key, state: AppState) -> Response:
    return (await service.hold(state.engine, body, principal, key)).response()


@write(
    "/v1/holds/{hold_id}/capture",
    "Capture all or part of a hold; the rest is released",
    CAPTURE_PROBLEMS,
    tags=["holds"],
)
async def capture_hold(
    hold_id: UUID,
    principal: Burner,
    key: Key,
    state: AppState,
    body: Annotated[CaptureIn | None, Body()] = None,
) -> Response:
    return (await service.capture(state.engine, hold_id, body or CaptureIn(), principal, key)).response()


@write(
    "/v1/holds/{hold_id}/void",
    "Release a hold",
    VOID_PROBLEMS,
    response_model=HoldOut,
    status_code=200,
    tags=["holds"],
)
async def void_hold(
    hold_id: UUID,
    principal: Burner,
    key: Key,
    state: AppState,
    body: Annotated[VoidIn | None, Body()] = None,
) -> Response:
    return (await service.void(state.engine, hold_id, body or VoidIn(), principal, key)).response()


@write(
    "/v1/transactions/{transaction_id}/reverse",
    "Refund a burn or capture, or claw back an earn, wholly or partly",
    REVERSE_PROBLEMS,
    description="Reversals of one transaction never add up to more than its points. Reversing an earn "
    "needs `ledger:earn`; reversing a burn or capture needs `ledger:burn`.",
)
async def reverse_transaction(
    transaction_id: UUID,
    body: ReverseIn,
    principal: Annotated[Principal, Depends(require("ledger:earn", "ledger:burn"))],
    key: Key,
    state: AppState,
) -> Response:
    return (await service.reverse(state.engine, transaction_id, body, principal, key)).response()


@write("/v1/transfers", "Move points from one member to another in one program", TRANSFER_PROBLEMS)
async def transfer(body: TransferIn, principal: Burner, key: Key, state: AppState) -> Response:
    return (await service.transfer(state.engine, body, principal, key)).response()


@write("/v1/adjustments", "Operations correction (ledger:admin, reason required)", ADJUST_PROBLEMS)
async def adjust(body: AdjustmentIn, principal: Admin, key: Key, state: AppState) -> Response:
    return (await service.adjust(state.engine, body, principal, key)).response()
