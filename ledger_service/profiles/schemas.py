"""A member's profile as clients see it. Pseudonymous: member_ref only, no personal data."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Profile(BaseModel):
    program: str
    member_ref: str
    first_activity_at: datetime | None
    last_activity_at: datetime | None
    last_earn_at: datetime | None
    last_burn_at: datetime | None
    earned_points_30d: int = Field(
        description="Earned less clawbacks, by occurred_at. Windows are days of the program's time zone: "
        "30 days are today and the 29 before, from local midnight"
    )
    earned_points_90d: int
    earned_points_365d: int
    earn_count_30d: int
    earn_count_90d: int
    earn_count_365d: int
    redeemed_points_30d: int = Field(description="Burned and captured less refunds, by occurred_at")
    redeemed_points_90d: int
    redeemed_points_365d: int
    lifetime_earned: int
    lifetime_redeemed: int
    lifetime_expired: int
    top_mcc: list[str] = Field(
        description="Up to 5 merchant categories, most frequent earns over 365 days first"
    )
    channels: list[str] = Field(description="Channels of purchases over 365 days")
    expiring_points_30d: int = Field(
        description="Points of open lots expiring by the end of the 30th local day, today the first"
    )
    expiring_points_90d: int
    tier: str
    balance: int
    pending_points: int = Field(description="Earned points not spendable yet (pending_days), at refreshed_at")
    tags: list[str] = Field(
        description="new, active, dormant, never_redeemed, expiring_soon, high_value (top 10% of the "
        "program by 365-day earned points, as of the last program-wide refresh)"
    )
    refreshed_at: datetime


class ProfileRun(BaseModel):
    programs: int
    members: int
    segments: int
    entered: int
    left: int
