"""API keys: stored hashed (SHA-256 of a 256-bit random secret), with scopes and program limits."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.db import Database
from services.errors import Forbidden, Unauthorized

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
CACHE_TTL_S = 30.0


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


class KeyStore:
    """Looks keys up by hash, caching hits briefly so the hot path makes no extra round trip.

    A revoked key keeps working for at most CACHE_TTL_S seconds in a process that has cached it.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[bytes, tuple[float, Principal]] = {}

    async def lookup(self, secret: str) -> Principal | None:
        digest = hash_key(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
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
    async with db.driver() as conn:
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
