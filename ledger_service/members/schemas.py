"""Read models: a member's balances, the statement, one transaction with its postings."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field


class Expiring(BaseModel):
    points: int
    expires_at: datetime


class Release(BaseModel):
    points: int
    release_at: datetime


class NextTier(BaseModel):
    code: str
    min_points: int
    points_needed: int


class MemberOut(BaseModel):
    program: str
    member_ref: str
    balance: int
    held: int
    pending: int = Field(description="Earned points not spendable yet (pending_days); not in available")
    available: int = Field(description="balance - held - pending")
    releases: list[Release] = Field(description="When the pending points become spendable, soonest first")
    tier: str
    tier_since: datetime | None
    qualifying_points: int
    next_tier: NextTier | None
    lifetime_earned: int
    expiring: list[Expiring]


class TierChange(BaseModel):
    from_tier: str
    to_tier: str
    qualifying_points: int
    reason: str
    created_at: datetime


class TierHistory(BaseModel):
    data: list[TierChange]
    next_cursor: str | None


class StatementEntry(BaseModel):
    transaction_id: UUID
    type: str
    amount: int
    points: int
    reference: str | None
    reason: str | None
    kind: str | None
    counterparty_ref: str | None
    original_id: UUID | None
    hold_id: UUID | None
    created_at: datetime


class Statement(BaseModel):
    data: list[StatementEntry]
    next_cursor: str | None


class PostingOut(BaseModel):
    account_id: int
    account_kind: str
    member_ref: str | None
    amount: int


class TransactionDetail(BaseModel):
    id: UUID
    type: str
    program: str
    member_ref: str
    to_member_ref: str | None
    points: int
    reversed_points: int
    kind: str | None
    reference: str | None
    reason: str | None
    metadata: dict[str, object] | None
    original_id: UUID | None
    hold_id: UUID | None
    occurred_at: datetime
    created_at: datetime
    postings: list[PostingOut]
