"""Batch jobs: expiry of lots and the tier review. Each batch is one database transaction; memory
stays bounded because the work is set-based in the database and only a cursor comes back."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from pydantic import BaseModel

from ledger_service.jobs import repository
from services.db import Database
from services.errors import NotFound

EXPIRY_BATCH = 10_000
REVIEW_BATCH = 10_000


class ExpiryRun(BaseModel):
    as_of: datetime
    batches: int
    lots: int
    expired_points: int
    rolled_over_points: int
    transactions: int
    duration_ms: int


class TierReview(BaseModel):
    reviewed: int
    changed: int
    duration_ms: int


async def _program_id(db: Database, code: str | None) -> int | None:
    if code is None:
        return None
    async with db.driver() as conn:
        found = await repository.program_id(conn, code)
    if found is None:
        raise NotFound(f"No program with code {code}.", code="program_not_found")
    return found


async def run_expiry(
    db: Database, as_of: datetime | None = None, batch: int = EXPIRY_BATCH, program: str | None = None
) -> ExpiryRun:
    """Expires every lot due at `as_of` (default: now), batch after batch, of one program or all."""
    as_of = as_of or datetime.now(UTC)
    started = time.perf_counter()
    program_id = await _program_id(db, program)
    after_at, after_id = repository.EPOCH, 0
    batches = lots = expired = rolled = txns = 0
    while True:
        async with db.driver() as conn:
            row = await repository.expire_batch(conn, as_of, batch, after_at, after_id, program_id)
        if row["lots"] == 0:
            break
        batches += 1
        lots += row["lots"]
        expired += row["expired"]
        rolled += row["rolled"]
        txns += row["transactions"]
        after_at, after_id = row["next_at"], row["next_id"]
        if row["lots"] < batch:
            break
    return ExpiryRun(
        as_of=as_of,
        batches=batches,
        lots=lots,
        expired_points=expired,
        rolled_over_points=rolled,
        transactions=txns,
        duration_ms=int((time.perf_counter() - started) * 1000),
    )


async def run_tier_review(db: Database, batch: int = REVIEW_BATCH, program: str | None = None) -> TierReview:
    """Recomputes every member's tier from the qualifying window, of one program or all; this is
    where downgrades happen."""
    started = time.perf_counter()
    program_id = await _program_id(db, program)
    after = reviewed = changed = 0
    while True:
        async with db.driver() as conn:
            row = await repository.review_batch(conn, after, batch, program_id)
        reviewed += row["reviewed"]
        changed += row["changed"]
        if row["reviewed"] < batch or row["next_after"] is None:
            break
        after = row["next_after"]
    return TierReview(
        reviewed=reviewed, changed=changed, duration_ms=int((time.perf_counter() - started) * 1000)
    )
