"""Program configuration as clients send and receive it (DESIGN §4, "Program configuration")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ledger_service.schemas_common import MAX_POINTS, Currency, PointKind, ProgramCode, TimeZone
from services.validation import StrictBody, body_examples, check_patch

_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class Strict(StrictBody):
    model_config = ConfigDict(extra="forbid")


class CashValue(Strict):
    """`points` points are worth `cash_minor` minor units of `currency` (500 points = 100 fen)."""

    points: int = Field(strict=True, gt=0, le=10**12, examples=[500])
    cash_minor: int = Field(strict=True, ge=0, le=10**12, examples=[100])
    currency: Currency


class ExpiryNever(Strict):
    policy: Literal["never"]


class ExpiryRolling(Strict):
    policy: Literal["rolling"]
    months: int = Field(strict=True, ge=1, le=600, examples=[24])


class ExpiryFixed(Strict):
    policy: Literal["fixed"]
    month: int = Field(strict=True, ge=1, le=12, examples=[12])
    day: int = Field(strict=True, ge=1, le=31, examples=[31])
    years_after: int = Field(strict=True, ge=0, le=50, examples=[1])

    @model_validator(mode="after")
    def _real_date(self) -> ExpiryFixed:
        if self.day > _MONTH_DAYS[self.month - 1]:
            raise ValueError(f"month {self.month} has no day {self.day} in every year")
        return self


Expiry = Annotated[ExpiryNever | ExpiryRolling | ExpiryFixed, Field(discriminator="policy")]

TierCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]


class Tier(Strict):
    code: TierCode = Field(examples=["silver"])
    min_points: int = Field(strict=True, gt=0, le=10**15, examples=[10000])


def _check_tiers(tiers: list[Tier] | None) -> None:
    if not tiers:
        return
    codes = [t.code for t in tiers]
    if len(set(codes)) != len(codes) or "basic" in codes:
        raise ValueError("tier codes must be unique and not 'basic' (the tier below every threshold)")
    mins = [t.min_points for t in tiers]
    if mins != sorted(mins) or len(set(mins)) != len(mins):
        raise ValueError("tiers must be listed by strictly increasing min_points")


TierDowngrade = Literal["to_qualified", "one_down"]
ReturnsPolicy = Literal["within_balance", "only_pending", "allow_negative"]
PendingDays = Annotated[
    int,
    Field(
        strict=True, ge=0, le=365,
        description="Earned points stay pending (not spendable) this many days from occurred_at",
    ),
]  # fmt: skip
RETURNS_POLICY_DOC = (
    "What a clawback (reversal of an earn) may take: within_balance (never takes available below "
    "zero), only_pending (only the earn's points still pending), allow_negative"
)


def _distinct_days(days: list[int]) -> list[int]:
    if len(set(days)) != len(days):
        raise ValueError("expiry_notices_days must not repeat")
    return sorted(days, reverse=True)


NoticeDays = Annotated[
    list[Annotated[int, Field(strict=True, ge=1, le=3650)]],
    Field(max_length=5, description="Send points.expiring this many days before a lot expires, e.g. [30, 7]"),
    AfterValidator(_distinct_days),
]


def _default_kinds() -> list[PointKind]:
    return ["purchase"]


DEFAULT_MAX_POINTS_PER_TRANSACTION = 100_000_000
MaxPointsPerTransaction = Annotated[
    int,
    Field(
        strict=True,
        gt=0,
        le=MAX_POINTS,
        description="The most points one earn, burn, hold, transfer, adjustment or batch row may move "
        "(422 points_limit_exceeded above it)",
        examples=[DEFAULT_MAX_POINTS_PER_TRANSACTION],
    ),
]


class ProgramIn(Strict):
    code: ProgramCode
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        examples=["Ping An Wanlitong"]
    )
    cash_value: CashValue
    expiry: Expiry = Field(default_factory=lambda: ExpiryNever(policy="never"))
    rollover_bps: int = Field(default=0, strict=True, ge=0, le=10000)
    tiers: list[Tier] = Field(default_factory=list, max_length=20)
    tier_window_months: int = Field(default=12, strict=True, ge=1, le=120)
    qualifying_kinds: list[PointKind] = Field(default_factory=_default_kinds, min_length=1)
    allow_negative: bool = Field(default=False, strict=True)
    timezone: TimeZone = "UTC"
    tier_downgrade: TierDowngrade = "to_qualified"
    expiry_notices_days: NoticeDays = Field(default_factory=list)
    pending_days: PendingDays = 0
    returns_policy: ReturnsPolicy = Field(default="within_balance", description=RETURNS_POLICY_DOC)
    max_points_per_transaction: MaxPointsPerTransaction = DEFAULT_MAX_POINTS_PER_TRANSACTION

    model_config = body_examples(
        {
            "code": "WLT",
            "name": "Ping An Wanlitong",
            "cash_value": {"points": 500, "cash_minor": 100, "currency": "CNY"},
            "expiry": {"policy": "fixed", "month": 12, "day": 31, "years_after": 1},
            "rollover_bps": 0,
            "tiers": [{"code": "silver", "min_points": 10000}, {"code": "gold", "min_points": 50000}],
            "tier_window_months": 12,
            "qualifying_kinds": ["purchase"],
            "allow_negative": False,
            "timezone": "Asia/Shanghai",
            "tier_downgrade": "one_down",
            "expiry_notices_days": [30, 7],
            "pending_days": 7,
            "returns_policy": "within_balance",
        },
    )

    @model_validator(mode="after")
    def _valid(self) -> ProgramIn:
        _check_tiers(self.tiers)
        if len(set(self.qualifying_kinds)) != len(self.qualifying_kinds):
            raise ValueError("qualifying_kinds must not repeat")
        return self


class ProgramPatch(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    cash_value: CashValue | None = None
    expiry: Expiry | None = None
    rollover_bps: int | None = Field(default=None, strict=True, ge=0, le=10000)
    tiers: list[Tier] | None = Field(default=None, max_length=20)
    tier_window_months: int | None = Field(default=None, strict=True, ge=1, le=120)
    qualifying_kinds: list[PointKind] | None = Field(default=None, min_length=1)
    allow_negative: bool | None = Field(default=None, strict=True)
    timezone: TimeZone | None = None
    tier_downgrade: TierDowngrade | None = None
    expiry_notices_days: NoticeDays | None = None
    pending_days: PendingDays | None = None
    returns_policy: ReturnsPolicy | None = Field(default=None, description=RETURNS_POLICY_DOC)
    max_points_per_transaction: MaxPointsPerTransaction | None = None

    model_config = body_examples(
        {"name": "Wanlitong", "rollover_bps": 2000},
    )

    @model_validator(mode="after")
    def _valid(self) -> ProgramPatch:
        _check_tiers(self.tiers)
        check_patch(self)
        return self


class ProgramOut(BaseModel):
    code: str
    name: str
    cash_value: CashValue
    expiry: Expiry
    rollover_bps: int
    tiers: list[Tier]
    tier_window_months: int
    qualifying_kinds: list[str]
    allow_negative: bool
    timezone: str
    tier_downgrade: str
    expiry_notices_days: list[int]
    pending_days: int
    returns_policy: str
    max_points_per_transaction: int
    created_at: datetime
    updated_at: datetime


class ProgramList(BaseModel):
    data: list[ProgramOut]
    next_cursor: str | None
