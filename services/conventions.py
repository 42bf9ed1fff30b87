"""Field types of the conventions every service shares (DESIGN §3): program codes, member refs,
points, currencies. One definition, so the three services validate them alike."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

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
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), Field(examples=["CNY"])]
