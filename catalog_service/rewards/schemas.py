"""Rewards as clients send and receive them (DESIGN §6)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from catalog_service.common import Sku
from services.conventions import Currency, ProgramCode
from services.validation import StrictBody, Timestamp, body_examples, check_patch

RewardType = Literal["physical", "voucher", "service"]
MAX_PRICE = 10**12
MAX_STOCK = 10**9
MAX_LIMIT = 10**6

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Description = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Label = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"),
    Field(examples=["coffee"]),
]
PricePoints = Annotated[
    int, Field(strict=True, gt=0, le=MAX_PRICE, description="Points per unit", examples=[2500])
]
CashPrice = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        le=MAX_PRICE,
        description="Cash due per unit on top of the points (points + cash), in minor units of `currency`; "
        "the catalog records it, the caller's checkout collects it",
        examples=[990],
    ),
]
Stock = Annotated[
    int, Field(strict=True, ge=0, le=MAX_STOCK, description="Units left to redeem", examples=[50])
]
Limit = Annotated[
    int,
    Field(strict=True, gt=0, le=MAX_LIMIT, description="Most units one member may hold", examples=[2]),
]


class Strict(StrictBody):
    model_config = ConfigDict(extra="forbid")


class RewardIn(Strict):
    sku: Sku
    name: Name = Field(examples=["Starbucks tall latte e-coupon"])
    description: Description | None = None
    type: RewardType = Field(examples=["voucher"])
    program: ProgramCode
    price_points: PricePoints
    cash_price_minor: CashPrice | None = None
    currency: Currency | None = Field(
        default=None, description="Currency of `cash_price_minor` (default CNY)"
    )
    stock: Stock | None = Field(default=None, description="Units left to redeem; null (default) is unlimited")
    per_member_limit: Limit | None = None
    active_from: Timestamp | None = None
    active_to: Timestamp | None = None
    category: Label | None = None
    merchant: Label | None = None

    model_config = body_examples(
        {
            "sku": "STARBUCKS-TALL",
            "name": "Starbucks tall latte e-coupon",
            "type": "voucher",
            "program": "WLT",
            "price_points": 2500,
            "stock": 50,
            "per_member_limit": 2,
            "active_from": "2025-01-01T00:00:00Z",
            "active_to": "2026-01-01T00:00:00Z",
            "category": "coffee",
            "merchant": "starbucks-cn",
        },
        {
            "sku": "LUGGAGE-20IN",
            "name": "20-inch carry-on",
            "type": "physical",
            "program": "MU",
            "price_points": 30000,
            "cash_price_minor": 9900,
            "currency": "CNY",
            "stock": 200,
            "category": "travel",
        },
    )

    @model_validator(mode="after")
    def _consistent(self) -> RewardIn:
        check_window(self.active_from, self.active_to)
        if self.currency is not None and self.cash_price_minor is None:
            raise ValueError("currency is only meaningful with cash_price_minor")
        if self.cash_price_minor is not None and self.currency is None:
            self.currency = "CNY"
        return self


def check_window(active_from: datetime | None, active_to: datetime | None) -> None:
    if active_from is not None and active_to is not None and active_from >= active_to:
        raise ValueError("active_from must be before active_to")


# Fields a PATCH may set to null (meaning: remove the limit, the window bound, the cash part...).
NULLABLE = frozenset(
    {"description", "cash_price_minor", "currency", "stock", "per_member_limit", "active_from", "active_to",
     "category", "merchant"}
)  # fmt: skip


class RewardPatch(Strict):
    name: Name | None = None
    description: Description | None = None
    price_points: PricePoints | None = None
    cash_price_minor: CashPrice | None = None
    currency: Currency | None = None
    stock: Stock | None = Field(
        default=None, description="Set the units left to redeem; null makes the reward unlimited"
    )
    per_member_limit: Limit | None = None
    active_from: Timestamp | None = None
    active_to: Timestamp | None = None
    category: Label | None = None
    merchant: Label | None = None

    model_config = body_examples(
        {"stock": 120, "active_to": "2026-06-30T16:00:00Z"},
        {"per_member_limit": None},
    )

    @model_validator(mode="after")
    def _valid(self) -> RewardPatch:
        check_patch(self, NULLABLE)
        return self


class RewardOut(BaseModel):
    sku: str
    name: str
    description: str | None
    type: RewardType
    program: str
    price_points: int
    cash_price_minor: int | None
    currency: str | None
    stock: int | None = Field(description="Units left to redeem; null is unlimited")
    per_member_limit: int | None
    active_from: datetime | None
    active_to: datetime | None
    active: bool = Field(description="Inside its active window now")
    category: str | None
    merchant: str | None
    codes_available: int | None = Field(description="Voucher codes not yet given out (voucher rewards)")
    created_at: datetime
    updated_at: datetime


class RewardList(BaseModel):
    data: list[RewardOut]
    next_cursor: str | None
