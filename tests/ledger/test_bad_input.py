"""Bad input of every kind: a 4xx problem+json with a stable code, never a 500, no balance changed."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import assert_problem, create_program, earn, make_key, member, new_key, post

MAX = 2**63 - 1


def _earn(program: str, **changes):
    body = {"program": program, "member_ref": "victim", "points": 10, "reference": "o"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


BAD_EARNS = [
    ("unknown program", lambda p: _earn("NOPE_XYZ"), 404, "program_not_found"),
    ("zero points", lambda p: _earn(p, points=0), 422, "validation_error"),
    ("negative points", lambda p: _earn(p, points=-5), 422, "validation_error"),
    ("fractional points", lambda p: _earn(p, points=1.5), 422, "validation_error"),
    ("float points", lambda p: _earn(p, points=10.0), 422, "validation_error"),
    ("string points", lambda p: _earn(p, points="10"), 422, "validation_error"),
    ("bool points", lambda p: _earn(p, points=True), 422, "validation_error"),
    ("points above 64 bits", lambda p: _earn(p, points=MAX + 1), 422, "validation_error"),
    ("huge points", lambda p: _earn(p, points=10**30), 422, "validation_error"),
    ("missing member", lambda p: _earn(p, member_ref=...), 422, "validation_error"),
    ("missing reference", lambda p: _earn(p, reference=...), 422, "validation_error"),
    ("no points nor purchase", lambda p: _earn(p, points=...), 422, "validation_error"),
    ("extra field", lambda p: _earn(p, bonus=1), 422, "validation_error"),
    ("member too long", lambda p: _earn(p, member_ref="m" * 65), 422, "validation_error"),
    ("empty member", lambda p: _earn(p, member_ref=""), 422, "validation_error"),
    ("control char member", lambda p: _earn(p, member_ref="a\nb"), 422, "validation_error"),
    ("wrong type member", lambda p: _earn(p, member_ref=12), 422, "validation_error"),
    ("bad program code", lambda p: _earn("wlt"), 422, "validation_error"),
    ("bad kind", lambda p: _earn(p, kind="cashback"), 422, "validation_error"),
    ("naive occurred_at", lambda p: _earn(p, occurred_at="2026-01-01T00:00:00"), 422, "validation_error"),
    ("future occurred_at", lambda p: _earn(p, occurred_at="2099-01-01T00:00:00Z"), 422, "occurred_in_future"),
    (
        "purchase without rules",
        lambda p: _earn(p, points=..., purchase={"amount_minor": 100, "currency": "CNY"}),
        422,
        "no_earning_rules",
    ),
    ("body is a list", lambda p: [1, 2], 422, "validation_error"),
]


@pytest.mark.parametrize(("name", "make", "status", "code"), BAD_EARNS, ids=[b[0] for b in BAD_EARNS])
async def test_bad_earn(client: httpx.AsyncClient, program: str, name, make, status, code) -> None:
    await earn(client, program, "victim", 100)
    r = await post(client, "/v1/earn", make(program))
    assert_problem(r, status, code)
    assert (await member(client, program, "victim"))["balance"] == 100


async def test_overflow_of_a_balance_is_a_4xx(client: httpx.AsyncClient) -> None:
    program = await create_program(client, max_points_per_transaction=MAX)
    await earn(client, program, "rich", MAX)
    r = await post(client, "/v1/earn", _earn(program, member_ref="rich", points=1))
    assert_problem(r, 422, "points_out_of_range")
    assert (await member(client, program, "rich"))["balance"] == MAX


async def test_malformed_json_and_wrong_content(client: httpx.AsyncClient, program: str) -> None:
    headers = {"Idempotency-Key": new_key(), "Content-Type": "application/json"}
    assert_problem(
        await client.post("/v1/earn", content=b'{"program": ', headers=headers), 400, "malformed_json"
    )
    assert_problem(await client.post("/v1/earn", content=b"", headers=headers), 422, "validation_error")
    r = await client.post("/v1/earn", content=b"program=x", headers={**headers, "Content-Type": "text/plain"})
    assert 400 <= r.status_code < 500 and r.headers["content-type"].startswith("application/problem+json")


async def test_ten_megabyte_body_is_413(client: httpx.AsyncClient, program: str) -> None:
    blob = b'{"program": "' + b"A" * (10 * 1024 * 1024) + b'"}'
    headers = {"Idempotency-Key": new_key(), "Content-Type": "application/json"}
    assert_problem(await client.post("/v1/earn", content=blob, headers=headers), 413, "payload_too_large")

    async def chunks():
        for _ in range(10):
            yield b"A" * (1024 * 1024)

    r = await client.post("/v1/earn", content=chunks(), headers=headers)
    assert_problem(r, 413, "payload_too_large")


async def test_unknown_routes_and_methods(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing-here"), 404, "not_found")
    assert_problem(await client.delete("/v1/earn"), 405, "method_not_allowed")
    assert_problem(await client.get("/v1/transactions/not-a-uuid"), 422, "validation_error")
    assert_problem(await client.get("/v1/programs/bad code"), 422, "validation_error")


@pytest.mark.parametrize("path", ["/v1/burn", "/v1/holds"])
async def test_bad_debits(client: httpx.AsyncClient, program: str, path: str) -> None:
    await earn(client, program, "victim", 100)
    for body, status, code in [
        (
            {"program": program, "member_ref": "victim", "points": 0, "reference": "o"},
            422,
            "validation_error",
        ),
        (
            {"program": program, "member_ref": "victim", "points": 101, "reference": "o"},
            422,
            "insufficient_points",
        ),
        (
            {"program": program, "member_ref": "victim", "points": "1", "reference": "o"},
            422,
            "validation_error",
        ),
        (
            {"program": "NOPE_XYZ", "member_ref": "victim", "points": 1, "reference": "o"},
            404,
            "program_not_found",
        ),
    ]:
        assert_problem(await post(client, path, body), status, code)
    r = await post(
        client,
        "/v1/holds",
        {"program": program, "member_ref": "victim", "points": 1, "reference": "o", "expires_in_s": 0},
    )
    assert_problem(r, 422, "validation_error")
    view = await member(client, program, "victim")
    assert view["balance"] == 100 and view["held"] == 0


async def test_auth_failures(raw_client: httpx.AsyncClient, admin_key: str, program: str, ledger_app) -> None:
    await earn(raw_client, program, "victim", 100)
    burn = await post(
        raw_client, "/v1/burn", {"program": program, "member_ref": "victim", "points": 1, "reference": "o"}
    )
    assert burn.status_code == 201
    body = {"program": program, "member_ref": "victim", "points": 10, "reference": "o"}
    reader = await make_key(ledger_app, ["ledger:read"])
    other = await make_key(ledger_app, ["ledger:earn", "ledger:read", "ledger:burn"], ["OTHER"])

    def h(auth: str | None) -> dict[str, str]:
        headers = {"Idempotency-Key": new_key()}
        if auth:
            headers["Authorization"] = auth
        return headers

    saved = raw_client.headers.pop("Authorization")
    try:
        r = await raw_client.post("/v1/earn", json=body, headers=h(None))
        assert_problem(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert_problem(
            await raw_client.post("/v1/earn", json=body, headers=h("Bearer jf_nope")), 401, "invalid_api_key"
        )
        assert_problem(
            await raw_client.post("/v1/earn", json=body, headers=h("Basic abc")), 401, "unauthorized"
        )
        assert_problem(
            await raw_client.post("/v1/earn", json=body, headers=h(f"Bearer {reader}")),
            403,
            "insufficient_scope",
        )
        limited = f"Bearer {other}"
        assert_problem(
            await raw_client.post("/v1/earn", json=body, headers=h(limited)), 403, "program_forbidden"
        )
        assert_problem(
            await raw_client.get(f"/v1/programs/{program}/members/victim", headers=h(limited)),
            403,
            "program_forbidden",
        )
        tid = burn.json()["id"]
        assert_problem(
            await raw_client.post(
                f"/v1/transactions/{tid}/reverse", json={"reason": "x"}, headers=h(limited)
            ),
            403,
            "program_forbidden",
        )
        assert_problem(
            await raw_client.get(f"/v1/transactions/{tid}", headers=h(limited)), 403, "program_forbidden"
        )
        assert_problem(await raw_client.get("/v1/programs", headers=h(None)), 401, "unauthorized")
    finally:
        raw_client.headers["Authorization"] = saved
    view = await member(raw_client, program, "victim")
    assert view["balance"] == 99
