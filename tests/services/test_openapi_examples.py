"""The OpenAPI examples are real answers and stay so: each recorded example matches its operation's
documented schemas, every operation has one (but the few listed), and the scenario that recorded
them (tests/openapi.py), replayed against the running services, gets the same statuses and answers
that match the documented schemas."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jsonschema_rs
import pytest

from services.settings import Settings
from tests.openapi import SERVICES, examples_path, names, run
from tests.stack import Stack

# Operations without a recorded example, and why.
WITHOUT_EXAMPLES = {
    "GET /metrics",  # Prometheus text, not the JSON API
    "POST /v1/conversions/{conversion_id}/retry",  # needs a saga stuck on an unreachable ledger
    "POST /v1/redemptions/{redemption_id}/retry",  # likewise
}
METHODS = ("get", "put", "post", "patch", "delete")


def _spec(service: str, settings: Settings) -> dict[str, Any]:
    module: Any = __import__(f"{service}_service.app", fromlist=["create_app"])
    spec: dict[str, Any] = module.create_app(settings).openapi()
    return spec


def _validate(spec: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> None:
    """`value` against `schema`, whose $refs point into the document's components."""
    validator = jsonschema_rs.validator_for({**schema, "components": spec["components"]})
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(value)]
    assert not errors, f"{where}: {errors[:5]}"


def _response_schema(spec: dict[str, Any], op: str, status: int, ctype: str) -> dict[str, Any]:
    method, path = op.split(" ", 1)
    responses = spec["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{op}: {status} is not documented ({sorted(responses)})"
    media = responses[str(status)].get("content", {}).get(ctype)
    assert media is not None, f"{op} {status}: {ctype} is not documented"
    schema: dict[str, Any] = media.get("schema", {})
    return schema


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_has_a_recorded_example_that_matches_its_schemas(
    service: str, test_settings: Settings
) -> None:
    spec = _spec(service, test_settings)
    examples = json.loads(examples_path(service).read_text())
    operations = {f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in item if m in METHODS}
    assert set(examples) <= operations, f"examples of operations that are gone: {set(examples) - operations}"
    assert operations - set(examples) == WITHOUT_EXAMPLES & operations
    for op, ex in examples.items():
        method, path = op.split(" ", 1)
        operation = spec["paths"][path][method.lower()]
        if "request" in ex:
            media = operation["requestBody"]["content"][ex.get("request_content_type", "application/json")]
            assert media["examples"]["recorded"]["value"] == ex["request"]  # shown in /docs
            _validate(spec, media["schema"], ex["request"], f"{op} request")
        ctype = ex.get("response_content_type", "application/json")
        schema = _response_schema(spec, op, ex["status"], ctype)
        _validate(spec, schema, ex["response"], f"{op} {ex['status']} response")
        media = operation["responses"][str(ex["status"])]["content"][ctype]
        assert media["examples"]["recorded"]["value"] == ex["response"]


async def test_replayed_examples_answer_as_documented(stack: Stack, admin_key: str) -> None:
    urls = {"ledger": stack.ledger.url, "conversion": stack.conversion.url, "catalog": stack.catalog.url}
    async with httpx.AsyncClient(timeout=30) as client:
        specs = {s: (await client.get(f"{u}/openapi.json")).json() for s, u in urls.items()}
    examples = {s: json.loads(examples_path(s).read_text()) for s in SERVICES}
    calls = await asyncio.to_thread(lambda: list(run(urls, admin_key, names(unique=True))))
    replayed = set()
    for call in calls:
        service, op = call.step.service, call.step.op
        recorded = examples[service].get(op)
        if recorded is not None and (service, op) not in replayed:
            replayed.add((service, op))
            assert call.status == recorded["status"], f"{op}: {call.status} {call.response}"
        schema = _response_schema(specs[service], op, call.status, call.content_type)
        _validate(specs[service], schema, call.response, f"{op} {call.status} (replayed)")
    assert replayed == {(s, op) for s in SERVICES for op in examples[s]}
