"""Redemptions as clients send and receive them (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
from pydantic import BaseModel, Field, StringConstraints

from catalog_service.common import Sku
from services.conventions import MemberRef, ProgramCode
from services.validation import StrictBody, body_examples

MAX_QUANTITY = 100

RedemptionStatus = Literal["debiting", "fulfilled", "refunding", "failed", "cancelling", "cancelled"]
UNFINISHED: tuple[str, ...] = ("debiting", "refunding", "cancelling")

Reason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$"),
    Field(examples=["member changed their mind"]),
]


class RedemptionIn(StrictBody):
    sku: Sku
    program: ProgramCode = Field(description="Must be the reward's program")
    member_ref: MemberRef
    quantity: int = Field(default=1, strict=True, ge=1, le=MAX_QUANTITY, examples=[1])

    model_config = body_examples(
        {"sku": "STARBUCKS-TALL", "program": "WLT", "member_ref": "m-10001", "quantity": 1},
    )


class CancelIn(StrictBody):
    reason: Reason | None = None

    model_config = body_examples(
        {"reason": "parcel returned to sender"},
    )


class Failure(BaseModel):
    code: str = Field(examples=["insufficient_points"])
    detail: str


class RedemptionOut(BaseModel):
    id: UUID
    status: RedemptionStatus
    sku: str
    reward_type: str
    program: str
    member_ref: str
    quantity: int
    points: int = Field(description="Points taken (price_points x quantity)")
    cash_minor: int | None = Field(description="Cash due on top of the points, for the caller to collect")
    currency: str | None
    voucher_codes: list[str] | None = Field(
        description="Codes this redemption gave (voucher rewards; empty otherwise). Null when they are not "
        "shown to this caller: only the API key that redeemed, or a catalog:admin key, sees them."
    )
    burn_transaction_id: UUID | None
    refund_transaction_id: UUID | None
    failure: Failure | None
    created_at: datetime
    updated_at: datetime
    fulfilled_at: datetime | None
    finished_at: datetime | None


class RedemptionEvent(BaseModel):
    status: str
    event: str
    detail: dict[str, Any] | None
    created_at: datetime


class RedemptionDetail(RedemptionOut):
    events: list[RedemptionEvent] = Field(description="The saga's history, oldest first")


class RedemptionList(BaseModel):
    data: list[RedemptionOut]
    next_cursor: str | None


# Fields of a redemption named as their columns.
_AS_STORED = (
    "id", "status", "sku", "reward_type", "program", "member_ref", "quantity", "points", "cash_minor",
    "currency", "created_at", "updated_at", "fulfilled_at", "finished_at",
)  # fmt: skip


def redemption_out(row: asyncpg.Record, codes: Sequence[str] | None) -> RedemptionOut:
    """`codes` None hides the voucher codes (the caller did not redeem)."""
    failure = None
    if row["failure_code"] is not None:
        failure = Failure(code=row["failure_code"], detail=row["failure_detail"] or "")
    return RedemptionOut(
        **{k: row[k] for k in _AS_STORED},
        voucher_codes=None if codes is None else list(codes),
        burn_transaction_id=row["burn_txn_id"],
        refund_transaction_id=row["refund_txn_id"],
        failure=failure,
    )


def redemption_json(row: asyncpg.Record, codes: Sequence[str] | None) -> dict[str, Any]:
    data: dict[str, Any] = redemption_out(row, codes).model_dump(mode="json")
    return data
