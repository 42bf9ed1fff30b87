"""The expiry notice job: scheduled, or run now through POST /v1/jobs/notices."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from ledger_service.notices import repository
from services.db import Database
from services.errors import NotFound

# Lots per database transaction.
BATCH = 5_000


class NoticeRun(BaseModel):
    as_of: datetime
    lots: int
    events: int


async def run_notices(db: Database, program: str | None = None, as_of: datetime | None = None) -> NoticeRun:
    as_of = as_of or datetime.now(UTC)
    program_id = None
    if program is not None:
        async with db.driver() as conn:
            program_id = await repository.program_id(conn, program)
        if program_id is None:
            raise NotFound(f"No program with code {program}.", code="program_not_found")
    run = NoticeRun(as_of=as_of, lots=0, events=0)
    while True:
        async with db.driver() as conn:
            lots, events = await repository.send(conn, program_id, as_of, BATCH)
        run.lots += lots
        run.events += events
        if lots < BATCH:
            return run
