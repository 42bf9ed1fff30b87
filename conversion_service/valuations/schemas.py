"""Valuations: what points are worth in cash, and the points needed to pay an amount (DESIGN §5)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from conversion_service.rates.schemas import CashValue
from conversion_service.schemas_common import Currency, Points, ProgramCode
from services.validation import StrictBody, body_examples

MAX_CASH_MINOR = 10**15


class ValuationIn(StrictBody):
    """`points` (-> their cash value), or `cash_minor` and `currency` (-> the points needed to pay it)."""

    program: ProgramCode
    points: Points | None = Field(default=None, description="Points to value in cash", examples=[15000])
    cash_minor: int | None = Field(
        default=None,
        strict=True,
        gt=0,
        le=MAX_CASH_MINOR,
        description="An amount in minor units (fen) to pay with points",
        examples=[3000],
    )
    currency: Currency | None = Field(default=None, description="ISO 4217, with cash_minor")

    model_config = body_examples(
        {"program": "WLT", "cash_minor": 3000, "currency": "CNY"},
        {"program": "WLT", "points": 15000},
    )

    @model_validator(mode="after")
    def _one_direction(self) -> ValuationIn:
        if self.points is not None:
            if self.cash_minor is not None or self.currency is not None:
                raise ValueError("send points, or cash_minor with currency, not both")
        elif self.cash_minor is None or self.currency is None:
            raise ValueError("send points, or cash_minor with currency")
        return self


class ValuationOut(BaseModel):
    program: str = Field(examples=["WLT"])
    direction: Literal["points_to_cash", "cash_to_points"]
    points: int = Field(
        description="points_to_cash: the points valued; cash_to_points: the points needed (rounded up)",
        examples=[15000],
    )
    cash_minor: int = Field(
        description="points_to_cash: their value (rounded down to the minor unit); cash_to_points: the "
        "amount to pay",
        examples=[3000],
    )
    currency: str = Field(examples=["CNY"])
    rounding: Literal["down", "up"] = Field(
        description="down: cash rounded down to the minor unit; up: points rounded up to the point"
    )
    cash_value: CashValue = Field(description="The program's cash value the valuation used")
