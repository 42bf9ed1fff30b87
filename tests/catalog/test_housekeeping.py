"""Idempotency-Keys past their retention are purged, except those whose operation is unfinished."""

from __future__ import annotations

from services.db import Database
from services.idempotency import purge_expired_keys
from tests.catalog.helpers import new_key


async def test_purge_keeps_recent_and_pending_keys(catalog_db: Database) -> None:
    old, pending, recent = new_key(), new_key(), new_key()
    async with catalog_db.driver() as conn:
        await conn.executemany(
            "INSERT INTO catalog.idempotency_keys (api_key_id, key, request_hash, status, body, created_at)"
            " VALUES (-1, $1, '\\x00', $2, '{}', now() - make_interval(days => $3))",
            [(old, 201, 31), (pending, 0, 400), (recent, 201, 29)],
        )
    assert await purge_expired_keys(catalog_db, "catalog", 30) >= 1
    async with catalog_db.driver() as conn:
        left = await conn.fetch(
            "SELECT key FROM catalog.idempotency_keys WHERE api_key_id = -1 AND key = ANY ($1)",
            [old, pending, recent],
        )
        await conn.execute("DELETE FROM catalog.idempotency_keys WHERE api_key_id = -1")
    assert {r["key"] for r in left} == {pending, recent}
