"""Valuations over HTTP: points -> cash rounds down to the fen, cash -> points rounds up."""

from __future__ import annotations

import httpx

from tests.conftest import assert_problem, unique_code
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
