"""Conversions end to end over real HTTP: the conversion service and the ledger as processes."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import assert_problem, new_key
from tests.conversion.helpers import balance, convert, events, fund, program, put_rate, rated_pair
from tests.conversion.invariants import check_conversion_invariants

MAX_POINTS = 2**63 - 1


async def _clearing(db, code: str) -> int:
    async with db.driver() as conn:
        return int(
            await conn.fetchval(
                "SELECT coalesce(sum(po.amount), 0) FROM ledger.postings po"
                " JOIN ledger.programs p ON p.conversion_account = po.account_id WHERE p.code = $1",
                code,
            )
        )


async def test_conversion_end_to_end_exact_amounts_and_fee(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, db
) -> None:
    wlt = await program(ledger_http, points=500, cash_minor=100)
    jfb = await program(ledger_http)
    await put_rate(conv_http, wlt, jfb, from_points=5, to_points=1, fee_bps=200, min_from_points=1000)
    await fund(ledger_http, wlt, "m-1", 7000)

    r = await convert(
        conv_http, {"from_program": wlt, "to_program": jfb, "member_ref": "m-1", "from_points": 5000}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["status"], body["from_points"], body["fee_points"], body["to_points"]) == (
        "completed",
        5000,
        100,
        980,
    )
    assert body["rate"] == {
        "source": "direct",
        "version": 1,
        "from_points": 5,
        "to_points": 1,
        "fee_bps": 200,
    }
    assert events(body) == ["created", "debiting", "debited", "crediting", "completed"]
    assert body["error"] is None and body["next_attempt_at"] is None and body["finished_at"]
    assert r.headers["location"] == f"/v1/conversions/{body['id']}"

    assert await balance(ledger_http, wlt, "m-1") == 2000
    assert await balance(ledger_http, jfb, "m-1") == 980
    # the other side of each leg is the program's conversion clearing account
    assert await _clearing(db, wlt) == 5000
    assert await _clearing(db, jfb) == -980
    debit = (await ledger_http.get(f"/v1/transactions/{body['debit_transaction_id']}")).json()
    credit = (await ledger_http.get(f"/v1/transactions/{body['credit_transaction_id']}")).json()
    assert (debit["type"], debit["points"], debit["reference"]) == ("burn", 5000, body["id"])
    assert (credit["type"], credit["points"], credit["kind"], credit["reference"]) == (
        "earn",
        980,
        "bonus",
        body["id"],
    )

    got = await conv_http.get(f"/v1/conversions/{body['id']}")
    assert got.status_code == 200 and got.json() == body
    listed = await conv_http.get("/v1/conversions", params={"member_ref": "m-1", "limit": 1})
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == body["id"]
    await check_conversion_invariants(db)


async def test_conversion_by_to_points_and_by_quote(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    src, dst = await rated_pair(
        conv_http, ledger_http, from_points=5, to_points=1, fee_bps=200, min_from_points=1
    )
    await fund(ledger_http, src, "m-q", 20_000)

    # the smallest from_points that yields at least 980 is 5000
    r = await convert(
        conv_http, {"from_program": src, "to_program": dst, "member_ref": "m-q", "to_points": 980}
    )
    assert r.status_code == 201, r.text
    assert (r.json()["from_points"], r.json()["to_points"]) == (5000, 980)

    q = await conv_http.post(
        "/v1/quotes", json={"from_program": src, "to_program": dst, "member_ref": "m-q", "from_points": 1234}
    )
    assert q.status_code == 201, q.text
    quote = q.json()
    # fee = ceil(1234 * 200 / 10000) = 25; to = floor(1209 / 5) = 241
    assert (quote["fee_points"], quote["to_points"]) == (25, 241)
    # a new rate version does not change a quote that is still valid
    await put_rate(conv_http, src, dst, from_points=10, to_points=1, fee_bps=500, min_from_points=1)
    r = await convert(conv_http, {"quote_id": quote["id"]})
    assert r.status_code == 201, r.text
    assert (r.json()["quote_id"], r.json()["from_points"], r.json()["to_points"]) == (quote["id"], 1234, 241)
    assert r.json()["rate"]["version"] == 1
    # a quote is used once
    assert_problem(await convert(conv_http, {"quote_id": quote["id"]}), 409, "quote_used")
    assert await balance(ledger_http, src, "m-q") == 20_000 - 5000 - 1234
    assert await balance(ledger_http, dst, "m-q") == 980 + 241


async def test_replay_of_the_conversion_request(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    src, dst = await rated_pair(conv_http, ledger_http)
    await fund(ledger_http, src, "m-r", 5000)
    body = {"from_program": src, "to_program": dst, "member_ref": "m-r", "from_points": 5000}
    key = new_key()

    first = await convert(conv_http, body, key)
    assert first.status_code == 201, first.text
    again = await convert(conv_http, dict(reversed(list(body.items()))), key)  # same body, other key order
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    # the same key with another body is refused; nothing applies twice
    assert_problem(
        await convert(conv_http, {**body, "from_points": 1000}, key), 409, "idempotency_key_reused"
    )
    assert await balance(ledger_http, src, "m-r") == 0
    assert await balance(ledger_http, dst, "m-r") == 980
    listed = (await conv_http.get("/v1/conversions", params={"member_ref": "m-r"})).json()["data"]
    assert len(listed) == 1

    # a refusal is replayed too: the member has nothing left
    key2 = new_key()
    refused = await convert(conv_http, {**body, "from_points": 1000}, key2)
    problem = assert_problem(refused, 422, "insufficient_points")
    assert problem["conversion"]["status"] == "rejected"
    assert problem["conversion"]["debit_transaction_id"] is None
    replay = await convert(conv_http, {**body, "from_points": 1000}, key2)
    assert replay.status_code == 422 and replay.json() == refused.json()
    assert replay.headers["idempotent-replayed"] == "true"
    # concurrent duplicates: one conversion, every answer the same
    await fund(ledger_http, src, "m-r", 3000)
    key3 = new_key()
    answers = await asyncio.gather(
        *(convert(conv_http, {**body, "from_points": 3000}, key3) for _ in range(5))
    )
    done = [a for a in answers if a.status_code == 201]
    assert done and all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in done}) == 1
    for a in answers:
        if a.status_code == 409:
            assert a.json()["code"] == "idempotency_key_in_use"
    assert await balance(ledger_http, src, "m-r") == 0


async def test_50_concurrent_conversions_where_points_cover_20(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, db
) -> None:
    src, dst = await rated_pair(
        conv_http, ledger_http, from_points=1, to_points=2, fee_bps=0, min_from_points=1
    )
    await fund(ledger_http, src, "m-c", 20 * 100)
    body = {"from_program": src, "to_program": dst, "member_ref": "m-c", "from_points": 100}

    answers = await asyncio.gather(*(convert(conv_http, body) for _ in range(50)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 20 + [422] * 30, [a.text for a in answers if a.status_code not in (201, 422)]
    for a in answers:
        if a.status_code == 422:
            assert a.json()["code"] == "insufficient_points"
            assert a.json()["conversion"]["status"] == "rejected"
    assert await balance(ledger_http, src, "m-c") == 0
    assert await balance(ledger_http, dst, "m-c") == 20 * 200
    listed = (await conv_http.get("/v1/conversions", params={"member_ref": "m-c", "limit": 200})).json()[
        "data"
    ]
    assert sorted(c["status"] for c in listed) == ["completed"] * 20 + ["rejected"] * 30
    await check_conversion_invariants(db)


async def test_daily_limit_per_member(conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient) -> None:
    src, dst = await rated_pair(
        conv_http,
        ledger_http,
        from_points=1,
        to_points=1,
        fee_bps=0,
        min_from_points=1,
        daily_limit_from_points=3000,
    )
    await fund(ledger_http, src, "m-d", 100_000)
    await fund(ledger_http, src, "m-e", 100_000)
    body = {"from_program": src, "to_program": dst, "member_ref": "m-d", "from_points": 1000}

    # more than the limit at once is refused before anything is stored
    assert_problem(await convert(conv_http, {**body, "from_points": 3001}), 422, "daily_limit_exceeded")
    # ten at once under a limit of three: exactly three pass, whatever the timing
    answers = await asyncio.gather(*(convert(conv_http, body) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [201] * 3 + [422] * 7
    problem = assert_problem(next(a for a in answers if a.status_code == 422), 422, "daily_limit_exceeded")
    assert problem["daily_limit_from_points"] == 3000 and problem["used_today"] == 3000
    assert await balance(ledger_http, src, "m-d") == 97_000
    # the limit is per member
    r = await convert(conv_http, {**body, "member_ref": "m-e", "from_points": 3000})
    assert r.status_code == 201, r.text
    # a conversion that moves nothing in the end gives its points back to the day's limit
    await fund(ledger_http, src, "m-f", 500)
    refused = await convert(conv_http, {**body, "member_ref": "m-f", "from_points": 3000})
    assert_problem(refused, 422, "insufficient_points")
    await fund(ledger_http, src, "m-f", 2500)
    r = await convert(conv_http, {**body, "member_ref": "m-f", "from_points": 3000})
    assert r.status_code == 201, r.text


async def test_credit_rejected_for_good_is_compensated(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, db
) -> None:
    src, dst = await program(ledger_http), await program(ledger_http, max_points_per_transaction=MAX_POINTS)
    await put_rate(conv_http, src, dst, from_points=5, to_points=1, fee_bps=200, min_from_points=1)
    await fund(ledger_http, src, "m-x", 5000)
    # the member's target balance is so high that any credit would overflow it: the ledger refuses the
    # credit with 422 points_out_of_range, which no retry can change
    await fund(ledger_http, dst, "m-x", MAX_POINTS - 10)

    r = await convert(
        conv_http, {"from_program": src, "to_program": dst, "member_ref": "m-x", "from_points": 5000}
    )
    # the ledger's own refusal of the credit is the answer (DESIGN §4); the conversion says it was compensated
    problem = assert_problem(r, 422, "points_out_of_range")
    conversion = problem["conversion"]
    assert conversion["status"] == "compensated"
    assert conversion["error"]["code"] == "points_out_of_range"
    assert events(conversion) == [
        "created",
        "debiting",
        "debited",
        "crediting",
        "compensating",
        "compensated",
    ]
    assert conversion["credit_transaction_id"] is None
    reversal = (await ledger_http.get(f"/v1/transactions/{conversion['compensation_transaction_id']}")).json()
    assert (reversal["type"], reversal["points"], reversal["original_id"]) == (
        "reversal",
        5000,
        conversion["debit_transaction_id"],
    )
    # the member's points are restored, and nothing reached the target
    assert await balance(ledger_http, src, "m-x") == 5000
    assert await balance(ledger_http, dst, "m-x") == MAX_POINTS - 10
    assert await _clearing(db, src) == 0
    await check_conversion_invariants(db)
