"""The event feed (every committed ledger transaction once, in commit order) and webhooks."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from typing import Any
from uuid import UUID

import httpx
import orjson

from ledger_service.events import repository
from ledger_service.events.schemas import Event, EventPage, WebhookIn, WebhookList, WebhookOut
from services.auth import Principal
from services.db import Database
from services.errors import NotFound

log = logging.getLogger("jifen.ledger.events")

SIGNATURE_HEADER = "Jifen-Signature"
DELIVERY_BATCH = 100
MAX_BACKOFF_S = 3600.0


def event_of(row: Any) -> Event:
    txn = dict(row)
    seq, event_type, payload = txn.pop("seq"), txn.pop("event_type"), txn.pop("payload")
    if event_type is not None:
        return Event(seq=seq, type=event_type, data=orjson.loads(payload))
    txn["to_member_ref"] = txn.pop("counterparty_ref")
    for key in ("occurred_at", "created_at"):
        txn[key] = txn[key].isoformat().replace("+00:00", "Z")
    for key in ("id", "original_id", "hold_id"):
        txn[key] = str(txn[key]) if txn[key] is not None else None
    return Event(seq=seq, type=f"transaction.{txn['type']}", transaction=txn)


async def sequence(db: Database) -> int:
    async with db.driver() as conn:
        return await repository.sequence(conn)


def kind_of(event: Event) -> str:
    """What a webhook's `types` name: the transaction's type, or the event type itself."""
    return str(event.transaction["type"]) if event.transaction is not None else event.type


async def feed(
    db: Database, principal: Principal, after: int, limit: int, types: list[str] | None = None
) -> EventPage:
    async with db.driver() as conn:
        await repository.sequence_waiting(conn)  # so a reader never waits on the schedule
        rows = await repository.feed(conn, after, limit, principal.program_list(), types)
    events = [event_of(r) for r in rows]
    return EventPage(data=events, next_cursor=events[-1].seq if events else after)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


async def create_webhook(db: Database, principal: Principal, body: WebhookIn) -> WebhookOut:
    for code in body.programs or []:
        principal.require_program(code)
    programs = body.programs if body.programs is not None else principal.program_list()
    secret = body.secret or "whsec_" + secrets.token_urlsafe(32)
    async with db.driver() as conn:
        start = 0 if body.from_start else await repository.last_seq(conn)
        row = await repository.create_hook(
            conn, uuid.uuid4(), str(body.url), secret, programs, body.types, principal.key_id, start
        )
    return WebhookOut.model_validate({**dict(row), "secret": secret})


async def list_webhooks(db: Database, principal: Principal) -> WebhookList:
    async with db.driver() as conn:
        rows = await repository.list_hooks(conn, principal.key_id, principal.has("ledger:admin"))
    return WebhookList(data=[WebhookOut.model_validate(dict(r)) for r in rows])


async def get_webhook(
    db: Database, principal: Principal, hook_id: UUID, *, deactivate: bool = False
) -> WebhookOut:
    see_all = principal.has("ledger:admin")
    async with db.driver() as conn:
        if deactivate:
            row = await repository.deactivate_hook(conn, hook_id, principal.key_id, see_all)
        else:
            row = await repository.get_hook(conn, hook_id, principal.key_id, see_all)
    if row is None:
        raise NotFound(f"No webhook with id {hook_id}.", code="webhook_not_found")
    return WebhookOut.model_validate(dict(row))


class WebhookDeliverer:
    """Delivers each subscription's events in order, one at a time, signed; on failure it backs off
    exponentially (1 s, 2 s, 4 s ... up to an hour) and starts again from the first undelivered event."""

    def __init__(self, db: Database, *, timeout_s: float = 5.0) -> None:
        self.db = db
        self.http = httpx.AsyncClient(timeout=timeout_s, headers={"User-Agent": "jifen-webhooks"})

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run_once(self, limit: int = 20) -> int:
        async with self.db.driver() as conn:
            hooks = await repository.claim_due_hooks(conn, limit)
        delivered = 0
        for hook in hooks:
            delivered += await self._deliver(hook)
        return delivered

    async def _deliver(self, hook: Any) -> int:
        async with self.db.driver() as conn:
            rows = await repository.feed(conn, hook["after_seq"], DELIVERY_BATCH, hook["programs"])
        after, sent = hook["after_seq"], 0
        for row in rows:
            event = event_of(row)
            if hook["types"] is None or kind_of(event) in hook["types"]:
                error = await self._post(hook, event)
                if error is not None:
                    backoff = min(2.0 ** hook["failures"], MAX_BACKOFF_S)
                    async with self.db.driver() as conn:
                        await repository.mark_failed(conn, hook["id"], after, sent, error, backoff)
                    log.warning("webhook delivery failed", extra={"webhook": str(hook["id"]), "error": error})
                    return sent
                sent += 1
            after = event.seq
        async with self.db.driver() as conn:
            await repository.mark_delivered(conn, hook["id"], after, sent)
        return sent

    async def _post(self, hook: Any, event: Event) -> str | None:
        body = orjson.dumps(event.model_dump())
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(hook["secret"], timestamp, body),
            "Jifen-Event-Seq": str(event.seq),
        }
        try:
            response = await self.http.post(hook["url"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
