"""What the conversion service asks the ledger about programs, and how its answers become our errors.

Every call goes over HTTP through services.ledger_client.LedgerClient; programs are cached briefly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.errors import DomainError, NotFound
from services.ledger_client import LedgerClient, LedgerRejected, LedgerUnavailable


class LedgerDown(DomainError):
    status, code = 503, "ledger_unavailable"

    def __init__(self, detail: str = "The ledger cannot be reached right now; retry shortly.") -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class LedgerError(DomainError):
    """The ledger refused a call the conversion service makes on its own behalf (e.g. its key)."""

    status, code = 502, "ledger_error"


@dataclass(frozen=True)
class ProgramInfo:
    code: str
    cash_points: int
    cash_minor: int
    currency: str


def _info(body: dict[str, Any]) -> ProgramInfo:
    cash = body["cash_value"]
    return ProgramInfo(
        code=str(body["code"]),
        cash_points=int(cash["points"]),
        cash_minor=int(cash["cash_minor"]),
        currency=str(cash["currency"]),
    )


async def program(ledger: LedgerClient, code: str, *, ttl_s: float) -> ProgramInfo:
    """The program as the ledger knows it; 404 program_not_found if it does not exist."""
    try:
        return _info(await ledger.program(code, ttl_s=ttl_s))
    except LedgerRejected as exc:
        if exc.status == 404:
            raise NotFound(f"The ledger has no program with code {code}.", code="program_not_found") from None
        raise LedgerError(f"The ledger refused to describe program {code}: {exc}") from None
    except LedgerUnavailable as exc:
        raise LedgerDown() from exc
