"""Quotes: the amounts of a conversion at a rate that holds until the quote expires (DESIGN §5)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from conversion_service.schemas_common import MemberRef, Points, ProgramCode
from services.validation import StrictBody, body_examples


class Pricing(BaseModel):
    """What to convert: `from_points` to spend, or the `to_points` wished (exactly one)."""

    from_program: ProgramCode
    to_program: ProgramCode = Field(examples=["JFB"])
    member_ref: MemberRef
    from_points: Points | None = Field(default=None, description="Source points to convert")
    to_points: Points | None = Field(
        default=None,
        description="Target points wished: the quote takes the smallest from_points that yields at least "
        "this many",
        examples=[980],
    )

    def check_one_amount(self) -> None:
        if (self.from_points is None) == (self.to_points is None):
            raise ValueError("send exactly one of from_points and to_points")


class QuoteIn(Pricing, StrictBody):
    expires_in_s: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=3600,
        description="How long the quote holds its rate; default and maximum: the service's quote TTL "
        "(300 s unless configured)",
        examples=[120],
    )

    model_config = body_examples(
        {"from_program": "WLT", "to_program": "JFB", "member_ref": "m-10001", "from_points": 5000},
        {"from_program": "WLT", "to_program": "JFB", "member_ref": "m-10001", "to_points": 980},
    )

    @model_validator(mode="after")
    def _one_amount(self) -> QuoteIn:
        self.check_one_amount()
        return self


class AppliedRate(BaseModel):
    """The rate a quote or conversion uses, as it was when priced."""

    source: Literal["direct", "derived"]
    version: int | None = Field(examples=[1])
    from_points: int = Field(examples=[5])
    to_points: int = Field(examples=[1])
    fee_bps: int = Field(examples=[200])


def applied_rate(row: Mapping[str, Any]) -> dict[str, Any]:
    """The AppliedRate fields of a stored quote or conversion."""
    return {
        "source": row["rate_source"],
        "version": row["rate_version"],
        "from_points": row["rate_from_points"],
        "to_points": row["rate_to_points"],
        "fee_bps": row["fee_bps"],
    }


class QuoteRate(AppliedRate):
    min_from_points: int = Field(examples=[1000])
    daily_limit_from_points: int | None = Field(examples=[200000])


class QuoteOut(BaseModel):
    id: UUID
    from_program: str = Field(examples=["WLT"])
    to_program: str = Field(examples=["JFB"])
    member_ref: str = Field(examples=["m-10001"])
    from_points: int = Field(description="Source points debited, fee included", examples=[5000])
    fee_points: int = Field(description="ceil(from_points * fee_bps / 10000)", examples=[100])
    to_points: int = Field(
        description="floor((from_points - fee_points) * rate.to_points / rate.from_points)", examples=[980]
    )
    rate: QuoteRate
    expires_at: datetime
    created_at: datetime
