"""The program report route."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from ledger_service.deps import Reader
from ledger_service.reports import service
from ledger_service.reports.service import Report
from services.deps import ProgramPath
from services.errors import Unprocessable
from services.openapi import problems
from services.validation import Timestamp

router = APIRouter(tags=["reports"])


@router.get(
    "/v1/programs/{code}/report",
    response_model_by_alias=True,
    summary="Issued, redeemed, expired, reversed, outstanding and liability for a period",
    description="Every figure is a sum over postings, for transactions created in [from, to). "
    "`outstanding` is the sum of member balances at `to`. Identity: outstanding = outstanding_at_start "
    "+ issued - redeemed - expired - reversed_earns + refunded_redemptions + adjusted.",
    responses=problems("program_not_found", "program_forbidden", "invalid_period"),
)
async def report(
    request: Request,
    code: ProgramPath,
    principal: Reader,
    start: Annotated[
        Timestamp | None, Query(alias="from", description="RFC 3339; default: the beginning")
    ] = None,
    end: Annotated[Timestamp | None, Query(alias="to", description="RFC 3339; default: now")] = None,
) -> Report:
    principal.require_program(code)
    start = start or datetime(1970, 1, 1, tzinfo=UTC)
    end = end or datetime.now(UTC)
    if start >= end:
        raise Unprocessable("from must be before to.", code="invalid_period")
    return await service.report(request.app.state.db, code, start, end)
