"""One pure-ASGI middleware for every service: request id, body size limit, metrics, access log.

Pure ASGI (not BaseHTTPMiddleware) because it wraps every request on the hot path. The access log
line carries the API key id (set by services/auth.py in the request's context) and, for an error,
the problem `code`, read from the problem+json body however it was made (handler, fast lane, SQL).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.errors import PROBLEM_JSON, problem_body
from services.logs import end_request_context, new_request_context, request_id_var
from services.metrics import HTTP_LATENCY, HTTP_REQUESTS

access_log = logging.getLogger("jifen.access")


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives the already-read `messages` first, then reads on."""
    pending = list(messages)

    async def receive_next() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return receive_next


def _problem_code(body: bytes) -> str | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    code = doc.get("code") if isinstance(doc, dict) else None
    return code if isinstance(code, str) else None


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isprintable()


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, service: str, max_body_bytes: int, access_log_enabled: bool = True
    ) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.access_log_enabled = access_log_enabled
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _metrics(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The metric children of a (method, route, status): `.labels()` costs a few percent of a
        request's CPU on the hot path, so each combination is looked up once per process."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(self.service, method, route, str(status)),
                HTTP_LATENCY.labels(self.service, method, route),
            )
            if len(self._children) < 10_000:  # unmatched paths are all "unmatched": this stays small
                self._children[key] = children
        return children

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        raw_rid = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = raw_rid if _valid_request_id(raw_rid) else os.urandom(16).hex()
        token = request_id_var.set(rid)
        context, context_token = new_request_context()
        rid_header = (b"x-request-id", rid.encode())
        status_holder = [500]
        response_started = [False]
        problem: list[bytes] | None = None  # the body parts of a problem+json answer
        limit = self.max_body_bytes
        if scope["path"].endswith("/batches"):
            limit = 1 << 40  # uploads are streamed by their own endpoint

        async def send_wrapper(message: Message) -> None:
            nonlocal problem
            if message["type"] == "http.response.start":
                response_started[0] = True
                status_holder[0] = message["status"]
                if message["status"] >= 400 and self.access_log_enabled:
                    for name, value in message.get("headers", []):
                        if name.lower() == b"content-type" and value.startswith(PROBLEM_JSON.encode()):
                            problem = []
                message["headers"] = [*message.get("headers", []), rid_header]
            elif (
                problem is not None
                and message["type"] == "http.response.body"
                and sum(map(len, problem)) < 65_536
            ):
                problem.append(message.get("body", b""))
            await send(message)

        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._too_large(send, receive, rid_header, limit)
                status_holder[0] = 413
                return
            if (
                declared is None
                and scope["method"] in ("POST", "PUT", "PATCH")
                and limit == self.max_body_bytes
            ):
                # Chunked body of unknown length: read it up to the limit before the app sees it.
                buffered, over = await self._buffer(receive, limit)
                if over:
                    ended = not buffered[-1].get("more_body", False) or buffered[-1]["type"] != "http.request"
                    await self._too_large(send, None if ended else receive, rid_header, limit)
                    status_holder[0] = 413
                    return
                receive = replay(buffered, receive)
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            counter, histogram = self._metrics(method, route_path, status_holder[0])
            counter.inc()
            histogram.observe(elapsed)
            if self.access_log_enabled:
                extra: dict[str, Any] = {
                    "method": method,
                    "path": scope["path"],
                    "route": route_path,
                    "status": status_holder[0],
                    "duration_ms": round(elapsed * 1000, 2),
                    "api_key_id": context.get("api_key_id"),
                }
                if status_holder[0] == 413 and problem is None:
                    extra["code"] = "payload_too_large"
                elif problem:
                    extra["code"] = _problem_code(b"".join(problem))
                access_log.info("request", extra=extra)
            end_request_context(context_token)
            request_id_var.reset(token)

    @staticmethod
    async def _buffer(receive: Receive, limit: int) -> tuple[list[Message], bool]:
        """The body's messages up to the limit, and whether it went over."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, False
            size += len(message.get("body", b""))
            if size > limit:
                return messages, True
            if not message.get("more_body", False):
                return messages, False

    async def _too_large(
        self, send: Send, receive: Receive | None, rid_header: tuple[bytes, bytes], limit: int
    ) -> None:
        """The 413, then (with `receive`: the client is still sending) a lingering close: the rest of
        the body is read and dropped, up to LINGER_BYTES and LINGER_S, before the response ends and
        the server closes. A socket closed with unread data in it is reset, and a client still
        sending would see the reset instead of the 413 (nginx's lingering_close does the same)."""
        body = orjson.dumps(
            problem_body(413, "payload_too_large", f"The request body exceeds {limit} bytes.")
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    rid_header,
                ],
            }
        )
        if receive is None:
            await send({"type": "http.response.body", "body": body})
            return
        # The whole answer is on the wire now (its length is declared); the response stays open only
        # so the server keeps reading.
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await _discard(receive, LINGER_BYTES, LINGER_S)
        await send({"type": "http.response.body", "body": b""})


# Bounds of the lingering close after a 413: enough for a client that sends a body several times the
# limit to finish and read the answer, not enough to hold a connection for long.
LINGER_BYTES = 64 * 1024 * 1024
LINGER_S = 5.0


async def _discard(receive: Receive, max_bytes: int, max_s: float) -> None:
    """Reads and drops the request body until it ends, the client leaves, or a bound is reached."""
    read = 0
    try:
        async with asyncio.timeout(max_s):
            while read <= max_bytes:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                read += len(message.get("body", b""))
    except TimeoutError:
        return
