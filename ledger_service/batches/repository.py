"""SQL for batches: staging by COPY, chunked set-based posting, status and rejections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from ledger_service.batches.parsing import COPY_COLUMNS

_COLUMNS = """id, seq, status, format, rows, last_line, processed, posted, duplicates, rejected,
    points_posted, stage, error, created_at, received_at, started_at, finished_at, api_key_id"""

_CREATE = "INSERT INTO ledger.batches (id, api_key_id, status, format) VALUES ($1, $2, 'receiving', $3)"
_RECEIVED = f"""UPDATE ledger.batches SET status = 'received', rows = $2, last_line = $4, sha256 = $3,
               received_at = now() WHERE id = $1 RETURNING {_COLUMNS}"""
_FAIL_UPLOAD = "UPDATE ledger.batches SET status = 'failed', error = $2, finished_at = now() WHERE id = $1"
_DROP_STAGING = "DELETE FROM ledger.batch_staging WHERE batch_id = $1"
_GET = f"SELECT {_COLUMNS} FROM ledger.batches WHERE id = $1"
_REJECTIONS = """SELECT line, external_id, reason FROM ledger.batch_rejections
                 WHERE batch_id = $1 AND line > $2 AND ($4::text IS NULL OR reason = $4)
                 ORDER BY line LIMIT $3"""
_BY_REASON = """SELECT batch_id, reason, count(*) AS n FROM ledger.batch_rejections
                WHERE batch_id = ANY ($1::uuid[]) GROUP BY batch_id, reason
                ORDER BY batch_id, n DESC, reason"""
# Newest first; a key that is not an admin sees only its own uploads.
_LIST = f"""SELECT {_COLUMNS} FROM ledger.batches
            WHERE seq < $1 AND ($2::bigint IS NULL OR api_key_id = $2) AND ($3::text IS NULL OR status = $3)
            ORDER BY seq DESC LIMIT $4"""
_IDEM_GET = """SELECT request_hash, status, body::text AS body FROM ledger.idempotency_keys
               WHERE api_key_id = $1 AND key = $2"""
_IDEM_PUT = """INSERT INTO ledger.idempotency_keys (api_key_id, key, request_hash, status, body)
               VALUES ($1, $2, $3, $4, $5::jsonb)"""
_LOCK = "SELECT pg_try_advisory_lock(hashtextextended('idem:' || $1 || ':' || $2, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('idem:' || $1 || ':' || $2, 0))"
# Rows are posted while the upload is still arriving (status receiving), up to what is staged.
_CLAIM = """
UPDATE ledger.batches SET status = CASE WHEN status = 'receiving' THEN status ELSE 'processing' END,
    started_at = coalesce(started_at, now()), lease_until = now() + interval '60 seconds'
