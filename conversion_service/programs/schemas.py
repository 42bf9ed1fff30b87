"""Per-program conversion policy, kept by the conversion service (the ledger has no such flags)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from services.validation import StrictBody, body_examples


class ProgramSettingsIn(StrictBody):
    allow_derived_rates: bool = Field(
        strict=True,
        description="May rates from or to this program be derived from the programs' cash values when "
        "no direct rate is published? Both programs of a pair must allow it.",
    )
    derived_fee_bps: int = Field(
        default=0,
        strict=True,
        ge=0,
        le=9999,
        description="Fee of a derived rate, in basis points; a derived rate charges the larger of its "
        "two programs' fees.",
    )

    model_config = body_examples(
        {"allow_derived_rates": True, "derived_fee_bps": 300},
    )


class ProgramSettingsOut(BaseModel):
    program: str = Field(examples=["WLT"])
    allow_derived_rates: bool
    derived_fee_bps: int
    updated_at: datetime | None = Field(description="null: never set; these are the defaults")
