from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.conftest import assert_problem, earn, make_key, member, post
from tests.ledger.invariants import check_ledger_invariants


async def _burn(client: httpx.AsyncClient, program: str, who: str, points: int) -> dict:
    r = await post(
        client, "/v1/burn", {"program": program, "member_ref": who, "points": points, "reference": "o"}
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_partial_refunds_never_exceed_the_burn(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    await earn(client, program, "hugo", 1000)
    burn = await _burn(client, program, "hugo", 300)
    r = await post(
        client, f"/v1/transactions/{burn['id']}/reverse", {"points": 100, "reason": "returned one"}
    )
    assert r.status_code == 201, r.text
    rev = r.json()
    assert rev["type"] == "reversal" and rev["original_id"] == burn["id"] and rev["kind"] == "burn"
    assert rev["balance_after"]["balance"] == 800
    body = assert_problem(
        await post(client, f"/v1/transactions/{burn['id']}/reverse", {"points": 201, "reason": "x"}),
        422,
        "reversal_exceeds_original",
    )
    assert "200" in body["detail"]
    r = await post(client, f"/v1/transactions/{burn['id']}/reverse", {"reason": "the rest"})
    assert r.status_code == 201 and r.json()["points"] == 200
    assert_problem(
        await post(client, f"/v1/transactions/{burn['id']}/reverse", {"points": 1, "reason": "x"}),
        422,
        "reversal_exceeds_original",
    )
    detail = (await client.get(f"/v1/transactions/{burn['id']}")).json()
    assert detail["reversed_points"] == 300
    assert (await member(client, program, "hugo"))["balance"] == 1000
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_concurrent_reversals_respect_the_cap(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    await earn(client, program, "iris", 500)
    burn = await _burn(client, program, "iris", 100)
    responses = await asyncio.gather(
        *(
            post(client, f"/v1/transactions/{burn['id']}/reverse", {"points": 7, "reason": "r"})
            for _ in range(30)
        )
    )
    assert sum(r.status_code == 201 for r in responses) == 100 // 7
    assert (await member(client, program, "iris"))["balance"] == 400 + 7 * (100 // 7)
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_clawback_of_an_earn(client: httpx.AsyncClient, program: str, ledger_app) -> None:
    t = await earn(client, program, "jack", 500)
    await _burn(client, program, "jack", 450)
    assert_problem(
        await post(client, f"/v1/transactions/{t['id']}/reverse", {"points": 100, "reason": "fraud"}),
        422,
        "insufficient_points",
    )
    r = await post(client, f"/v1/transactions/{t['id']}/reverse", {"points": 50, "reason": "fraud"})
    assert r.status_code == 201 and r.json()["balance_after"]["balance"] == 0
    view = await member(client, program, "jack")
    assert view["lifetime_earned"] == 450
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_capture_can_be_refunded(client: httpx.AsyncClient, program: str) -> None:
    await earn(client, program, "kai", 100)
    r = await post(
        client, "/v1/holds", {"program": program, "member_ref": "kai", "points": 80, "reference": "c"}
    )
    cap = (await post(client, f"/v1/holds/{r.json()['id']}/capture", {"points": 80})).json()
    r = await post(client, f"/v1/transactions/{cap['id']}/reverse", {"reason": "refund"})
    assert r.status_code == 201 and r.json()["balance_after"]["balance"] == 100


async def test_not_reversible_and_unknown(client: httpx.AsyncClient, program: str) -> None:
    await earn(client, program, "lu", 100)
    burn = await _burn(client, program, "lu", 10)
    rev = (await post(client, f"/v1/transactions/{burn['id']}/reverse", {"reason": "r"})).json()
    assert_problem(
        await post(client, f"/v1/transactions/{rev['id']}/reverse", {"reason": "r"}), 422, "not_reversible"
    )
    missing = uuid.uuid4()
    assert_problem(
        await post(client, f"/v1/transactions/{missing}/reverse", {"reason": "r"}),
        404,
        "transaction_not_found",
    )
    assert_problem(await client.get(f"/v1/transactions/{missing}"), 404, "transaction_not_found")
    assert_problem(await post(client, f"/v1/transactions/{burn['id']}/reverse", {}), 422, "validation_error")


async def test_reversal_scope_follows_the_original(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    t = await earn(client, program, "mo", 100)
    burner = await make_key(ledger_app, ["ledger:burn"])
    assert_problem(
        await post(client, f"/v1/transactions/{t['id']}/reverse", {"reason": "r"}, auth=burner),
        403,
        "insufficient_scope",
    )
    assert (await member(client, program, "mo"))["balance"] == 100
