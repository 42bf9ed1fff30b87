"""Field types shared by the ledger's request and response models (DESIGN §3)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

from services.conventions import MAX_POINTS, Currency, MemberRef, Points, ProgramCode

__all__ = [
    "MAX_POINTS",
    "Currency",
    "MemberRef",
    "Metadata",
    "PointKind",
    "Points",
    "ProgramCode",
    "Reason",
    "Reference",
]

Reference = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"),
    Field(description="The caller's reference (order, receipt)", examples=["order-7781"]),
]
Reason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$"),
    Field(examples=["customer returned the item"]),
]
PointKind = Literal["purchase", "tenure", "credit", "bonus"]
POINT_KINDS: tuple[str, ...] = ("purchase", "tenure", "credit", "bonus")


def _small_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(repr(value)) > 4096:
        raise ValueError("metadata must be at most about 4 KB")
    return value


Metadata = Annotated[
    dict[str, Any] | None,
    AfterValidator(_small_metadata),
    Field(description="Free-form caller data, at most 4 KB", examples=[{"store": "SH-021"}]),
]
