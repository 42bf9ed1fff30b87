"""The services' OpenAPI documents: every problem code with its status and title, the `responses=` an
operation declares from the codes it can return, and the finishing pass that adds what every
operation shares (auth, validation, idempotency) and the examples recorded from real answers.

An operation names only its own codes: `responses=problems("program_not_found", "insufficient_points")`.
The finishing pass (`install_openapi`) adds the codes that follow from the operation's shape:
`unauthorized` / `invalid_api_key` / `insufficient_scope` on every `/v1` route, `validation_error`
where FastAPI would have advertised its own 422 (which the API never returns), `malformed_json` and
`payload_too_large` where there is a body, and the idempotency codes where `Idempotency-Key` is taken
(declared required there). Each error is `application/problem+json`, its `code` listed as an enum, so
a schema checker (tests/services/test_openapi_conformance.py) catches an undocumented code.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.errors import PROBLEM_JSON, FieldError, Problem, problem_body

# code -> (HTTP status, what it means). The one list: docs/api.md's table is checked against it.
PROBLEMS: dict[str, tuple[int, str]] = {
    # any service
    "bad_request": (400, "The request is malformed"),
    "malformed_json": (400, "The body is not valid JSON"),
    "invalid_cursor": (400, "The cursor is not one this API returned"),
    "idempotency_key_required": (400, "This operation needs an Idempotency-Key header"),
    "invalid_idempotency_key": (400, "The Idempotency-Key is not 1-255 printable ASCII characters"),
    "unauthorized": (401, "No API key was sent"),
    "invalid_api_key": (401, "The API key is unknown or revoked"),
    "insufficient_scope": (403, "The API key lacks the scope this operation needs"),
    "program_forbidden": (403, "The API key is limited to other programs"),
    "partner_forbidden": (403, "The API key is bound to another partner"),
    "batch_forbidden": (403, "The batch was uploaded with another API key"),
    "idempotency_key_reused": (409, "The Idempotency-Key was used with a different body"),
    "idempotency_key_in_use": (409, "A request with this Idempotency-Key is still running"),
    "payload_too_large": (413, "The body exceeds the size limit"),
    "unsupported_media_type": (415, "The body's Content-Type is not one this operation takes"),
    "validation_error": (422, "A field is missing or invalid (see `errors`)"),
    "ledger_rejected": (502, "The ledger refused a call this service made (its status and code alongside)"),
    "ledger_unavailable": (503, "The ledger cannot be reached right now; retry after Retry-After"),
    "ledger_busy": (503, "The ledger is overloaded; retry after Retry-After"),
    # ledger: programs, members, postings
    "program_not_found": (404, "No program with this code"),
    "member_not_found": (404, "No member with this member_ref in the program"),
    "transaction_not_found": (404, "No transaction with this id"),
    "hold_not_found": (404, "No hold with this id"),
    "program_exists": (409, "A program with this code exists already"),
    "hold_expired": (409, "The hold expired and was released"),
    "hold_not_active": (409, "The hold was captured or voided already"),
    "unknown_operation": (400, "The operation is not one the ledger knows"),
    "insufficient_points": (422, "The member's available points are short"),
    "capture_exceeds_hold": (422, "The capture asks for more than the hold"),
    "not_reversible": (422, "Only earns, burns and captures can be reversed"),
    "reversal_exceeds_original": (422, "Reversals would exceed the original transaction's points"),
    "clawback_not_pending": (422, "Returns policy only_pending: the earn's points are released already"),
    "same_member": (422, "A transfer needs two different members"),
    "occurred_at_out_of_range": (422, "occurred_at of a burn, hold or capture is over 30 days back or ahead"),
    "occurred_in_future": (422, "occurred_at of an earn is in the future"),
    "no_earning_rules": (422, "The earn gives no points and the program has no earning rules"),
    "as_of_in_future": (422, "as_of is in the future"),
    "invalid_period": (422, "from is not before to"),
    "period_range_too_large": (422, "The window has too many periods"),
    # ledger: rules, segments, events, batches, keys
    "rule_version_overlap": (409, "A rules version with this effective_from exists already"),
    "effective_from_in_past": (422, "effective_from is in the past"),
    "segment_not_found": (404, "No segment with this code in the program"),
    "segment_exists": (409, "The program has a segment with this code already"),
    "invalid_criteria": (422, "A segment criterion names an unknown field or op"),
    "webhook_not_found": (404, "No webhook with this id"),
    "batch_not_found": (404, "No batch with this id"),
    "invalid_batch_header": (400, "The file's header is not a batch header"),
    "api_key_not_found": (404, "No API key with this id"),
    "api_key_revoked": (409, "The API key is revoked"),
    # ledger: partners and settlement
    "partner_not_found": (404, "No partner with this code"),
    "settlement_not_found": (404, "No settlement with this id"),
    "partner_exists": (409, "A partner with this code exists already"),
    "terms_version_exists": (409, "Terms with this effective_from exist already"),
    "terms_in_closed_period": (422, "effective_from falls in a period already settled"),
    "partner_suspended": (422, "The partner is suspended"),
    "partner_terms_missing": (422, "The partner has no terms for this program"),
    "partner_funds_exhausted": (422, "The prepaid partner's purchased points are used up"),
    "partner_credit_exceeded": (422, "The postpaid partner's credit limit for the period is reached"),
    "currency_mismatch": (422, "The currency is not the one agreed"),
    "as_of_in_past": (422, "as_of is before the last settlement"),
    # conversion
    "rate_not_found": (404, "No rate between these programs"),
    "quote_not_found": (404, "No quote with this id"),
    "conversion_not_found": (404, "No conversion with this id"),
    "quote_used": (409, "The quote was used by another conversion"),
    "saga_not_retryable": (409, "The saga is finished, or being driven right now"),
    "same_program": (422, "Points convert between two different programs"),
    "no_rate": (422, "No rate in force between these programs"),
    "below_minimum": (422, "Below the rate's min_from_points"),
    "daily_limit_exceeded": (422, "The member's daily conversion limit would be exceeded"),
    "quote_expired": (422, "The quote has expired"),
    "points_out_of_range": (422, "The amount is outside the 64-bit integer range"),
    "amount_too_small": (422, "The amount converts to no points"),
    "no_cash_value": (422, "The program's points have no cash value"),
    "conversion_failed": (502, "The credit could not be made; the debit was reversed"),
    "program_required": (422, "A key limited to programs must name the program"),
    # catalog
    "reward_not_found": (404, "No reward with this sku"),
    "redemption_not_found": (404, "No redemption with this id"),
    "reward_exists": (409, "A reward with this sku exists already"),
    "code_exists": (409, "A voucher code was uploaded already"),
    "out_of_stock": (409, "The reward is out of stock"),
    "not_cancellable": (409, "The redemption cannot be cancelled in its status"),
    "duplicate_codes": (422, "The upload repeats a voucher code"),
    "not_a_voucher": (422, "Voucher codes are only for voucher rewards"),
    "limit_exceeded": (422, "The member's per_member_limit would be exceeded"),
    "reward_not_active": (422, "The reward is outside its active window"),
    "program_mismatch": (422, "The reward is redeemed with another program's points"),
    "not_redeemer": (403, "Only the API key that redeemed may cancel"),
}

CODES_KEY = "x-problem-codes"
AUTH_CODES = ("unauthorized", "invalid_api_key", "insufficient_scope")
BODY_CODES = ("malformed_json", "payload_too_large", "validation_error")
IDEMPOTENCY_CODES = (
    "idempotency_key_required",
    "invalid_idempotency_key",
    "idempotency_key_reused",
    "idempotency_key_in_use",
)
# The header's own rule (services.idempotency.valid_key), so a client generator can check it too.
IDEMPOTENCY_PATTERN = r"^[\x20-\x7e]{1,255}$"


def _response(status: int, codes: Iterable[str]) -> dict[str, Any]:
    listed = sorted(set(codes))
    examples = {
        code: {"summary": PROBLEMS[code][1], "value": problem_body(status, code, PROBLEMS[code][1] + ".")}
        for code in listed
    }
    return {
        "description": f"{HTTPStatus(status).phrase}: " + ", ".join(f"`{c}`" for c in listed),
        CODES_KEY: listed,
        "content": {
            PROBLEM_JSON: {
                "schema": {
                    "allOf": [{"$ref": "#/components/schemas/Problem"}],
                    "properties": {"code": {"enum": listed}},
                },
                "examples": examples,
            }
        },
    }


def problems(*codes: str | tuple[str, int]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an operation that can answer with these problem codes, grouped by status. A
    code answered with another status than its usual one here is given as (code, status)."""
    by_status: dict[int, list[str]] = {}
    for entry in codes:
        code, status = entry if isinstance(entry, tuple) else (entry, PROBLEMS[entry][0])
        assert code in PROBLEMS, f"add {code} to services.openapi.PROBLEMS"
        by_status.setdefault(status, []).append(code)
    return {s: _response(s, cs) for s, cs in by_status.items()}


