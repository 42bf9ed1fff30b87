"""Routes for exchange rates: publish a version, list those in force, read one pair."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from conversion_service.deps import Admin, Ctx, Reader
from conversion_service.rates import service
from conversion_service.rates.schemas import RateIn, RateList, RateOut
from conversion_service.schemas_common import ProgramCode
from services.deps import Cursor, Limit, ProgramQuery
from services.openapi import problems
from services.validation import Timestamp

router = APIRouter(prefix="/v1/rates", tags=["rates"])

From = Annotated[ProgramCode, Path(description="Source program code")]
To = Annotated[ProgramCode, Path(description="Target program code")]
At = Annotated[
    Timestamp | None,
    Query(
        description="The rates in force at this time (RFC 3339); default now",
        examples=["2030-01-01T00:00:00Z"],
    ),
]


@router.put(
    "/{from_program}/{to_program}",
    status_code=201,
    summary="Publish a new version of the rate from one program to another (conversion:admin)",
    description="Creates a new version; earlier versions are kept and stay in force until this one's "
    "`effective_from`. Both programs must exist in the ledger.",
    responses=problems(
        "program_not_found",
        "program_forbidden",
        "same_program",
        "effective_from_in_past",
        "ledger_rejected",
        "ledger_unavailable",
    ),
)
async def put_rate(from_program: From, to_program: To, body: RateIn, principal: Admin, ctx: Ctx) -> RateOut:
    principal.require_program(from_program)
    principal.require_program(to_program)
    return await service.put_rate(ctx, principal, from_program, to_program, body)


@router.get(
    "",
    summary="The published rates in force (now, or at a given time)",
    description="One entry per pair: the latest version whose `effective_from` is not after `at`. "
    "Derived rates are not listed; read a pair with `GET /v1/rates/{from}/{to}`.",
    responses=problems("invalid_cursor"),
)
async def list_rates(
    principal: Reader,
    ctx: Ctx,
    at: At = None,
    from_program: ProgramQuery = None,
    to_program: ProgramQuery = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> RateList:
    return await service.list_rates(
        ctx, principal, at=at, from_program=from_program, to_program=to_program, limit=limit, cursor=cursor
    )


@router.get(
    "/{from_program}/{to_program}",
    summary="The rate in force for one pair: published (direct) or derived from cash values",
    description="`source` says which. A derived rate exists only when no rate is published and both "
    "programs allow derived rates (`PUT /v1/programs/{code}/settings`).",
    responses=problems(
        "rate_not_found", "program_not_found", "same_program", "ledger_rejected", "ledger_unavailable"
    ),
)
async def get_rate(from_program: From, to_program: To, principal: Reader, ctx: Ctx, at: At = None) -> RateOut:
    principal.require_program(from_program)
    principal.require_program(to_program)
    return await service.get_rate(ctx, from_program, to_program, at)


@router.get(
    "/{from_program}/{to_program}/versions",
    summary="Every published version of a pair's rate, newest first",
    responses=problems("invalid_cursor"),
)
async def list_versions(
    from_program: From,
    to_program: To,
    principal: Reader,
    ctx: Ctx,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> RateList:
    principal.require_program(from_program)
    principal.require_program(to_program)
    return await service.list_versions(ctx, from_program, to_program, limit=limit, cursor=cursor)
