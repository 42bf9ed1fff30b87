"""Exchange rates as clients send and receive them (DESIGN §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from conversion_service.arithmetic import Terms
from conversion_service.schemas_common import Currency, Points
from services.validation import StrictBody, Timestamp, body_examples


class RateIn(StrictBody):
    """`from_points` source points buy `to_points` target points, before the fee."""

    from_points: Points = Field(examples=[5])
    to_points: Points = Field(examples=[1])
    fee_bps: int = Field(default=0, strict=True, ge=0, le=9999, examples=[200])
    min_from_points: Points = Field(default=1, examples=[1000])
    daily_limit_from_points: Points | None = Field(
        default=None,
        description="At most this many source points per member per UTC day for this pair; null: none",
        examples=[200000],
    )
    effective_from: Timestamp | None = Field(
        default=None,
        description="When this version takes effect (RFC 3339); omitted: now. Not in the past: rates "
        "already in force are never rewritten.",
        examples=["2030-01-01T00:00:00Z"],
    )

    model_config = body_examples(
        {
            "from_points": 5,
            "to_points": 1,
            "fee_bps": 200,
            "min_from_points": 1000,
            "daily_limit_from_points": 200000,
        },
    )

    @model_validator(mode="after")
    def _limit_above_minimum(self) -> RateIn:
        limit = self.daily_limit_from_points
        if limit is not None and limit < self.min_from_points:
            raise ValueError("daily_limit_from_points must be at least min_from_points")
        return self


class CashValue(BaseModel):
    points: int
    cash_minor: int
    currency: Currency


class DerivedFrom(BaseModel):
    """The two programs' cash values a derived rate was computed from."""

    from_cash_value: CashValue
    to_cash_value: CashValue


class RateOut(BaseModel):
    from_program: str = Field(examples=["WLT"])
    to_program: str = Field(examples=["JFB"])
    source: Literal["direct", "derived"] = Field(
        description="direct: a published rate; derived: computed from the programs' cash values because "
        "no rate is published and both programs allow it"
    )
    version: int | None = Field(description="Version of a direct rate; null for a derived one", examples=[1])
    from_points: int = Field(examples=[5])
    to_points: int = Field(examples=[1])
    fee_bps: int = Field(examples=[200])
    min_from_points: int = Field(examples=[1000])
    daily_limit_from_points: int | None = Field(examples=[200000])
    effective_from: datetime | None = None
    created_at: datetime | None = None
    derived_from: DerivedFrom | None = None

    def terms(self) -> Terms:
        return Terms(self.from_points, self.to_points, self.fee_bps)


class RateList(BaseModel):
    data: list[RateOut]
    next_cursor: str | None
