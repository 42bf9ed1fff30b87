"""The callers the ledger's routes take, by the scope each needs (DESIGN §2): the principal of a valid
API key holding it, else 401/403 before the route runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from services.auth import Principal, require

Reader = Annotated[Principal, Depends(require("ledger:read"))]
Admin = Annotated[Principal, Depends(require("ledger:admin"))]
Earner = Annotated[Principal, Depends(require("ledger:earn"))]
Burner = Annotated[Principal, Depends(require("ledger:burn"))]
