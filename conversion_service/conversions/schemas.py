"""Conversions: requests, their status and history (DESIGN §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from conversion_service.quotes.schemas import AppliedRate
from conversion_service.schemas_common import MemberRef, Points, ProgramCode
from services.validation import StrictBody, body_examples

Status = Literal[
    "created",
    "debiting",
    "debited",
    "crediting",
    "completed",
    "rejected",
    "compensating",
    "compensated",
    "failed",
]
# Statuses with work left (the saga runner drives, leases and resumes them), and those that end it.
UNFINISHED: tuple[str, ...] = ("created", "debiting", "debited", "crediting", "compensating")
FINAL: frozenset[str] = frozenset({"completed", "rejected", "compensated", "failed"})


class ConversionIn(StrictBody):
    """Either `quote_id` alone (the quote's amounts and rate, before it expires), or the quote fields
    (priced now at the rate in force)."""

    quote_id: UUID | None = Field(default=None, description="A quote from POST /v1/quotes, used once")
    from_program: ProgramCode | None = None
    to_program: ProgramCode | None = Field(default=None, examples=["JFB"])
    member_ref: MemberRef | None = None
    from_points: Points | None = None
    to_points: Points | None = Field(default=None, examples=[980])

    model_config = body_examples(
        {"quote_id": "0b6f7c1e-8d2a-4f0e-9a51-6f1f3c2d4e5a"},
        {"from_program": "WLT", "to_program": "JFB", "member_ref": "m-10001", "from_points": 5000},
    )

    @model_validator(mode="after")
    def _quote_or_fields(self) -> ConversionIn:
        fields = (self.from_program, self.to_program, self.member_ref, self.from_points, self.to_points)
        if self.quote_id is not None:
            if any(f is not None for f in fields):
                raise ValueError("send quote_id alone, or the quote fields without quote_id")
            return self
        if self.from_program is None or self.to_program is None or self.member_ref is None:
            raise ValueError("send quote_id, or from_program, to_program and member_ref")
        if (self.from_points is None) == (self.to_points is None):
            raise ValueError("send exactly one of from_points and to_points")
        return self


class ConversionError(BaseModel):
    status: int = Field(description="The ledger's HTTP status", examples=[422])
    code: str = Field(examples=["insufficient_points"])
    detail: str


class ConversionEvent(BaseModel):
    event: str = Field(
        description="A status entered (created, debiting, debited, crediting, completed, rejected, "
        "compensating, compensated, failed) or retry_scheduled",
        examples=["debited"],
    )
    status: Status = Field(description="The conversion's status after the event", examples=["debited"])
    at: datetime
    detail: dict[str, Any] | None = None


class ConversionSummary(BaseModel):
    id: UUID
    status: Status = Field(examples=["completed"])
    quote_id: UUID | None
    from_program: str = Field(examples=["WLT"])
    to_program: str = Field(examples=["JFB"])
    member_ref: str = Field(examples=["m-10001"])
    from_points: int = Field(examples=[5000])
    fee_points: int = Field(examples=[100])
    to_points: int = Field(examples=[980])
    rate: AppliedRate
    debit_transaction_id: UUID | None = Field(description="The burn in the source program")
    credit_transaction_id: UUID | None = Field(description="The earn in the target program")
    compensation_transaction_id: UUID | None = Field(description="The reversal of the debit, if compensated")
    error: ConversionError | None = Field(description="Why the ledger refused the debit or the credit")
    attempts: int = Field(description="Ledger calls that found the ledger unreachable, retried later")
    next_attempt_at: datetime | None = Field(description="When an unfinished conversion is retried")
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ConversionOut(ConversionSummary):
    history: list[ConversionEvent]


class ConversionList(BaseModel):
    data: list[ConversionSummary]
    next_cursor: str | None
