"""Rewards: create, read, change, browse with filters; validation and auth as problem+json."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from services.db import Database
from tests.catalog.helpers import assert_problem, create_reward, earn, make_key, new_program, new_sku


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def test_create_get_patch(catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient) -> None:
    program = await new_program(ledger_http)
    reward = await create_reward(
        catalog_http,
        program,
        type="voucher",
        price_points=2500,
        cash_price_minor=990,
        stock=50,
        per_member_limit=2,
        category="coffee",
        merchant="starbucks-cn",
        active_from=_iso(-timedelta(days=1)),
    )
    assert reward["currency"] == "CNY" and reward["cash_price_minor"] == 990
    assert reward["active"] is True and reward["codes_available"] == 0 and reward["stock"] == 50
    r = await catalog_http.get(f"/v1/rewards/{reward['sku']}")
    assert r.status_code == 200 and r.json() == reward

    r = await catalog_http.patch(f"/v1/rewards/{reward['sku']}", json={"stock": 80, "per_member_limit": None})
    assert r.status_code == 200, r.text
    assert r.json()["stock"] == 80 and r.json()["per_member_limit"] is None
    r = await catalog_http.patch(
        f"/v1/rewards/{reward['sku']}", json={"active_to": _iso(-timedelta(hours=1))}
    )
    assert r.status_code == 200 and r.json()["active"] is False
    r = await catalog_http.patch(f"/v1/rewards/{reward['sku']}", json={"active_to": _iso(-timedelta(days=2))})
    assert_problem(r, 422, "validation_error")
    r = await catalog_http.patch(f"/v1/rewards/{reward['sku']}", json={"name": None})
    assert_problem(r, 422, "validation_error")
    r = await catalog_http.patch(f"/v1/rewards/{reward['sku']}", json={"program": "OTHER"})
    assert_problem(r, 422, "validation_error")
    r = await catalog_http.patch(f"/v1/rewards/{reward['sku']}", json={"cash_price_minor": None})
    assert r.status_code == 200 and r.json()["currency"] is None

    r = await catalog_http.post("/v1/rewards", json={**_body(program), "sku": reward["sku"]})
    assert_problem(r, 409, "reward_exists")
    assert_problem(await catalog_http.get("/v1/rewards/NO-SUCH-SKU"), 404, "reward_not_found")
    assert_problem(
        await catalog_http.patch("/v1/rewards/NO-SUCH-SKU", json={"stock": 1}), 404, "reward_not_found"
    )


def _body(program_code: str, **overrides: object) -> dict[str, object]:
    return {
        "sku": new_sku(),
        "name": "Gift",
        "type": "physical",
        "program": program_code,
        "price_points": 10,
        **overrides,
    }


async def test_bad_input_is_a_problem(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    program = await new_program(ledger_http)
    cases = [
        {"price_points": "10"},  # strict integers
        {"price_points": 10.0},
        {"price_points": 0},
        {"stock": -1},
        {"type": "coupon"},
        {"sku": "has space"},
        {"sku": ""},
        {"program": "lower"},
        {"per_member_limit": 0},
        {"currency": "CNY"},  # without a cash price
        {"active_from": _iso(timedelta(days=2)), "active_to": _iso(timedelta(days=1))},
        {"active_from": "2025-01-01T00:00:00"},  # no time zone
        {"unknown_field": 1},
    ]
    for overrides in cases:
        r = await catalog_http.post("/v1/rewards", json=_body(program, **overrides))
        body = assert_problem(r, 422, "validation_error")
        assert body["errors"], body
    r = await catalog_http.post(
        "/v1/rewards", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(r, 400, "malformed_json")
    r = await catalog_http.post("/v1/rewards", json=_body("NOPROGRAM1"))
    assert_problem(r, 422, "program_not_found")
    r = await catalog_http.get("/v1/rewards", params={"limit": 0})
    assert_problem(r, 422, "validation_error")
    r = await catalog_http.get("/v1/rewards", params={"cursor": "!!"})
    assert_problem(r, 400, "invalid_cursor")
    r = await catalog_http.get("/v1/rewards", params={"affordable_for": "m-1"})
    assert_problem(r, 422, "program_required")


async def test_auth_and_scopes(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, catalog_db: Database
) -> None:
    program = await new_program(ledger_http)
    reward = await create_reward(catalog_http, program)
    assert_problem(await catalog_http.get("/v1/rewards", headers={"Authorization": ""}), 401, "unauthorized")
    r = await catalog_http.get("/v1/rewards", headers={"Authorization": "Bearer jf_nope"})
    assert_problem(r, 401, "invalid_api_key")
    _, reader = await make_key(catalog_db, ["catalog:read"])
    auth = {"Authorization": f"Bearer {reader}"}
    assert (await catalog_http.get(f"/v1/rewards/{reward['sku']}", headers=auth)).status_code == 200
    r = await catalog_http.post("/v1/rewards", json=_body(program), headers=auth)
    assert_problem(r, 403, "insufficient_scope")
    r = await catalog_http.patch(f"/v1/rewards/{reward['sku']}", json={"stock": 3}, headers=auth)
    assert_problem(r, 403, "insufficient_scope")
    _, other = await make_key(catalog_db, ["catalog:admin"], programs=["ZZOTHER"])
    r = await catalog_http.get(f"/v1/rewards/{reward['sku']}", headers={"Authorization": f"Bearer {other}"})
    assert_problem(r, 403, "program_forbidden")
    _, ledger_only = await make_key(catalog_db, ["ledger:read"])
    r = await catalog_http.get("/v1/rewards", headers={"Authorization": f"Bearer {ledger_only}"})
    assert_problem(r, 403, "insufficient_scope")


async def _ledger_member_lookups(live_ledger_url: str) -> int:
    """How many member balance lookups the ledger has served, from its Prometheus metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{live_ledger_url}/metrics")).text
    pattern = (
        r'jifen_http_requests_total\{[^}]*route="/v1/programs/\{code\}/members/\{member_ref\}"[^}]*\} (\S+)'
    )
    return int(sum(float(m) for m in re.findall(pattern, text)))


