"""Valuations over HTTP: points -> cash rounds down to the fen, cash -> points rounds up."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import orjson

from tests.conftest import assert_problem, make_key, unique_code
from tests.conversion.conftest import conversion_process
from tests.conversion.helpers import program


async def test_points_and_cash_for_checkout(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    wlt = await program(ledger_http, points=500, cash_minor=100)  # 500 points = 1 CNY

    # pay 30 CNY of a 100 CNY bill with WLT points
    r = await conv_http.post("/v1/valuations", json={"program": wlt, "cash_minor": 3000, "currency": "CNY"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "program": wlt,
        "direction": "cash_to_points",
        "points": 15000,
        "cash_minor": 3000,
        "currency": "CNY",
        "rounding": "up",
        "cash_value": {"points": 500, "cash_minor": 100, "currency": "CNY"},
    }
    # 1 fen needs 5 points; 1 point is worth 0.2 fen, rounded down to 0
    r = await conv_http.post("/v1/valuations", json={"program": wlt, "cash_minor": 1, "currency": "CNY"})
    assert r.json()["points"] == 5
    r = await conv_http.post("/v1/valuations", json={"program": wlt, "points": 4})
    assert (r.json()["direction"], r.json()["cash_minor"], r.json()["rounding"]) == (
        "points_to_cash",
        0,
        "down",
    )
    r = await conv_http.post("/v1/valuations", json={"program": wlt, "points": 15004})
    assert r.json()["cash_minor"] == 3000

    odd = await program(ledger_http, points=3, cash_minor=7)  # 3 points = 7 fen
    r = await conv_http.post("/v1/valuations", json={"program": odd, "cash_minor": 10, "currency": "CNY"})
    assert r.json()["points"] == 5  # ceil(10 * 3 / 7) = ceil(4.29); 5 points are worth 11 fen >= 10
    r = await conv_http.post("/v1/valuations", json={"program": odd, "points": 5})
    assert r.json()["cash_minor"] == 11  # floor(5 * 7 / 3) = floor(11.67)


async def test_valuation_bad_input(conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient) -> None:
    wlt = await program(ledger_http, points=500, cash_minor=100)
    free = await program(ledger_http, points=100, cash_minor=0)
    missing = unique_code("NO")
    assert_problem(
        await conv_http.post("/v1/valuations", json={"program": missing, "points": 1}),
        404,
        "program_not_found",
    )
    r = await conv_http.post("/v1/valuations", json={"program": wlt, "cash_minor": 100, "currency": "USD"})
    assert_problem(r, 422, "currency_mismatch")
    r = await conv_http.post("/v1/valuations", json={"program": free, "cash_minor": 100, "currency": "CNY"})
    assert_problem(r, 422, "no_cash_value")
    r = await conv_http.post("/v1/valuations", json={"program": wlt, "cash_minor": 10**15, "currency": "CNY"})
    assert r.status_code == 200 and r.json()["points"] == 5 * 10**15
    for bad in (
        {"program": wlt},
        {"program": wlt, "points": 0},
        {"program": wlt, "points": 1.5},
        {"program": wlt, "points": 10, "cash_minor": 10, "currency": "CNY"},
        {"program": wlt, "cash_minor": 100},
        {"program": wlt, "currency": "CNY"},
        {"program": wlt, "cash_minor": -1, "currency": "CNY"},
        {"program": wlt, "cash_minor": "100", "currency": "CNY"},
        {"program": wlt, "cash_minor": 100, "currency": "cny"},
        {"program": wlt, "cash_minor": 10**15 + 1, "currency": "CNY"},
    ):
        assert_problem(await conv_http.post("/v1/valuations", json=bad), 422, "validation_error")


async def test_the_fast_lane_answers_valuations_as_fastapi_does(
    database_url: str,
    live_ledger: Any,
    conversion_ledger_key: str,
    ledger_app: Any,
    conv_http: httpx.AsyncClient,
    ledger_http: httpx.AsyncClient,
) -> None:
    """POST /v1/valuations is on the fast lane (services/fastlane.py): the same requests to a conversion
    process with the lane off get the same answers, errors included, and the lane served the good ones."""
    wlt = await program(ledger_http, points=500, cash_minor=100)
    other = await program(ledger_http, points=100, cash_minor=100)
    reader = await make_key(ledger_app, ["conversion:read"])
    limited = await make_key(ledger_app, ["conversion:read"], programs=[other])
    writer_only = await make_key(ledger_app, ["ledger:read"])
    requests: list[tuple[str | None, Any]] = [
        (None, {"program": wlt, "cash_minor": 3000, "currency": "CNY"}),
        (None, {"program": wlt, "points": 15004}),
        (reader, {"program": wlt, "points": 7}),
        (limited, {"program": wlt, "points": 7}),  # program_forbidden
        (writer_only, {"program": wlt, "points": 7}),  # insufficient_scope
        ("not-a-key", {"program": wlt, "points": 7}),
        (None, {"program": wlt, "cash_minor": 100, "currency": "USD"}),  # currency_mismatch
        (None, {"program": unique_code("NO"), "points": 1}),  # program_not_found
        (None, {"program": wlt}),  # validation_error
        (None, b"{not json"),
    ]

    async def answers(client: httpx.AsyncClient) -> list[tuple[int, str, Any]]:
        out = []
        for key, body in requests:
            headers = {"Content-Type": "application/json"}
            if key is not None:
                headers["Authorization"] = f"Bearer {key}"
            content = body if isinstance(body, bytes) else orjson.dumps(body)
            r = await client.post("/v1/valuations", content=content, headers=headers)
            out.append((r.status_code, r.headers["content-type"], r.json()))
        return out

    async def served() -> float:
        text = (await conv_http.get("/metrics")).text
        pattern = r'jifen_fast_lane_requests_total\{outcome="served",route="/v1/valuations"\} (\S+)'
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    before = await served()
    fast = await answers(conv_http)
    # The lane serves what reaches the endpoint (3 answers, 3 refusals by the service itself); a bad key,
    # a missing scope, a body that does not validate fall through to FastAPI.
    assert await served() - before == 6
    slow_process = conversion_process(
        database_url, live_ledger.url, conversion_ledger_key, JIFEN_FAST_LANE="false"
    )
    await asyncio.to_thread(slow_process.start)
    try:
        async with httpx.AsyncClient(
            base_url=slow_process.url,
            headers={"Authorization": conv_http.headers["Authorization"]},
            timeout=60,
        ) as slow_http:
            slow = await answers(slow_http)
    finally:
        await asyncio.to_thread(slow_process.stop)
    assert fast == slow
    assert [s for s, _, _ in fast] == [200, 200, 200, 403, 403, 401, 422, 404, 422, 400]
