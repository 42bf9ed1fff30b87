"""Finance responses. Points and cash are integers; cash is in minor units at the program's cash value."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Period = Literal["month", "day"]
AgingBucketName = Literal["0-3m", "3-6m", "6-12m", "12m+", "never"]
AGING_BUCKETS: tuple[AgingBucketName, ...] = ("0-3m", "3-6m", "6-12m", "12m+", "never")
CURVE_MONTHS: tuple[int, ...] = (1, 3, 6, 12)


class CashValue(BaseModel):
    points: int
    cash_minor: int
    currency: str


class RollForwardRow(BaseModel):
    period_start: date
    period_end: date = Field(description="Exclusive")
    opening: int
    issued: int = Field(description="Earned, less earns clawed back")
    redeemed: int = Field(description="Burned and captured, less refunds")
    expired: int = Field(description="Expired to breakage")
    adjusted: int = Field(description="Adjustments (transfers net to zero inside a program)")
    closing: int = Field(description="opening + issued - redeemed - expired + adjusted")
    opening_cash_minor: int
    issued_cash_minor: int
    redeemed_cash_minor: int
    expired_cash_minor: int
    adjusted_cash_minor: int = Field(
        description="Adjustments in cash, and the rounding that makes the row close"
    )
    closing_cash_minor: int


class RollForward(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    program: str
    period: Period
    period_from: date = Field(alias="from")
    period_to: date = Field(alias="to", description="Exclusive")
    cash_value: CashValue
    outstanding: int = Field(description="Member balances now: the last closing when `to` is not in the past")
    rows: list[RollForwardRow]


class AgingBucket(BaseModel):
    bucket: AgingBucketName
    points: int
    cash_minor: int


class Aging(BaseModel):
    program: str
    as_of: datetime
    cash_value: CashValue
    outstanding: int = Field(description="Sum of the buckets plus negative_balances")
    outstanding_cash_minor: int
    negative_balances: int = Field(description="Sum of member balances below zero (they hold no lots)")
    buckets: list[AgingBucket]


class CurvePoint(BaseModel):
    months: int
    redeemed: int = Field(description="Redeemed within this many months of each lot's issue")
    share_bps: int | None = Field(description="redeemed / issued, in basis points")
    complete: bool = Field(description="Every lot of the cohort is at least this many months old")


class Cohort(BaseModel):
    month: date
    lots: int
    issued: int
    redeemed: int = Field(description="Burned or captured from these lots, less refunds")
    reversed: int = Field(description="Clawed back")
    transferred: int = Field(description="Given to other members")
    expired: int = Field(description="Left by expiry (rolled-over points included)")
    outstanding: int
    curve: list[CurvePoint]


class Cohorts(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    program: str
    period_from: date = Field(alias="from")
    period_to: date = Field(alias="to", description="Exclusive")
    cohorts: list[Cohort]
