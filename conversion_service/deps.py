"""FastAPI dependencies: what the routes take from the application's state (built in the lifespan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from conversion_service.settings import ConversionSettings
from services.auth import Principal, require
from services.db import Database
from services.ledger_client import LedgerClient


@dataclass(frozen=True)
class Context:
    """The collaborators every conversion-service operation needs."""

    db: Database
    ledger: LedgerClient
    settings: ConversionSettings


async def _context(request: Request) -> Context:
    ctx: Context = request.app.state.conversion
    return ctx


Ctx = Annotated[Context, Depends(_context)]

# The callers of the routes, by the scope each needs.
Reader = Annotated[Principal, Depends(require("conversion:read"))]
Writer = Annotated[Principal, Depends(require("conversion:write"))]
Admin = Annotated[Principal, Depends(require("conversion:admin"))]
