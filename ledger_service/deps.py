"""What the ledger's routes take: the callers by the scope each needs (DESIGN §2: the principal of a
valid API key holding it, else 401/403 before the route runs), and a job's or report's `as_of`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Query, Request

from services.auth import Principal, require
from services.errors import Unprocessable
from services.validation import Timestamp

Reader = Annotated[Principal, Depends(require("ledger:read"))]
Admin = Annotated[Principal, Depends(require("ledger:admin"))]
Earner = Annotated[Principal, Depends(require("ledger:earn"))]
Burner = Annotated[Principal, Depends(require("ledger:burn"))]
AsOf = Annotated[Timestamp | None, Query(description="RFC 3339; default now")]


def wants_csv(request: Request) -> bool:
    """The routes that export lines answer CSV instead of their JSON page to `Accept: text/csv`."""
    return "text/csv" in request.headers.get("accept", "")


# How far a job's `as_of` may be ahead of this clock: the caller's clock may run a little fast.
AS_OF_SKEW = timedelta(seconds=5)


def check_not_future(as_of: datetime | None, consequence: str = "") -> None:
    """A job run `as_of` a time to come would act early (expire points, close periods, send notices
    before their day); `consequence` says what, after the message."""
    if as_of is not None and as_of > datetime.now(UTC) + AS_OF_SKEW:
        raise Unprocessable(f"as_of cannot be in the future{consequence}.", code="as_of_in_future")
