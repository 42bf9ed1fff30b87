"""Routes for member profiles and their refresh job."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ledger_service.deps import Admin, Reader
from ledger_service.profiles import service
from ledger_service.profiles.schemas import Profile, ProfileRun
from services.deps import MemberPath, ProgramPath, ProgramQuery
from services.openapi import problems

router = APIRouter(tags=["members"])


@router.get(
    "/v1/programs/{code}/members/{member_ref}/profile",
    summary="A member's behaviour profile and tags, computed from the ledger",
    description="Recency, frequency and points over 30 / 90 / 365 days, lifetime figures, top merchant "
    "categories and channels, expiring points and tags; recomputed for the member on each read "
    "(`high_value` as of the last program-wide refresh). No personal data: member_ref only.",
    responses=problems("program_not_found", "program_forbidden", "member_not_found"),
)
async def profile(
    request: Request,
    code: ProgramPath,
    member_ref: MemberPath,
    principal: Reader,
) -> Profile:
    principal.require_program(code)
    return await service.profile(request.app.state.db, code, member_ref)


@router.post(
    "/v1/jobs/profiles",
    tags=["jobs"],
    summary="Refresh member profiles (one program or all), then re-evaluate their segments",
    description="Runs on a schedule too (JIFEN_PROFILE_REFRESH_INTERVAL_S). A key limited to programs "
    "must name one of them.",
    responses=problems("program_not_found", "program_forbidden", "program_required"),
)
async def refresh_profiles(
    request: Request,
    principal: Admin,
    program: ProgramQuery = None,
) -> ProfileRun:
    principal.require_job_scope(program)
    return await service.run_profiles(request.app.state.db, program)
