"""The admin API for API keys (`ledger:admin`): create, list, read, revoke, rotate. The rules live in
services/apikeys.py, shared with `jifen api-keys`; the ledger adds that a key's programs must exist."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request

from ledger_service.api_keys.service import require_partner
from ledger_service.deps import Admin
from ledger_service.programs.service import unknown_programs
from services import apikeys
from services.apikeys import ApiKeyCreated, ApiKeyIn, ApiKeyList, ApiKeyOut
from services.deps import Cursor
from services.errors import Unprocessable
from services.openapi import problems

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])

KeyId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post(
    "",
    status_code=201,
    summary="Create an API key; its secret is in this answer only",
    description="A caller grants only scopes it holds, and a key limited to programs creates keys "
    "limited to some of them (`403 insufficient_scope`, `403 program_forbidden`). Every program named "
    "must exist (`422 program_not_found`).",
    responses=problems(
        ("program_not_found", 422), ("partner_not_found", 422), "program_forbidden", "partner_forbidden"
    ),
)
async def create_key(request: Request, body: ApiKeyIn, principal: Admin) -> ApiKeyCreated:
    apikeys.check_grant(principal, body.scopes, body.programs)
    if body.programs:
        unknown = await unknown_programs(request.app.state.db, body.programs)
        if unknown:
            raise Unprocessable(f"No program {', '.join(unknown)}.", code="program_not_found")
    await require_partner(request.app.state.db, body.partner)
    return await apikeys.create(request.app.state.db, principal, body)


@router.get(
    "",
    summary="API keys (never their secrets), oldest first",
    description="A key limited to programs sees the keys limited to some of its programs.",
    responses=problems("invalid_cursor"),
)
async def list_keys(
    request: Request,
    principal: Admin,
    status: Annotated[Literal["active", "revoked"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> ApiKeyList:
    return await apikeys.list_keys(request.app.state.db, principal, status=status, limit=limit, cursor=cursor)


@router.get("/{key_id}", summary="One API key", responses=problems("api_key_not_found"))
async def get_key(request: Request, key_id: KeyId, principal: Admin) -> ApiKeyOut:
    return await apikeys.get(request.app.state.db, principal, key_id)


@router.post(
    "/{key_id}/revoke",
    summary="Revoke an API key: every service refuses it within a second",
    description="Revoking a revoked key changes nothing and answers the same.",
    responses=problems("api_key_not_found"),
)
async def revoke_key(request: Request, key_id: KeyId, principal: Admin) -> ApiKeyOut:
    return await apikeys.revoke(request.app.state.db, principal, key_id, store=request.app.state.keys)


@router.post(
    "/{key_id}/rotate",
    status_code=201,
    summary="Replace an API key's secret: a new key with the same name, scopes and programs",
    description="The old key is revoked in the same transaction; the new secret is in this answer only. "
    "A revoked key cannot be rotated (`409 api_key_revoked`).",
    responses=problems("api_key_not_found", "api_key_revoked"),
)
async def rotate_key(request: Request, key_id: KeyId, principal: Admin) -> ApiKeyCreated:
    return await apikeys.rotate(request.app.state.db, principal, key_id, store=request.app.state.keys)
