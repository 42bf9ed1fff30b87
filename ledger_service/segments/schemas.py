"""Segments as clients see them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from services.validation import StrictBody, body_examples

SegmentCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]


class SegmentIn(StrictBody):
    model_config = body_examples(
        {
            "code": "dormant-high-value",
            "name": "High value, no earn for 90 days",
            "criteria": {
                "all": [
                    {"field": "days_since_last_earn", "op": "gte", "value": 90},
                    {"field": "lifetime_earned", "op": "gte", "value": 10000},
                ]
            },
        },
    )

    code: SegmentCode
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    criteria: dict[str, Any] = Field(
        description='{"all" | "any": [condition or group, ...]}; a condition is {field, op, value}. '
        "Fields: the profile's numeric fields, tier, tag, mcc, channel, days_since_last_earn, "
        "days_since_last_burn; ops: eq, ne, in, gte, lte, between."
    )


class SegmentOut(BaseModel):
    program: str
    code: str
    name: str
    criteria: dict[str, Any]
    member_count: int
    refreshed_at: datetime | None
    created_at: datetime


class SegmentPage(BaseModel):
    data: list[SegmentOut]
    next_cursor: str | None


class SegmentMember(BaseModel):
    member_ref: str
    entered_at: datetime


class SegmentMemberPage(BaseModel):
    data: list[SegmentMember]
    next_cursor: str | None


class SegmentRefresh(BaseModel):
    program: str
    segment: str
    member_count: int
    entered: int
    left: int
    refreshed_at: datetime
