"""SQL for the event feed (transactional outbox) and webhook subscriptions."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

SEQUENCE_BATCH = 10_000

_SEQUENCE = "SELECT ledger.sequence_events($1)"
_WAIT_FOR_SEQUENCER = "SELECT pg_advisory_xact_lock(hashtextextended('ledger.sequence_events', 0))"

# A feed row is a transaction (txn_id) or an event of its own (type, payload: segment.entered, ...).
# $4: only these event types (`transaction.earn`, `segment.entered`, ...), NULL for all.
_FEED = """
SELECT o.seq, o.type AS event_type, o.payload::text AS payload, t.id, t.type, p.code AS program, t.member_ref,
       t.counterparty_ref, t.points, t.kind, t.reference, t.reason, t.original_id, t.hold_id, t.merchant_id,
       t.occurred_at, t.created_at
FROM ledger.outbox o
LEFT JOIN ledger.transactions t ON t.id = o.txn_id
JOIN ledger.programs p ON p.id = coalesce(t.program_id, o.program_id)
WHERE o.seq > $1 AND ($3::text[] IS NULL OR p.code = ANY ($3))
  AND ($4::text[] IS NULL OR coalesce(o.type, 'transaction.' || t.type) = ANY ($4))
ORDER BY o.seq LIMIT $2
"""

_HOOK_COLUMNS = (
    "id, url, programs, types, active, after_seq, failures, last_error, delivered,"
    " next_attempt_at, created_at"
)
_CREATE_HOOK = f"""
INSERT INTO ledger.webhooks (id, url, secret, programs, types, api_key_id, after_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {_HOOK_COLUMNS}
"""
_LIST_HOOKS = f"SELECT {_HOOK_COLUMNS} FROM ledger.webhooks WHERE api_key_id = $1 OR $2 ORDER BY created_at"
_GET_HOOK = f"SELECT {_HOOK_COLUMNS} FROM ledger.webhooks WHERE id = $1 AND (api_key_id = $2 OR $3)"
_DEACTIVATE = f"""UPDATE ledger.webhooks SET active = false WHERE id = $1 AND (api_key_id = $2 OR $3)
                  RETURNING {_HOOK_COLUMNS}"""
_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM ledger.outbox"

# A lease: a subscription being delivered is not due for 60 s, so two processes never deliver
# the same subscription at once (events stay in order per subscriber).
_CLAIM = """
UPDATE ledger.webhooks w SET next_attempt_at = now() + interval '60 seconds'
WHERE w.id IN (SELECT id FROM ledger.webhooks WHERE active AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING w.id, w.url, w.secret, w.programs, w.types, w.after_seq, w.failures
"""
_DELIVERED = """UPDATE ledger.webhooks SET after_seq = $2, delivered = delivered + $3, failures = 0,
                last_error = NULL, next_attempt_at = now() WHERE id = $1"""
_FAILED = """UPDATE ledger.webhooks SET after_seq = $2, delivered = delivered + $3, failures = failures + 1,
             last_error = $4, next_attempt_at = now() + make_interval(secs => $5) WHERE id = $1"""


async def sequence(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval(_SEQUENCE, SEQUENCE_BATCH)
    return n


async def sequence_waiting(conn: asyncpg.Connection) -> int:
    """Like `sequence`, but waits for a sequencer that is running (the background one) instead of
    leaving to it: a reader then sees every event committed before it asked."""
    async with conn.transaction():
        await conn.execute(_WAIT_FOR_SEQUENCER)
        n: int = await conn.fetchval(_SEQUENCE, SEQUENCE_BATCH)
    return n


async def feed(
    conn: asyncpg.Connection,
    after: int,
    limit: int,
    programs: list[str] | None,
    types: list[str] | None = None,
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_FEED, after, limit, programs, types))


async def last_seq(conn: asyncpg.Connection) -> int:
    value: int = await conn.fetchval(_LAST_SEQ)
    return value


async def create_hook(conn: asyncpg.Connection, *args: Any) -> asyncpg.Record:
    row = await conn.fetchrow(_CREATE_HOOK, *args)
    assert row is not None
    return row


async def list_hooks(conn: asyncpg.Connection, api_key_id: int, see_all: bool) -> list[asyncpg.Record]:
    return list(await conn.fetch(_LIST_HOOKS, api_key_id, see_all))


async def get_hook(
    conn: asyncpg.Connection, hook_id: UUID, api_key_id: int, see_all: bool
) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET_HOOK, hook_id, api_key_id, see_all)


async def deactivate_hook(
    conn: asyncpg.Connection, hook_id: UUID, api_key_id: int, see_all: bool
) -> asyncpg.Record | None:
    return await conn.fetchrow(_DEACTIVATE, hook_id, api_key_id, see_all)


async def claim_due_hooks(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(_CLAIM, limit))


async def mark_delivered(conn: asyncpg.Connection, hook_id: UUID, after_seq: int, count: int) -> None:
    await conn.execute(_DELIVERED, hook_id, after_seq, count)


async def mark_failed(
    conn: asyncpg.Connection, hook_id: UUID, after_seq: int, count: int, error: str, retry_in_s: float
) -> None:
    await conn.execute(_FAILED, hook_id, after_seq, count, error[:500], retry_in_s)
