"""Issue 12 item 2 in the conversion service: text PostgreSQL cannot store and timestamps out of
range are a 422 with a field error (DESIGN §4), never a 500."""

from __future__ import annotations

import json

import httpx

from tests.conftest import assert_problem, new_key
from tests.conversion.helpers import rated_pair


async def test_bad_text_and_timestamps_are_422(
    conv_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient
) -> None:
    src, dst = await rated_pair(conv_http, ledger_http)
    headers = {"Content-Type": "application/json", "Idempotency-Key": new_key()}
    quote = {"from_program": src, "to_program": dst, "from_points": 500}
    for path, body in [
        ("/v1/quotes", {**quote, "member_ref": "\ud800"}),
        ("/v1/quotes", {**quote, "member_ref": "a\x00b"}),
        ("/v1/conversions", {**quote, "member_ref": "\udfffz"}),
    ]:
        r = await conv_http.post(path, content=json.dumps(body).encode(), headers=headers)
        problem = assert_problem(r, 422, "invalid_text")
        assert problem["errors"][0] == {
            "field": "member_ref",
            "message": problem["errors"][0]["message"],
            "code": "invalid_text",
        }
    r = await conv_http.put(
        f"/v1/rates/{src}/{dst}",
        json={"from_points": 5, "to_points": 1, "fee_bps": 0, "effective_from": "0937-01-01T00:00:00+17:18"},
    )
    assert_problem(r, 422, "timestamp_out_of_range")
    r = await conv_http.get("/v1/rates", params={"at": "0001-01-01T00:00:00+17:18"})
    assert_problem(r, 422, "timestamp_out_of_range")
