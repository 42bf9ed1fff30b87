"""What the catalog's features share: field types, dependencies, ledger error mapping, answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import Request
from pydantic import Field, StringConstraints
from starlette.responses import Response

from services.db import Database
from services.errors import PROBLEM_JSON, DomainError, problem_body
from services.idempotency import REPLAYED_HEADER
from services.ledger_client import LedgerClient, LedgerRejected

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

Sku = Annotated[
    str,
    StringConstraints(pattern=SKU_PATTERN),
    Field(
        description="1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit", examples=["STARBUCKS-TALL"]
    ),
]


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_ledger(request: Request) -> LedgerClient:
    ledger: LedgerClient = request.app.state.ledger
    return ledger


class LedgerUnavailableError(DomainError):
    status, code = 503, "ledger_unavailable"

    def __init__(self, detail: str = "The ledger could not be reached; try again shortly.") -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


def ledger_rejected(exc: LedgerRejected, what: str) -> DomainError:
    """A ledger refusal the catalog has no better answer for: the ledger's code, as a 502."""
    return DomainError(
        f"The ledger refused {what}: {exc.code}: {exc.detail}",
        code="ledger_rejected",
        status=502,
        extra={"ledger_status": exc.status, "ledger_code": exc.code},
    )


@dataclass(frozen=True)
class Answer:
    """A response as stored for Idempotency-Key replays: status and JSON body (problem+json if >= 400)."""

    status: int
    body: Any
    replayed: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        headers = dict(self.headers)
        if self.replayed:
            headers[REPLAYED_HEADER] = "true"
        media = PROBLEM_JSON if self.status >= 400 else "application/json"
        return Response(orjson.dumps(self.body), status_code=self.status, media_type=media, headers=headers)


def problem(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return problem_body(status, code, detail, extra=extra or None)
