"""What the catalog's features share: field types and dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import Field, StringConstraints

from services.auth import Principal, require
from services.ledger_client import LedgerClient

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

Sku = Annotated[
    str,
    StringConstraints(pattern=SKU_PATTERN),
    Field(
        description="1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit", examples=["STARBUCKS-TALL"]
    ),
]


async def get_ledger(request: Request) -> LedgerClient:
    ledger: LedgerClient = request.app.state.ledger
    return ledger


# The callers of the routes, by the scope each needs.
Reader = Annotated[Principal, Depends(require("catalog:read"))]
Writer = Annotated[Principal, Depends(require("catalog:write"))]
Admin = Annotated[Principal, Depends(require("catalog:admin"))]
