from __future__ import annotations

import httpx

from tests.conftest import assert_problem, earn, member, post
from tests.ledger.invariants import check_ledger_invariants


async def test_earn_then_burn_reports_balance_after(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    t = await earn(client, program, "alice", 1000, kind="bonus", metadata={"store": "SH-1"})
    assert t["type"] == "earn" and t["points"] == 1000 and t["kind"] == "bonus"
    assert t["program"] == program and t["member_ref"] == "alice" and t["reference"] == "test"
    assert t["balance_after"] == {"balance": 1000, "held": 0, "pending": 0, "available": 1000}
    assert t["metadata"] == {"store": "SH-1"} and t["created_at"].endswith("Z")

    r = await post(
        client, "/v1/burn", {"program": program, "member_ref": "alice", "points": 400, "reference": "o"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["balance_after"] == {"balance": 600, "held": 0, "pending": 0, "available": 600}

    view = await member(client, program, "alice")
    assert view["tier_since"] is None and view["next_tier"] is None and view["qualifying_points"] == 0
    assert {k: v for k, v in view.items() if k not in ("tier_since", "next_tier", "qualifying_points")} == {
        "program": program,
        "member_ref": "alice",
        "balance": 600,
        "held": 0,
        "pending": 0,
        "available": 600,
        "releases": [],
        "tier": "basic",
        "lifetime_earned": 1000,
        "expiring": [],
    }
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_burn_more_than_available_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, program: str
) -> None:
    await earn(client, program, "bob", 100)
    r = await post(
        client, "/v1/burn", {"program": program, "member_ref": "bob", "points": 101, "reference": "o"}
    )
    body = assert_problem(r, 422, "insufficient_points")
    assert "100" in body["detail"]
    r = await post(
        client, "/v1/burn", {"program": program, "member_ref": "nobody", "points": 1, "reference": "o"}
    )
    assert_problem(r, 422, "insufficient_points")
    assert (await member(client, program, "bob"))["balance"] == 100


async def test_unknown_member_view_is_zero(client: httpx.AsyncClient, program: str) -> None:
    view = await member(client, program, "never-seen")
    assert view["balance"] == 0 and view["available"] == 0


async def test_transaction_detail_has_balanced_postings(client: httpx.AsyncClient, program: str) -> None:
    t = await earn(client, program, "carol", 250)
    r = await client.get(f"/v1/transactions/{t['id']}")
    assert r.status_code == 200
    detail = r.json()
    assert detail["type"] == "earn" and detail["points"] == 250
    amounts = {p["account_kind"]: p["amount"] for p in detail["postings"]}
    assert amounts == {"member": 250, "issuance": -250}
    assert sum(p["amount"] for p in detail["postings"]) == 0


async def test_statement_newest_first_and_paginated(client: httpx.AsyncClient, program: str) -> None:
    for i in range(1, 8):
        await earn(client, program, "dave", i)
    r = await post(
        client, "/v1/burn", {"program": program, "member_ref": "dave", "points": 5, "reference": "b"}
    )
    assert r.status_code == 201
    amounts: list[int] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/v1/programs/{program}/members/dave/transactions", params=params)).json()
        amounts += [e["amount"] for e in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert amounts == [-5, 7, 6, 5, 4, 3, 2, 1]


async def test_transfer_moves_points_between_members(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    await earn(client, program, "erin", 500)
    r = await post(
        client,
        "/v1/transfers",
        {"program": program, "from_member_ref": "erin", "to_member_ref": "frank", "points": 200},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["type"] == "transfer" and body["to_member_ref"] == "frank"
    assert body["balance_after"]["balance"] == 300 and body["to_balance_after"]["balance"] == 200
    r = await post(
        client,
        "/v1/transfers",
        {"program": program, "from_member_ref": "frank", "to_member_ref": "erin", "points": 201},
    )
    assert_problem(r, 422, "insufficient_points")
    r = await post(
        client,
        "/v1/transfers",
        {"program": program, "from_member_ref": "erin", "to_member_ref": "erin", "points": 1},
    )
    assert_problem(r, 422, "validation_error")
    statement = (await client.get(f"/v1/programs/{program}/members/frank/transactions")).json()["data"]
    assert statement[0]["amount"] == 200 and statement[0]["counterparty_ref"] == "erin"
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_adjustments_need_admin_and_a_reason(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    from tests.conftest import make_key

    r = await post(
        client,
        "/v1/adjustments",
        {"program": program, "member_ref": "gina", "points": 50, "reason": "goodwill"},
    )
    assert r.status_code == 201 and r.json()["balance_after"]["balance"] == 50
    r = await post(
        client,
        "/v1/adjustments",
        {"program": program, "member_ref": "gina", "points": -20, "reason": "double credit"},
    )
    assert r.status_code == 201 and r.json()["balance_after"]["balance"] == 30
    r = await post(
        client, "/v1/adjustments", {"program": program, "member_ref": "gina", "points": -31, "reason": "x"}
    )
    assert_problem(r, 422, "insufficient_points")
    r = await post(client, "/v1/adjustments", {"program": program, "member_ref": "gina", "points": 5})
    assert_problem(r, 422, "validation_error")
    earner = await make_key(ledger_app, ["ledger:earn", "ledger:burn"])
    r = await post(
        client,
        "/v1/adjustments",
        {"program": program, "member_ref": "gina", "points": 5, "reason": "x"},
        auth=earner,
    )
    assert_problem(r, 403, "insufficient_scope")
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_negative_balance_allowed_when_program_says_so(client: httpx.AsyncClient) -> None:
    from tests.conftest import create_program

    code = await create_program(client, allow_negative=True)
    r = await post(client, "/v1/burn", {"program": code, "member_ref": "hal", "points": 30, "reference": "o"})
    assert r.status_code == 201, r.text
    assert r.json()["balance_after"]["balance"] == -30


async def test_conversion_clearing_account_and_its_reversal(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    t = await earn(client, program, "conv", 300, clearing="conversion")
    kinds = {
        p["account_kind"]: p["amount"]
        for p in (await client.get(f"/v1/transactions/{t['id']}")).json()["postings"]
    }
    assert kinds == {"member": 300, "conversion": -300}
    r = await post(
        client,
        "/v1/burn",
        {"program": program, "member_ref": "conv", "points": 100, "reference": "x", "clearing": "conversion"},
    )
    assert r.status_code == 201
    rev = await post(client, f"/v1/transactions/{r.json()['id']}/reverse", {"reason": "compensate"})
    kinds = {
        p["account_kind"]: p["amount"]
        for p in (await client.get(f"/v1/transactions/{rev.json()['id']}")).json()["postings"]
    }
    assert kinds == {"member": 100, "conversion": -100}
    await check_ledger_invariants(ledger_app.state.db, program)