async def test_browse_filters_and_affordable_for_uses_one_ledger_call(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, live_ledger
) -> None:
    program = await new_program(ledger_http)
    other = await new_program(ledger_http)
    prices = [50, 100, 150, 200, 250, 300]
    skus = [
        (
            await create_reward(
                catalog_http, program, price_points=p, category="coffee" if p <= 150 else "travel"
            )
        )["sku"]
        for p in prices
    ]
    expired = await create_reward(
        catalog_http,
        program,
        price_points=10,
        active_from=_iso(-timedelta(days=3)),
        active_to=_iso(-timedelta(days=1)),
    )
    future = await create_reward(catalog_http, program, price_points=10, active_from=_iso(timedelta(days=1)))
    await create_reward(catalog_http, other, price_points=10)
    await earn(ledger_http, program, "browse-m1", 180)

    r = await catalog_http.get("/v1/rewards", params={"program": program, "limit": 200})
    assert [x["sku"] for x in r.json()["data"]] == [*skus, expired["sku"], future["sku"]]
    r = await catalog_http.get("/v1/rewards", params={"program": program, "category": "coffee"})
    assert [x["sku"] for x in r.json()["data"]] == skus[:3]
    r = await catalog_http.get("/v1/rewards", params={"program": program, "active": "true"})
    assert [x["sku"] for x in r.json()["data"]] == skus
    r = await catalog_http.get("/v1/rewards", params={"program": program, "active": "false"})
    assert {x["sku"] for x in r.json()["data"]} == {expired["sku"], future["sku"]}

    before = await _ledger_member_lookups(live_ledger.url)
    r = await catalog_http.get(
        "/v1/rewards", params={"program": program, "affordable_for": "browse-m1", "active": "true"}
    )
    assert r.status_code == 200, r.text
    assert [x["sku"] for x in r.json()["data"]] == skus[:3]  # 50, 100, 150 <= 180 available
    assert await _ledger_member_lookups(live_ledger.url) - before == 1
    r = await catalog_http.get("/v1/rewards", params={"program": program, "affordable_for": "nobody-yet"})
    assert r.json()["data"] == []

    # cursor pagination walks every reward once
    seen: list[str] = []
    cursor = None
    while True:
        params = {"program": program, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await catalog_http.get("/v1/rewards", params=params)).json()
        seen += [x["sku"] for x in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [*skus, expired["sku"], future["sku"]]


async def test_openapi_documents_examples_and_errors(catalog_http: httpx.AsyncClient) -> None:
    spec = (await catalog_http.get("/openapi.json")).json()
    post = spec["paths"]["/v1/redemptions"]["post"]
    assert {"201", "404", "409", "422", "503"} <= set(post["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    cancel = spec["paths"]["/v1/redemptions/{redemption_id}/cancel"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in cancel["parameters"]) and "202" in cancel["responses"]
    schemas = spec["components"]["schemas"]
    for model in ("RewardIn", "RewardPatch", "CodesIn", "RedemptionIn", "CancelIn"):
        assert schemas[model].get("examples"), model
    assert (await catalog_http.get("/docs")).status_code == 200
    assert (await catalog_http.get("/healthz")).json()["service"] == "catalog"
