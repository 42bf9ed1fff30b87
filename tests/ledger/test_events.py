from __future__ import annotations

import asyncio
import hashlib
import hmac

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import create_program, earn, make_key, post
from tests.harness import free_port


async def _head(client: httpx.AsyncClient) -> int:
    page = (await client.get("/v1/events", params={"after": 0, "limit": 1})).json()
    cursor = page["next_cursor"]
    while True:
        page = (await client.get("/v1/events", params={"after": cursor, "limit": 1000})).json()
        if not page["data"]:
            return cursor
        cursor = page["next_cursor"]


async def _drain(client: httpx.AsyncClient, after: int, headers: dict | None = None) -> list[dict]:
    events: list[dict] = []
    while True:
        page = (await client.get("/v1/events", params={"after": after, "limit": 250}, headers=headers)).json()
        if not page["data"]:
            return events
        events += page["data"]
        after = page["next_cursor"]


async def test_every_committed_transaction_exactly_once_in_order(
    client: httpx.AsyncClient, ledger_app
) -> None:
    program = await create_program(client)
    start = await _head(client)
    await earn(client, program, "e0", 500)

    async def op(i: int) -> None:
        if i % 3 == 0:
            await post(
                client,
                "/v1/burn",
                {"program": program, "member_ref": f"e{i % 4}", "points": 60, "reference": "b"},
            )
        else:
            await earn(client, program, f"e{i % 4}", 10)

    await asyncio.gather(*(op(i) for i in range(150)))
    events = await _drain(client, start)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(start + 1, start + 1 + len(seqs)))  # consecutive, no gaps, no repeats
    mine = [e for e in events if e["transaction"]["program"] == program]
    async with ledger_app.state.db.driver() as conn:
        committed = {
            str(r["id"])
            for r in await conn.fetch(
                "SELECT t.id FROM ledger.transactions t JOIN ledger.programs p ON p.id = t.program_id"
                " WHERE p.code = $1",
                program,
            )
        }
    ids = [e["transaction"]["id"] for e in mine]
    assert len(ids) == len(set(ids)) and set(ids) == committed  # refused burns left no event
    assert {e["type"] for e in mine} <= {"transaction.earn", "transaction.burn"}
    # a reader that polls again gets nothing new
    assert (await client.get("/v1/events", params={"after": seqs[-1]})).json() == {
        "data": [],
        "next_cursor": seqs[-1],
    }


async def test_program_limited_keys_see_only_their_programs(client: httpx.AsyncClient, ledger_app) -> None:
    mine, other = await create_program(client), await create_program(client)
    start = await _head(client)
    await earn(client, mine, "x", 1)
    await earn(client, other, "x", 1)
    key = await make_key(ledger_app, ["ledger:read"], [mine])
    events = await _drain(client, start, headers={"Authorization": f"Bearer {key}"})
    assert [e["transaction"]["program"] for e in events] == [mine]


async def test_webhooks_are_signed_ordered_and_retried(client: httpx.AsyncClient, ledger_app) -> None:
    received: list[tuple[bytes, str]] = []
    failures_left = [2]

    async def hook(request: Request) -> Response:
        body = await request.body()
        if failures_left[0] > 0:
            failures_left[0] -= 1
            return Response(status_code=503)
        received.append((body, request.headers["Jifen-Signature"]))
        return Response(status_code=204)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hook", hook, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="error",
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        program = await create_program(client)
        r = await client.post(
            "/v1/webhooks",
            json={"url": f"http://127.0.0.1:{port}/hook", "programs": [program], "types": ["earn", "burn"]},
        )
        assert r.status_code == 201, r.text
        hook_id, secret = r.json()["id"], r.json()["secret"]
        assert secret.startswith("whsec_")
        for i in range(5):
            await earn(client, program, "w", 10 + i)
        await post(
            client, "/v1/adjustments", {"program": program, "member_ref": "w", "points": 1, "reason": "x"}
        )
        for _ in range(200):
            if len(received) >= 5:
                break
            await asyncio.sleep(0.1)
        assert len(received) == 5, received
        points = []
        for body, signature in received:
            t, v1 = (part.split("=", 1)[1] for part in signature.split(","))
            expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(v1, expected)
            points.append(orjson.loads(body)["transaction"]["points"])
        assert points == [10, 11, 12, 13, 14]  # in order, the adjustment filtered out, none twice
        state = (await client.get(f"/v1/webhooks/{hook_id}")).json()
        assert (state["delivered"] == 5 and state["failures"] == 0 and "secret" not in state) or state[
            "secret"
        ] is None
        assert (await client.delete(f"/v1/webhooks/{hook_id}")).json()["active"] is False
    finally:
        server.should_exit = True
        await task
