"""The fast lane (services/fastlane.py) must answer exactly as the FastAPI routes do: the same
requests are sent with the fast lane on and off, and every answer must match. That includes, for
every write route, keys holding each ledger scope (so the lane's scopes are the routes' scopes) and a
key limited to another program."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ledger_service.postings.endpoints import router as postings_router
from ledger_service.postings.schemas import EarnIn
from services.auth import Principal, require
from services.fastlane import AppState, FastLane, fast_lane, lane_routes
from services.idempotency import idempotency_key
from services.metrics import FAST_LANE
from tests.conftest import create_program, make_key, new_key

VOLATILE = {"id", "created_at", "occurred_at", "updated_at", "expires_at", "program", "hold_id",
            "original_id", "capture_transaction_id", "detail"}  # fmt: skip


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _lane(app: Any) -> FastLane:
    node = app.middleware_stack
    while node is not None:
        if isinstance(node, FastLane):
            return node
        node = getattr(node, "app", None)
    raise AssertionError("no FastLane in the middleware stack")


@pytest.fixture
async def lane(ledger_app: Any, raw_client: httpx.AsyncClient) -> AsyncIterator[FastLane]:
    await raw_client.get("/healthz")  # Starlette builds its middleware stack on the first request
    lane = _lane(ledger_app)
    yield lane
    lane.enabled = True


def _shape(r: httpx.Response) -> tuple[Any, ...]:
    ctype = r.headers.get("content-type", "")
    body = r.json() if "json" in ctype else r.text
    if isinstance(body, dict):
        body = {k: ("<v>" if k in VOLATILE and v is not None else v) for k, v in body.items()}
    return r.status_code, ctype, r.headers.get("idempotent-replayed"), r.headers.get("retry-after"), body


async def _scenario(client: httpx.AsyncClient, app: Any, lane: FastLane) -> list[tuple[Any, ...]]:
    prog = await create_program(client)
    other = await create_program(client)
    reader = await make_key(app, ["ledger:read"])
    out: list[tuple[Any, ...]] = []

    async def send(
        path: str, body: Any = None, *, key: str | None = "new", label: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["Idempotency-Key"] = new_key() if key == "new" else key
        if body is not None and "content" not in kw:
            kw["json"] = body
        r = await client.post(path, headers=headers, **kw)
        out.append((label or UUID_RE.sub("<id>", path), *_shape(r)))
        return r

    earn = {"program": prog, "member_ref": "a", "points": 500, "reference": "r", "metadata": {"x": 1}}
    k = new_key()
    first = await send("/v1/earn", earn, key=k)
    await send("/v1/earn", earn, key=k)  # replay
    await send("/v1/earn", {**earn, "points": 501}, key=k)  # same key, other body
    await send("/v1/earn", earn, key=None)  # no key
    await send("/v1/earn", earn, key="x" * 300)  # bad key
    await send("/v1/earn", content=b'{"program": ', headers={"content-type": "application/json"})
    await send("/v1/earn", {**earn, "surprise": 1})
    await send("/v1/earn", {**earn, "points": -5})
    await send("/v1/earn", {**earn, "program": "NOPE"})
    await send("/v1/earn", content=b"", headers={"content-type": "application/json"})
    await send("/v1/earn", content=b"program=x", headers={"content-type": "text/plain"})
    await send("/v1/earn", earn, headers={"Authorization": "Bearer jf_unknown"})
    await send("/v1/earn", earn, headers={"Authorization": f"Bearer {reader}"})
    await send("/v1/earn", earn, headers={"Authorization": "Basic abc"})
    await send("/v1/burn", {"program": prog, "member_ref": "a", "points": 10_000, "reference": "r"})
    await send("/v1/burn", {"program": prog, "member_ref": "a", "points": 100, "reference": "r"})
    hold = await send("/v1/holds", {"program": prog, "member_ref": "a", "points": 50, "reference": "h"})
    hold_id = hold.json()["id"]
    await send(f"/v1/holds/{hold_id}/capture", {"points": 20})
    await send(f"/v1/holds/{hold_id}/void")
    await send("/v1/holds/not-a-uuid/capture")
    await send("/v1/holds/00000000-0000-0000-0000-000000000000/void")
    await send(f"/v1/transactions/{first.json()['id']}/reverse", {"points": 30, "reason": "refund"})
    await send(f"/v1/transactions/{first.json()['id']}/reverse", {"points": 10_000, "reason": "refund"})
    await send("/v1/transfers", {"program": prog, "from_member_ref": "a", "to_member_ref": "b", "points": 5,
                                 "reference": "t"})  # fmt: skip
    await send("/v1/adjustments", {"program": prog, "member_ref": "b", "points": -1, "reason": "ops fix"})
    # Edges where a fast path most easily answers differently (found in review):
    raw = orjson.dumps(earn)
    await send("/v1/earn", content=raw)  # no Content-Type: FastAPI's strict_content_type refuses it
    await send("/v1/earn", content=raw, headers={"content-type": "application/foo/bar+json"})
    await send("/v1/earn", content=raw, headers={"content-type": "application/vnd.x+json; charset=utf-8"})
    await send("/v1/earn", {**earn, "metadata": {"n": 99999999999999999999999}})
    await send("/v1/earn", {**earn, "metadata": {"n": 1e30, "ok": [1, 2.5, True]}})
    hold2 = await send("/v1/holds", {"program": prog, "member_ref": "a", "points": 5, "reference": "h"})
    hold2_id = hold2.json()["id"]
    await send(f"/v1/holds/{hold2_id}/capture", content=b" \n", headers={"content-type": "application/json"})
    odd = hold2_id.replace("-", "")
    await send(f"/v1/holds/{odd[:5]}-{odd[5:]}/void", label="odd hyphens")
    await send(f"/v1/holds/urn:uuid:{hold2_id}/void", label="urn prefix")
    await send(f"/v1/holds/{hold2_id}/void/")
    await send(f"//v1/holds/{hold2_id}/void")
    await send(f"/v1/holds/{hold2_id}/void")
    await _scopes(send, app, lane, prog, other)
    return out


SCOPE_KEYS = ("ledger:read", "ledger:earn", "ledger:burn", "ledger:batch", "ledger:admin")


async def _scopes(send: Any, app: Any, lane: FastLane, prog: str, other: str) -> None:
    """Every lane route, with a key holding each single ledger scope and with a key holding every
    scope but limited to another program. A route added to the lane needs a body here (KeyError)."""
    earned = await send("/v1/earn", {"program": prog, "member_ref": "s", "points": 1000, "reference": "s"})
    hold = await send("/v1/holds", {"program": prog, "member_ref": "s", "points": 100, "reference": "s"})
    ids = {"hold_id": hold.json()["id"], "transaction_id": earned.json()["id"]}
    bodies: dict[str, Any] = {
        "/v1/earn": {"program": prog, "member_ref": "s", "points": 3, "reference": "s"},
        "/v1/burn": {"program": prog, "member_ref": "s", "points": 2, "reference": "s"},
        "/v1/holds": {"program": prog, "member_ref": "s", "points": 2, "reference": "s"},
        "/v1/holds/{hold_id}/capture": {"points": 1},
        "/v1/holds/{hold_id}/void": {},
        "/v1/transactions/{transaction_id}/reverse": {"points": 1, "reason": "refund"},
        "/v1/transfers": {
            "program": prog,
            "from_member_ref": "s",
            "to_member_ref": "t",
            "points": 1,
            "reference": "s",
        },
        "/v1/adjustments": {"program": prog, "member_ref": "s", "points": 1, "reason": "ops fix"},
    }
    keys = {scope: await make_key(app, [scope]) for scope in SCOPE_KEYS}
    keys["other program"] = await make_key(app, list(SCOPE_KEYS), programs=[other])
    for route in lane.routes:
        path = route.path.format(**ids)
        for name, secret in keys.items():
            label = f"{route.path} as {name}"
            await send(path, bodies[route.path], headers={"Authorization": f"Bearer {secret}"}, label=label)


def _served(lane: FastLane, path: str | None = None) -> float:
    return sum(FAST_LANE.labels(r.path, "served")._value.get() for r in lane.routes if path in (None, r.path))


async def test_fast_lane_answers_as_fastapi_does(
    client: httpx.AsyncClient, ledger_app: Any, lane: FastLane
) -> None:
    before = {r.path: _served(lane, r.path) for r in lane.routes}
    fast = await _scenario(client, ledger_app, lane)
    served = {path: _served(lane, path) - n for path, n in before.items()}
    lane.enabled = False
    slow = await _scenario(client, ledger_app, lane)
    assert {path: _served(lane, path) - n for path, n in before.items()} == served, (
        "a disabled fast lane served requests"
    )
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=True):
        assert f == s
    # The requests that should succeed or be refused by the ledger itself went the fast way, on
    # every route.
    assert sum(served.values()) >= 14 + 2 * len(lane.routes), served
    assert all(n >= 2 for n in served.values()), served
    statuses = [row[1] for row in fast]
    assert statuses.count(201) >= 8 and 422 in statuses and 401 in statuses and 403 in statuses
    # Each route refused a key without its scope, and a key limited to another program.
    answers = {row[0]: (row[1], row[5].get("code") if isinstance(row[5], dict) else None) for row in fast}
    for route in lane.routes:
        assert answers[f"{route.path} as ledger:read"] == (403, "insufficient_scope"), route.path
        assert answers[f"{route.path} as ledger:batch"] == (403, "insufficient_scope"), route.path
        assert answers[f"{route.path} as other program"] == (403, "program_forbidden"), route.path
        assert answers[f"{route.path} as ledger:admin"][0] != 403, answers
        for scope in ("ledger:earn", "ledger:burn"):
            if scope not in route.scopes:
                assert answers[f"{route.path} as {scope}"] == (403, "insufficient_scope"), (route.path, scope)


def test_fast_routes_exist_as_documented_routes(ledger_app: Any, lane: FastLane) -> None:
    # Every ledger write route is on the lane, and the lane has no route of its own.
    assert sorted(r.path for r in lane.routes) == sorted(r.path for r in postings_router.routes)  # type: ignore[attr-defined]
    paths = ledger_app.openapi()["paths"]
    for route in lane.routes:
        post = paths[route.path]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        refs = [schema.get("$ref", "")] + [s.get("$ref", "") for s in schema.get("anyOf", [])]
        assert route.model is not None
        assert any(r.endswith("/" + route.model.__name__) for r in refs), (route.path, schema)
        assert post["requestBody"].get("required", False) is not route.body_optional, route.path


def test_a_route_the_lane_cannot_serve_as_fastapi_does_is_refused_at_start() -> None:
    router = APIRouter()

    @router.post("/x")
    @fast_lane
    async def takes_request(
        request: Request,
        body: EarnIn,
        principal: Principal = Depends(require("ledger:earn")),
        key: str = Depends(idempotency_key),
    ) -> Response:
        return Response()

    with pytest.raises(TypeError, match="Request"):
        lane_routes([router])

    router = APIRouter()

    @router.post("/y")
    @fast_lane
    async def no_scope(body: EarnIn, state: AppState, key: str = Depends(idempotency_key)) -> Response:
        return Response()

    with pytest.raises(TypeError, match="require"):
        lane_routes([router])
