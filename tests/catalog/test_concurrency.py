"""Races over real HTTP: stock never below zero, a code never given twice, a per-member limit and a
member's points never overrun, whatever the interleaving."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

from services.db import Database
from tests.catalog.helpers import (
    balance,
    create_reward,
    earn,
    get_reward,
    new_key,
    redeem,
    upload_codes,
    voucher_reward,
)
from tests.catalog.invariants import check_catalog_invariants


async def _gather_in_chunks(coros: list, size: int = 50) -> list:
    out = []
    for i in range(0, len(coros), size):
        out += await asyncio.gather(*coros[i : i + size])
    return out


async def test_200_members_race_for_50_vouchers(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    # more codes than stock: the stock decides
    sku, codes = await voucher_reward(catalog_http, program, 60, price_points=100, stock=50)
    members = [f"race-{i:03d}" for i in range(200)]
    await _gather_in_chunks([earn(ledger_http, program, m, 100) for m in members])

    started = time.monotonic()
    responses = await asyncio.gather(*(redeem(catalog_http, sku, program, m) for m in members))
    elapsed = time.monotonic() - started
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 50, 409: 150}, (
        statuses,
        [r.text for r in responses if r.status_code >= 500][:3],
    )
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"out_of_stock"}
    won = [r.json() for r in responses if r.status_code == 201]
    issued = [c for w in won for c in w["voucher_codes"]]
    assert len(issued) == 50 and len(set(issued)) == 50 and set(issued) <= set(codes)
    assert all(w["status"] == "fulfilled" for w in won)

    after = await get_reward(catalog_http, sku)
    assert after["stock"] == 0 and after["codes_available"] == 10
    winners = {w["member_ref"] for w in won}
    balances = await _gather_in_chunks([balance(ledger_http, program, m) for m in members])
    for m, b in zip(members, balances, strict=True):
        assert b["balance"] == (0 if m in winners else 100), (m, b)
    async with catalog_db.driver() as conn:
        burns = await conn.fetchrow(
            "SELECT count(*) AS n, sum(t.points) AS points FROM ledger.transactions t"
            " JOIN ledger.programs p ON p.id = t.program_id WHERE p.code = $1 AND t.type = 'burn'",
            program,
        )
    assert (burns["n"], burns["points"]) == (50, 5000)
    await check_catalog_invariants(catalog_db, [program])
    print(f"\n200 concurrent redemptions (50 stock) in {elapsed:.2f}s")


async def test_one_member_races_past_the_per_member_limit(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    reward = await create_reward(catalog_http, program, price_points=10, stock=100, per_member_limit=3)
    unlimited = await create_reward(
        catalog_http, program, type="voucher", price_points=10, per_member_limit=2
    )
    await upload_codes(catalog_http, unlimited["sku"], 10)
    await earn(ledger_http, program, "greedy", 10_000)

    responses = await asyncio.gather(
        *(redeem(catalog_http, reward["sku"], program, "greedy", 1 + i % 2) for i in range(30)),
        *(redeem(catalog_http, unlimited["sku"], program, "greedy") for _ in range(10)),
    )
    limited, vouchers = responses[:30], responses[30:]
    units = sum(r.json()["quantity"] for r in limited if r.status_code == 201)
    assert units == 3 or (
        units == 2 and any(r.status_code == 201 and r.json()["quantity"] == 2 for r in limited)
    )
    assert {r.json()["code"] for r in limited if r.status_code != 201} == {"limit_exceeded"}
    assert Counter(r.status_code for r in vouchers) == {201: 2, 422: 8}
    assert {r.json()["code"] for r in vouchers if r.status_code == 422} == {"limit_exceeded"}
    spent = 10 * (units + 2)
    assert (await balance(ledger_http, program, "greedy"))["balance"] == 10_000 - spent
    assert (await get_reward(catalog_http, reward["sku"]))["stock"] == 100 - units
    assert (await get_reward(catalog_http, unlimited["sku"]))["codes_available"] == 8
    await check_catalog_invariants(catalog_db, [program])


async def test_a_member_races_their_own_points(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    """Stock is reserved before the debit; every debit the ledger refuses gives its stock back."""
    sku, _ = await voucher_reward(catalog_http, program, 10, price_points=100, stock=10)
    await earn(ledger_http, program, "thrifty", 250)
    responses = await asyncio.gather(*(redeem(catalog_http, sku, program, "thrifty") for _ in range(10)))
    assert Counter(r.status_code for r in responses) == {201: 2, 422: 8}
    assert {r.json()["code"] for r in responses if r.status_code == 422} == {"insufficient_points"}
    after = await get_reward(catalog_http, sku)
    assert after["stock"] == 8 and after["codes_available"] == 8
    assert (await balance(ledger_http, program, "thrifty"))["balance"] == 50
    await check_catalog_invariants(catalog_db, [program])


async def test_one_idempotency_key_sent_ten_times_at_once_applies_once(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    sku, _ = await voucher_reward(catalog_http, program, 5, price_points=10, stock=5)
    await earn(ledger_http, program, "twice", 100)
    key = new_key()
    responses = await asyncio.gather(
        *(redeem(catalog_http, sku, program, "twice", key=key) for _ in range(10))
    )
    firsts = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(firsts) == 1, [(r.status_code, r.headers.get("Idempotent-Replayed")) for r in responses]
    for r in responses:
        if r.status_code == 201:
            assert r.json() == firsts[0].json()
        else:
            assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_use", r.text
            assert r.headers["Retry-After"]
    replay = await redeem(catalog_http, sku, program, "twice", key=key)
    assert replay.status_code == 201 and replay.json() == firsts[0].json()
    assert (await balance(ledger_http, program, "twice"))["balance"] == 90
    assert (await get_reward(catalog_http, sku))["stock"] == 4
    await check_catalog_invariants(catalog_db, [program])
