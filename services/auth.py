"""API keys: stored hashed (SHA-256 of a 256-bit random secret), with scopes and program limits.

Every process caches the keys it has seen; a change of a key (revocation, rotation, new scopes) is
announced with NOTIFY on CHANGES_CHANNEL in the transaction that makes it, and every process's
KeyStore, LISTENing on its own connection, forgets the key as soon as the change commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.db import Database, asyncpg_dsn
from services.errors import Forbidden, Unauthorized
from services.logs import request_context
from services.periodic import cancel_tasks

SCOPES = (
    "ledger:read",
    "ledger:earn",
    "ledger:burn",
    "ledger:batch",
    "ledger:admin",
    "conversion:read",
    "conversion:write",
    "conversion:admin",
    "catalog:read",
    "catalog:write",
    "catalog:admin",
)
KEY_PREFIX = "jf_"
# A backstop only: while a process listens for changes it forgets a changed key at once, and while it
# does not (its listening connection is down) it does not cache at all.
CACHE_TTL_S = 30.0
CHANGES_CHANNEL = "jifen_api_keys"
ALL_KEYS = "*"  # a NOTIFY payload: forget every cached key
RECONNECT_S = 1.0

log = logging.getLogger("jifen.auth")


def hash_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    scopes: frozenset[str]
    programs: frozenset[str] | None  # None: every program
    partner: str | None = None  # a partner-bound key acts only as this coalition partner

    def has(self, scope: str) -> bool:
        service = scope.split(":", 1)[0]
        return scope in self.scopes or f"{service}:admin" in self.scopes

    def require(self, *any_of: str) -> None:
        if not any(self.has(s) for s in any_of):
            raise Forbidden(f"This API key lacks the scope {' or '.join(any_of)}.", code="insufficient_scope")

    def require_program(self, code: str) -> None:
        if self.programs is not None and code not in self.programs:
            raise Forbidden(f"This API key may not act on program {code}.", code="program_forbidden")

    def require_job_scope(self, program: str | None) -> None:
        """A job runs for one program or for all; a key limited to programs must name one of them."""
        if program is not None:
            self.require_program(program)
        elif self.programs is not None:
            detail = "This API key is limited to programs: name one with ?program=."
            raise Forbidden(detail, code="program_forbidden")

    def require_partner(self, code: str) -> None:
        if self.partner is not None and code != self.partner:
            raise Forbidden(
                f"This API key is bound to partner {self.partner}; it may not act as {code}.",
                code="partner_forbidden",
            )

    def acting_partner(self, named: str | None) -> str | None:
        """The partner a posting is at: the one named, or the key's own; a partner-bound key may name
        no other (403 partner_forbidden)."""
        if named is not None:
            self.require_partner(named)
            return named
        return self.partner

    def program_list(self) -> list[str] | None:
        return None if self.programs is None else sorted(self.programs)


async def notify_change(conn: asyncpg.Connection, key_hash: bytes | None) -> None:
    """Tells every process to forget a key (None: every key); delivered when the transaction commits."""
    await conn.execute(
        "SELECT pg_notify($1, $2)", CHANGES_CHANNEL, ALL_KEYS if key_hash is None else key_hash.hex()
    )


class KeyStore:
    """Looks keys up by hash, caching hits so the hot path makes no extra round trip.

    `start()` listens for key changes on a connection of its own: a changed key is forgotten as soon
    as its change commits. Until the listener is connected, and whenever it loses its connection,
    nothing is cached, so a revoked key never outlives its revocation by more than a round trip.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._listening = False
        self._task: asyncio.Task[None] | None = None
        self.changes = 0  # notifications handled, for tests and metrics
        self.changed = asyncio.Event()

    @property
    def listening(self) -> bool:
        """True while changes reach this process (and it caches keys)."""
        return self._listening

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="api-key-changes")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_tasks([self._task])
            self._task = None
        self._listening = False

    def forget(self, key_hash: bytes) -> None:
        """Forgets a key at once, in the process that changed it (the others hear of it by NOTIFY)."""
        self._cache.pop(key_hash, None)
        self.changes += 1

    def _on_change(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == ALL_KEYS:
            self._cache.clear()
        else:
            with contextlib.suppress(ValueError):
                self._cache.pop(bytes.fromhex(payload), None)
        self.changes += 1
        self.changed.set()

    async def _listen(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    asyncpg_dsn(self.db.url), server_settings={"application_name": "jifen-key-changes"}
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANGES_CHANNEL, self._on_change)
                self._cache.clear()  # what changed while nobody listened
                self._listening = True
                await lost.wait()
                log.warning("lost the connection that listens for API key changes; reconnecting")
            except Exception as exc:  # whatever the failure, retry; meanwhile nothing is cached
                log.warning("cannot listen for API key changes", extra={"error": repr(exc)})
            finally:
                self._listening = False
                self._cache.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            await asyncio.sleep(RECONNECT_S)

    async def lookup(self, secret: str) -> Principal | None:
        digest = hash_key(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            request_context()["api_key_id"] = hit[1].key_id
            return hit[1]
        changes_before = self.changes  # a change that lands during the read must not be cached over
        async with self.db.driver() as conn:
            row = await conn.fetchrow(
                "SELECT id, name, scopes, programs, partner FROM auth.api_keys"
                " WHERE key_hash = $1 AND revoked_at IS NULL",
                digest,
            )
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(
            key_id=row["id"],
            name=row["name"],
            scopes=frozenset(row["scopes"]),
            programs=None if row["programs"] is None else frozenset(row["programs"]),
            partner=row["partner"],
        )
        request_context()["api_key_id"] = principal.key_id
        if not self._listening or self.changes != changes_before:
            return principal
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_TTL_S, principal)
        return principal


async def create_api_key(
    db: Database,
    *,
    name: str,
    scopes: Iterable[str],
    programs: Sequence[str] | None = None,
    secret: str | None = None,
    keep_revoked: bool = False,
    partner: str | None = None,
) -> tuple[int, str]:
    """Stores a new key and returns (id, secret). The secret is shown once and never stored.

    With a given `secret` that already exists, its scopes and programs are updated; `keep_revoked`
    leaves a revoked key revoked (the bootstrap keys re-created at every start use it)."""
    scope_list = sorted(set(scopes))
    unknown = [s for s in scope_list if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(unknown)}")
    secret = secret or new_secret()
    async with db.driver() as conn, conn.transaction():
        await notify_change(conn, hash_key(secret))  # an existing key's scopes may have changed
        key_id = await conn.fetchval(
            "INSERT INTO auth.api_keys (name, prefix, key_hash, scopes, programs, partner)"
            " VALUES ($1, $2, $3, $4, $5, $7)"
            " ON CONFLICT (key_hash) DO UPDATE SET scopes = EXCLUDED.scopes,"
            " programs = EXCLUDED.programs, partner = EXCLUDED.partner,"
            " revoked_at = CASE WHEN $6 THEN auth.api_keys.revoked_at END"
            " RETURNING id",
            name,
            secret[:10],
            hash_key(secret),
            scope_list,
            None if programs is None else sorted(set(programs)),
            keep_revoked,
            partner,
        )
    return int(key_id), secret


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer jf_...`")


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized(
            "Send an API key as `Authorization: Bearer <key>`.",
            code="unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )
    store: KeyStore = request.app.state.keys
    principal = await store.lookup(credentials.credentials)
    if principal is None:
        raise Unauthorized(
            "The API key is unknown or revoked.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


class ScopeRequirement:
    """A dependency: the caller's principal, after checking it holds one of `scopes`. A class, so the
    fast lane (services/fastlane.py) reads a route's scopes from the route itself."""

    def __init__(self, *any_of: str) -> None:
        self.scopes = any_of

    def allows(self, principal: Principal) -> bool:
        return any(principal.has(s) for s in self.scopes)

    async def __call__(self, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        principal.require(*self.scopes)
        return principal


def require(*any_of: str) -> ScopeRequirement:
    """A dependency: the caller's principal, after checking it holds one of the scopes."""
    return ScopeRequirement(*any_of)
