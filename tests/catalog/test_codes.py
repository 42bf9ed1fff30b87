"""Voucher code uploads: all or nothing, duplicates refused."""

from __future__ import annotations

import httpx

from tests.catalog.helpers import (
    assert_problem,
    create_reward,
    get_reward,
    new_codes,
    new_program,
    upload_codes,
)


async def test_upload_and_duplicates(catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient) -> None:
    program = await new_program(ledger_http)
    voucher = await create_reward(catalog_http, program, type="voucher")
    sku = voucher["sku"]
    codes = await upload_codes(catalog_http, sku, 5)
    assert (await get_reward(catalog_http, sku))["codes_available"] == 5

    fresh = new_codes(3)
    r = await catalog_http.post(f"/v1/rewards/{sku}/codes", json={"codes": [*fresh, fresh[0]]})
    body = assert_problem(r, 422, "duplicate_codes")
    assert body["codes"] == [fresh[0]]
    r = await catalog_http.post(f"/v1/rewards/{sku}/codes", json={"codes": [*fresh, codes[1]]})
    body = assert_problem(r, 409, "code_exists")
    assert body["codes"] == [codes[1]]
    # nothing of a refused upload was stored
    assert (await get_reward(catalog_http, sku))["codes_available"] == 5
    other = await create_reward(catalog_http, program, type="voucher")
    r = await catalog_http.post(f"/v1/rewards/{other['sku']}/codes", json={"codes": [codes[0]]})
    assert_problem(r, 409, "code_exists")  # a code string is unique across the catalog

    r = await catalog_http.post(f"/v1/rewards/{sku}/codes", json={"codes": fresh})
    assert r.status_code == 201 and r.json() == {"sku": sku, "added": 3, "codes_available": 8}


async def test_upload_refusals(catalog_http: httpx.AsyncClient, ledger_http: httpx.AsyncClient) -> None:
    program = await new_program(ledger_http)
    physical = await create_reward(catalog_http, program, type="physical")
    r = await catalog_http.post(f"/v1/rewards/{physical['sku']}/codes", json={"codes": ["A1"]})
    assert_problem(r, 422, "not_a_voucher")
    r = await catalog_http.post("/v1/rewards/NO-SUCH/codes", json={"codes": ["A1"]})
    assert_problem(r, 404, "reward_not_found")
    voucher = await create_reward(catalog_http, program, type="voucher")
    for bad in (
        {"codes": []},
        {"codes": ["has space"]},
        {"codes": [""]},
        {"codes": ["x" * 129]},
        {"codes": [1]},
    ):
        r = await catalog_http.post(f"/v1/rewards/{voucher['sku']}/codes", json=bad)
        assert_problem(r, 422, "validation_error")
