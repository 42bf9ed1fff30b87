"""Rates over HTTP: versions, the rates in force at a time, derived rates, program checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import assert_problem, unique_code
from tests.conversion.helpers import program, put_rate


async def test_rates_are_versioned_and_listed_as_in_force(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    src, dst = await program(ledger_http), await program(ledger_http)
    v1 = await put_rate(
        conv_http,
        src,
        dst,
        from_points=5,
        to_points=1,
        fee_bps=200,
        min_from_points=1000,
        daily_limit_from_points=200_000,
    )
    assert (v1["version"], v1["source"], v1["daily_limit_from_points"]) == (1, "direct", 200_000)
    later = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    v2 = await put_rate(
        conv_http, src, dst, from_points=4, to_points=1, fee_bps=100, effective_from=later.isoformat()
    )
    assert v2["version"] == 2
    assert datetime.fromisoformat(v2["effective_from"]) == later

    # now: version 1 is in force; at `later`: version 2
    now_rate = (await conv_http.get(f"/v1/rates/{src}/{dst}")).json()
    assert (now_rate["version"], now_rate["from_points"]) == (1, 5)
    at = (await conv_http.get(f"/v1/rates/{src}/{dst}", params={"at": later.isoformat()})).json()
    assert (at["version"], at["from_points"]) == (2, 4)
    listed = (await conv_http.get("/v1/rates", params={"from_program": src})).json()["data"]
    assert [(r["to_program"], r["version"]) for r in listed] == [(dst, 1)]
    listed = (await conv_http.get("/v1/rates", params={"from_program": src, "at": later.isoformat()})).json()
    assert [(r["to_program"], r["version"]) for r in listed["data"]] == [(dst, 2)]
    before = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert (await conv_http.get("/v1/rates", params={"from_program": src, "at": before})).json()["data"] == []
    # old versions are kept
    versions = (await conv_http.get(f"/v1/rates/{src}/{dst}/versions")).json()["data"]
    assert [v["version"] for v in versions] == [2, 1]
    page = (await conv_http.get(f"/v1/rates/{src}/{dst}/versions", params={"limit": 1})).json()
    assert [v["version"] for v in page["data"]] == [2] and page["next_cursor"]
    page = (
        await conv_http.get(
            f"/v1/rates/{src}/{dst}/versions", params={"limit": 1, "cursor": page["next_cursor"]}
        )
    ).json()
    assert [v["version"] for v in page["data"]] == [1] and page["next_cursor"] is None
    # a quote now uses version 1
    q = await conv_http.post(
        "/v1/quotes", json={"from_program": src, "to_program": dst, "member_ref": "m", "from_points": 5000}
    )
    assert q.status_code == 201 and q.json()["rate"]["version"] == 1 and q.json()["to_points"] == 980


async def test_rate_input_is_checked(conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient) -> None:
    src, dst = await program(ledger_http), await program(ledger_http)
    good = {"from_points": 5, "to_points": 1, "fee_bps": 200, "min_from_points": 1}
    missing = unique_code("NO")
    assert_problem(await conv_http.put(f"/v1/rates/{missing}/{dst}", json=good), 404, "program_not_found")
    assert_problem(await conv_http.put(f"/v1/rates/{src}/{missing}", json=good), 404, "program_not_found")
    assert_problem(await conv_http.put(f"/v1/rates/{src}/{src}", json=good), 422, "same_program")
    assert_problem(await conv_http.put(f"/v1/rates/{src}/{dst}/x", json=good), 404, "not_found")
    assert_problem(await conv_http.put(f"/v1/rates/{src}/lower", json=good), 422, "validation_error")
    for bad in (
        {**good, "from_points": 0},
        {**good, "to_points": -1},
        {**good, "from_points": 1.5},
        {**good, "from_points": "5"},
        {**good, "fee_bps": 10_000},
        {**good, "fee_bps": -1},
        {**good, "min_from_points": 2**63},
        {**good, "daily_limit_from_points": 0},
        {**good, "min_from_points": 100, "daily_limit_from_points": 50},
        {**good, "effective_from": "2030-01-01T00:00:00"},  # no time zone
        {**good, "surprise": 1},
        {"to_points": 1},
    ):
        problem = assert_problem(
            await conv_http.put(f"/v1/rates/{src}/{dst}", json=bad), 422, "validation_error"
        )
        assert problem["errors"], problem
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    r = await conv_http.put(f"/v1/rates/{src}/{dst}", json={**good, "effective_from": past})
    assert_problem(r, 422, "effective_from_in_past")
    assert_problem(await conv_http.get(f"/v1/rates/{src}/{dst}"), 404, "rate_not_found")
    r = await conv_http.put(
        f"/v1/rates/{src}/{dst}", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(r, 400, "malformed_json")
    assert_problem(await conv_http.get("/v1/rates", params={"cursor": "!!"}), 400, "invalid_cursor")


async def test_derived_rate_only_where_both_programs_allow_it(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    wlt = await program(ledger_http, points=500, cash_minor=100)  # 500 points = 1 CNY
    mu = await program(ledger_http, points=20, cash_minor=100)  # 20 miles = 1 CNY
    usd = await create_usd(ledger_http)
    quote = {"from_program": wlt, "to_program": mu, "member_ref": "m-dr", "from_points": 5000}

    assert_problem(await conv_http.get(f"/v1/rates/{wlt}/{mu}"), 404, "rate_not_found")
    assert_problem(await conv_http.post("/v1/quotes", json=quote), 422, "no_rate")
    settings = await conv_http.get(f"/v1/programs/{wlt}/settings")
    assert settings.status_code == 200 and settings.json()["allow_derived_rates"] is False

    r = await conv_http.put(
        f"/v1/programs/{wlt}/settings", json={"allow_derived_rates": True, "derived_fee_bps": 100}
    )
    assert r.status_code == 200 and r.json()["allow_derived_rates"] is True, r.text
    problem = assert_problem(await conv_http.post("/v1/quotes", json=quote), 422, "no_rate")
    assert mu in problem["detail"]  # says which program does not allow it
    r = await conv_http.put(
        f"/v1/programs/{mu}/settings", json={"allow_derived_rates": True, "derived_fee_bps": 300}
    )
    assert r.status_code == 200

    rate = (await conv_http.get(f"/v1/rates/{wlt}/{mu}")).json()
    # 1 WLT = 0.2 fen, 1 mile = 5 fen: 25 WLT per mile; the larger of the two fees
    assert (rate["source"], rate["version"], rate["from_points"], rate["to_points"], rate["fee_bps"]) == (
        "derived",
        None,
        25,
        1,
        300,
    )
    assert rate["derived_from"]["from_cash_value"] == {"points": 500, "cash_minor": 100, "currency": "CNY"}
    assert rate["min_from_points"] == 26  # the least that buys one mile after the fee
    q = await conv_http.post("/v1/quotes", json=quote)
    assert q.status_code == 201, q.text
    # fee = ceil(5000 * 300 / 10000) = 150; to = floor(4850 / 25) = 194
    assert (q.json()["fee_points"], q.json()["to_points"], q.json()["rate"]["source"]) == (
        150,
        194,
        "derived",
    )
    # a published rate wins over a derived one
    await put_rate(conv_http, wlt, mu, from_points=20, to_points=1, fee_bps=0, min_from_points=1)
    assert (await conv_http.get(f"/v1/rates/{wlt}/{mu}")).json()["source"] == "direct"
    # different currencies never derive
    await conv_http.put(f"/v1/programs/{usd}/settings", json={"allow_derived_rates": True})
    problem = assert_problem(
        await conv_http.post("/v1/quotes", json={**quote, "to_program": usd}), 422, "no_rate"
    )
    assert "currencies" in problem["detail"]
    # settings need an existing program, admin scope and valid input
    missing = unique_code("NO")
    assert_problem(
        await conv_http.put(f"/v1/programs/{missing}/settings", json={"allow_derived_rates": True}),
        404,
        "program_not_found",
    )
    assert_problem(
        await conv_http.put(f"/v1/programs/{wlt}/settings", json={"allow_derived_rates": "yes"}),
        422,
        "validation_error",
    )
    assert_problem(
        await conv_http.put(
            f"/v1/programs/{wlt}/settings", json={"allow_derived_rates": True, "derived_fee_bps": 10_000}
        ),
        422,
        "validation_error",
    )


async def create_usd(ledger_http: httpx.AsyncClient) -> str:
    code = unique_code("U")
    r = await ledger_http.post(
        "/v1/programs",
        json={
            "code": code,
            "name": "USD points",
            "cash_value": {"points": 100, "cash_minor": 1, "currency": "USD"},
        },
    )
    assert r.status_code == 201, r.text
    return code
