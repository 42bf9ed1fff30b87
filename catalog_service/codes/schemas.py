"""Voucher code uploads."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from services.validation import StrictBody, body_examples

MAX_CODES_PER_UPLOAD = 10_000

VoucherCode = Annotated[
    str,
    StringConstraints(pattern=r"^[\x21-\x7e]{1,128}$"),
    Field(description="1-128 printable ASCII characters, no spaces", examples=["SBX-7F3K-92QD"]),
]


class CodesIn(StrictBody):
    codes: list[VoucherCode] = Field(min_length=1, max_length=MAX_CODES_PER_UPLOAD)

    model_config = body_examples(
        {"codes": ["SBX-7F3K-92QD", "SBX-Q8ZP-41MA", "SBX-LL2C-07TW"]},
    )


class CodesOut(BaseModel):
    sku: str
    added: int = Field(description="Codes stored by this upload")
    codes_available: int = Field(description="Codes of the reward not yet given out")
