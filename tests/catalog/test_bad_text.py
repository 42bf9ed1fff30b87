"""Issue 12 item 2 in the catalog: text PostgreSQL cannot store and timestamps out of range are a
422 with a field error (DESIGN §4), never a 500."""

from __future__ import annotations

import json

import httpx

from tests.catalog.helpers import assert_problem, new_program, new_sku


async def test_bad_text_and_timestamps_are_422(
    catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    program = await new_program(ledger_http)
    reward = {"sku": new_sku(), "name": "Latte", "type": "physical", "program": program, "price_points": 100}
    headers = {"Content-Type": "application/json"}
    for body, code, field in [
        ({**reward, "name": "Latte\x00"}, "invalid_text", "name"),
        ({**reward, "name": "Latte \ud83d"}, "invalid_text", "name"),
        ({**reward, "active_from": "0937-01-01T00:00:00+17:18"}, "timestamp_out_of_range", "active_from"),
    ]:
        r = await catalog_http.post("/v1/rewards", content=json.dumps(body).encode(), headers=headers)
        assert assert_problem(r, 422, code)["errors"][0]["field"] == field
    assert (await catalog_http.get(f"/v1/rewards/{reward['sku']}")).status_code == 404
    r = await catalog_http.post("/v1/rewards", json=reward)
    assert r.status_code == 201, r.text
    r = await catalog_http.patch(
        f"/v1/rewards/{reward['sku']}", content=json.dumps({"name": "\x00"}).encode(), headers=headers
    )
    assert_problem(r, 422, "invalid_text")
