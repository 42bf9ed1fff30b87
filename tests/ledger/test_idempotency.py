from __future__ import annotations

import asyncio

import httpx

from tests.conftest import assert_problem, earn, make_key, member, new_key, post


async def test_replay_returns_original_status_body_and_header(
    client: httpx.AsyncClient, program: str
) -> None:
    key = new_key()
    body = {"program": program, "member_ref": "ivy", "points": 70, "reference": "o-1"}
    first = await post(client, "/v1/earn", body, key=key)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    await earn(client, program, "ivy", 5)  # the balance moves on; the replay must not
    again = await post(
        client,
        "/v1/earn",
        {"reference": "o-1", "points": 70, "member_ref": "ivy", "program": program},
        key=key,
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert (await member(client, program, "ivy"))["balance"] == 75


async def test_same_key_different_body_is_409(client: httpx.AsyncClient, program: str) -> None:
    key = new_key()
    assert (
        await post(
            client,
            "/v1/earn",
            {"program": program, "member_ref": "jo", "points": 1, "reference": "o"},
            key=key,
        )
    ).status_code == 201
    r = await post(
        client, "/v1/earn", {"program": program, "member_ref": "jo", "points": 2, "reference": "o"}, key=key
    )
    assert_problem(r, 409, "idempotency_key_reused")
    r = await post(
        client, "/v1/burn", {"program": program, "member_ref": "jo", "points": 1, "reference": "o"}, key=key
    )
    assert_problem(r, 409, "idempotency_key_reused")
    assert (await member(client, program, "jo"))["balance"] == 1


async def test_refusals_are_replayed_too(client: httpx.AsyncClient, program: str) -> None:
    key = new_key()
    body = {"program": program, "member_ref": "kim", "points": 10, "reference": "o"}
    assert_problem(await post(client, "/v1/burn", body, key=key), 422, "insufficient_points")
    await earn(client, program, "kim", 100)
    r = await post(client, "/v1/burn", body, key=key)
    assert_problem(r, 422, "insufficient_points")
    assert r.headers["Idempotent-Replayed"] == "true"
    assert (await member(client, program, "kim"))["balance"] == 100


async def test_keys_are_scoped_to_the_api_key(client: httpx.AsyncClient, program: str, ledger_app) -> None:
    other = await make_key(ledger_app, ["ledger:earn", "ledger:read"])
    key = new_key()
    body = {"program": program, "member_ref": "lee", "points": 10, "reference": "o"}
    assert (await post(client, "/v1/earn", body, key=key)).status_code == 201
    r = await post(client, "/v1/earn", body, key=key, auth=other)
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert (await member(client, program, "lee"))["balance"] == 20


async def test_missing_or_bad_key_is_400(client: httpx.AsyncClient, program: str) -> None:
    body = {"program": program, "member_ref": "max", "points": 10, "reference": "o"}
    assert_problem(await client.post("/v1/earn", json=body), 400, "idempotency_key_required")
    r = await client.post("/v1/earn", json=body, headers={"Idempotency-Key": "x" * 256})
    assert_problem(r, 400, "invalid_idempotency_key")
    assert (await member(client, program, "max"))["balance"] == 0


async def test_fifty_concurrent_requests_with_one_key_apply_once(
    client: httpx.AsyncClient, program: str
) -> None:
    key = new_key()
    body = {"program": program, "member_ref": "ned", "points": 10, "reference": "o"}
    responses = await asyncio.gather(*(post(client, "/v1/earn", body, key=key) for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, statuses
    created = [r for r in responses if r.status_code == 201]
    assert len({r.json()["id"] for r in created}) == 1
    assert sum(1 for r in created if "Idempotent-Replayed" not in r.headers) == 1
    for r in responses:
        if r.status_code == 409:
            assert_problem(r, 409, "idempotency_key_in_use")
            assert r.headers["Retry-After"] == "1"
    assert (await member(client, program, "ned"))["balance"] == 10
    # once the first has finished, a retry is a replay
    r = await post(client, "/v1/earn", body, key=key)
    assert r.status_code == 201 and r.headers["Idempotent-Replayed"] == "true"
