"""Quotes and conversion input over HTTP: amounts, rounding, expiry, and every bad input a 4xx problem."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import assert_problem, unique_code
from tests.conversion.helpers import balance, convert, fund, rated_pair


async def test_quote_amounts_and_rounding(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    src, dst = await rated_pair(
        conv_http, ledger_http, from_points=3, to_points=2, fee_bps=150, min_from_points=10
    )
    base = {"from_program": src, "to_program": dst, "member_ref": "m-1"}

    q = (await conv_http.post("/v1/quotes", json={**base, "from_points": 1001})).json()
    # fee = ceil(1001 * 150 / 10000) = ceil(15.015) = 16; to = floor(985 * 2 / 3) = floor(656.67) = 656
    assert (q["from_points"], q["fee_points"], q["to_points"]) == (1001, 16, 656)
    assert q["rate"] == {
        "source": "direct",
        "version": 1,
        "from_points": 3,
        "to_points": 2,
        "fee_bps": 150,
        "min_from_points": 10,
        "daily_limit_from_points": None,
    }
    assert q["expires_at"] > q["created_at"]
    got = await conv_http.get(f"/v1/quotes/{q['id']}")
    assert got.status_code == 200 and got.json() == q
    # by to_points: the smallest from_points that yields at least 656 is 999 (fee 15, 984 -> 656);
    # 998 would give fee 15, 983 -> 655
    by_to = (await conv_http.post("/v1/quotes", json={**base, "to_points": 656})).json()
    assert (by_to["from_points"], by_to["fee_points"], by_to["to_points"]) == (999, 15, 656)
    less = (await conv_http.post("/v1/quotes", json={**base, "from_points": 998})).json()
    assert less["to_points"] == 655
    by_to = (await conv_http.post("/v1/quotes", json={**base, "to_points": 657})).json()
    assert by_to["to_points"] >= 657 and by_to["from_points"] == 1002


async def test_expired_quote(conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient) -> None:
    src, dst = await rated_pair(conv_http, ledger_http, min_from_points=1)
    await fund(ledger_http, src, "m-exp", 5000)
    q = await conv_http.post(
        "/v1/quotes",
        json={
            "from_program": src,
            "to_program": dst,
            "member_ref": "m-exp",
            "from_points": 5000,
            "expires_in_s": 1,
        },
    )
    assert q.status_code == 201, q.text
    await asyncio.sleep(1.2)
    problem = assert_problem(await convert(conv_http, {"quote_id": q.json()["id"]}), 422, "quote_expired")
    assert "expired" in problem["detail"]
    assert await balance(ledger_http, src, "m-exp") == 5000
    assert_problem(
        await convert(conv_http, {"quote_id": "00000000-0000-4000-8000-000000000000"}), 404, "quote_not_found"
    )


async def test_unknown_programs_and_bad_amounts(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    src, dst = await rated_pair(
        conv_http,
        ledger_http,
        from_points=5,
        to_points=1,
        fee_bps=200,
        min_from_points=1000,
        daily_limit_from_points=100_000,
    )
    base = {"from_program": src, "to_program": dst, "member_ref": "m-bad"}
    missing = unique_code("NO")

    for path in ("/v1/quotes", "/v1/conversions"):

        async def send(body, path=path):
            if path == "/v1/quotes":
                return await conv_http.post(path, json=body)
            return await convert(conv_http, body)

        assert_problem(
            await send({**base, "from_program": missing, "from_points": 5000}), 404, "program_not_found"
        )
        assert_problem(
            await send({**base, "to_program": missing, "from_points": 5000}), 404, "program_not_found"
        )
        assert_problem(await send({**base, "to_program": src, "from_points": 5000}), 422, "same_program")
        assert_problem(await send({**base, "from_points": 999}), 422, "below_minimum")
        assert_problem(await send({**base, "from_points": 100_001}), 422, "daily_limit_exceeded")
        assert_problem(await send({**base, "to_points": 2**62}), 422, "points_out_of_range")
        for bad in (
            {**base, "from_points": 0},
            {**base, "from_points": -5},
            {**base, "from_points": 50.5},
            {**base, "from_points": "5000"},
            {**base, "from_points": 2**63},
            {**base, "from_points": True},
            {**base, "from_points": 5000, "to_points": 980},
            {**base},
            {**base, "from_program": "wlt", "from_points": 5000},
            {**base, "member_ref": "", "from_points": 5000},
            {**base, "member_ref": "x" * 65, "from_points": 5000},
            {**base, "member_ref": "tab\there", "from_points": 5000},
            {**base, "from_points": 5000, "extra": 1},
        ):
            problem = assert_problem(await send(bad), 422, "validation_error")
            assert problem["errors"] and all(e["field"] and e["message"] for e in problem["errors"])
    assert_problem(await convert(conv_http, {"quote_id": "not-a-uuid"}), 422, "validation_error")
    assert_problem(
        await convert(conv_http, {"quote_id": "00000000-0000-4000-8000-000000000000", "from_points": 1}),
        422,
        "validation_error",
    )
    r = await conv_http.post("/v1/conversions", json={**base, "from_points": 5000})
    assert_problem(r, 400, "idempotency_key_required")
    r = await conv_http.post(
        "/v1/conversions", json={**base, "from_points": 5000}, headers={"Idempotency-Key": "k" * 256}
    )
    assert_problem(r, 400, "invalid_idempotency_key")
    # a refusal before anything is stored leaves nothing behind
    listed = (await conv_http.get("/v1/conversions", params={"member_ref": "m-bad"})).json()["data"]
    assert listed == []
    assert_problem(
        await conv_http.get("/v1/conversions/00000000-0000-4000-8000-000000000000"),
        404,
        "conversion_not_found",
    )
    assert_problem(
        await conv_http.get("/v1/conversions", params={"status": "sleeping"}), 422, "validation_error"
    )


async def test_auth(conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient, ledger_app) -> None:
    from tests.conftest import make_key

    src, dst = await rated_pair(conv_http, ledger_http, min_from_points=1)
    body = {"from_program": src, "to_program": dst, "member_ref": "m-auth", "from_points": 5000}
    url = str(conv_http.base_url)
    async with httpx.AsyncClient(base_url=url, timeout=30) as anon:
        assert_problem(await anon.get("/v1/rates"), 401, "unauthorized")
        r = await anon.get("/v1/rates", headers={"Authorization": "Bearer jf_nope"})
        assert_problem(r, 401, "invalid_api_key")
        reader = await make_key(ledger_app, ["conversion:read"])
        r = await anon.post("/v1/quotes", json=body, headers={"Authorization": f"Bearer {reader}"})
        assert_problem(r, 403, "insufficient_scope")
        r = await anon.put(
            f"/v1/rates/{src}/{dst}",
            json={"from_points": 1, "to_points": 1},
            headers={"Authorization": f"Bearer {reader}"},
        )
        assert_problem(r, 403, "insufficient_scope")
        limited = await make_key(ledger_app, ["conversion:write", "conversion:read"], [src])
        r = await anon.post("/v1/quotes", json=body, headers={"Authorization": f"Bearer {limited}"})
        assert_problem(r, 403, "program_forbidden")
        r = await anon.get(f"/v1/rates/{src}/{dst}", headers={"Authorization": f"Bearer {limited}"})
        assert_problem(r, 403, "program_forbidden")
        r = await anon.get(
            "/v1/rates", params={"from_program": src}, headers={"Authorization": f"Bearer {limited}"}
        )
        assert r.status_code == 200 and r.json()["data"] == []  # only pairs inside the key's programs


async def test_openapi_documents_every_operation(conv_http: httpx.AsyncClient) -> None:
    spec = (await conv_http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    for name in ("RateIn", "QuoteIn", "ConversionIn", "ValuationIn", "ProgramSettingsIn"):
        assert schemas[name].get("examples"), name
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in ops.items():
            assert op.get("summary"), (method, path)
            assert any(code.startswith("4") for code in op["responses"]), (method, path)
    params = spec["paths"]["/v1/conversions"]["post"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in params)
    assert "202" in spec["paths"]["/v1/conversions"]["post"]["responses"]
    for probe in ("/healthz", "/readyz", "/metrics", "/docs"):
        assert (await conv_http.get(probe)).status_code == 200
