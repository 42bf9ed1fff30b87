"""Routes for member profiles and their refresh job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from ledger_service.profiles import service
from ledger_service.profiles.schemas import Profile, ProfileRun
from ledger_service.schemas_common import MemberRef, ProgramCode
from services.auth import Principal, require
from services.openapi import problems

router = APIRouter(tags=["members"])


@router.get(
    "/v1/programs/{code}/members/{member_ref}/profile",
    response_model=Profile,
    summary="A member's behaviour profile and tags, computed from the ledger",
    description="Recency, frequency and points over 30 / 90 / 365 days, lifetime figures, top merchant "
    "categories and channels, expiring points and tags; recomputed for the member on each read "
    "(`high_value` as of the last program-wide refresh). No personal data: member_ref only.",
    responses=problems("program_not_found", "program_forbidden", "member_not_found"),
)
async def profile(
    request: Request,
    code: Annotated[ProgramCode, Path()],
    member_ref: Annotated[MemberRef, Path()],
    principal: Annotated[Principal, Depends(require("ledger:read"))],
) -> Profile:
    principal.require_program(code)
    return await service.profile(request.app.state.db, code, member_ref)


@router.post(
    "/v1/jobs/profiles",
    response_model=ProfileRun,
    tags=["jobs"],
    summary="Refresh member profiles (one program or all), then re-evaluate their segments",
    description="Runs on a schedule too (JIFEN_PROFILE_REFRESH_INTERVAL_S). A key limited to programs "
    "must name one of them.",
    responses=problems("program_not_found", "program_forbidden", "program_required"),
)
async def refresh_profiles(
    request: Request,
    principal: Annotated[Principal, Depends(require("ledger:admin"))],
    program: Annotated[ProgramCode | None, Query()] = None,
) -> ProfileRun:
    principal.require_job_scope(program)
    return await service.run_profiles(request.app.state.db, program)
