"""A fast lane for the hottest JSON POST routes: served without FastAPI's routing and dependency
resolution, which cost more CPU per request than the rest of an earn (a py-spy profile of the
ledger under load: about 40% of its Python time), and most of a valuation's.

The lane has no route list of its own. A FastAPI endpoint marked `@fast_lane` is put on it: when the app
is built, `lane_routes(routers)` reads each marked route's path, body model, path parameters and scope
requirement from what FastAPI made of its signature, and the lane calls the endpoint function itself.
So paths, bodies, scopes and the service call are written once, in the endpoint. An endpoint the lane
cannot serve exactly as FastAPI would (another dependency, a query or header parameter, a method other
than POST) is refused at start-up, not served differently.

Only the plain success-shaped request is served here: a POST to a lane path with a Bearer key that
is known and holds the scope, a well-formed Idempotency-Key (for an endpoint that takes one), a JSON
body that parses and validates.
Anything else (no or bad key, missing scope, missing header, other content type, malformed JSON, a
validation error) falls through, body and all, to the FastAPI route of the same path, so every error
response keeps exactly the shape FastAPI and our handlers give it. The FastAPI routes stay the
documented API (/docs) and the reference behaviour; the fast lane must answer as they do.
"""

from __future__ import annotations

import inspect
import logging
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.auth import KeyStore, ScopeRequirement
from services.errors import DomainError, problem_response
from services.idempotency import idempotency_key, valid_key
from services.metrics import FAST_LANE
from services.middleware import replay

log = logging.getLogger("jifen.fastlane")

Endpoint = Callable[..., Awaitable[Response]]
E = TypeVar("E", bound=Endpoint)

_MARKED: set[Callable[..., Any]] = set()


def fast_lane(endpoint: E) -> E:
    """Puts a FastAPI endpoint on the fast lane (below its `@router.post`). Its parameters may be only
    path parameters, one JSON body (a model, optionally `| None`), one `require(...)` principal, the
    Idempotency-Key (optional: a read such as a valuation takes none) and `AppState`; it must return a
    Response."""
    _MARKED.add(endpoint)
    return endpoint


# async, because FastAPI runs a plain `def` dependency in its thread pool: a thread hop per request.
async def app_state(request: Request) -> State:
    state: State = request.app.state
    return state


AppState = Annotated[State, Depends(app_state)]
"""The application's state (engine, rules, ...) as a dependency the fast lane can give too."""


@dataclass(frozen=True)
class FastRoute:
    """One lane route, derived once from a FastAPI route (`lane_routes`). The endpoint is called with
    keyword arguments: `state_arg`, `principal_arg`, `key_arg`, `body_arg` (the validated body, or None
    for an optional, empty body) and the path parameters converted by `params` (a ValueError there
    falls through to FastAPI's 422)."""

    route: APIRoute
    path: str
    segments: tuple[str, ...]
    requirement: ScopeRequirement
    endpoint: Endpoint
    state_arg: str
    principal_arg: str
    key_arg: str | None
    body_arg: str | None
    model: type[BaseModel] | None
    body_optional: bool
    params: tuple[tuple[str, Callable[[str], Any]], ...]

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.requirement.scopes


def lane_routes(routers: Iterable[APIRouter]) -> list[FastRoute]:
    """The lane's table: every `@fast_lane` endpoint of `routers`, read from what FastAPI derived from
    its signature. The routers' own routes are read (their paths already carry the router's prefix),
    so they must be included into the app without a further prefix or dependencies, as build_app does."""
    return [
        _derive(route)
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.endpoint in _MARKED
    ]


