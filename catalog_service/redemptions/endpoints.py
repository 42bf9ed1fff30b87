"""Routes for redemptions."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Query
from starlette.responses import Response

from catalog_service.common import Admin, Reader, Writer
from catalog_service.redemptions import service
from catalog_service.redemptions.schemas import (
    CancelIn,
    RedemptionDetail,
    RedemptionIn,
    RedemptionList,
    RedemptionOut,
    RedemptionStatus,
)
from services.conventions import MemberRef
from services.deps import DB, Cursor, Limit, ProgramQuery, Saga
from services.errors import Unprocessable
from services.fastlane import AppState, fast_lane
from services.idempotency import idempotency_key
from services.openapi import problems
from services.saga import SagaRunner

router = APIRouter(prefix="/v1/redemptions", tags=["redemptions"])

Key = Annotated[str, Depends(idempotency_key)]


REDEEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    **problems(
        "reward_not_found",
        "program_not_found",
        "program_forbidden",
        "out_of_stock",
        "limit_exceeded",
        "reward_not_active",
        "program_mismatch",
        "insufficient_points",
        "ledger_rejected",
        "ledger_unavailable",
    ),
}
REDEEM_RESPONSES[503]["description"] = (
    "The ledger could not be reached: the redemption was not completed, its stock was released and any "
    "points taken are refunded automatically (code `ledger_unavailable`, with `Retry-After`). Retry with "
    "a new Idempotency-Key."
)


@router.post(
    "",
    status_code=201,
    response_model=RedemptionOut,
    summary="Redeem points for a reward",
    description="Reserves stock and the member's allowance, takes the points through the ledger, issues "
    "voucher codes, and answers `201` with status `fulfilled` and the codes. Refusals: `404 "
    "reward_not_found`, `422 program_mismatch`, `422 reward_not_active`, `409 out_of_stock`, `422 "
    "limit_exceeded`; a refusal by the ledger is answered with the ledger's own status and code, e.g. `422 "
    "insufficient_points` (the stock is released). Needs an Idempotency-Key; a replay returns the first "
    "answer with `Idempotent-Replayed: true`.",
    responses=REDEEM_RESPONSES,
)
@fast_lane
async def redeem(body: RedemptionIn, principal: Writer, key: Key, state: AppState) -> Response:
    # On the fast lane (services/fastlane.py): in a flash sale every member asks at once, most to be told
    # out_of_stock, and FastAPI's routing and dependency resolution were most of such a request's CPU.
    saga: SagaRunner = state.saga
    return (await service.redeem(state.db, saga, principal, body, key)).response()


@router.get(
    "",
    summary="Redemptions, newest first: a member's (member_ref), or by status",
    description="Without `member_ref`, every member's with the given `status` (one of the two is required; "
    "the ops console lists unfinished sagas so). "
    "Voucher codes are shown only to the API key that redeemed them (or a catalog:admin key); "
    "to others `voucher_codes` is null.",
    responses=problems("invalid_cursor"),
)
async def list_redemptions(
    principal: Reader,
    db: DB,
    member_ref: Annotated[MemberRef | None, Query()] = None,
    program: ProgramQuery = None,
    status: Annotated[RedemptionStatus | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> RedemptionList:
    if member_ref is None and status is None:
        raise Unprocessable("Give member_ref, status or both.", code="validation_error")
    return await service.list_for_member(
        db, principal, member_ref, program=program, status=status, limit=limit, cursor=cursor
    )


@router.get(
    "/{redemption_id}",
    summary="One redemption with its saga history",
    responses=problems("redemption_not_found"),
)
async def get_redemption(redemption_id: UUID, principal: Reader, db: DB) -> RedemptionDetail:
    return await service.get(db, principal, redemption_id)


@router.post(
    "/{redemption_id}/cancel",
    status_code=200,
    response_model=RedemptionOut,
    summary="Cancel a fulfilled redemption: refund the points and restock",
    description="Refunds the points (a ledger reversal of the debit) and puts the units back in stock; "
    "voucher codes already issued are voided, never reissued. `200` with status `cancelled`; `202` with "
    "status `cancelling` if the ledger is unreachable (the refund then completes on its own). Only the API "
    "key that redeemed, or a catalog:admin key, may cancel. Needs an Idempotency-Key.",
    responses={
        202: {
            "description": "Accepted; the refund completes when the ledger answers",
            "model": RedemptionOut,
        },
        **problems("redemption_not_found", "not_redeemer", "not_cancellable", "ledger_rejected"),
    },
)
async def cancel_redemption(
    redemption_id: UUID,
    principal: Writer,
    key: Key,
    db: DB,
    saga: Saga,
    body: Annotated[CancelIn | None, Body()] = None,
) -> Response:
    return (await service.cancel(db, saga, principal, redemption_id, body or CancelIn(), key)).response()


@router.post(
    "/{redemption_id}/retry",
    summary="Retry an unfinished redemption now (catalog:admin)",
    description="For an operator (the ops console's saga page): the redemption's next attempt is made "
    "due at once and driven, instead of waiting for its backoff. Each step calls the ledger with the key "
    "it always uses, so nothing is applied twice; no Idempotency-Key is needed. **409 "
    "saga_not_retryable**: the redemption is finished, or a driver holds it right now.",
    responses=problems("redemption_not_found", "saga_not_retryable"),
)
async def retry_redemption(redemption_id: UUID, principal: Admin, db: DB, saga: Saga) -> RedemptionDetail:
    return await service.retry(db, saga, principal, redemption_id)
