"""Field types shared by the ledger's request and response models (DESIGN §3)."""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

from services.conventions import MAX_POINTS, Currency, MemberRef, Points, ProgramCode

__all__ = [
    "MAX_POINTS",
    "Currency",
    "MemberRef",
    "Metadata",
    "PartnerCode",
    "PointKind",
    "Points",
    "ProgramCode",
    "Reason",
    "Reference",
    "TimeZone",
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


def _known_zone(name: str) -> str:
    """An IANA zone name both Python and PostgreSQL know (the ledger computes days and months in it)."""
    if name not in _zones():
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as Asia/Shanghai or UTC")
    return name


@cache
def _zones() -> frozenset[str]:
    return (frozenset(zoneinfo.available_timezones()) - {"localtime"}) | {"UTC"}


TimeZone = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_known_zone),
    Field(description="IANA time zone of the program's days and months", examples=["Asia/Shanghai"]),
]

PartnerCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z0-9_]{2,16}$"),
    Field(description="A coalition partner's code (2-16 of A-Z 0-9 _)", examples=["ICBC"]),
]

PointKind = Literal["purchase", "tenure", "credit", "bonus"]
POINT_KINDS: tuple[str, ...] = ("purchase", "tenure", "credit", "bonus")


_INT64 = 2**63


def _numbers_fit(value: Any) -> bool:
    """Numbers in metadata must fit a 64-bit integer's range: a larger integer cannot be stored as
    canonical JSON (and a JSON parser may turn it into an inexact float)."""
    if isinstance(value, dict):
        return all(_numbers_fit(v) for v in value.values())
    if isinstance(value, list):
        return all(_numbers_fit(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    return -_INT64 < value < _INT64


def _small_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return value
    if len(repr(value)) > 4096:
        raise ValueError("metadata must be at most about 4 KB")
    if not _numbers_fit(value):
        raise ValueError("numbers in metadata must be between -2^63 and 2^63")
    return value


Metadata = Annotated[
    dict[str, Any] | None,
    AfterValidator(_small_metadata),
    Field(description="Free-form caller data, at most 4 KB", examples=[{"store": "SH-021"}]),
]
