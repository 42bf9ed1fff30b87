"""Field types shared by the ledger's request and response models (DESIGN §3)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

MAX_POINTS = 2**63 - 1

ProgramCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z0-9_]{2,16}$"),
    Field(description="2-16 of A-Z 0-9 _", examples=["WLT"]),
]
MemberRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"),
    Field(
        description="The caller's pseudonymous member id (1-64 printable characters)", examples=["m-10001"]
    ),
]
Points = Annotated[
    int, Field(strict=True, gt=0, le=MAX_POINTS, description="Whole points, > 0", examples=[500])
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
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), Field(examples=["CNY"])]
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
