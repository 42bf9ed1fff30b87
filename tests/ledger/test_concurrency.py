from __future__ import annotations

import asyncio

import httpx

from tests.conftest import earn, member, post
from tests.ledger.invariants import check_ledger_invariants


async def test_hundred_concurrent_burns_exactly_fifty_succeed(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    await earn(client, program, "olga", 500)
    body = {"program": program, "member_ref": "olga", "points": 10, "reference": "o"}
    responses = await asyncio.gather(*(post(client, "/v1/burn", body) for _ in range(100)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 50 and statuses.count(422) == 50, statuses
    availables = [r.json()["balance_after"]["available"] for r in responses if r.status_code == 201]
    assert sorted(availables) == list(range(0, 500, 10))
    view = await member(client, program, "olga")
    assert view["balance"] == 0 and view["available"] == 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_concurrent_holds_and_burns_never_overdraw(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    await earn(client, program, "pia", 300)
    burn = {"program": program, "member_ref": "pia", "points": 7, "reference": "o"}
    hold = {**burn, "expires_in_s": 600}
    tasks = [post(client, "/v1/burn" if i % 2 else "/v1/holds", burn if i % 2 else hold) for i in range(80)]
    responses = await asyncio.gather(*tasks)
    ok = sum(1 for r in responses if r.status_code == 201)
    assert ok == 300 // 7
    view = await member(client, program, "pia")
    assert view["available"] == 300 - 7 * ok >= 0
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_opposite_transfers_do_not_deadlock(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    await earn(client, program, "quin", 1000)
    await earn(client, program, "ruth", 1000)

    def transfer(src: str, dst: str):
        return post(
            client,
            "/v1/transfers",
            {"program": program, "from_member_ref": src, "to_member_ref": dst, "points": 3},
        )

    responses = await asyncio.gather(
        *(transfer("quin", "ruth") if i % 2 else transfer("ruth", "quin") for i in range(60))
    )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201]
    total = (await member(client, program, "quin"))["balance"] + (await member(client, program, "ruth"))[
        "balance"
    ]
    assert total == 2000
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_hot_account_concurrent_earns_all_land(client: httpx.AsyncClient, program: str) -> None:
    responses = await asyncio.gather(*(earn(client, program, "sam", 1) for _ in range(64)))
    assert len({r["id"] for r in responses}) == 64
    assert (await member(client, program, "sam"))["balance"] == 64
