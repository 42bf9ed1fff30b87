"""Managing API keys: create, list, revoke, rotate. Shared by the `jifen api-keys` command and the admin
API. A secret is returned once, by create and rotate, and never stored (only its SHA-256); every change
is announced to every process's key cache in its own transaction (services/auth.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

import asyncpg
from pydantic import BaseModel, Field, StringConstraints

from services.auth import SCOPES, KeyStore, Principal, create_api_key, hash_key, new_secret, notify_change
from services.conventions import ProgramCode
from services.db import Database
from services.errors import Conflict, Forbidden, NotFound
from services.pagination import decode_cursor, page_of
from services.validation import StrictBody, body_examples

Scope = Literal[
    "ledger:read", "ledger:earn", "ledger:burn", "ledger:batch", "ledger:admin",
    "conversion:read", "conversion:write", "conversion:admin",
    "catalog:read", "catalog:write", "catalog:admin",
]  # fmt: skip
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]

_COLUMNS = "id, name, prefix, scopes, programs, partner, created_at, revoked_at"
_LIST = f"""SELECT {_COLUMNS} FROM auth.api_keys
            WHERE id > $1 AND ($2::text IS NULL OR ($2 = 'revoked') = (revoked_at IS NOT NULL))
              AND ($3::text[] IS NULL OR (programs IS NOT NULL AND programs <@ $3::text[]))
            ORDER BY id LIMIT $4"""
_GET = f"SELECT {_COLUMNS}, key_hash FROM auth.api_keys WHERE id = $1"
_LOCK = f"SELECT {_COLUMNS}, key_hash FROM auth.api_keys WHERE id = $1 FOR UPDATE"
_REVOKE = f"""UPDATE auth.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
              RETURNING {_COLUMNS}"""


class ApiKeyIn(StrictBody):
    name: KeyName = Field(default="api", examples=["pos-terminals-shanghai"])
    scopes: list[Scope] = Field(
        min_length=1, max_length=len(SCOPES), examples=[["ledger:read", "ledger:earn"]]
    )
    programs: list[ProgramCode] | None = Field(
        default=None, max_length=100, description="The programs the key may act on; null: every program"
    )
    partner: ProgramCode | None = Field(
        default=None,
        description="Bind the key to a coalition partner: its earns and burns are that partner's, and it "
        "may name no other (403 partner_forbidden)",
    )

    model_config = body_examples(
        {"name": "pos-terminals", "scopes": ["ledger:read", "ledger:burn"], "programs": ["WLT"]},
    )


class ApiKeyOut(BaseModel):
    id: int = Field(examples=[7])
    name: str = Field(examples=["pos-terminals"])
    prefix: str = Field(description="The secret's first characters, to recognise it", examples=["jf_Xk3v9Qa"])
    scopes: list[str] = Field(examples=[["ledger:burn", "ledger:read"]])
    programs: list[str] | None = Field(examples=[["WLT"]])
    partner: str | None = None
    status: Literal["active", "revoked"]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    secret: str = Field(description="Shown this once; only its hash is stored", examples=["jf_Xk3v9Qa..."])


class ApiKeyList(BaseModel):
    data: list[ApiKeyOut]
    next_cursor: str | None


def _out(row: asyncpg.Record) -> ApiKeyOut:
    data = {
        k: row[k]
        for k in ("id", "name", "prefix", "scopes", "programs", "partner", "created_at", "revoked_at")
    }
    return ApiKeyOut.model_validate({**data, "status": "active" if row["revoked_at"] is None else "revoked"})


def _not_found(key_id: int) -> NotFound:
    return NotFound(f"No API key with id {key_id}.", code="api_key_not_found")


def _may_manage(principal: Principal | None, programs: Sequence[str] | None) -> bool:
    """A key limited to programs manages only keys limited to some of them (None: the command line)."""
    if principal is None or principal.programs is None:
        return True
    return programs is not None and set(programs) <= principal.programs


def check_grant(principal: Principal | None, scopes: Sequence[str], programs: Sequence[str] | None) -> None:
    """A caller gives no more than it has: each scope, and no program outside its own."""
    if principal is None:
        return
    missing = sorted(s for s in set(scopes) if not principal.has(s))
    if missing:
        raise Forbidden(
            f"This API key cannot grant scopes it lacks: {', '.join(missing)}.", code="insufficient_scope"
        )
    if not _may_manage(principal, programs):
        raise Forbidden(
            "This API key may only create keys limited to its own programs.", code="program_forbidden"
        )


async def create(db: Database, principal: Principal | None, body: ApiKeyIn) -> ApiKeyCreated:
    check_grant(principal, body.scopes, body.programs)
    if principal is not None and principal.partner is not None and body.partner != principal.partner:
        raise Forbidden(
            "A partner-bound key creates keys bound to its own partner only.", code="partner_forbidden"
        )
    key_id, secret = await create_api_key(
        db, name=body.name, scopes=body.scopes, programs=body.programs, partner=body.partner
    )
    async with db.driver() as conn:
        row = await conn.fetchrow(_GET, key_id)
    return ApiKeyCreated.model_validate({**_out(row).model_dump(), "secret": secret})


async def list_keys(
    db: Database,
    principal: Principal | None,
    *,
    status: Literal["active", "revoked"] | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> ApiKeyList:
    after = decode_cursor(cursor) or 0
    within = None if principal is None else principal.program_list()
    async with db.driver() as conn:
        rows = await conn.fetch(_LIST, after, status, within, limit + 1)
    page, next_cursor = page_of(rows, limit, "id")
    return ApiKeyList(data=[_out(r) for r in page], next_cursor=next_cursor)


async def get(db: Database, principal: Principal | None, key_id: int) -> ApiKeyOut:
    async with db.driver() as conn:
        row = await conn.fetchrow(_GET, key_id)
    if row is None or not _may_manage(principal, row["programs"]):
        raise _not_found(key_id)
    return _out(row)


async def revoke(
    db: Database, principal: Principal | None, key_id: int, *, store: KeyStore | None = None
) -> ApiKeyOut:
    """Revokes a key (a revoked key stays revoked: revoking it again changes nothing). Every process
    stops accepting it when this commits; `store`, this process's cache, at once."""
    async with db.driver() as conn, conn.transaction():
        current = await conn.fetchrow(_LOCK, key_id)
        if current is None or not _may_manage(principal, current["programs"]):
            raise _not_found(key_id)
        row = await conn.fetchrow(_REVOKE, key_id)
        await notify_change(conn, bytes(current["key_hash"]))
    if store is not None:
        store.forget(bytes(current["key_hash"]))
    return _out(row)


