"""What the ledger adds to the shared API key rules (services/apikeys.py): the partner a key is bound to
must be one of the ledger's, or the key would act for nobody."""

from __future__ import annotations

from ledger_service.partners import repository as partners
from services.db import Database
from services.errors import Unprocessable


async def partner_exists(db: Database, code: str) -> bool:
    async with db.driver() as conn:
        return await partners.get_partner(conn, code) is not None


async def require_partner(db: Database, code: str | None) -> None:
    """A 422 for a key bound to a partner the ledger does not know (like one limited to an unknown
    program): a reference in the body, not a missing resource of the route."""
    if code is not None and not await partner_exists(db, code):
        raise Unprocessable(f"No partner {code}.", code="partner_not_found")