def _derive(route: APIRoute) -> FastRoute:
    where = f"fast lane route {route.path}"

    def refuse(why: str) -> TypeError:
        return TypeError(f"{where}: {why}")

    if route.methods != {"POST"}:
        raise refuse(f"the fast lane serves POST only, not {sorted(route.methods or ())}")
    segments = tuple(route.path[1:].split("/"))
    for segment in segments:
        plain = segment.startswith("{") and segment.endswith("}") and segment.count("{") == 1
        if "{" in segment and not (plain and ":" not in segment):
            raise refuse(f"path segment {segment!r} is not a plain {{name}}")
    dependant = route.dependant
    unsupported = [
        kind
        for kind, present in (
            ("query parameters", dependant.query_params),
            ("header parameters", dependant.header_params),
            ("cookie parameters", dependant.cookie_params),
            ("a Request parameter", dependant.request_param_name),
            ("a connection parameter", dependant.http_connection_param_name),
            ("a Response parameter", dependant.response_param_name),
            ("background tasks", dependant.background_tasks_param_name),
            ("security scopes", dependant.security_scopes_param_name),
        )
        if present
    ]
    if unsupported:
        raise refuse(f"the endpoint takes {', '.join(unsupported)}")
    returns = inspect.signature(route.endpoint, eval_str=True).return_annotation
    if not (isinstance(returns, type) and issubclass(returns, Response)):
        raise refuse("the endpoint must return a Response")

    requirement: ScopeRequirement | None = None
    state_arg = principal_arg = key_arg = None
    for dep in dependant.dependencies:
        if isinstance(dep.call, ScopeRequirement) and dep.name and requirement is None:
            requirement, principal_arg = dep.call, dep.name
        elif dep.call is idempotency_key and dep.name:
            key_arg = dep.name
        elif dep.call is app_state and dep.name:
            state_arg = dep.name
        else:
            raise refuse(f"the fast lane cannot give the dependency {dep.name or dep.call!r}")
    if requirement is None or principal_arg is None or state_arg is None:
        raise refuse("the endpoint needs a require(...) principal and AppState")

    params: list[tuple[str, Callable[[str], Any]]] = []
    for field in dependant.path_params:
        annotation = field.field_info.annotation
        if annotation is None or field.field_info.metadata or field.alias != field.name:
            raise refuse(f"path parameter {field.name} has constraints or an alias")
        # As FastAPI validates it (pydantic, lax from a string); a ValidationError is a ValueError.
        params.append((field.name, TypeAdapter(annotation).validate_python))

    body_arg: str | None = None
    model: type[BaseModel] | None = None
    body_optional = False
    if len(dependant.body_params) > 1:
        raise refuse("the endpoint takes more than one body parameter")
    if dependant.body_params:
        field = dependant.body_params[0]
        if getattr(field.field_info, "embed", False):
            raise refuse("an embedded body is not supported")
        model = _model_of(field.field_info.annotation)
        if model is None:
            raise refuse("the body must be a pydantic model, or a model | None")
        body_arg, body_optional = field.name, not field.field_info.is_required()
    return FastRoute(
        route=route,
        path=route.path,
        segments=segments,
        requirement=requirement,
        endpoint=route.endpoint,
        state_arg=state_arg,
        principal_arg=principal_arg,
        key_arg=key_arg,
        body_arg=body_arg,
        model=model,
        body_optional=body_optional,
        params=tuple(params),
    )


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """`M` for a body annotated `M` or `M | None` (`Optional[M]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(models) == 1:
            return _model_of(models[0])
    return None


class _Fallthrough(Exception):
    """The request is not one the fast lane serves; FastAPI answers it."""


class FastLane:
    """Pure-ASGI middleware; it sits inside the request-context middleware (request id, metrics,
    access log and body limit still apply) and sets `scope["route"]` like the router would."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[FastRoute], enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled
        self.routes = tuple(routes)
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
            auth, key = _headers(scope, keyed=route.key_arg is not None)
            body = await _read(receive, messages)
            try:  # the endpoint's keyword arguments, starting with its path parameters
                kwargs = (
                    {name: convert(raw_params[name]) for name, convert in route.params} if raw_params else {}
                )
            except ValueError:
                raise _Fallthrough from None
            state: State = scope["app"].state
            scope["route"] = route.route  # for the metrics labels, as the router sets it
            response = await self._serve(route, state, auth, key, body, kwargs)
        except _Fallthrough:
            FAST_LANE.labels(route.path, "fallthrough").inc()
            await self.app(scope, replay(messages, receive), send)
            return
        FAST_LANE.labels(route.path, "served").inc()
        await response(scope, receive, send)

    async def _serve(
        self, route: FastRoute, state: State, auth: bytes, key: str, body: bytes, kwargs: dict[str, Any]
    ) -> Response:
        keys: KeyStore = state.keys
        principal = await keys.lookup(auth.decode("latin-1"))
        if principal is None or not route.requirement.allows(principal):
            raise _Fallthrough
        kwargs[route.state_arg] = state
        kwargs[route.principal_arg] = principal
        if route.key_arg is not None:
            kwargs[route.key_arg] = key
        if route.body_arg is not None:
            assert route.model is not None
            if body:  # whitespace is a body too: FastAPI answers it 400 malformed_json
                try:
                    kwargs[route.body_arg] = route.model.model_validate(orjson.loads(body))
                except (orjson.JSONDecodeError, ValidationError):
                    raise _Fallthrough from None
            elif route.body_optional:
                kwargs[route.body_arg] = None
            else:
                raise _Fallthrough
        # From here on the request is ours: it may have been applied, so it must never fall through.
        try:
            return await route.endpoint(**kwargs)
        except DomainError as exc:
            return problem_response(exc.status, exc.code, exc.detail, headers=exc.headers, extra=exc.extra)
        except Exception:
            # As FastAPI's handler answers it (services/errors.py): a 500 the client reads, not a
            # connection dropped by the server under it.
            log.exception("unhandled error on the fast lane", extra={"path": route.path})
            detail = "An unexpected error occurred; it has been logged."
            return problem_response(500, "internal_error", detail)


def _headers(scope: Scope, *, keyed: bool) -> tuple[bytes, str]:
    """The Bearer credentials and (if `keyed`) the Idempotency-Key, if they are there and well-formed
    ("" when not keyed: an endpoint without one ignores the header, as FastAPI does), and the body is
    JSON as FastAPI reads it: it needs a content type (strict_content_type), of type application and
    subtype json or *+json, parsed as email.message would (one slash)."""
    auth = idem = ctype = None
    for name, value in scope["headers"]:
        if name == b"authorization" and auth is None:
            auth = value
        elif name == b"idempotency-key" and idem is None:
            idem = value
        elif name == b"content-type" and ctype is None:
            ctype = value
    if auth is None or (keyed and idem is None):
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
    if not keyed:
        return credentials, ""
    assert idem is not None
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
