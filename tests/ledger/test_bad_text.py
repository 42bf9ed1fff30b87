"""Issue 12 item 2: text PostgreSQL cannot store (NUL, unpaired surrogates), numbers JSON cannot hold
and timestamps out of range were 500s (and a NUL in an earn's metadata dropped the connection). Each
is a 422 with a field error, through the fast lane and the FastAPI routes alike (DESIGN §4)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import assert_problem, earn, member, new_key
from tests.harness import api_client

# Raw JSON text, so escapes reach the server as a client would send them: `\\u0000` is a NUL,
# `\\ud800` alone an unpaired surrogate, NaN and Infinity what Python's json module (FastAPI's) takes.
EARN = '{"program": "%s", "member_ref": "victim", "points": 10, "reference": %s%s}'
CASES = [
    ("NUL in metadata value", '"o"', ', "metadata": {"a": "a\\u0000b"}', "invalid_text", "metadata"),
    ("NUL in metadata key", '"o"', ', "metadata": {"a\\u0000": 1}', "invalid_text", "metadata"),
    ("NUL deep in metadata", '"o"', ', "metadata": {"a": [{"b": "\\u0000"}]}', "invalid_text", "metadata"),
    ("surrogate in metadata", '"o"', ', "metadata": {"a": "\\ud800"}', "invalid_text", "metadata"),
    ("surrogate in reference", '"\\udfff"', "", "invalid_text", "reference"),
    ("NaN in metadata", '"o"', ', "metadata": {"a": NaN}', "validation_error", "metadata"),
    ("Infinity in metadata", '"o"', ', "metadata": {"a": -Infinity}', "validation_error", "metadata"),
    ("huge float in metadata", '"o"', ', "metadata": {"a": 1e308}', "validation_error", "metadata"),
    (
        "occurred_at in the year 937",
        '"o"',
        ', "occurred_at": "0937-01-01T00:00:00+17:18"',
        "occurred_at_out_of_range",
        "occurred_at",
    ),
    (
        "occurred_at before 2000",
        '"o"',
        ', "occurred_at": "1999-12-31T23:59:59Z"',
        "occurred_at_out_of_range",
        "occurred_at",
    ),
    (
        "occurred_at from 2100",
        '"o"',
        ', "occurred_at": "2100-01-01T00:00:00Z"',
        "occurred_at_out_of_range",
        "occurred_at",
    ),
]


def _headers() -> dict[str, str]:
    return {"Idempotency-Key": new_key(), "Content-Type": "application/json"}


@pytest.mark.parametrize(("name", "ref", "extra", "code", "field"), CASES, ids=[c[0] for c in CASES])
async def test_bad_text_on_earn_is_a_422(
    client: httpx.AsyncClient, program: str, name, ref, extra, code, field
) -> None:
    await earn(client, program, "victim", 100)
    r = await client.post("/v1/earn", content=(EARN % (program, ref, extra)).encode(), headers=_headers())
    body = assert_problem(r, 422, code)
    assert body["errors"][0]["field"] == field, body
    if code != "validation_error":
        assert body["errors"][0]["code"] == code
    assert (await member(client, program, "victim"))["balance"] == 100


def _raw(body: dict) -> bytes:
    """JSON as Python's json module writes it: NUL as \\u0000, a lone surrogate as \\ud800, NaN."""
    return json.dumps(body).encode()


OLD_AT = "0937-01-01T00:00:00+17:18"
CASH = {"points": 1, "cash_minor": 1, "currency": "CNY"}
OTHER_WRITES = [
    ("/v1/burn", {"member_ref": "victim", "points": 1, "reference": "o", "reason": "a\x00"}, "invalid_text"),
    (
        "/v1/burn",
        {"member_ref": "victim", "points": 1, "reference": "o", "occurred_at": OLD_AT},
        "occurred_at_out_of_range",
    ),
    ("/v1/holds", {"member_ref": "\ud83d", "points": 1, "reference": "o"}, "invalid_text"),
    ("/v1/adjustments", {"member_ref": "victim", "points": 1, "reason": "\ud800x"}, "invalid_text"),
    (
        "/v1/transfers",
        {"from_member_ref": "victim", "to_member_ref": "b", "points": 1, "metadata": {"k": "\x00"}},
        "invalid_text",
    ),
    (
        "/v1/programs/{p}/rules/evaluate",
        {"member_ref": "victim", "points": 1, "metadata": {"k": "\x00"}},
        "invalid_text",
    ),
    ("/v1/programs", {"code": "NEWPROG", "name": "a\x00", "cash_value": CASH}, "invalid_text"),
]


@pytest.mark.parametrize(("path", "body", "code"), OTHER_WRITES, ids=[f"{w[0]} {w[2]}" for w in OTHER_WRITES])
async def test_bad_text_on_other_writes_is_a_422(
    client: httpx.AsyncClient, program: str, path, body, code
) -> None:
    await earn(client, program, "victim", 100)
    if "code" not in body and "{p}" not in path:
        body = {"program": program, **body}
    r = await client.post(path.format(p=program), content=_raw(body), headers=_headers())
    assert_problem(r, 422, code)
    view = await member(client, program, "victim")
    assert view["balance"] == 100 and view["held"] == 0


async def test_a_timestamp_query_out_of_range_is_a_422(client: httpx.AsyncClient, program: str) -> None:
    for path, params in [
        (f"/v1/programs/{program}/report", {"from": "0937-01-01T00:00:00+17:18"}),
        (f"/v1/programs/{program}/report", {"to": "9999-12-31T23:59:59-23:59"}),
        ("/v1/jobs/expire", {"as_of": "0001-01-01T00:00:00+17:18"}),
    ]:
        call = client.get if "report" in path else client.post
        assert_problem(await call(path, params=params), 422, "timestamp_out_of_range")


async def test_a_nul_in_metadata_is_answered_by_a_real_server(live_ledger, admin_key: str) -> None:
    """Against uvicorn: the earn used to get no answer at all (the connection was dropped)."""
    async with api_client(live_ledger.url, admin_key, timeout=30) as http:
        code = "NULPROG"
        r = await http.post(
            "/v1/programs",
            json={"code": code, "name": "n", "cash_value": {"points": 1, "cash_minor": 1, "currency": "CNY"}},
        )
        assert r.status_code in (201, 409), r.text
        raw = EARN % (code, '"o"', ', "metadata": {"a": "a\\u0000b"}')
        assert_problem(
            await http.post("/v1/earn", content=raw.encode(), headers=_headers()), 422, "invalid_text"
        )


async def test_batch_rows_with_bad_text_or_timestamps_are_rejected(
    client: httpx.AsyncClient, ledger_app
) -> None:
    from tests.ledger.test_batches import _program, upload, wait_done

    program = await _program(client)
    rows = [
        {"external_id": "BT-1", "program": program, "member_ref": "bt", "points": "10"},
        {
            "external_id": "BT-2",
            "program": program,
            "member_ref": "bt",
            "points": "10",
            "merchant_id": "M\x00",
        },
        {
            "external_id": "BT-3",
            "program": program,
            "member_ref": "bt",
            "points": "10",
            "occurred_at": OLD_AT,
        },
    ]
    content = "\n".join(json.dumps(r) for r in rows).encode() + b"\n"
    batch = (await upload(client, content, content_type="application/x-ndjson")).json()
    done = await wait_done(client, batch["id"], drive=ledger_app)
    assert done["posted"] == 1, done
    assert done["rejected_by_reason"] == {"invalid_text": 1, "occurred_at_out_of_range": 1}
    assert (await member(client, program, "bt"))["balance"] == 10
