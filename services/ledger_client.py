"""The one HTTP client other services use to reach the ledger.

One pooled keep-alive `aiohttp.ClientSession` per process, with timeouts. Retries (with backoff) happen
only where the call is safe to repeat: reads, and writes that carry an Idempotency-Key. `X-Request-ID` of
the request being served is passed on. The client authenticates with the service's own API key.

Why aiohttp and not httpx: every saga step is a ledger call, and httpx (httpcore's pool with anyio
streams) spent about 1.6 ms of CPU per call at 32 concurrent calls, half of a conversion's CPU; aiohttp's
C-accelerated client does the same call in about 0.1 ms (both against one trivial server). A test may
still pass an httpx transport (`transport=`) to answer the calls without a network.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import httpx
import orjson

from services.errors import DomainError, LedgerUnavailableError, ledger_refusal
from services.logs import request_id_var

log = logging.getLogger("jifen.ledger_client")

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
# Idle connections are dropped well before uvicorn's 5 s keep-alive timeout closes them from its side, so
# a call rarely goes out on a connection the ledger is closing at that moment (and such a call is retried).
KEEPALIVE_S = 2.0

# (status, Idempotent-Replayed said true, body bytes)
Sent = tuple[int, bool, bytes]


class LedgerUnavailable(Exception):
    """The ledger could not be reached or kept failing; the outcome of a write is unknown.

    A write that raised this may or may not have been applied: retry it with the same key.
    """

    def problem(self, detail: str | None = None, **extra: Any) -> DomainError:
        """The answer to a client: 503 ledger_unavailable with Retry-After (services.errors)."""
        if detail is None:
            return LedgerUnavailableError(extra=extra)
        return LedgerUnavailableError(detail, extra=extra)


@dataclass(frozen=True)
class LedgerRejected(Exception):
    """The ledger answered with a definitive 4xx: repeating the call will not change it."""

    status: int
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"

    def problem(self, detail: str | None = None, **extra: Any) -> DomainError:
        """The answer to a client: the ledger's own status and code passed through (or 502
        ledger_rejected for a refusal of this service's own call; services.errors.ledger_refusal)."""
        return ledger_refusal(self.status, self.code, detail or self.detail, extra=extra)


@dataclass(frozen=True)
class LedgerReply:
    status: int
    body: dict[str, Any]
    replayed: bool


class LedgerClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_s: float = 0.1,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "jifen-ledger-client"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 2.0))
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None  # made in the running loop, at the first call
        self._test_http: httpx.AsyncClient | None = None
        if transport is not None:
            self._test_http = httpx.AsyncClient(
                base_url=self._base, headers=self._headers, timeout=timeout_s, transport=transport
            )
        self._cache: dict[str, tuple[float, Any]] = {}

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._test_http is not None:
            await self._test_http.aclose()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=self._timeout,
                skip_auto_headers=("Accept",),
            )
        return self._session

    async def _send(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: dict[str, str],
        params: dict[str, str] | None,
    ) -> Sent:
        """One attempt. Raises ConnectionError when no answer came (the outcome of a write is unknown)."""
        if self._test_http is not None:
            try:
                r = await self._test_http.request(
                    method, path, content=content, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
            return r.status_code, r.headers.get("Idempotent-Replayed") == "true", r.content
        try:
            async with self._http().request(
                method, self._base + path, data=content, params=params, headers=headers
            ) as reply:
                return reply.status, reply.headers.get("Idempotent-Replayed") == "true", await reply.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        attempts: int | None = None,
    ) -> LedgerReply:
        """Returns a 2xx reply; raises LedgerRejected for a 4xx, LedgerUnavailable otherwise."""
        retry_safe = method == "GET" or idempotency_key is not None
        tries = (attempts or self.attempts) if retry_safe else 1
        headers: dict[str, str] = {}
        content = None
        if json is not None:
            content = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        rid = request_id_var.get()
        if rid:
            headers["X-Request-ID"] = rid
        query = None if params is None else {k: str(v) for k, v in params.items()}
        last_error = "no attempt made"
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random()))
            try:
                status, replayed, data = await self._send(method, path, content, headers, query)
            except ConnectionError as exc:
                last_error = str(exc)
                continue
            body = _json(data)
            if status in RETRYABLE_STATUS or (status == 409 and body.get("code") == "idempotency_key_in_use"):
                last_error = f"HTTP {status}"
                continue
            if status >= 400:
                raise LedgerRejected(status, body.get("code", "error"), body.get("detail", ""))
            return LedgerReply(status, body, replayed)
        log.warning("ledger call failed", extra={"method": method, "path": path, "error": last_error})
        raise LedgerUnavailable(f"{method} {path}: {last_error} after {tries} attempt(s)")

    async def program(self, code: str, *, ttl_s: float = 30.0) -> dict[str, Any]:
        """A program's configuration, cached briefly. Raises LedgerRejected(404) if unknown."""
        hit = self._cache.get(code)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            program: dict[str, Any] = hit[1]
            return program
        reply = await self.request("GET", f"/v1/programs/{code}")
        self._cache[code] = (now + ttl_s, reply.body)
        return reply.body

    async def member(self, program: str, member_ref: str) -> dict[str, Any]:
        return (await self.request("GET", f"/v1/programs/{program}/members/{member_ref}")).body

    async def post(self, path: str, body: dict[str, Any] | None, *, key: str) -> LedgerReply:
        return await self.request("POST", path, json=body, idempotency_key=key)


T = TypeVar("T")


async def answered(call: Awaitable[T], what: str, *, not_found: DomainError | None = None) -> T:
    """The result of a ledger call made while serving a request, or the problem to answer instead:
    `not_found` for a 404 (when given), the ledger's refusal passed through, or 503 ledger_unavailable.
    `what` names the call in a refusal's detail ("the program lookup")."""
    try:
        return await call
    except LedgerRejected as exc:
        if exc.status == 404 and not_found is not None:
            raise not_found from None
        raise exc.problem(f"The ledger refused {what}: {exc}") from None
    except LedgerUnavailable as exc:
        raise exc.problem() from None


def _json(data: bytes) -> dict[str, Any]:
    """A reply's JSON object; {} for an empty or non-JSON body (a proxy's error page, say)."""
    if not data:
        return {}
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}
