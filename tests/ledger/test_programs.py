from __future__ import annotations

import httpx

from tests.conftest import assert_problem, create_program, make_key, unique_code


async def test_create_get_list_patch(client: httpx.AsyncClient) -> None:
    code = unique_code()
    body = {
        "code": code,
        "name": "Wanlitong",
        "cash_value": {"points": 500, "cash_minor": 100, "currency": "CNY"},
        "expiry": {"policy": "rolling", "months": 24},
        "tiers": [{"code": "silver", "min_points": 10000}, {"code": "gold", "min_points": 50000}],
    }
    r = await client.post("/v1/programs", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["cash_value"] == {"points": 500, "cash_minor": 100, "currency": "CNY"}
    assert created["expiry"] == {"policy": "rolling", "months": 24}
    assert created["allow_negative"] is False and created["qualifying_kinds"] == ["purchase"]

    r = await client.get(f"/v1/programs/{code}")
    assert r.status_code == 200 and r.json()["name"] == "Wanlitong"

    r = await client.patch(f"/v1/programs/{code}", json={"name": "WLT 2", "rollover_bps": 2500})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "WLT 2" and r.json()["rollover_bps"] == 2500
    assert r.json()["cash_value"]["points"] == 500

    assert_problem(await client.post("/v1/programs", json=body), 409, "program_exists")


async def test_list_is_cursor_paginated(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await create_program(client)
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/programs", params=params)
        assert r.status_code == 200
        page = r.json()
        assert len(page["data"]) <= 2
        seen += [p["code"] for p in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) >= 3
    assert_problem(await client.get("/v1/programs", params={"cursor": "!!"}), 400, "invalid_cursor")


async def test_program_limited_key_lists_only_its_programs(client: httpx.AsyncClient, ledger_app) -> None:
    mine = await create_program(client)
    await create_program(client)
    key = await make_key(ledger_app, ["ledger:read"], [mine])
    r = await client.get("/v1/programs", headers={"Authorization": f"Bearer {key}"}, params={"limit": 200})
    assert [p["code"] for p in r.json()["data"]] == [mine]


async def test_program_validation(client: httpx.AsyncClient) -> None:
    base = {
        "code": unique_code(),
        "name": "x",
        "cash_value": {"points": 100, "cash_minor": 1, "currency": "CNY"},
    }
    bad = [
        {**base, "code": "a"},
        {**base, "code": "lower"},
        {**base, "cash_value": {"points": 0, "cash_minor": 1, "currency": "CNY"}},
        {**base, "cash_value": {"points": 1.5, "cash_minor": 1, "currency": "CNY"}},
        {**base, "cash_value": {"points": 100, "cash_minor": 1, "currency": "cny"}},
        {**base, "expiry": {"policy": "rolling"}},
        {**base, "expiry": {"policy": "fixed", "month": 2, "day": 30, "years_after": 1}},
        {**base, "expiry": {"policy": "sometimes"}},
        {**base, "rollover_bps": 10001},
        {**base, "tiers": [{"code": "gold", "min_points": 5}, {"code": "silver", "min_points": 1}]},
        {**base, "qualifying_kinds": ["cashback"]},
        {**base, "surprise": True},
    ]
    for body in bad:
        assert_problem(await client.post("/v1/programs", json=body), 422, "validation_error")
    assert_problem(
        await client.patch(f"/v1/programs/{base['code']}", json={"name": "x"}), 404, "program_not_found"
    )
    code = await create_program(client)
    assert_problem(await client.patch(f"/v1/programs/{code}", json={}), 422, "validation_error")
    assert_problem(await client.patch(f"/v1/programs/{code}", json={"name": None}), 422, "validation_error")
    assert_problem(await client.patch(f"/v1/programs/{code}", json={"code": "NEW"}), 422, "validation_error")
