"""Routes for ledger writes. Each needs an Idempotency-Key and answers with the engine's body.

Every route here is also served by the fast lane (services/fastlane.py, `@fast_lane`), which reads
its path, body, scopes and this very function from the route: there is no second list to keep in step.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Depends
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


@router.post(
    "/v1/earn",
    status_code=201,
    response_model=TransactionOut,
    summary="Credit a member with points, given or priced by the program's earning rules",
    responses=EARN_PROBLEMS,
)
@fast_lane
async def earn(
    body: EarnIn,
    principal: Earner,
    key: Key,
    state: AppState,
) -> Response:
    return (await service.earn(state.engine, state.rules, body, principal, key)).response()


@router.post(
    "/v1/burn",
    status_code=201,
    response_model=TransactionOut,
    summary="Debit a member's available points",
    responses=BURN_PROBLEMS,
)
@fast_lane
async def burn(
    body: BurnIn,
    principal: Burner,
    key: Key,
    state: AppState,
) -> Response:
    return (await service.burn(state.engine, body, principal, key)).response()


@router.post(
    "/v1/holds",
    status_code=201,
    response_model=HoldOut,
    summary="Authorize (hold) points for a later capture",
    responses=HOLD_PROBLEMS,
    tags=["holds"],
)
@fast_lane
async def create_hold(
    body: HoldIn,
    principal: Burner,
    key: Key,
    state: AppState,
) -> Response:
    return (await service.hold(state.engine, body, principal, key)).response()


@router.post(
    "/v1/holds/{hold_id}/capture",
    status_code=201,
    response_model=TransactionOut,
    summary="Capture all or part of a hold; the rest is released",
    responses=CAPTURE_PROBLEMS,
    tags=["holds"],
)
@fast_lane
async def capture_hold(
    hold_id: UUID,
    principal: Burner,
    key: Key,
    state: AppState,
    body: Annotated[CaptureIn | None, Body()] = None,
) -> Response:
    return (await service.capture(state.engine, hold_id, body or CaptureIn(), principal, key)).response()


@router.post(
    "/v1/holds/{hold_id}/void",
    status_code=200,
    response_model=HoldOut,
    summary="Release a hold",
    responses=VOID_PROBLEMS,
    tags=["holds"],
)
@fast_lane
async def void_hold(
    hold_id: UUID,
    principal: Burner,
    key: Key,
    state: AppState,
    body: Annotated[VoidIn | None, Body()] = None,
) -> Response:
    return (await service.void(state.engine, hold_id, body or VoidIn(), principal, key)).response()


@router.post(
    "/v1/transactions/{transaction_id}/reverse",
    status_code=201,
    response_model=TransactionOut,
    summary="Refund a burn or capture, or claw back an earn, wholly or partly",
    description="Reversals of one transaction never add up to more than its points. Reversing an earn "
    "needs `ledger:earn`; reversing a burn or capture needs `ledger:burn`.",
    responses=REVERSE_PROBLEMS,
)
@fast_lane
async def reverse_transaction(
    transaction_id: UUID,
    body: ReverseIn,
    principal: Annotated[Principal, Depends(require("ledger:earn", "ledger:burn"))],
    key: Key,
    state: AppState,
) -> Response:
    return (await service.reverse(state.engine, transaction_id, body, principal, key)).response()


@router.post(
    "/v1/transfers",
    status_code=201,
    response_model=TransactionOut,
    summary="Move points from one member to another in one program",
    responses=TRANSFER_PROBLEMS,
)
@fast_lane
async def transfer(
    body: TransferIn,
    principal: Burner,
    key: Key,
    state: AppState,
) -> Response:
    return (await service.transfer(state.engine, body, principal, key)).response()


@router.post(
    "/v1/adjustments",
    status_code=201,
    response_model=TransactionOut,
    summary="Operations correction (ledger:admin, reason required)",
    responses=ADJUST_PROBLEMS,
)
@fast_lane
async def adjust(
    body: AdjustmentIn,
    principal: Admin,
    key: Key,
    state: AppState,
) -> Response:
    return (await service.adjust(state.engine, body, principal, key)).response()
