"""Domain errors and their one mapping to RFC 9457 problem+json (DESIGN §3)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("jifen.errors")

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    """An error a client can act on. Subclasses fix the status; `code` is stable and machine-readable."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(DomainError):
    status, code = 400, "bad_request"


class Unauthorized(DomainError):
    status, code = 401, "unauthorized"


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class NotFound(DomainError):
    status, code = 404, "not_found"


class Conflict(DomainError):
    status, code = 409, "conflict"


class Unprocessable(DomainError):
    status, code = 422, "unprocessable"


# --- The ledger seen from the other services (one mapping for conversion and catalog alike) ---------

# Seconds a client is told to wait (Retry-After) when the ledger cannot be reached. The ledger client has
# already retried with backoff before this is answered, so the ledger has been down for a while.
LEDGER_RETRY_AFTER_S = 5
LEDGER_RETRY_AFTER = {"Retry-After": str(LEDGER_RETRY_AFTER_S)}

# Ledger refusals about what the client asked for (an unknown program, too few points, a limit): the
# ledger's own status and code are passed through. Any other 4xx is about the calling service itself
# (400: a malformed call, 401/403: its own key, 409: one of its keys reused) and is no refusal the
# client can act on: 502 ledger_rejected, with the ledger's status and code alongside.
LEDGER_PASSED_THROUGH = frozenset({404, 422})


class LedgerUnavailableError(DomainError):
    """503 ledger_unavailable: the ledger could not be reached, or kept failing (after retries)."""

    status, code = 503, "ledger_unavailable"

    def __init__(
        self,
        detail: str = "The ledger cannot be reached right now; retry shortly.",
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, headers=LEDGER_RETRY_AFTER, extra=extra)


def ledger_refusal(
    status: int, code: str, detail: str, *, extra: Mapping[str, Any] | None = None
) -> DomainError:
    """The problem for a ledger refusal (`status`, `code` as the ledger answered; `detail` ours)."""
    if status in LEDGER_PASSED_THROUGH:
        return DomainError(detail, status=status, code=code, extra=extra)
    return DomainError(
        detail,
        status=502,
        code="ledger_rejected",
        extra={"ledger_status": status, "ledger_code": code, **(extra or {})},
    )


def problem_body(
    status: int,
    code: str,
    detail: str,
    *,
    errors: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:jifen:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = list(errors)
    if extra:
        body.update(extra)
    return body


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    body = problem_body(status, code, detail, errors=errors, extra=extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


# What Starlette's HTTPException says when FastAPI cannot read a body at all (before validation).
BODY_PARSE_ERROR = "There was an error parsing the body"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> Response:
        return problem_response(exc.status, exc.code, exc.detail, headers=exc.headers, extra=exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return problem_response(400, "malformed_json", "The request body is not valid JSON.")
        errors = [{"field": _field(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in errs]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(422, "validation_error", detail or "Invalid request.", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        code = _HTTP_CODES.get(status, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        if status == 404 and detail == "Not Found":
            detail = "No such route."
        if status == 400 and detail == BODY_PARSE_ERROR:  # e.g. a body that is not UTF-8: not JSON either
            code, detail = "malformed_json", "The request body is not valid JSON."
        return problem_response(status, code, detail, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(500, "internal_error", "An unexpected error occurred; it has been logged.")


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable `code`."""

    type: str = Field(examples=["urn:jifen:problem:insufficient_points"])
    title: str = Field(examples=["Unprocessable Content"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["available 120 < 500 points requested"])
    code: str = Field(examples=["insufficient_points"])
    errors: list[FieldError] | None = None
