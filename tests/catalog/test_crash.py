"""The catalog killed mid-saga and restarted: each redemption completes or is undone, never both.

Uses the TEST-ONLY fault setting JIFEN_CATALOG_FAULT (catalog_service/faults.py): the process exits
with os._exit(1) at a given step of a given member's redemption. Each restart runs without the fault
that killed the previous process, and its saga recovery picks the unfinished redemption up once the
dead process's lease (1 s here) has run out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator

import httpx
import pytest

from services.db import Database
from tests.catalog.helpers import (
    FAST_SAGAS,
    balance,
    burn,
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


class Catalogs:
    """Starts catalog processes one after another, each with its own fault, and stops them all."""

    def __init__(self, database_url: str, ledger_url: str, ledger_key: str, admin_key: str) -> None:
        self.database_url, self.ledger_url, self.ledger_key = database_url, ledger_url, ledger_key
        self.admin_key = admin_key
        self.procs: list[ServiceProcess] = []

    def start(self, fault: str = "") -> tuple[ServiceProcess, httpx.AsyncClient]:
        env = catalog_env(self.ledger_url, self.ledger_key, JIFEN_CATALOG_FAULT=fault, **FAST_SAGAS)
        proc = ServiceProcess("catalog", self.database_url, env=env)
        self.procs.append(proc)
        proc.start()
        return proc, client(proc.url, self.admin_key)

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def catalogs(
    database_url: str, live_ledger, catalog_ledger_key: str, catalog_admin_key: str
) -> Iterator[Catalogs]:
    c = Catalogs(database_url, live_ledger.url, catalog_ledger_key, catalog_admin_key)
    try:
        yield c
    finally:
        c.stop_all()


def _crashed(proc: ServiceProcess) -> None:
    assert proc.proc is not None
    assert proc.proc.wait(timeout=20) == 1  # the injected os._exit(1)


async def _dies_during(proc: ServiceProcess, cat: httpx.AsyncClient, request: Awaitable[object]) -> None:
    """`proc` exits by its injected fault while it answers `request`: the connection drops."""
    with pytest.raises(httpx.TransportError):
        await request
    await cat.aclose()
    _crashed(proc)


async def _status_is(client: httpx.AsyncClient, rid: str, status: str) -> bool:
    return (await get_redemption(client, rid))["status"] == status


async def _redemption_of(db: Database, member: str) -> dict:
    async with db.driver() as conn:
        row = await conn.fetchrow("SELECT * FROM catalog.redemptions WHERE member_ref = $1", member)
    assert row is not None
    return dict(row)


async def _burns_for(db: Database, rid: str) -> list:
    async with db.driver() as conn:
        return list(
            await conn.fetch(
                "SELECT type, points FROM ledger.transactions WHERE reference = $1 ORDER BY created_at, type",
                rid,
            )
        )


async def test_killed_mid_saga_then_restarted(
    catalogs: Catalogs, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    tag = program.lower()
    a, b, c = f"{tag}-a", f"{tag}-b", f"{tag}-c"  # member refs unique to this run
    for m in (a, b, c):
        await earn(ledger_http, program, m, 500)

    # 1. Killed after the ledger posted the burn, before the catalog recorded it.
    p1, cat1 = catalogs.start(f"crash_after_debit:{a}")
    sku, _ = await voucher_reward(cat1, program, 10, price_points=100, stock=10)
    key_a = new_key()
    await _dies_during(p1, cat1, redeem(cat1, sku, program, a, key=key_a))
    row_a = await _redemption_of(catalog_db, a)
    assert row_a["status"] == "debiting"
    assert [tuple(t) for t in await _burns_for(catalog_db, str(row_a["id"]))] == [("burn", 100)]

    # Restarted: recovery replays the burn under its key (the ledger answers with the first
    # outcome) and completes the redemption.
    p2, cat2 = catalogs.start(f"crash_after_refund:{b}")
    rid_a = str(row_a["id"])
    await wait_for(lambda: _status_is(cat2, rid_a, "fulfilled"), 30, "redemption a completed")
    replay = await redeem(cat2, sku, program, a, key=key_a)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == rid_a and len(replay.json()["voucher_codes"]) == 1
    assert (await balance(ledger_http, program, a))["balance"] == 400  # debited once
    assert [tuple(t) for t in await _burns_for(catalog_db, rid_a)] == [("burn", 100)]
    events = [e["event"] for e in (await get_redemption(cat2, rid_a))["events"]]
    assert events == ["reserved", "debited", "fulfilled"]

    # 2. Killed in a cancel, after the ledger posted the refund, before the catalog recorded it.
    rb = await redeem(cat2, sku, program, b)
    assert rb.status_code == 201, rb.text
    rid_b = rb.json()["id"]
    cancel_key = new_key()
    await _dies_during(p2, cat2, cancel(cat2, rid_b, key=cancel_key))
    assert (await _redemption_of(catalog_db, b))["status"] == "cancelling"

    p3, cat3 = catalogs.start(f"crash_before_debit:{c}")
    await wait_for(lambda: _status_is(cat3, rid_b, "cancelled"), 30, "cancel b completed")
    again = await cancel(cat3, rid_b, key=cancel_key)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await balance(ledger_http, program, b))["balance"] == 500  # refunded exactly once
    assert [tuple(t) for t in await _burns_for(catalog_db, rid_b)] == [("burn", 100), ("reversal", 100)]

    # 3. Killed after reserving, before the burn was sent; meanwhile the member spends the points
    # elsewhere, so on restart the debit is refused and the redemption is undone.
    key_c = new_key()
    await _dies_during(p3, cat3, redeem(cat3, sku, program, c, key=key_c))
    row_c = await _redemption_of(catalog_db, c)
    assert row_c["status"] == "debiting"
    async with catalog_db.driver() as conn:  # c's unit is still reserved while nobody drives it
        assert await conn.fetchval("SELECT stock FROM catalog.rewards WHERE sku = $1", sku) == 8
    await burn(ledger_http, program, c, 450)

    _, cat4 = catalogs.start()
    rid_c = str(row_c["id"])
    await wait_for(lambda: _status_is(cat4, rid_c, "failed"), 30, "redemption c undone")
    replay = await redeem(cat4, sku, program, c, key=key_c)
    assert replay.status_code == 422 and replay.json()["code"] == "insufficient_points"
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert await _burns_for(catalog_db, rid_c) == []
    after = await get_reward(cat4, sku)
    # stock: 10 - a; codes: 10 - a's (issued) - b's (voided, never reissued); c's code is back
    assert after["stock"] == 9 and after["codes_available"] == 8
    await cat4.aclose()
    await check_catalog_invariants(catalog_db, [program])
