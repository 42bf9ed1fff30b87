"""Redemptions over real HTTP to a running ledger: the happy path, every refusal, idempotency,
who sees voucher codes, cancel and its replay, listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from services.db import Database
from tests.catalog.helpers import (
    assert_problem,
    balance,
    cancel,
    create_reward,
    earn,
    get_redemption,
    get_reward,
    make_key,
    new_key,
    new_program,
    redeem,
    voucher_reward,
)
from tests.catalog.invariants import check_catalog_invariants


async def test_voucher_redemption_and_idempotency(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    sku, codes = await voucher_reward(
        catalog_http, program, 5, price_points=100, cash_price_minor=500, stock=5
    )
    await earn(ledger_http, program, "v-m1", 1000)

    key = new_key()
    r = await redeem(catalog_http, sku, program, "v-m1", 2, key=key)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "fulfilled" and body["points"] == 200 and body["quantity"] == 2
    assert body["cash_minor"] == 1000 and body["currency"] == "CNY"
    assert len(set(body["voucher_codes"])) == 2 and set(body["voucher_codes"]) <= set(codes)
    assert body["burn_transaction_id"] and body["failure"] is None
    assert (await balance(ledger_http, program, "v-m1"))["available"] == 800
    after = await get_reward(catalog_http, sku)
    assert after["stock"] == 3 and after["codes_available"] == 3

    detail = await get_redemption(catalog_http, body["id"])
    assert [e["event"] for e in detail["events"]] == ["reserved", "debited", "fulfilled"]
    assert detail["voucher_codes"] == body["voucher_codes"]
    txn = (await ledger_http.get(f"/v1/transactions/{body['burn_transaction_id']}")).json()
    assert (txn["type"], txn["points"], txn["reference"]) == ("burn", 200, body["id"])

    # the same key and body: the first answer again, nothing applied twice
    again = await redeem(catalog_http, sku, program, "v-m1", 2, key=key)
    assert again.status_code == 201 and again.json() == body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await balance(ledger_http, program, "v-m1"))["available"] == 800
    # the same key, another body; no key at all
    assert_problem(
        await redeem(catalog_http, sku, program, "v-m1", 1, key=key), 409, "idempotency_key_reused"
    )
    r = await catalog_http.post(
        "/v1/redemptions", json={"sku": sku, "program": program, "member_ref": "v-m1", "quantity": 1}
    )
    assert_problem(r, 400, "idempotency_key_required")
    await check_catalog_invariants(catalog_db, [program])


async def test_refusals(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    other = await new_program(ledger_http)
    await earn(ledger_http, program, "r-m1", 250)
    gift = await create_reward(catalog_http, program, price_points=100, stock=3, per_member_limit=2)
    sku = gift["sku"]

    assert_problem(await redeem(catalog_http, "NO-SUCH-SKU", program, "r-m1"), 404, "reward_not_found")
    assert_problem(await redeem(catalog_http, sku, other, "r-m1"), 422, "program_mismatch")
    assert_problem(await redeem(catalog_http, sku, program, "r-m1", 3), 422, "limit_exceeded")
    roomy = await create_reward(catalog_http, program, price_points=1, stock=1)
    assert_problem(await redeem(catalog_http, roomy["sku"], program, "r-m1", 2), 409, "out_of_stock")
    ended = datetime.now(UTC) - timedelta(hours=1)
    old = await create_reward(
        catalog_http,
        program,
        active_from=(ended - timedelta(days=1)).isoformat(),
        active_to=ended.isoformat(),
    )
    assert_problem(await redeem(catalog_http, old["sku"], program, "r-m1"), 422, "reward_not_active")
    no_codes = await create_reward(catalog_http, program, type="voucher", price_points=1)
    assert_problem(await redeem(catalog_http, no_codes["sku"], program, "r-m1"), 409, "out_of_stock")
    for bad in ({"quantity": 0}, {"quantity": "1"}, {"quantity": 101}, {"member_ref": ""}, {"sku": "a b"}):
        body = {"sku": sku, "program": program, "member_ref": "r-m1", "quantity": 1, **bad}
        r = await catalog_http.post("/v1/redemptions", json=body, headers={"Idempotency-Key": new_key()})
        assert_problem(r, 422, "validation_error")

    # insufficient points: the ledger refuses the debit, the stock and the allowance come back
    ok = await redeem(catalog_http, sku, program, "r-m1", 2)
    assert ok.status_code == 201, ok.text
    await create_reward(catalog_http, program)  # unrelated noise
    rich = await create_reward(catalog_http, program, price_points=100, stock=3)
    key = new_key()
    poor = await redeem(catalog_http, rich["sku"], program, "r-m1", 1, key=key)
    problem = assert_problem(poor, 422, "insufficient_points")
    assert problem["redemption"]["status"] == "failed"
    assert (await get_reward(catalog_http, rich["sku"]))["stock"] == 3
    replay = await redeem(catalog_http, rich["sku"], program, "r-m1", 1, key=key)
    assert replay.status_code == 422 and replay.json() == problem
    assert replay.headers["Idempotent-Replayed"] == "true"
    failed = await get_redemption(catalog_http, problem["redemption_id"])
    assert failed["status"] == "failed" and failed["failure"]["code"] == "insufficient_points"
    assert [e["event"] for e in failed["events"]] == ["reserved", "debit_refused"]
    # the per-member limit counts units held: 2 held, so one more is over
    assert_problem(await redeem(catalog_http, sku, program, "r-m1", 1), 422, "limit_exceeded")
    # a refusal is replayed too
    key = new_key()
    first = await redeem(catalog_http, roomy["sku"], program, "r-m1", 2, key=key)
    second = await redeem(catalog_http, roomy["sku"], program, "r-m1", 2, key=key)
    assert first.json() == second.json() and second.headers["Idempotent-Replayed"] == "true"
    # the key of a sold-out refusal, with another request: reused, whatever that request would get
    assert_problem(
        await redeem(catalog_http, roomy["sku"], program, "r-m2", 2, key=key), 409, "idempotency_key_reused"
    )
    assert (await balance(ledger_http, program, "r-m1"))["available"] == 50
    await check_catalog_invariants(catalog_db, [program])


async def test_codes_shown_only_to_the_redeemer(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    sku, _ = await voucher_reward(catalog_http, program, 3, price_points=10)
    await earn(ledger_http, program, "c-m1", 100)
    _, pos = await make_key(catalog_db, ["catalog:write", "catalog:read"])
    _, reader = await make_key(catalog_db, ["catalog:read"])
    _, other_pos = await make_key(catalog_db, ["catalog:write", "catalog:read"])

    r = await redeem(catalog_http, sku, program, "c-m1", auth=pos)
    assert r.status_code == 201, r.text
    codes = r.json()["voucher_codes"]
    rid = r.json()["id"]
    assert len(codes) == 1

    def h(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    assert (await catalog_http.get(f"/v1/redemptions/{rid}", headers=h(pos))).json()["voucher_codes"] == codes
    assert (await catalog_http.get(f"/v1/redemptions/{rid}", headers=h(reader))).json()[
        "voucher_codes"
    ] is None
    assert (await catalog_http.get(f"/v1/redemptions/{rid}")).json()[
        "voucher_codes"
    ] == codes  # catalog:admin
    listing = await catalog_http.get("/v1/redemptions", params={"member_ref": "c-m1"}, headers=h(reader))
    assert [x["voucher_codes"] for x in listing.json()["data"]] == [None]
    listing = await catalog_http.get("/v1/redemptions", params={"member_ref": "c-m1"}, headers=h(pos))
    assert [x["voucher_codes"] for x in listing.json()["data"]] == [codes]

    assert_problem(await redeem(catalog_http, sku, program, "c-m1", auth=reader), 403, "insufficient_scope")
    assert_problem(await cancel(catalog_http, rid, auth=reader), 403, "insufficient_scope")
    assert_problem(await cancel(catalog_http, rid, auth=other_pos), 403, "not_redeemer")
    # an Idempotency-Key is scoped to its API key: another key's identical key is a new request
    key = new_key()
    a = await redeem(catalog_http, sku, program, "c-m1", key=key, auth=pos)
    b = await redeem(catalog_http, sku, program, "c-m1", key=key, auth=other_pos)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"] and "Idempotent-Replayed" not in b.headers
    assert set(a.json()["voucher_codes"]).isdisjoint(b.json()["voucher_codes"])
    await check_catalog_invariants(catalog_db, [program])


async def test_cancel_refunds_restocks_and_replays(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    sku, _ = await voucher_reward(catalog_http, program, 4, price_points=300, stock=2, per_member_limit=1)
    await earn(ledger_http, program, "x-m1", 1000)
    redeem_key = new_key()
    r = await redeem(catalog_http, sku, program, "x-m1", key=redeem_key)
    assert r.status_code == 201, r.text
    fulfilled = r.json()
    rid, code = fulfilled["id"], fulfilled["voucher_codes"][0]
    assert (await balance(ledger_http, program, "x-m1"))["available"] == 700

    key = new_key()
    c = await cancel(catalog_http, rid, key=key)
    assert c.status_code == 200, c.text
    cancelled = c.json()
    assert cancelled["status"] == "cancelled" and cancelled["refund_transaction_id"]
    assert cancelled["voucher_codes"] == [code]  # still shown, never reissued
    assert (await balance(ledger_http, program, "x-m1"))["available"] == 1000
    after = await get_reward(catalog_http, sku)
    assert after["stock"] == 2 and after["codes_available"] == 3

    # replay of the cancel: the first answer, no second refund
    again = await cancel(catalog_http, rid, key=key)
    assert again.status_code == 200 and again.json() == cancelled
    assert again.headers["Idempotent-Replayed"] == "true"
    # a second cancel (new key) is refused and changes nothing
    assert_problem(await cancel(catalog_http, rid), 409, "not_cancellable")
    assert (await balance(ledger_http, program, "x-m1"))["available"] == 1000
    # the original redemption's key still replays its original answer
    replay = await redeem(catalog_http, sku, program, "x-m1", key=redeem_key)
    assert replay.status_code == 201 and replay.json() == fulfilled
    refund = (await ledger_http.get(f"/v1/transactions/{cancelled['refund_transaction_id']}")).json()
    assert (refund["type"], refund["points"], refund["original_id"]) == (
        "reversal",
        300,
        fulfilled["burn_transaction_id"],
    )

    # the allowance came back too, and the next redemption gets a different code
    r = await redeem(catalog_http, sku, program, "x-m1")
    assert r.status_code == 201, r.text
    assert r.json()["voucher_codes"] != [code]
    detail = await get_redemption(catalog_http, rid)
    assert [e["event"] for e in detail["events"]] == [
        "reserved",
        "debited",
        "fulfilled",
        "cancel_requested",
        "refunded",
    ]
    assert_problem(
        await cancel(catalog_http, "00000000-0000-0000-0000-000000000000"), 404, "redemption_not_found"
    )
    assert_problem(await catalog_http.get("/v1/redemptions/not-a-uuid"), 422, "validation_error")
    await check_catalog_invariants(catalog_db, [program])


async def test_list_a_members_redemptions(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database, program: str
) -> None:
    reward = await create_reward(catalog_http, program, price_points=10, type="service")
    await earn(ledger_http, program, "l-m1", 45)
    ids = []
    for _ in range(5):
        r = await redeem(catalog_http, reward["sku"], program, "l-m1")
        ids.append(r.json().get("id") or r.json()["redemption_id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"member_ref": "l-m1", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await catalog_http.get("/v1/redemptions", params=params)).json()
        seen += [x["id"] for x in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first; the fifth failed for want of points and is listed too
    failed = (
        await catalog_http.get("/v1/redemptions", params={"member_ref": "l-m1", "status": "failed"})
    ).json()
    assert [x["id"] for x in failed["data"]] == [ids[-1]]
    assert_problem(await catalog_http.get("/v1/redemptions"), 422, "validation_error")
    await check_catalog_invariants(catalog_db, [program])
