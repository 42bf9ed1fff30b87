"""Routes for programs: parse, check scope, call the service."""

from __future__ import annotations

from fastapi import APIRouter

from ledger_service.deps import Admin, Reader
from ledger_service.programs import service
from ledger_service.programs.schemas import ProgramIn, ProgramList, ProgramOut, ProgramPatch
from services.deps import DB, Cursor, Limit, ProgramPath
from services.openapi import problems

router = APIRouter(prefix="/v1/programs", tags=["programs"])


@router.post(
    "",
    status_code=201,
    summary="Create a program (a points currency)",
    responses=problems("program_exists"),
)
async def create_program(body: ProgramIn, principal: Admin, db: DB) -> ProgramOut:
    principal.require_program(body.code)
    return await service.create_program(db, body)


@router.get("", summary="List programs", responses=problems("invalid_cursor"))
async def list_programs(principal: Reader, db: DB, limit: Limit = 50, cursor: Cursor = None) -> ProgramList:
    return await service.list_programs(db, principal, limit=limit, cursor=cursor)


@router.get(
    "/{code}",
    summary="Get a program",
    responses=problems("program_not_found", "program_forbidden"),
)
async def get_program(code: ProgramPath, principal: Reader, db: DB) -> ProgramOut:
    principal.require_program(code)
    return await service.get_program(db, code)


@router.patch(
    "/{code}",
    summary="Change a program's name, cash value, expiry, tiers or negative-balance policy",
    responses=problems("program_not_found", "program_forbidden"),
)
async def patch_program(code: ProgramPath, body: ProgramPatch, principal: Admin, db: DB) -> ProgramOut:
    principal.require_program(code)
    return await service.update_program(db, code, body)
