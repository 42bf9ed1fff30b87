"""Request and response bodies of the ledger's write operations (DESIGN §4)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ledger_service.schemas_common import (
    MAX_POINTS,
    Currency,
    MemberRef,
    Metadata,
    PartnerCode,
    PointKind,
    Points,
    ProgramCode,
    Reason,
    Reference,
)
from services.validation import OccurredAt, StrictBody, body_examples

Clearing = Literal["conversion", "merchant"]
HOLD_DEFAULT_S = 86_400
HOLD_MAX_S = 30 * 86_400


class Strict(StrictBody):
    model_config = ConfigDict(extra="forbid")


class Purchase(Strict):
    amount_minor: int = Field(strict=True, gt=0, le=10**15, examples=[12345])
    currency: Currency
    merchant_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    mcc: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")] | None = None
    channel: Literal["pos", "online", "app"] | None = None


class EarnIn(Strict):
    program: ProgramCode
    member_ref: MemberRef
    points: Points | None = None
    purchase: Purchase | None = None
    kind: PointKind = "purchase"
    reference: Reference
    occurred_at: OccurredAt | None = None
    metadata: Metadata = None
    clearing: Clearing | None = Field(
        default=None,
        description="The system account on the other side: the program's `conversion` clearing or "
        "`merchant` funding account instead of issuance (used by the conversion service).",
    )
    partner: PartnerCode | None = Field(
        default=None,
        description="The issuer partner funding these points (DESIGN §8): the other side is its "
        "`partner:{code}:issued` account. A partner-bound API key's earns are its partner's.",
    )

    model_config = body_examples(
        {
            "program": "WLT",
            "member_ref": "m-10001",
            "points": 1500,
            "kind": "purchase",
            "reference": "order-7781",
            "metadata": {"store": "SH-021"},
        },
    )

    @model_validator(mode="after")
    def _points_or_purchase(self) -> EarnIn:
        if self.points is None and self.purchase is None:
            raise ValueError("send points, or a purchase for the program's earning rules to price")
        if self.partner is not None and self.clearing is not None:
            raise ValueError(
                "an earn at a partner posts against the partner's account: send partner or clearing"
            )
        return self


class BurnIn(Strict):
    program: ProgramCode
    member_ref: MemberRef
    points: Points
    reference: Reference
    reason: Reason | None = None
    metadata: Metadata = None
    clearing: Literal["conversion"] | None = Field(
        default=None,
        description="Post against the program's conversion clearing account instead of redemption "
        "(used by the conversion service).",
    )
    partner: PartnerCode | None = Field(
        default=None, description="The acceptor partner the points are spent at (DESIGN §8)"
    )
    occurred_at: OccurredAt | None = Field(
        default=None,
        description="When it happened (default now; at most 30 days back, for offline terminals)",
    )

    model_config = body_examples(
        {"program": "WLT", "member_ref": "m-10001", "points": 500, "reference": "order-7790"},
    )

    @model_validator(mode="after")
    def _one_counterpart(self) -> BurnIn:
        if self.partner is not None and self.clearing is not None:
            raise ValueError("a burn at a partner posts to the partner's account: send partner or clearing")
        return self


class HoldIn(Strict):
    program: ProgramCode
    member_ref: MemberRef
    points: Points
    reference: Reference
    expires_in_s: int = Field(default=HOLD_DEFAULT_S, strict=True, ge=1, le=HOLD_MAX_S)
    partner: PartnerCode | None = Field(
        default=None, description="The acceptor partner the capture is accepted at (DESIGN §8)"
    )

    model_config = body_examples(
        {
            "program": "WLT",
            "member_ref": "m-10001",
            "points": 800,
            "reference": "cart-5521",
            "expires_in_s": 900,
        },
    )


class CaptureIn(Strict):
    points: Points | None = Field(default=None, description="Capture this much; omit to capture it all")
    occurred_at: OccurredAt | None = Field(
        default=None, description="When it happened (default now; at most 30 days back)"
    )

    model_config = body_examples(
        {"points": 600},
    )


class VoidIn(Strict):
    reason: Reason | None = None

    model_config = body_examples(
        {"reason": "cart abandoned"},
    )


class ReverseIn(Strict):
    points: Points | None = Field(default=None, description="Reverse this much; omit to reverse the rest")
    reason: Reason

    model_config = body_examples(
        {"points": 200, "reason": "item returned"},
    )


class TransferIn(Strict):
    program: ProgramCode
    from_member_ref: MemberRef
    to_member_ref: MemberRef
    points: Points
    reference: Reference | None = None
    reason: Reason | None = None
    metadata: Metadata = None

    model_config = body_examples(
        {
            "program": "WLT",
            "from_member_ref": "m-10001",
            "to_member_ref": "m-10002",
            "points": 300,
            "reference": "gift-88",
        },
    )

    @model_validator(mode="after")
    def _two_members(self) -> TransferIn:
        if self.from_member_ref == self.to_member_ref:
            raise ValueError("from_member_ref and to_member_ref must differ")
        return self


class AdjustmentIn(Strict):
    program: ProgramCode
    member_ref: MemberRef
    points: int = Field(
        strict=True, ge=-MAX_POINTS, le=MAX_POINTS, description="Signed: > 0 credits, < 0 debits"
    )
    reason: Reason
    reference: Reference | None = None
    metadata: Metadata = None

    model_config = body_examples(
        {
            "program": "WLT",
            "member_ref": "m-10001",
            "points": -120,
            "reason": "duplicate accrual INC-311",
        },
    )

    @model_validator(mode="after")
    def _nonzero(self) -> AdjustmentIn:
        if self.points == 0:
            raise ValueError("points must not be 0")
        return self


class BalanceAfter(BaseModel):
    balance: int
    held: int
    pending: int = Field(default=0, description="Earned points not spendable yet (pending_days)")
    available: int = Field(description="balance - held - pending")


class TransactionOut(BaseModel):
    id: UUID
    type: Literal["earn", "burn", "capture", "reversal", "transfer", "adjustment"]
    program: str
    member_ref: str
    points: int
    kind: str | None = None
    reference: str | None = None
    reason: str | None = None
    metadata: dict[str, object] | None = None
    original_id: UUID | None = None
    hold_id: UUID | None = None
    to_member_ref: str | None = None
    reversed_points: int = 0
    occurred_at: datetime
    created_at: datetime
    balance_after: BalanceAfter
    to_balance_after: BalanceAfter | None = None


class HoldOut(BaseModel):
    id: UUID
    type: Literal["hold"] = "hold"
    status: Literal["held", "captured", "voided", "expired"]
    program: str
    member_ref: str
    points: int
    captured_points: int | None = None
    capture_transaction_id: UUID | None = None
    reference: str | None = None
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    balance_after: BalanceAfter