def _add_codes(responses: dict[str, Any], codes: Iterable[str]) -> None:
    for code in codes:
        status = str(PROBLEMS[code][0])
        current = responses.get(status)
        listed = list(current.get(CODES_KEY, [])) if current else []
        if code in listed:
            continue
        merged = _response(int(status), [*listed, code])
        if current and "headers" in current:
            merged["headers"] = current["headers"]
        responses[status] = merged


def _finish_operation(path: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    if "HTTPValidationError" in json.dumps(responses.get("422", {})):
        del responses["422"]  # FastAPI's own; the API answers problem+json `validation_error` instead
    if op.get("parameters") or "requestBody" in op:
        _add_codes(responses, ["validation_error"])
    if "requestBody" in op:
        _add_codes(responses, BODY_CODES)
    if path.startswith("/v1/"):
        _add_codes(responses, AUTH_CODES)
    for param in op.get("parameters", []):
        if param.get("in") == "header" and param.get("name", "").lower() == "idempotency-key":
            param["required"] = True
            param["schema"] = {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": IDEMPOTENCY_PATTERN,
            }
            _add_codes(responses, IDEMPOTENCY_CODES)
            for status in ("200", "201", "202"):
                if status in responses:
                    responses[status].setdefault("headers", {})["Idempotent-Replayed"] = {
                        "description": "`true` when this is the recorded answer to an earlier request "
                        "with the same key and body",
                        "schema": {"type": "string", "enum": ["true"]},
                    }
    unavailable = responses.get("503")
    if unavailable and {"ledger_unavailable", "ledger_busy"} & set(unavailable.get(CODES_KEY, [])):
        unavailable["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}
        }


def _add_examples(spec: dict[str, Any], examples: dict[str, Any]) -> None:
    """Each recorded example (see tests/openapi.py): its request body on the request, its
    answer on the response of its status."""
    for name, ex in examples.items():
        method, path = name.split(" ", 1)
        op = spec["paths"].get(path, {}).get(method.lower())
        if op is None:
            continue  # an example for a route that is gone: the replay test reports it
        summary = ex.get("summary", "Recorded from a real answer")
        if ex.get("request") is not None and "requestBody" in op:
            ctype = ex.get("request_content_type", "application/json")
            media = op["requestBody"]["content"].setdefault(ctype, {"schema": {"type": "string"}})
            media.pop("example", None)
            media["examples"] = {"recorded": {"summary": summary, "value": ex["request"]}}
        status = str(ex["status"])
        response = op["responses"].get(status)
        if response is None:
            continue
        ctype = ex.get("response_content_type", "application/json")
        media = response.setdefault("content", {}).setdefault(ctype, {})
        media["examples"] = {"recorded": {"summary": summary, "value": ex["response"]}}


def finish(spec: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    ref = "#/components/schemas/{model}"
    schemas["FieldError"] = FieldError.model_json_schema(ref_template=ref)
    problem = Problem.model_json_schema(ref_template=ref)
    problem.pop("$defs", None)
    schemas["Problem"] = problem
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if method in ("get", "put", "post", "patch", "delete"):
                _finish_operation(path, op)
    _add_examples(spec, examples)
    return spec


def load_examples(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def install_openapi(app: FastAPI, examples_file: Path | None) -> None:
    """app.openapi builds, finishes and caches the document on first use."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = finish(spec, load_examples(examples_file) if examples_file else {})
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
