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


async def test_database_matches_the_sql_sources(ledger_app: Any) -> None:
    assert len(source_files()) >= 5
    async with ledger_app.state.db.driver() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SELECT pg_current_xact_id()")  # the transaction gets its id now
            before = await _objects(conn)
            await conn.execute(script())
            after = await _objects(conn)
        finally:
            await tx.rollback()
    missing = sorted(set(after) - set(before))
    assert not missing, f"defined in ledger_service/sql but not in the migrated database: {missing}"
    untouched = sorted(name for name, obj in after.items() if not obj["touched"])
    assert not untouched, f"in the database with no source in ledger_service/sql: {untouched}"
    changed = sorted(name for name in before if before[name]["definition"] != after[name]["definition"])
    assert not changed, f"the migrated database differs from ledger_service/sql for: {changed}"
    # Every file holds something the database has.
    assert len(after) >= 40


def test_every_source_file_is_replaceable() -> None:
    """A source applied twice must be a no-op: plain CREATE would fail on the second run."""
    for path in source_files():
        text = path.read_text()
        for line in text.splitlines():
            stripped = line.strip().upper()
            if stripped.startswith("CREATE ") and not stripped.startswith("CREATE TEMP"):
                assert stripped.startswith("CREATE OR REPLACE "), f"{path.name}: {line.strip()}"
