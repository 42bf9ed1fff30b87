"""DESIGN §7 invariant 5, after every other test (conftest moves this one to the end of the session)."""

from __future__ import annotations

import httpx

from tests.conversion.invariants import check_conversion_invariants
from tests.ledger.invariants import check_ledger_invariants


async def test_invariant_5_after_all_conversions(conv_http: httpx.AsyncClient, db) -> None:
    assert (await conv_http.get("/readyz")).status_code == 200
    async with db.driver() as conn:
        unfinished = await conn.fetch(
            "SELECT id, status FROM conversion.conversions"
            " WHERE status NOT IN ('completed', 'rejected', 'compensated', 'failed')"
        )
    assert not unfinished, f"conversions left unfinished: {unfinished}"
    checked = await check_conversion_invariants(db)
    assert checked > 0
    # and the ledger's own invariants 1 and 2 over every program the conversions touched
    async with db.driver() as conn:
        codes = await conn.fetch(
            "SELECT from_program AS code FROM conversion.conversions"
            " UNION SELECT to_program FROM conversion.conversions"
        )
    for row in codes:
        await check_ledger_invariants(db, row["code"])