async def rotate(
    db: Database, principal: Principal | None, key_id: int, *, store: KeyStore | None = None
) -> ApiKeyCreated:
    """A new secret with the same name, scopes and programs, as a new key; the old one is revoked in
    the same transaction (a client switches to the new secret, then the old one fails)."""
    secret = new_secret()
    async with db.driver() as conn, conn.transaction():
        current = await conn.fetchrow(_LOCK, key_id)
        if current is None or not _may_manage(principal, current["programs"]):
            raise _not_found(key_id)
        if current["revoked_at"] is not None:
            raise Conflict(f"API key {key_id} is revoked; create a new key instead.", code="api_key_revoked")
        check_grant(principal, current["scopes"], current["programs"])
        new_id = await conn.fetchval(
            "INSERT INTO auth.api_keys (name, prefix, key_hash, scopes, programs, partner)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            current["name"],
            secret[:10],
            hash_key(secret),
            current["scopes"],
            current["programs"],
            current["partner"],
        )
        await conn.execute(_REVOKE, key_id)
        await notify_change(conn, bytes(current["key_hash"]))
        row = await conn.fetchrow(_GET, new_id)
    if store is not None:
        store.forget(bytes(current["key_hash"]))
    return ApiKeyCreated.model_validate({**_out(row).model_dump(), "secret": secret})
