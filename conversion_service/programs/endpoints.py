"""Routes for a program's conversion policy."""

from __future__ import annotations

from fastapi import APIRouter

from conversion_service.deps import Admin, Ctx, Reader
from conversion_service.programs import service
from conversion_service.programs.schemas import ProgramSettingsIn, ProgramSettingsOut
from services.deps import ProgramPath
from services.openapi import problems

router = APIRouter(prefix="/v1/programs", tags=["programs"])


@router.get(
    "/{code}/settings",
    summary="A program's conversion policy (derived rates allowed?)",
    responses=problems("program_not_found", "program_forbidden", "ledger_rejected", "ledger_unavailable"),
)
async def get_program_settings(code: ProgramPath, principal: Reader, ctx: Ctx) -> ProgramSettingsOut:
    principal.require_program(code)
    return await service.get_settings(ctx, code)


@router.put(
    "/{code}/settings",
    summary="Set a program's conversion policy (conversion:admin)",
    description="Whether rates from or to this program may be derived from the programs' cash values "
    "when no direct rate is published (both programs of a pair must allow it), and the fee of such "
    "rates. The program must exist in the ledger.",
    responses=problems("program_not_found", "program_forbidden", "ledger_rejected", "ledger_unavailable"),
)
async def put_program_settings(
    code: ProgramPath,
    body: ProgramSettingsIn,
    principal: Admin,
    ctx: Ctx,
) -> ProgramSettingsOut:
    principal.require_program(code)
    return await service.put_settings(ctx, code, body)
