"""The ledger goes down: a redemption fails cleanly with its stock released, a cancel is accepted and
completes later, and when the ledger is back every debit of a failed redemption is refunded.

Uses a second ledger process of its own (same database) and a catalog pointed at it, so the
session-wide ledger keeps running for the other tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.db import Database
from services.errors import LEDGER_RETRY_AFTER_S
from tests.catalog.helpers import (
    FAST_SAGAS,
    assert_problem,
    balance,
    cancel,
    catalog_env,
    client,
    earn,
    get_redemption,
    get_reward,
    new_key,
    redeem,
    voucher_reward,
    wait_for,
)
from tests.catalog.invariants import check_catalog_invariants
from tests.harness import ServiceProcess


@pytest.fixture
async def own_ledger_and_catalog(
    database_url: str, catalog_ledger_key: str, catalog_admin_key: str
) -> AsyncIterator[tuple[ServiceProcess, httpx.AsyncClient]]:
    ledger = ServiceProcess("ledger", database_url).start()
    catalog = ServiceProcess(
        "catalog", database_url, env=catalog_env(ledger.url, catalog_ledger_key, **FAST_SAGAS)
    )
    try:
        catalog.start()
        async with client(catalog.url, catalog_admin_key) as http:
            yield ledger, http
    finally:
        catalog.stop()
        ledger.stop()


async def test_ledger_down_fails_cleanly_and_refunds_later(
    own_ledger_and_catalog: tuple[ServiceProcess, httpx.AsyncClient],
    ledger_http: httpx.AsyncClient,
    catalog_db: Database,
    program: str,  # through the session ledger: same database
) -> None:
    ledger, cat = own_ledger_and_catalog
    sku, _ = await voucher_reward(cat, program, 3, price_points=100, stock=3)
    await earn(ledger_http, program, "down-m1", 500)
    done = await redeem(cat, sku, program, "down-m1")
    assert done.status_code == 201, done.text

    ledger.stop()
    key = new_key()
    r = await redeem(cat, sku, program, "down-m1", key=key)
    problem = assert_problem(r, 503, "ledger_unavailable")
    assert r.headers["Retry-After"] == str(LEDGER_RETRY_AFTER_S)  # the same in every service
    rid = problem["redemption_id"]
    assert problem["redemption"]["status"] == "refunding"
    after = await get_reward(cat, sku)  # the catalog reads its own database: no ledger needed
    assert after["stock"] == 2 and after["codes_available"] == 2  # released at once
    replay = await redeem(cat, sku, program, "down-m1", key=key)
    assert replay.status_code == 503 and replay.json() == problem
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Retry-After"] == str(LEDGER_RETRY_AFTER_S)
    r = await cat.get("/v1/rewards", params={"program": program, "affordable_for": "down-m1"})
    assert_problem(r, 503, "ledger_unavailable")
    assert r.headers["Retry-After"] == str(LEDGER_RETRY_AFTER_S)

    cancel_key = new_key()
    c = await cancel(cat, done.json()["id"], key=cancel_key)
    assert c.status_code == 202, c.text
    assert c.json()["status"] == "cancelling"

    ledger.start()  # same port: the catalog's ledger URL works again

    async def settled() -> bool:
        a = await get_redemption(cat, rid)
        b = await get_redemption(cat, done.json()["id"])
        return a["status"] == "failed" and b["status"] == "cancelled"

    await wait_for(settled, 30, "the failed redemption refunded and the cancel completed")
    failed: dict[str, Any] = await get_redemption(cat, rid)
    assert failed["failure"]["code"] == "ledger_unavailable"
    events = [e["event"] for e in failed["events"]]
    assert events[:2] == ["reserved", "debit_unknown"] and events[-1] in ("refunded", "debit_not_posted")
    assert (await balance(ledger_http, program, "down-m1"))["balance"] == 500
    after = await get_reward(cat, sku)
    assert after["stock"] == 3 and after["codes_available"] == 2  # the cancelled code is not reissued
    # the cancel's key keeps its first answer
    again = await cancel(cat, done.json()["id"], key=cancel_key)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"

    ok = await redeem(cat, sku, program, "down-m1")
    assert ok.status_code == 201, ok.text
    await check_catalog_invariants(catalog_db, [program])
