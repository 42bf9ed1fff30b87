"""Routes for segments (ledger:admin: they list members)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from ledger_service.deps import Admin, wants_csv
from ledger_service.segments import service
from ledger_service.segments.schemas import (
    SegmentCode,
    SegmentIn,
    SegmentMemberPage,
    SegmentOut,
    SegmentPage,
    SegmentRefresh,
)
from services.deps import Cursor, ProgramPath
from services.openapi import problems

router = APIRouter(tags=["segments"])
Segment = Annotated[SegmentCode, Path()]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post(
    "/v1/programs/{code}/segments",
    status_code=201,
    summary="Create a segment from criteria; it is evaluated at once on the current profiles",
    responses=problems("program_not_found", "program_forbidden", "segment_exists", "invalid_criteria"),
)
async def create_segment(
    request: Request, code: ProgramPath, body: SegmentIn, principal: Admin
) -> SegmentOut:
    principal.require_program(code)
    return await service.create(request.app.state.db, code, body)


@router.get(
    "/v1/programs/{code}/segments",
    summary="A program's segments with their member counts",
    responses=problems("invalid_cursor", "program_not_found", "program_forbidden"),
)
async def list_segments(
    request: Request, code: ProgramPath, principal: Admin, limit: Limit = 100, cursor: Cursor = None
) -> SegmentPage:
    principal.require_program(code)
    return await service.list_segments(request.app.state.db, code, limit, cursor)


@router.get(
    "/v1/programs/{code}/segments/{segment}",
    summary="One segment: criteria, member_count, refreshed_at",
    responses=problems("program_not_found", "program_forbidden", "segment_not_found"),
)
async def get_segment(request: Request, code: ProgramPath, segment: Segment, principal: Admin) -> SegmentOut:
    principal.require_program(code)
    return await service.get(request.app.state.db, code, segment)


@router.get(
    "/v1/programs/{code}/segments/{segment}/members",
    response_model=SegmentMemberPage,
    summary="A segment's members, paginated; `Accept: text/csv` exports them all",
    responses={
        **problems("invalid_cursor", "program_not_found", "program_forbidden", "segment_not_found"),
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
    },
)
async def segment_members(
    request: Request,
    code: ProgramPath,
    segment: Segment,
    principal: Admin,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> SegmentMemberPage | StreamingResponse:
    principal.require_program(code)
    db = request.app.state.db
    if wants_csv(request):
        lines = await service.members_csv(db, code, segment)
        filename = f"{code}-{segment}.csv"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        return StreamingResponse(lines, media_type="text/csv", headers=headers)
    return await service.members(db, code, segment, limit, cursor)


@router.post(
    "/v1/programs/{code}/segments/{segment}/refresh",
    summary="Recompute the program's profiles, then re-evaluate this segment on them",
    responses=problems("program_not_found", "program_forbidden", "segment_not_found"),
)
async def refresh_segment(
    request: Request, code: ProgramPath, segment: Segment, principal: Admin
) -> SegmentRefresh:
    principal.require_program(code)
    return await service.refresh(request.app.state.db, code, segment)
