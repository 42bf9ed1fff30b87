"""Refreshing member profiles (and then the program's segments), and reading one profile."""

from __future__ import annotations

from datetime import UTC, datetime

from ledger_service.profiles import repository
from ledger_service.profiles.schemas import Profile, ProfileRun
from ledger_service.segments import service as segments
from services.db import Database
from services.errors import NotFound

# Members per transaction of a refresh: bounds its memory and how long it holds anything.
CHUNK = 5_000


async def refresh_program(db: Database, program_id: int, now: datetime, chunk: int = CHUNK) -> int:
    """Every member's profile of one program, chunk by chunk, then the program-wide tags. One process
    at a time per program (a session advisory lock): a second one waits, then finds fresh figures."""
    after, members = 0, 0
    async with db.driver() as guard:
        await repository.lock_program(guard, program_id)
        try:
            while True:
                async with db.driver() as conn, conn.transaction():
                    last, n = await repository.refresh(conn, program_id, after, chunk, now)
                if last is None:
                    break
                after, members = last, members + n
            await repository.finish(guard, program_id, now)
        finally:
            await repository.unlock_program(guard, program_id)
    return members


async def run_profiles(db: Database, program: str | None = None) -> ProfileRun:
    """The scheduled job (and POST /v1/jobs/profiles): profiles of every program (or one), then
    each of its segments re-evaluated on them."""
    now = datetime.now(UTC)
    async with db.driver() as conn:
        programs = await repository.programs(conn, program)
    if program is not None and not programs:
        raise NotFound(f"No program with code {program}.", code="program_not_found")
    run = ProfileRun(programs=len(programs), members=0, segments=0, entered=0, left=0)
    for row in programs:
        run.members += await refresh_program(db, row["id"], now)
        for result in await segments.evaluate_program(db, row["id"], now):
            run.segments += 1
            run.entered += result.entered
            run.left += result.left
    return run


async def profile(db: Database, program: str, member_ref: str) -> Profile:
    """One member's profile, recomputed now (high_value as of the last program-wide refresh)."""
    now = datetime.now(UTC)
    async with db.driver() as conn:
        member = await repository.member(conn, program, member_ref)
        if member is None:
            raise NotFound(f"No member {member_ref} in program {program}.", code="member_not_found")
        async with conn.transaction():
            await repository.refresh(conn, member["program_id"], member["id"] - 1, 1, now)
        row = await repository.profile(conn, member["id"])
    assert row is not None
    return Profile.model_validate({**dict(row), "program": program})
