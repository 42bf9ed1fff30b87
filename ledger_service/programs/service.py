"""Program rules: creating, reading and changing the points currencies the ledger keeps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import RowMapping

from ledger_service.programs import repository
from ledger_service.programs.schemas import ProgramIn, ProgramList, ProgramOut, ProgramPatch
from services.auth import Principal
from services.db import Database
from services.errors import Conflict, NotFound
from services.pagination import decode_cursor, page_of


def to_out(row: RowMapping) -> ProgramOut:
    return ProgramOut.model_validate(
        {
            **row,
            "cash_value": {
                "points": row["cash_points"],
                "cash_minor": row["cash_minor"],
                "currency": row["currency"],
            },
        }
    )


async def create_program(db: Database, data: ProgramIn) -> ProgramOut:
    async with db.begin() as conn:
        try:
            row = await repository.insert_program(conn, data.model_dump(mode="json"))
        except repository.DuplicateProgram:
            raise Conflict(
                f"A program with code {data.code} already exists.", code="program_exists"
            ) from None
    return to_out(row)


async def get_program(db: Database, code: str) -> ProgramOut:
    async with db.connect() as conn:
        row = await repository.get_program(conn, code)
    if row is None:
        raise NotFound(f"No program with code {code}.", code="program_not_found")
    return to_out(row)


async def list_programs(db: Database, principal: Principal, *, limit: int, cursor: str | None) -> ProgramList:
    after = decode_cursor(cursor) or 0
    async with db.connect() as conn:
        rows = await repository.list_programs(
            conn, after=after, limit=limit + 1, codes=principal.program_list()
        )
    page, next_cursor = page_of(rows, limit, "id")
    return ProgramList(data=[to_out(r) for r in page], next_cursor=next_cursor)


async def update_program(db: Database, code: str, patch: ProgramPatch) -> ProgramOut:
    changes: dict[str, Any] = patch.model_dump(mode="json", exclude_unset=True)
    async with db.begin() as conn:
        row = await repository.update_program(conn, code, changes)
    if row is None:
        raise NotFound(f"No program with code {code}.", code="program_not_found")
    return to_out(row)


async def unknown_programs(db: Database, codes: Sequence[str]) -> list[str]:
    """The codes among `codes` that name no program (for API keys limited to programs)."""
    async with db.driver() as conn:
        known = {r["code"] for r in await conn.fetch(repository.KNOWN_CODES, list(codes))}
    return sorted(set(codes) - known)
