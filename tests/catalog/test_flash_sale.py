"""A flash sale over real HTTP: 2,000 members at once for a voucher reward with 500 codes (and 500 in
stock). Exactly 500 are fulfilled, each with its own code and its own burn; the other 1,500 are told
`409 out_of_stock` before anything reaches the ledger; nothing else is answered, no saga is left behind,
and stock, codes and ledger agree."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
import httpx
import orjson

from services.db import Database
from tests.catalog.helpers import get_reward, new_key, new_program, voucher_reward
from tests.catalog.invariants import check_catalog_invariants

MEMBERS = 2_000
CODES = 500
PRICE = 100


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Idempotency-Key": new_key(), "Content-Type": "application/json"}
    async with session.post(url, data=orjson.dumps(body), headers=headers) as r:
        return r.status, orjson.loads(await r.read())


async def _lock_waits(db: Database, stop: asyncio.Event) -> int:
    """The most backends seen waiting on a row lock at once while the sale runs."""
    most = 0
    async with db.driver() as conn:
        while not stop.is_set():
            n = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND application_name <> 'catalog-tests'"
            )
            most = max(most, int(n))
            await asyncio.sleep(0.01)
    return most


async def test_2000_members_race_for_500_voucher_codes(
    catalog_http: httpx.AsyncClient,
    ledger_http: httpx.AsyncClient,
    catalog_db: Database,
    catalog_admin_key: str,
) -> None:
    program = await new_program(ledger_http)
    sku, uploaded = await voucher_reward(catalog_http, program, CODES, price_points=PRICE, stock=CODES)
    codes = set(uploaded)
    members = [f"flash-{i:04d}" for i in range(MEMBERS)]
    auth = {"Authorization": f"Bearer {catalog_admin_key}"}
    connector = aiohttp.TCPConnector(limit=0)  # every member on a connection of their own, all at once
    async with aiohttp.ClientSession(headers=auth, connector=connector) as session:
        earn_url = f"{ledger_http.base_url}/v1/earn"
        for i in range(0, MEMBERS, 200):
            funded = await asyncio.gather(
                *(
                    _post(
                        session,
                        earn_url,
                        {"program": program, "member_ref": m, "points": PRICE, "reference": "fund"},
                    )
                    for m in members[i : i + 200]
                )
            )
            assert {s for s, _ in funded} == {201}, funded[:3]

        stop = asyncio.Event()
        waits = asyncio.create_task(_lock_waits(catalog_db, stop))
        url = f"{catalog_http.base_url}/v1/redemptions"
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                _post(session, url, {"sku": sku, "program": program, "member_ref": m, "quantity": 1})
                for m in members
            )
        )
        elapsed = time.monotonic() - started
        stop.set()
        most_waiting = await waits

    statuses = Counter(s for s, _ in answers)
    assert statuses == {201: CODES, 409: MEMBERS - CODES}, (statuses, [b for s, b in answers if s >= 500][:3])
    assert {b["code"] for s, b in answers if s == 409} == {"out_of_stock"}
    won = [b for s, b in answers if s == 201]
    assert {w["status"] for w in won} == {"fulfilled"}
    issued = [c for w in won for c in w["voucher_codes"]]
    assert len(issued) == CODES and set(issued) == codes

    after = await get_reward(catalog_http, sku)
    assert after["stock"] == 0 and after["codes_available"] == 0
    winners = {w["member_ref"] for w in won}
    async with catalog_db.driver() as conn:
        # a refusal left nothing behind: no redemption row, so no ledger call was ever made for it
        redemptions = await conn.fetchval(
            "SELECT count(*) FROM catalog.redemptions WHERE sku = $1 AND status = 'fulfilled'", sku
        )
        others = await conn.fetchval(
            "SELECT count(*) FROM catalog.redemptions WHERE sku = $1 AND status <> 'fulfilled'", sku
        )
        burns = await conn.fetch(
            "SELECT t.reference, t.points, a.member_ref FROM ledger.transactions t"
            " JOIN ledger.programs p ON p.id = t.program_id"
            " JOIN ledger.postings po ON po.txn_id = t.id"
            " JOIN ledger.accounts a ON a.id = po.account_id AND a.kind = 'member'"
            " WHERE p.code = $1 AND t.type = 'burn'",
            program,
        )
        balances = dict(
            await conn.fetch(
                "SELECT a.member_ref, a.balance FROM ledger.accounts a JOIN ledger.programs p"
                " ON p.id = a.program_id WHERE p.code = $1 AND a.kind = 'member'",
                program,
            )
        )
    assert (redemptions, others) == (CODES, 0)
    assert len(burns) == CODES and {b["reference"] for b in burns} == {str(w["id"]) for w in won}
    assert {b["member_ref"] for b in burns} == winners and {b["points"] for b in burns} == {PRICE}
    assert all(balances[m] == (0 if m in winners else PRICE) for m in members)
    await check_catalog_invariants(catalog_db, [program])
    print(
        f"\nflash sale: {MEMBERS} members, {CODES} codes in {elapsed:.2f}s;"
        f" at most {most_waiting} backends waiting on a lock at once"
    )
