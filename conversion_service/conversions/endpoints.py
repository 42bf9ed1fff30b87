"""Routes for conversions."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from conversion_service.conversions import service
from conversion_service.conversions.schemas import ConversionIn, ConversionList, ConversionOut, Status
from conversion_service.deps import Admin, Ctx, Reader, Writer
from conversion_service.quotes.endpoints import PRICING
from conversion_service.schemas_common import MemberRef
from services.deps import Cursor, Limit, Saga
from services.idempotency import idempotency_key
from services.openapi import problems

router = APIRouter(prefix="/v1/conversions", tags=["conversions"])


_POST_RESPONSES = {
    202: {
        "description": "Accepted: the ledger could not be reached; the conversion continues in the "
        "background (poll GET /v1/conversions/{id})",
        "model": ConversionOut,
    },
    **problems(
        *PRICING, "quote_not_found", "quote_used", "quote_expired", "insufficient_points", "conversion_failed"
    ),
}


@router.post(
    "",
    status_code=201,
    response_model=ConversionOut,
    summary="Convert a member's points from one program to another",
    description="By `quote_id` (the quote's amounts, before it expires, once) or by the quote fields "
    "(priced now). Debits the member in the source program and credits them in the target through the "
    "ledger, as a saga whose status is stored before each step. **201**: completed. **202**: the ledger "
    "is unreachable; the conversion is retried in the background. A refusal by the ledger is answered "
    "with the ledger's own status and code, the conversion attached as `conversion`: **422 "
    "insufficient_points** (status `rejected`: the debit was refused, nothing moved), or the target's "
    "refusal of the credit, e.g. **422 points_out_of_range** (status `compensated`: the debit was "
    "reversed). **503 ledger_unavailable** (with `Retry-After`): the ledger could not be reached while "
    "pricing; nothing was stored. Needs an `Idempotency-Key`; a replay answers with the conversion's "
    "final answer (or, while it is in progress, where it stands) and `Idempotent-Replayed: true`.",
    responses=_POST_RESPONSES,
)
async def create_conversion(
    body: ConversionIn,
    principal: Writer,
    key: Annotated[str, Depends(idempotency_key)],
    ctx: Ctx,
    saga: Saga,
) -> Response:
    return await service.create_conversion(ctx, saga, principal, body, key)


@router.get(
    "/{conversion_id}",
    summary="A conversion: its status and history",
    responses=problems("conversion_not_found"),
)
async def get_conversion(conversion_id: UUID, principal: Reader, ctx: Ctx) -> ConversionOut:
    return await service.get_conversion(ctx, principal, conversion_id)


@router.get(
    "",
    summary="Conversions, newest first: a member's (member_ref), or by status",
    responses=problems("invalid_cursor", "program_forbidden"),
)
async def list_conversions(
    principal: Reader,
    ctx: Ctx,
    member_ref: Annotated[MemberRef | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ConversionList:
    return await service.list_conversions(
        ctx, principal, member_ref=member_ref, status=status, limit=limit, cursor=cursor
    )


@router.post(
    "/{conversion_id}/retry",
    summary="Retry an unfinished conversion now (conversion:admin)",
    description="For an operator (the ops console's saga page): the conversion's next attempt is made "
    "due at once and driven, instead of waiting for its backoff. Each step calls the ledger with the key "
    "it always uses, so nothing is applied twice; no Idempotency-Key is needed. **409 "
    "saga_not_retryable**: the conversion is finished, or a driver holds it right now.",
    responses=problems("conversion_not_found", "saga_not_retryable"),
)
async def retry_conversion(
    conversion_id: UUID,
    principal: Admin,
    ctx: Ctx,
    saga: Saga,
) -> ConversionOut:
    return await service.retry_conversion(ctx, saga, principal, conversion_id)
