"""The expiry notice job's route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from ledger_service.notices import service
from ledger_service.notices.service import NoticeRun
from ledger_service.schemas_common import ProgramCode
from services.auth import Principal, require
from services.errors import Unprocessable
from services.openapi import problems

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "/notices",
    response_model=NoticeRun,
    summary="Send points.expiring events for lots within the programs' expiry_notices_days",
    description="Once per lot and threshold, whoever runs it and however often (it also runs on a "
    "schedule, JIFEN_NOTICE_INTERVAL_S). A key limited to programs must name one of them.",
    responses=problems("program_not_found", "program_forbidden", "program_required", "as_of_in_future"),
)
async def notices(
    request: Request,
    principal: Annotated[Principal, Depends(require("ledger:admin"))],
    as_of: Annotated[datetime | None, Query(description="RFC 3339; default now")] = None,
    program: Annotated[ProgramCode | None, Query()] = None,
) -> NoticeRun:
    principal.require_job_scope(program)
    if as_of is not None and as_of.tzinfo is None:
        raise Unprocessable("as_of needs a time zone (RFC 3339).", code="validation_error")
    if as_of is not None and as_of > datetime.now(UTC) + timedelta(seconds=5):
        raise Unprocessable("as_of cannot be in the future.", code="as_of_in_future")
    return await service.run_notices(request.app.state.db, program, as_of)
