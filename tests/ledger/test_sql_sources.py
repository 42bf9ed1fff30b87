"""The migrated database holds exactly the ledger's SQL sources (ledger_service/sql/*.sql).

Method: inside a transaction that is rolled back, read every function and trigger of the `ledger`
schema, apply the source files again, and read them once more. A function the sources define
differently from the database shows up as a changed definition; a source not in the database as a
new function; a database function with no source as one the sources did not touch.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ledger_service.sql import script, source_files

_FUNCTIONS = """
SELECT p.oid::regprocedure::text AS name, pg_get_functiondef(p.oid) AS definition,
       p.xmin::text = pg_current_xact_id()::xid::text AS touched
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'ledger'
"""
_TRIGGERS = """
SELECT t.tgname || ' ON ' || t.tgrelid::regclass::text AS name, pg_get_triggerdef(t.oid) AS definition,
       t.xmin::text = pg_current_xact_id()::xid::text AS touched
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'ledger' AND NOT t.tgisinternal
"""


async def _objects(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    rows = [*await conn.fetch(_FUNCTIONS), *await conn.fetch(_TRIGGERS)]
    return {r["name"]: {"definition": r["definition"], "touched": r["touched"]} for r in rows}


async def _compare(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """What differs between the database and the sources, found in a transaction rolled back."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("SELECT pg_current_xact_id()")  # the transaction gets its id now
        before = await _objects(conn)
        await conn.execute(script())
        after = await _objects(conn)
    finally:
        await tx.rollback()
    return {
        "defined in ledger_service/sql but not in the database": sorted(set(after) - set(before)),
        "in the database with no source in ledger_service/sql": sorted(
            name for name, obj in after.items() if not obj["touched"]
        ),
        "different in the database and in ledger_service/sql": sorted(
            name for name in before if before[name]["definition"] != after[name]["definition"]
        ),
        "all": sorted(after),
    }


async def test_database_matches_the_sql_sources(ledger_app: Any) -> None:
    assert len(source_files()) >= 5
    async with ledger_app.state.db.driver() as conn:
        found = await _compare(conn)
    assert len(found.pop("all")) >= 40
    assert found == {k: [] for k in found}


def test_every_source_file_is_replaceable() -> None:
    """A source applied twice must be a no-op: plain CREATE would fail on the second run."""
    for path in source_files():
        text = path.read_text()
        for line in text.splitlines():
            stripped = line.strip().upper()
            if stripped.startswith("CREATE ") and not stripped.startswith("CREATE TEMP"):
                assert stripped.startswith("CREATE OR REPLACE "), f"{path.name}: {line.strip()}"


async def test_history_replays_down_and_up_again(database_url: str) -> None:
    """0009 restores the versioned migrations' text on the way down; up again gives the sources."""
    import asyncio

    from alembic import command
    from alembic.config import Config

    from services.migrate import upgrade
    from services.settings import REPO_ROOT

    plain = database_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(plain)
    name = "jifen_replay"
    await admin.execute(f"DROP DATABASE IF EXISTS {name}")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    base, _, query = database_url.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # Alembic's env.py runs its own event loop: off this test's loop.
    await asyncio.to_thread(upgrade, url)
    await asyncio.to_thread(command.downgrade, config, "0008_batch_chunk_guard")
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await conn.fetchval("SELECT to_regprocedure('ledger.apply_member_caps(ledger.accounts, bigint,"
                                   " jsonb, timestamptz, jsonb)') IS NOT NULL")  # fmt: skip
        assert await conn.fetchval("SELECT to_regprocedure('ledger.post_earns()') IS NULL")
        await asyncio.to_thread(upgrade, url)
        found = await _compare(conn)
        found.pop("all")
        assert found == {k: [] for k in found}
    finally:
        await conn.close()
