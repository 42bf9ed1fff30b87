"""What the conversion service asks the ledger about programs.

Every call goes over HTTP through services.ledger_client.LedgerClient; programs are cached briefly. The
ledger unreachable or refusing is answered as in every service (services.errors): `503
ledger_unavailable` with Retry-After, or the ledger's own status and code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.errors import NotFound
from services.ledger_client import LedgerClient, answered


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
    unknown = NotFound(f"The ledger has no program with code {code}.", code="program_not_found")
    return _info(
        await answered(ledger.program(code, ttl_s=ttl_s), f"the lookup of {code}", not_found=unknown)
    )
