"""Admin routes to run the batch jobs now (they also run on a schedule inside the ledger)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ledger_service.deps import Admin, AsOf, check_not_future
from ledger_service.jobs import service
from ledger_service.jobs.service import ExpiryRun, TierReview
from services.deps import ProgramQuery
from services.openapi import problems

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "/expire",
    summary="Expire every lot due up to as_of (default now)",
    description="Unconsumed points of lots past their expiry go to the program's breakage account, or "
    "`rollover_bps` of them into a new lot for the next period. Safe to run twice or from two processes "
    "at once; a second run with the same `as_of` changes nothing. `as_of` cannot be in the future. "
    "`program` runs it for one program; a key limited to programs must name one of them.",
    responses=problems("program_not_found", "program_forbidden", "program_required", "as_of_in_future"),
)
async def expire(
    request: Request,
    principal: Admin,
    as_of: AsOf = None,
    program: ProgramQuery = None,
) -> ExpiryRun:
    principal.require_job_scope(program)
    check_not_future(as_of, ": points would expire early")
    return await service.run_expiry(request.app.state.db, as_of, program=program)


@router.post(
    "/tier-review",
    summary="Recompute every member's tier (upgrades and downgrades)",
    description="`program` runs it for one program; a key limited to programs must name one of them.",
    responses=problems("program_not_found", "program_forbidden", "program_required"),
)
async def tier_review(request: Request, principal: Admin, program: ProgramQuery = None) -> TierReview:
    principal.require_job_scope(program)
    return await service.run_tier_review(request.app.state.db, program=program)
