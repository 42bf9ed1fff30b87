"""The expiry notice job's route."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ledger_service.deps import Admin, AsOf, check_not_future
from ledger_service.notices import service
from ledger_service.notices.service import NoticeRun
from services.deps import ProgramQuery
from services.openapi import problems

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "/notices",
    summary="Send points.expiring events for lots within the programs' expiry_notices_days",
    description="Once per lot and threshold, whoever runs it and however often (it also runs on a "
    "schedule, JIFEN_NOTICE_INTERVAL_S). A key limited to programs must name one of them.",
    responses=problems("program_not_found", "program_forbidden", "program_required", "as_of_in_future"),
)
async def notices(
    request: Request,
    principal: Admin,
    as_of: AsOf = None,
    program: ProgramQuery = None,
) -> NoticeRun:
    principal.require_job_scope(program)
    check_not_future(as_of)
    return await service.run_notices(request.app.state.db, program, as_of)
