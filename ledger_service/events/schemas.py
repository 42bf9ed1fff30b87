"""The event feed and webhook subscriptions as clients see them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AnyHttpUrl, BaseModel, Field, StringConstraints

from ledger_service.schemas_common import ProgramCode
from services.validation import StrictBody, body_examples

TxnType = Literal["earn", "burn", "capture", "reversal", "transfer", "adjustment", "expiry"]
# Events that are not transactions: their payload is `data`.
OtherEventType = Literal["points.expiring", "segment.entered", "segment.left"]
EventType = Literal[
    "transaction.earn",
    "transaction.burn",
    "transaction.capture",
    "transaction.reversal",
    "transaction.transfer",
    "transaction.adjustment",
    "transaction.expiry",
    "points.expiring",
    "segment.entered",
    "segment.left",
]


class Event(BaseModel):
    seq: int = Field(description="Position in the feed: consecutive, in commit order")
    type: str = Field(examples=["transaction.earn"])
    transaction: dict[str, Any] | None = Field(default=None, description="For transaction.* events")
    data: dict[str, Any] | None = Field(default=None, description="For the other events: their payload")


class EventPage(BaseModel):
    data: list[Event]
    next_cursor: int = Field(description="Pass as `after` to continue; equals `after` when nothing is new")


class WebhookIn(StrictBody):
    model_config = body_examples(
        {"url": "https://partner.example/jifen/events", "programs": ["WLT"], "types": ["earn"]},
    )

    url: AnyHttpUrl
    programs: list[ProgramCode] | None = Field(default=None, description="Only these programs (default all)")
    types: list[TxnType | OtherEventType] | None = Field(
        default=None,
        description="Only these: transaction types (earn, burn, ...) or other event types "
        "(points.expiring, segment.entered, segment.left); default all",
    )
    secret: Annotated[str, StringConstraints(min_length=16, max_length=128)] | None = Field(
        default=None, description="HMAC-SHA256 signing secret; generated and returned once if omitted"
    )
    from_start: bool = Field(default=False, description="Deliver the whole history, not only new events")


class WebhookOut(BaseModel):
    id: UUID
    url: str
    programs: list[str] | None
    types: list[str] | None
    active: bool
    after_seq: int
    failures: int
    last_error: str | None
    delivered: int
    next_attempt_at: datetime
    created_at: datetime
    secret: str | None = Field(default=None, description="Shown only in the response that created it")


class WebhookList(BaseModel):
    data: list[WebhookOut]
