"""Reading and setting a program's conversion policy."""

from __future__ import annotations

from collections.abc import Sequence

from conversion_service import ledger
from conversion_service.deps import Context
from conversion_service.programs import repository
from conversion_service.programs.schemas import ProgramSettingsIn, ProgramSettingsOut


def _defaults(program: str) -> ProgramSettingsOut:
    return ProgramSettingsOut(program=program, allow_derived_rates=False, derived_fee_bps=0, updated_at=None)


async def get_settings(ctx: Context, program: str) -> ProgramSettingsOut:
    await ledger.program(ctx.ledger, program, ttl_s=ctx.settings.program_cache_s)
    return (await settings_of(ctx, [program]))[program]


async def settings_of(ctx: Context, programs: Sequence[str]) -> dict[str, ProgramSettingsOut]:
    async with ctx.db.driver() as conn:
        rows = await repository.get_many(conn, programs)
    return {
        p: ProgramSettingsOut.model_validate(dict(rows[p])) if p in rows else _defaults(p) for p in programs
    }


async def put_settings(ctx: Context, program: str, body: ProgramSettingsIn) -> ProgramSettingsOut:
    await ledger.program(ctx.ledger, program, ttl_s=ctx.settings.program_cache_s)
    async with ctx.db.driver() as conn:
        row = await repository.upsert(conn, program, body.allow_derived_rates, body.derived_fee_bps)
    return ProgramSettingsOut.model_validate(dict(row))
