from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import assert_problem, create_program, earn, member, post
from tests.ledger.invariants import check_ledger_invariants


def _earn_body(program: str, who: str, amount: int, **purchase) -> dict:
    return {
        "program": program,
        "member_ref": who,
        "reference": "r",
        "purchase": {"amount_minor": amount, "currency": "CNY", **purchase},
    }


async def _rules(client: httpx.AsyncClient, program: str, body: dict) -> httpx.Response:
    return await client.post(f"/v1/programs/{program}/rules", json=body)


START = "2020-01-01T00:00:00Z"


async def test_earn_priced_by_rules_with_breakdown(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    r = await _rules(
        client,
        program,
        {
            "effective_from": START,
            "base": {"points": 1, "per_amount_minor": 100},
            "rules": [
                {"name": "partner 10x", "match": {"merchant_id": "M1"}, "multiplier": "10"},
                {"name": "app bonus", "match": {"channel": "app"}, "bonus_points": 5},
            ],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    r = await post(client, "/v1/earn", _earn_body(program, "ann", 12345, merchant_id="M1", channel="app"))
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["points"] == 1239 and t["merchant_id"] == "M1"
    assert t["breakdown"]["multiplier"]["rule"] == "partner 10x"
    assert t["breakdown"]["bonuses"] == [{"rule": "app bonus", "points": 5}]
    dry = await client.post(
        f"/v1/programs/{program}/rules/evaluate",
        json={
            "member_ref": "ann",
            "purchase": {"amount_minor": 12345, "currency": "CNY", "merchant_id": "M1", "channel": "app"},
        },
    )
    assert dry.status_code == 200 and dry.json()["points"] == 1239
    assert (await member(client, program, "ann"))["balance"] == 1239  # the dry run posted nothing
    await check_ledger_invariants(ledger_app.state.db, program)


async def test_versions_are_effective_dated_and_never_overlap(
    client: httpx.AsyncClient, program: str
) -> None:
    base = {"base": {"points": 1, "per_amount_minor": 100}}
    assert (await _rules(client, program, {"effective_from": START, **base})).status_code == 201
    now = datetime.now(UTC)
    later = (now - timedelta(days=1)).isoformat()
    r = await _rules(
        client, program, {"effective_from": later, "base": {"points": 2, "per_amount_minor": 100}}
    )
    assert r.status_code == 201 and r.json()["version"] == 2
    assert_problem(
        await _rules(client, program, {"effective_from": START, **base}), 409, "rule_version_overlap"
    )
    assert_problem(
        await _rules(client, program, {"effective_from": later, **base}), 409, "rule_version_overlap"
    )
    # an earn that happened before version 2 is priced by version 1
    old = _earn_body(program, "bo", 1000)
    old["occurred_at"] = (now - timedelta(days=3)).isoformat()
    assert (await post(client, "/v1/earn", old)).json()["points"] == 10
    assert (await post(client, "/v1/earn", _earn_body(program, "bo", 1000))).json()["points"] == 20
    listed = (await client.get(f"/v1/programs/{program}/rules")).json()["data"]
    assert [v["version"] for v in listed] == [1, 2]


async def test_earn_without_rules_and_currency_mismatch(client: httpx.AsyncClient, program: str) -> None:
    assert_problem(await post(client, "/v1/earn", _earn_body(program, "cy", 100)), 422, "no_earning_rules")
    await _rules(client, program, {"effective_from": START, "base": {"points": 1, "per_amount_minor": 100}})
    body = _earn_body(program, "cy", 100)
    body["purchase"]["currency"] = "USD"
    assert_problem(await post(client, "/v1/earn", body), 422, "currency_mismatch")
    early = _earn_body(program, "cy", 100)
    early["occurred_at"] = "2019-06-01T00:00:00Z"
    assert_problem(await post(client, "/v1/earn", early), 422, "no_earning_rules")
    assert_problem(
        await client.post(
            "/v1/programs/NOPE_XYZ/rules/evaluate",
            json={"member_ref": "x", "purchase": {"amount_minor": 1, "currency": "CNY"}},
        ),
        404,
        "program_not_found",
    )


async def test_member_caps_hold_under_concurrency(
    client: httpx.AsyncClient, program: str, ledger_app
) -> None:
    await _rules(
        client,
        program,
        {
            "effective_from": START,
            "base": {"points": 1, "per_amount_minor": 100},
            "caps": {"per_member_per_day": 1000, "per_member_per_month": 1500},
        },
    )
    responses = await asyncio.gather(
        *(post(client, "/v1/earn", _earn_body(program, "dan", 30000)) for _ in range(10))
    )
    assert all(r.status_code == 201 for r in responses)
    points = sorted(r.json()["points"] for r in responses)
    assert sum(points) == 1000 and points[-1] == 300 and points.count(0) == 6
    capped = [r.json() for r in responses if r.json()["points"] < 300]
    assert all(c["breakdown"]["caps_applied"][0]["cap"] == "per_member_per_day" for c in capped)
    # another day of the same month: the monthly cap leaves 500
    yesterday = _earn_body(program, "dan", 100000)
    yesterday["occurred_at"] = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = await post(client, "/v1/earn", yesterday)
    expected = 500 if (datetime.now(UTC) - timedelta(days=1)).month == datetime.now(UTC).month else 1000
    assert r.json()["points"] == expected
    # explicit points are not rule-priced and not capped
    await earn(client, program, "dan", 5000)
    await check_ledger_invariants(ledger_app.state.db, program)


async def _gold_doubles(client: httpx.AsyncClient) -> str:
    """A program with a gold tier from 1,000 points, whose rules give 1 point per 100 and gold 2x."""
    program = await create_program(client, tiers=[{"code": "gold", "min_points": 1000}])
    await _rules(
        client,
        program,
        {
            "effective_from": START,
            "base": {"points": 1, "per_amount_minor": 100},
            "rules": [{"name": "gold 2x", "match": {"tier": "gold"}, "multiplier": "2"}],
        },
    )
    return program


async def test_tier_rules_use_the_members_tier(client: httpx.AsyncClient) -> None:
    program = await _gold_doubles(client)
    assert (await post(client, "/v1/earn", _earn_body(program, "eve", 100000))).json()["points"] == 1000
    assert (await member(client, program, "eve"))["tier"] == "gold"
    assert (await post(client, "/v1/earn", _earn_body(program, "eve", 1000))).json()["points"] == 20


async def test_concurrent_earns_share_member_lookups(
    client: httpx.AsyncClient, ledger_app, monkeypatch
) -> None:
    """Earns priced by a tier rule at the same time read their members' tiers together (and each
    still gets its own member's tier), so the lookup costs no pooled connection per earn."""
    from ledger_service.rules import service

    program = await _gold_doubles(client)
    await earn(client, program, "gold-1", 1000)
    calls: list[list[str]] = []
    real = service.repository.members

    async def counted(conn, code, refs):
        calls.append(refs)
        return await real(conn, code, refs)

    monkeypatch.setattr(service.repository, "members", counted)
    who = ["gold-1" if i % 4 == 0 else f"basic-{i}" for i in range(24)]
    responses = await asyncio.gather(*(post(client, "/v1/earn", _earn_body(program, m, 1000)) for m in who))
    assert [r.json()["points"] for r in responses] == [20 if m == "gold-1" else 10 for m in who]
    assert len(calls) < len(who) / 2, calls


async def test_rules_need_admin(client: httpx.AsyncClient, program: str, ledger_app) -> None:
    from tests.conftest import make_key

    reader = await make_key(ledger_app, ["ledger:read", "ledger:earn"])
    r = await client.post(
        f"/v1/programs/{program}/rules",
        headers={"Authorization": f"Bearer {reader}"},
        json={"effective_from": START, "base": {"points": 1, "per_amount_minor": 100}},
    )
    assert_problem(r, 403, "insufficient_scope")
    r = await _rules(
        client, program, {"effective_from": START, "base": {"points": 0, "per_amount_minor": 100}}
    )
    assert_problem(r, 422, "validation_error")


async def test_evaluate_takes_the_body_of_an_earn(client: httpx.AsyncClient, program: str) -> None:
    """Issue 12 item 7: the earn body was refused (`program`, `reference`: extra inputs)."""
    r = await _rules(
        client, program, {"effective_from": START, "base": {"points": 1, "per_amount_minor": 100}}
    )
    assert r.status_code == 201, r.text
    body = {**_earn_body(program, "eva", 12345, merchant_id="M1"), "metadata": {"store": "SH-1"}}
    path = f"/v1/programs/{program}/rules/evaluate"
    dry = await client.post(path, json=body)
    assert dry.status_code == 200, dry.text
    assert dry.json()["points"] == 123
    posted = await post(client, "/v1/earn", body)
    assert posted.status_code == 201 and posted.json()["points"] == dry.json()["points"]
    given = await client.post(
        path, json={"program": program, "member_ref": "eva", "points": 70, "reference": "x"}
    )
    assert given.status_code == 200 and given.json()["points"] == 70
    assert_problem(await client.post(path, json={**body, "program": "OTHER"}), 422, "program_mismatch")
    assert_problem(await client.post(path, json={**body, "surprise": 1}), 422, "validation_error")
    assert_problem(await client.post(path, json={"member_ref": "eva"}), 422, "validation_error")
