"""Earning rules as clients configure them (DESIGN §4, "Earning rules")."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ledger_service.postings.schemas import EarnIn
from ledger_service.schemas_common import ProgramCode, Reference
from services.validation import StrictBody, Timestamp, body_examples

Text = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Channel = Literal["pos", "online", "app"]
Mcc = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")]
TierCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]
SegmentRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]


class Strict(StrictBody):
    model_config = ConfigDict(extra="forbid")


class Match(Strict):
    """Every key given must match (a value or any of a list); keys left out match anything."""

    merchant_id: Text | list[Text] | None = None
    mcc: Mcc | list[Mcc] | None = None
    channel: Channel | list[Channel] | None = None
    tier: TierCode | list[TierCode] | None = None
    segment: SegmentRef | list[SegmentRef] | None = Field(
        default=None, description="The member is in this segment (or any of these): a targeted campaign"
    )

    @model_validator(mode="after")
    def _something(self) -> Match:
        keys = (self.merchant_id, self.mcc, self.channel, self.tier, self.segment)
        if not any(v is not None for v in keys):
            raise ValueError("match needs at least one of merchant_id, mcc, channel, tier, segment")
        return self


class Rule(Strict):
    name: Text = Field(examples=["10x at partner coffee in November"])
    match: Match
    multiplier: Decimal | None = Field(
        default=None, gt=0, le=1000, max_digits=9, decimal_places=4, examples=["10"]
    )
    bonus_points: int | None = Field(default=None, strict=True, gt=0, le=10**12, examples=[50])
    pending_days: int | None = Field(
        default=None, strict=True, ge=0, le=365,
        description="Earns this rule matches stay pending this many days (instead of the program's); "
        "of several matching rules that set it, the longest applies",
    )  # fmt: skip
    active_from: Timestamp | None = None
    active_to: Timestamp | None = None

    @model_validator(mode="after")
    def _valid(self) -> Rule:
        if self.multiplier is None and self.bonus_points is None and self.pending_days is None:
            raise ValueError("a rule needs a multiplier, bonus_points, pending_days or a combination")
        if self.active_from and self.active_to and self.active_from >= self.active_to:
            raise ValueError("active_from must be before active_to")
        return self


class Base(Strict):
    """`points` points for every `per_amount_minor` minor units spent (1 point per 100 fen = 1 per CNY)."""

    points: int = Field(strict=True, gt=0, le=10**9, examples=[1])
    per_amount_minor: int = Field(strict=True, gt=0, le=10**12, examples=[100])
    rounding: Literal["down", "half_up", "up"] = Field(
        default="down", description="Applied once, after the multiplier"
    )


class Caps(Strict):
    per_transaction: int | None = Field(default=None, strict=True, gt=0, le=10**15)
    per_member_per_day: int | None = Field(default=None, strict=True, gt=0, le=10**15)
    per_member_per_month: int | None = Field(default=None, strict=True, gt=0, le=10**15)


EXAMPLE_RULE_SET: dict[str, Any] = {
    "effective_from": "2026-11-01T00:00:00Z",
    "base": {"points": 1, "per_amount_minor": 100, "rounding": "down"},
    "rules": [
        {
            "name": "10x at partner coffee in November",
            "match": {"merchant_id": ["M-COFFEE-01", "M-COFFEE-02"]},
            "multiplier": "10",
            "active_from": "2026-11-01T00:00:00Z",
            "active_to": "2026-12-01T00:00:00Z",
        },
        {"name": "2x in the app", "match": {"channel": "app"}, "multiplier": "2"},
        {"name": "3x at supermarkets for gold", "match": {"mcc": "5411", "tier": "gold"}, "multiplier": "3"},
        {"name": "50 bonus at airlines", "match": {"mcc": ["3000", "4511"]}, "bonus_points": 50},
    ],
    "caps": {"per_transaction": 20000, "per_member_per_day": 50000, "per_member_per_month": 300000},
}


class RuleSetIn(Strict):
    effective_from: Timestamp
    base: Base
    rules: list[Rule] = Field(default_factory=list, max_length=200)
    caps: Caps = Field(default_factory=Caps)

    model_config = body_examples(
        EXAMPLE_RULE_SET,
    )

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSetIn:
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique within a rule set")
        return self


class RuleSetOut(RuleSetIn):
    model_config = ConfigDict(extra="ignore")

    program: str
    version: int
    created_at: datetime


class RuleSetList(BaseModel):
    data: list[RuleSetOut]


class EvaluateIn(EarnIn):
    """The body of an earn (DESIGN §4), priced without posting anything. `program` may be left out
    (the path names it; if sent it must be the same), and so may `reference`; `metadata`, `clearing`
    and `partner` are accepted and do not change the price. Explicit `points` are what the earn
    would post; a purchase alone is priced by the rules in force at `occurred_at`."""

    program: ProgramCode | None = None  # type: ignore[assignment]
    reference: Reference | None = None  # type: ignore[assignment]

    model_config = body_examples(
        {
            "program": "WLT",
            "member_ref": "m-10001",
            "reference": "order-7781",
            "purchase": {
                "amount_minor": 12345,
                "currency": "CNY",
                "merchant_id": "M-COFFEE-01",
                "mcc": "5814",
                "channel": "pos",
            },
            "occurred_at": "2026-11-15T10:00:00Z",
        },
    )


class Evaluation(BaseModel):
    program: str
    member_ref: str
    points: int
    breakdown: dict[str, Any]