WHERE id = (SELECT id FROM ledger.batches
            WHERE status IN ('receiving', 'received', 'processing')
              AND (status <> 'receiving' OR staged > next_line)
              AND (lease_until IS NULL OR lease_until < now())
            ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
_PROGRESS = """SELECT status, rows, last_line, staged, next_line, reversals_after, stage, posted, duplicates,
                    rejected, points_posted FROM ledger.batches WHERE id = $1"""
_RENEW = """UPDATE ledger.batches SET lease_until = now() + interval '60 seconds',
            status = CASE WHEN status = 'received' THEN 'processing' ELSE status END WHERE id = $1"""
_STAGED = "UPDATE ledger.batches SET staged = $2 WHERE id = $1"
_PARTS = "SELECT ledger.batch_parts_init($1, $2)"
_PART = "SELECT * FROM ledger.process_batch_part($1, $2)"
_REVERSALS = "SELECT * FROM ledger.process_batch_reversals($1, $2, $3, $4)"
_STAGE = "UPDATE ledger.batches SET stage = $2 WHERE id = $1"
# Only once every reverse row is done: a second processor (after a lease ran out) may still be on them.
_DONE = """UPDATE ledger.batches SET status = 'completed', stage = 'done', finished_at = now(),
           lease_until = NULL WHERE id = $1 AND stage = 'reversals' AND reversals_after >= last_line"""
_STALE_UPLOADS = """UPDATE ledger.batches SET status = 'failed', error = 'upload interrupted',
                    finished_at = now()
                    WHERE status = 'receiving' AND created_at < now() - interval '6 hours' RETURNING id"""


async def create(conn: asyncpg.Connection, batch_id: UUID, api_key_id: int, fmt: str) -> None:
    await conn.execute(_CREATE, batch_id, api_key_id, fmt)


async def _one(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.Record:
    """The row of a statement that always returns one (a function call, an UPDATE ... RETURNING)."""
    row = await conn.fetchrow(sql, *args)
    assert row is not None
    return row


async def stage(conn: asyncpg.Connection, records: Sequence[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(
        "batch_staging", schema_name="ledger", columns=list(COPY_COLUMNS), records=records
    )


async def mark_received(
    conn: asyncpg.Connection, batch_id: UUID, rows: int, last_line: int, sha256: str
) -> asyncpg.Record:
    return await _one(conn, _RECEIVED, batch_id, rows, sha256, last_line)


async def fail_upload(conn: asyncpg.Connection, batch_id: UUID, error: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM ledger.batches WHERE id = $1 FOR UPDATE", batch_id)
        await conn.execute(_FAIL_UPLOAD, batch_id, error)
        await conn.execute(_DROP_STAGING, batch_id)


async def get(conn: asyncpg.Connection, batch_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET, batch_id)


async def rejections(
    conn: asyncpg.Connection, batch_id: UUID, after: int, limit: int, reason: str | None = None
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_REJECTIONS, batch_id, after, limit, reason))


async def rejected_by_reason(conn: asyncpg.Connection, batch_ids: list[UUID]) -> dict[UUID, dict[str, int]]:
    """{batch id: {reason: rows}}, most frequent reason first."""
    out: dict[UUID, dict[str, int]] = {}
    for r in await conn.fetch(_BY_REASON, batch_ids):
        out.setdefault(r["batch_id"], {})[r["reason"]] = r["n"]
    return out


async def list_batches(
    conn: asyncpg.Connection, *, before: int, api_key_id: int | None, status: str | None, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_LIST, before, api_key_id, status, limit))


async def idempotency_get(conn: asyncpg.Connection, api_key_id: int, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_IDEM_GET, api_key_id, key)


async def idempotency_put(
    conn: asyncpg.Connection, api_key_id: int, key: str, request_hash: bytes, status: int, body: str
) -> None:
    await conn.execute(_IDEM_PUT, api_key_id, key, request_hash, status, body)


async def lock_key(conn: asyncpg.Connection, api_key_id: int, key: str) -> bool:
    return bool(await conn.fetchval(_LOCK, str(api_key_id), key))


async def unlock_key(conn: asyncpg.Connection, api_key_id: int, key: str) -> None:
    await conn.fetchval(_UNLOCK, str(api_key_id), key)


async def claim(conn: asyncpg.Connection) -> UUID | None:
    value: UUID | None = await conn.fetchval(_CLAIM)
    return value


async def progress(conn: asyncpg.Connection, batch_id: UUID) -> asyncpg.Record:
    return await _one(conn, _PROGRESS, batch_id)


async def renew(conn: asyncpg.Connection, batch_id: UUID) -> None:
    await conn.execute(_RENEW, batch_id)


async def staged(conn: asyncpg.Connection, batch_id: UUID, lines: int) -> None:
    await conn.execute(_STAGED, batch_id, lines)


async def init_parts(conn: asyncpg.Connection, batch_id: UUID, parts: int) -> int:
    """The batch's partitions, made with `parts` unless it has them already; returns their number."""
    n: int = await conn.fetchval(_PARTS, batch_id, parts)
    return n


async def process_part(conn: asyncpg.Connection, batch_id: UUID, lines: int) -> asyncpg.Record:
    """One chunk of the free partition furthest behind, in its own transaction; `part` is None when
    no partition has staged lines that another worker is not on."""
    return await _one(conn, _PART, batch_id, lines)


async def process_reversals(
    conn: asyncpg.Connection, batch_id: UUID, after: int, until: int, limit: int
) -> asyncpg.Record:
    return await _one(conn, _REVERSALS, batch_id, after, until, limit)


async def set_stage(conn: asyncpg.Connection, batch_id: UUID, stage_name: str) -> None:
    await conn.execute(_STAGE, batch_id, stage_name)


async def complete(conn: asyncpg.Connection, batch_id: UUID) -> bool:
    async with conn.transaction():
        if await conn.execute(_DONE, batch_id) != "UPDATE 1":
            return False
        await conn.execute(_DROP_STAGING, batch_id)
    return True


async def fail_stale_uploads(conn: asyncpg.Connection) -> list[UUID]:
    return [r["id"] for r in await conn.fetch(_STALE_UPLOADS)]
