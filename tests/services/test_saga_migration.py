"""Migration 0009_saga_status moves sagas stored before it into the shared runner's shape, and back.

A conversion and its Idempotency-Key record as the old code wrote them (`state`, a 202 record pointing
at the conversion) and redemptions whose `lease_until` was also their retry time are written into a
database of their own at the revision before, migrated up, checked, and migrated down again.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command
from alembic.config import Config

from services.migrate import upgrade
from services.settings import REPO_ROOT

BEFORE = "0009_ledger_sql_source"
NAME = "jifen_saga_migration"

_CONVERSION = """
INSERT INTO conversion.conversions (id, state, from_program, to_program, member_ref, from_points, fee_points,
    to_points, rate_source, rate_from_points, rate_to_points, fee_bps, api_key_id, lease_owner, lease_until)
VALUES ($1, $2, 'AAA', 'BBB', 'm-1', 100, 1, 19, 'direct', 5, 1, 100, 7, 'request:x', now() + interval '1 h')
"""
_RECORD = """
INSERT INTO conversion.idempotency_keys (api_key_id, key, request_hash, status, body)
VALUES (7, $1, '\\x01', $2, $3::jsonb)
"""
_REDEMPTION = """
INSERT INTO catalog.redemptions (id, reward_id, sku, reward_type, program, member_ref, quantity, points,
    stock_taken, status, api_key_id, idempotency_key, lease_until, burn_txn_id)
VALUES ($1, $2, 'SKU-1', 'physical', 'AAA', 'm-1', 1, 10, 0, $3, 7, $4, now() + interval '2 h', $5)
"""


def _url(database_url: str) -> str:
    base, _, query = database_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + NAME + (f"?{query}" if query else "")


async def test_sagas_stored_before_0009_move_up_and_down(database_url: str) -> None:
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    await admin.execute(f"DROP DATABASE IF EXISTS {NAME}")
    await admin.execute(f"CREATE DATABASE {NAME}")
    await admin.close()
    url = _url(database_url)
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    await asyncio.to_thread(command.upgrade, config, BEFORE)  # env.py runs its own event loop

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        running, done = uuid.uuid4(), uuid.uuid4()
        await conn.execute(_CONVERSION, running, "crediting")
        await conn.execute(_CONVERSION, done, "rejected")
        await conn.execute(_RECORD, "k-running", 202, f'{{"conversion_id": "{running}"}}')
        await conn.execute(_RECORD, "k-done", 202, f'{{"conversion_id": "{done}"}}')
        await conn.execute(_RECORD, "k-refused", 422, '{"code": "quote_used"}')
        reward = await conn.fetchval(
            "INSERT INTO catalog.rewards (sku, name, type, program, price_points)"
            " VALUES ('SKU-1', 'r', 'physical', 'AAA', 10) RETURNING id"
        )
        parked, fulfilled = uuid.uuid4(), uuid.uuid4()
        await conn.execute(_REDEMPTION, parked, reward, "refunding", "r-parked", None)
        await conn.execute(_REDEMPTION, fulfilled, reward, "fulfilled", "r-done", uuid.uuid4())

        await asyncio.to_thread(upgrade, url)
        rows = await conn.fetch(
            "SELECT id, status, idempotency_key FROM conversion.conversions ORDER BY idempotency_key"
        )
        assert [(r["id"], r["status"], r["idempotency_key"]) for r in rows] == [
            (done, "rejected", "k-done"),
            (running, "crediting", "k-running"),
        ]
        records = dict(await conn.fetch("SELECT key, status FROM conversion.idempotency_keys"))
        assert records == {"k-running": 0, "k-done": 0, "k-refused": 422}  # pending until answered
        moved = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, lease_until, next_attempt_at > now() + interval '1 h' AS later, attempts"
                " FROM catalog.redemptions"
            )
        }
        # a parked redemption is retried when its old `lease_until` said (and stays leased until then)
        assert moved[parked]["later"] and moved[parked]["lease_until"] is not None
        assert moved[fulfilled]["lease_until"] is None and moved[fulfilled]["attempts"] == 0

        await asyncio.to_thread(command.downgrade, config, BEFORE)
        back = dict(await conn.fetch("SELECT key, status FROM conversion.idempotency_keys"))
        assert back == {"k-running": 202, "k-done": 202, "k-refused": 422}
        body = await conn.fetchval("SELECT body::text FROM conversion.idempotency_keys WHERE key = 'k-done'")
        assert str(done) in body
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM conversion.conversions WHERE state IN ('crediting', 'rejected')"
            )
            == 2
        )
        assert (
            await conn.fetchval("SELECT count(*) FROM catalog.redemptions WHERE lease_until IS NOT NULL") == 2
        )
    finally:
        await conn.close()
        admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        await admin.execute(f"DROP DATABASE IF EXISTS {NAME}")
        await admin.close()
