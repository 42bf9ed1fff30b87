"""The fast lane (services/fastlane.py) must answer exactly as the FastAPI routes do: the same
requests are sent with the fast lane on and off, and every answer must match."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from ledger_service.postings.fastlane import ROUTES
from services.fastlane import FastLane
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


async def _scenario(client: httpx.AsyncClient, app: Any) -> list[tuple[Any, ...]]:
    prog = await create_program(client)
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
    return out


def _served() -> float:
    return sum(FAST_LANE.labels(r.path, "served")._value.get() for r in ROUTES)


async def test_fast_lane_answers_as_fastapi_does(
    client: httpx.AsyncClient, ledger_app: Any, lane: FastLane
) -> None:
    before = _served()
    fast = await _scenario(client, ledger_app)
    served = _served() - before
    lane.enabled = False
    slow = await _scenario(client, ledger_app)
    assert _served() - before == served, "a disabled fast lane served requests"
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=True):
        assert f == s
    # The requests that should succeed or be refused by the ledger itself went the fast way.
    assert served >= 14, served
    statuses = [row[1] for row in fast]
    assert statuses.count(201) >= 8 and 422 in statuses and 401 in statuses and 403 in statuses


def test_fast_routes_exist_as_documented_routes(ledger_app: Any) -> None:
    paths = ledger_app.openapi()["paths"]
    for route in ROUTES:
        post = paths[route.path]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        refs = [schema.get("$ref", "")] + [s.get("$ref", "") for s in schema.get("anyOf", [])]
        assert any(r.endswith("/" + route.model.__name__) for r in refs), (route.path, schema)
        assert post["requestBody"].get("required", False) is not route.body_optional, route.path
