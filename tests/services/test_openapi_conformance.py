"""The services answer as their OpenAPI documents say: a bounded, seeded schemathesis run against each
running service finds no schema-conformance failure (status codes, content types, headers, bodies,
problem codes included: each error response lists its `code`s as an enum). The hunt for 5xx answers
is tests/services/test_api_fuzz.py's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.openapi import schemathesis_run
from tests.stack import Stack

MAX_EXAMPLES = 5  # per operation and phase: a bounded run for `make test`


@pytest.mark.parametrize("service", ["ledger", "conversion", "catalog"])
async def test_schema_conformance(service: str, stack: Stack, admin_key: str, tmp_path: Path) -> None:
    url = getattr(stack, service).url
    found = await asyncio.to_thread(
        schemathesis_run,
        url,
        admin_key,
        max_examples=MAX_EXAMPLES,
        workdir=tmp_path,
    )
    assert found["operations_tested"] > 10, found
    report = Path(found["output"]).read_text()
    # an error (schemathesis could not complete a call, e.g. a timeout) names itself in the report's
    # ERRORS section, not under FAILURES
    assert found["failures"] == 0 and found["errors"] == 0, (
        f"errors: {found['error_details']}\n"
        + report[report.find("ERRORS") if found["errors"] else report.find("FAILURES") :][:8000]
    )


async def test_an_unreadable_body_is_malformed_json(client: httpx.AsyncClient) -> None:
    """Not UTF-8, so FastAPI cannot read it at all: still the documented 400 `malformed_json`."""
    r = await client.post("/v1/programs", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "malformed_json"
