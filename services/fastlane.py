"""A fast lane for the hottest JSON write routes: served without FastAPI's routing and dependency
resolution, which cost more CPU per request than the rest of an earn (a py-spy profile of the
ledger under load: about 40% of its Python time).

Only the plain success-shaped request is served here: a POST to a registered path with a Bearer key
that is known and holds the scope, a well-formed Idempotency-Key, a JSON body that parses and
validates. Anything else (no or bad key, missing header, other content type, malformed JSON, a
validation error) falls through, body and all, to the FastAPI route of the same path, so every error
response keeps exactly the shape FastAPI and our handlers give it. The FastAPI routes stay the
documented API (/docs) and the reference behaviour; the fast lane must answer as they do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.auth import KeyStore, Principal
from services.errors import DomainError, problem_response
from services.idempotency import valid_key
from services.metrics import FAST_LANE
from services.middleware import replay

Handler = Callable[[State, Any, Principal, str, dict[str, Any]], Awaitable[Response]]


@dataclass(frozen=True)
class FastRoute:
    """`path` is the FastAPI route's template ("/v1/holds/{hold_id}/capture"); the handler gets the
    validated body (None for an optional, empty body), the principal, the Idempotency-Key and the
    path parameters converted by `param` (a ValueError there falls through to FastAPI's 422)."""

    path: str
    model: type[BaseModel]
    scopes: tuple[str, ...]
    handler: Handler
    body_optional: bool = False
    param: Callable[[str], Any] = str

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path[1:].split("/"))


class _Fallthrough(Exception):
    """The request is not one the fast lane serves; FastAPI answers it."""


class FastLane:
    """Pure-ASGI middleware; it sits inside the request-context middleware (request id, metrics,
    access log and body limit still apply) and sets `scope["route"]` like the router would."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[FastRoute], enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled
        self._exact: dict[str, FastRoute] = {}
        self._templated: dict[int, list[FastRoute]] = {}
        for route in routes:
            if "{" in route.path:
                self._templated.setdefault(len(route.segments), []).append(route)
            else:
                self._exact[route.path] = route

    def _match(self, path: str) -> tuple[FastRoute, dict[str, str]] | None:
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        if not path.startswith("/"):
            return None
        parts = path[1:].split("/")  # a trailing or doubled slash leaves an empty segment: no match
        for candidate in self._templated.get(len(parts), ()):
            params: dict[str, str] = {}
            for want, got in zip(candidate.segments, parts, strict=True):
                if want.startswith("{"):
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return candidate, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        matched = self._match(scope["path"])
        if matched is None:
            await self.app(scope, receive, send)
            return
        route, raw_params = matched
        messages: list[Message] = []
        try:
            auth, key = _headers(scope)
            body = await _read(receive, messages)
            try:
                params = {name: route.param(value) for name, value in raw_params.items()}
            except ValueError:
                raise _Fallthrough from None
            state: State = scope["app"].state
            scope["route"] = route  # for the metrics labels, as the router would set it
            response = await self._serve(route, state, auth, key, body, params)
        except _Fallthrough:
            FAST_LANE.labels(route.path, "fallthrough").inc()
            await self.app(scope, replay(messages, receive), send)
            return
        FAST_LANE.labels(route.path, "served").inc()
        await response(scope, receive, send)

    async def _serve(
        self, route: FastRoute, state: State, auth: bytes, key: str, body: bytes, params: dict[str, Any]
    ) -> Response:
        keys: KeyStore = state.keys
        principal = await keys.lookup(auth.decode("latin-1"))
        if principal is None or not any(principal.has(s) for s in route.scopes):
            raise _Fallthrough
        if body:  # whitespace is a body too: FastAPI answers it 400 malformed_json
            try:
                data = orjson.loads(body)
                parsed = route.model.model_validate(data)
            except (orjson.JSONDecodeError, ValidationError):
                raise _Fallthrough from None
        elif route.body_optional:
            parsed = None
        else:
            raise _Fallthrough
        # From here on the request is ours: it may have been applied, so it must never fall through.
        try:
            return await route.handler(state, parsed, principal, key, params)
        except DomainError as exc:
            return problem_response(exc.status, exc.code, exc.detail, headers=exc.headers, extra=exc.extra)


def _headers(scope: Scope) -> tuple[bytes, str]:
    """The Bearer credentials and the Idempotency-Key, if both are there and well-formed, and the
    body is JSON as FastAPI reads it: it needs a content type (strict_content_type), of type
    application and subtype json or *+json, parsed as email.message would (one slash)."""
    auth = idem = ctype = None
    for name, value in scope["headers"]:
        if name == b"authorization" and auth is None:
            auth = value
        elif name == b"idempotency-key" and idem is None:
            idem = value
        elif name == b"content-type" and ctype is None:
            ctype = value
    if auth is None or idem is None:
        raise _Fallthrough
    scheme, _, credentials = auth.partition(b" ")
    if scheme.lower() != b"bearer" or not credentials or b" " in credentials:
        raise _Fallthrough
    if ctype is None:
        raise _Fallthrough
    media = ctype.split(b";", 1)[0].strip().lower()
    if media.count(b"/") != 1 or not (
        media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
    ):
        raise _Fallthrough
    key = idem.decode("latin-1")
    if not valid_key(key):
        raise _Fallthrough
    return credentials, key


async def _read(receive: Receive, messages: list[Message]) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            # The client went away; let the framework see the same messages.
            raise _Fallthrough
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
