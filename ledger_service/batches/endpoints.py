"""Routes for card-issuer batches."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from ledger_service.batches import service
from ledger_service.batches.schemas import BatchList, BatchOut, BatchStatus, RejectionPage
from services.auth import Principal, require
from services.deps import Cursor, Limit
from services.idempotency import REPLAYED_HEADER, idempotency_key
from services.openapi import problems

router = APIRouter(prefix="/v1/batches", tags=["batches"])

CSV_EXAMPLE = (
    "external_id,type,program,card_number,member_ref,amount_minor,currency,merchant_id,mcc,channel,occurred_at,points\n"
    "TX-0001,earn,BOC,6222020200112233445,,12345,CNY,M-COFFEE-01,5814,pos,2026-11-28T10:00:00Z,\n"
    "TX-0002,earn,BOC,,m-10001,50000,CNY,M-AIR-7,4511,online,2026-11-28T11:30:00Z,\n"
    "TX-0003,reverse,BOC,,m-10001,20000,CNY,,,,2026-11-28T18:00:00Z,\n"
)


@router.post(
    "",
    status_code=202,
    response_model=BatchOut,
    summary="Upload a card-issuer file (CSV or NDJSON); it is posted in the background",
    description="Streamed, never held in memory. Each row posts at most once per (API key, external_id), "
    "whatever the re-sends. Columns: external_id, type (earn|reverse), original_external_id (for a "
    "reverse row with its own id), program, member_ref or card_number (tokenized at once), "
    "amount_minor, currency, merchant_id, mcc, channel, occurred_at, points (else priced by the "
    "program's earning rules). A reverse row reverses the earn with external_id = original_external_id "
    "(or its own external_id): `points`, else in proportion to `amount_minor`, else all that is left.",
    responses=problems("invalid_batch_header", "unsupported_media_type", "program_forbidden"),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def upload(
    request: Request,
    principal: Annotated[Principal, Depends(require("ledger:batch"))],
    key: Annotated[str, Depends(idempotency_key)],
) -> Response:
    status, out, replayed = await service.upload(
        request.app.state.db,
        request.app.state.rules,
        request.app.state.pii_key,
        principal,
        key,
        request.headers.get("content-type"),
        request.stream(),
    )
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return Response(
        service.replay_body(out), status_code=status, media_type="application/json", headers=headers
    )


@router.get(
    "",
    summary="Batches, newest first",
    description="The batches this API key uploaded (an admin key: every batch), paginated; `status` filters.",
    responses=problems("invalid_cursor"),
)
async def list_batches(
    request: Request,
    principal: Annotated[Principal, Depends(require("ledger:batch", "ledger:read"))],
    status: Annotated[BatchStatus | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> BatchList:
    return await service.list_batches(
        request.app.state.db, principal, status=status, limit=limit, cursor=cursor
    )


@router.get(
    "/{batch_id}",
    summary="A batch's status, counts and progress",
    responses=problems("batch_not_found", "batch_forbidden"),
)
async def get_batch(
    request: Request,
    batch_id: UUID,
    principal: Annotated[Principal, Depends(require("ledger:batch", "ledger:read"))],
) -> BatchOut:
    return await service.get_batch(request.app.state.db, principal, batch_id)


@router.get(
    "/{batch_id}/rejections",
    summary="Rejected rows with their line number in the file and reason",
    description="`reason` filters to one reason (an unknown reason is a 422); the counts per reason are "
    "in the batch's `rejected_by_reason`.",
    responses=problems("invalid_cursor", "batch_not_found", "batch_forbidden"),
)
async def get_rejections(
    request: Request,
    batch_id: UUID,
    principal: Annotated[Principal, Depends(require("ledger:batch", "ledger:read"))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
    reason: Annotated[str | None, Query(max_length=64, examples=["no_earning_rules"])] = None,
) -> RejectionPage:
    return await service.get_rejections(
        request.app.state.db, principal, batch_id, limit=limit, cursor=cursor, reason=reason
    )
