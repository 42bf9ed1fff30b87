"""Routes for the event feed and webhook subscriptions."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request

from ledger_service.deps import Admin, Reader
from ledger_service.events import service
from ledger_service.events.schemas import EventPage, EventType, WebhookIn, WebhookList, WebhookOut
from services.openapi import problems

router = APIRouter(tags=["events"])


@router.get(
    "/v1/events",
    summary="The event feed: every committed transaction, and member events, once, in commit order",
    description="Poll with `after` = the last `next_cursor`. A key limited to programs sees only theirs. "
    "`type` (repeatable) keeps only those event types: transaction.earn, ..., points.expiring, "
    "segment.entered, segment.left.",
    responses=problems("program_forbidden"),
)
async def events(
    request: Request,
    principal: Reader,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type: Annotated[list[EventType] | None, Query()] = None,
) -> EventPage:
    types = [str(t) for t in type] if type else None
    return await service.feed(request.app.state.db, principal, after, limit, types)


@router.post(
    "/v1/webhooks",
    status_code=201,
    summary="Subscribe a URL to the event feed",
    description="Each event is POSTed as JSON with `Jifen-Signature: t=<unix time>,v1=<hex>` where v1 is "
    "HMAC-SHA256(secret, `<t>.<body>`). Delivery is in order per subscriber, retried with exponential "
    "backoff; any 2xx acknowledges. The secret is shown only in this response.",
    responses=problems("program_not_found", "program_forbidden"),
)
async def create_webhook(request: Request, body: WebhookIn, principal: Admin) -> WebhookOut:
    return await service.create_webhook(request.app.state.db, principal, body)


@router.get(
    "/v1/webhooks",
    summary="Webhook subscriptions",
    responses=problems(),
)
async def list_webhooks(request: Request, principal: Reader) -> WebhookList:
    return await service.list_webhooks(request.app.state.db, principal)


@router.get(
    "/v1/webhooks/{webhook_id}",
    summary="A subscription and its delivery state",
    responses=problems("webhook_not_found"),
)
async def get_webhook(request: Request, webhook_id: UUID, principal: Reader) -> WebhookOut:
    return await service.get_webhook(request.app.state.db, principal, webhook_id)


@router.delete(
    "/v1/webhooks/{webhook_id}",
    summary="Stop a subscription",
    responses=problems("webhook_not_found"),
)
async def delete_webhook(request: Request, webhook_id: UUID, principal: Admin) -> WebhookOut:
    return await service.get_webhook(request.app.state.db, principal, webhook_id, deactivate=True)
