"""Field types shared by the conversion service's request and response models (DESIGN §3)."""

from __future__ import annotations

from pydantic import ConfigDict

from services.conventions import MAX_POINTS, Currency, MemberRef, Points, ProgramCode
from services.validation import StrictBody

__all__ = ["BPS", "MAX_POINTS", "Currency", "MemberRef", "Points", "ProgramCode", "Strict"]

BPS = 10_000


class Strict(StrictBody):
    model_config = ConfigDict(extra="forbid")
