"""The Citus placement (ledger_service/placement.py) against the migrated database (issue 18).

The placement names every table and no other; what the distributed tables break of Citus's rules,
read from pg_catalog, is exactly KNOWN_GAPS (a ratchet); a new unique index or trigger on a
distributed table, or a new table, is caught (checked here in a transaction rolled back).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

import asyncpg
import pytest

from ledger_service.placement import (
    BY_TABLE,
    COLOCATE_WITH,
    DISTRIBUTION_COLUMN,
    KNOWN_GAPS,
    MEMBER_KEY_SQL,
    PLACEMENTS,
    Gap,
    Kind,
    Placement,
    Rule,
    citus_commands,
    markdown,
    member_key,
    of_kind,
)
from services.cli import main
from services.settings import REPO_ROOT as ROOT

_TABLES = """
SELECT n.nspname || '.' || c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""
_KEY_COLUMN = """
SELECT a.attnum, a.atttypid = 'int4'::regtype AND a.attnotnull AS well_typed
FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attname = $2 AND NOT a.attisdropped
"""
# Primary keys, unique and exclusion constraints, and unique indexes that back no constraint.
_UNIQUE = """
SELECT conname AS name, conkey::int[] AS cols FROM pg_constraint
WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x')
UNION ALL
SELECT (SELECT relname FROM pg_class WHERE oid = i.indexrelid), i.indkey::int[] FROM pg_index i
WHERE i.indrelid = $1::regclass AND i.indisunique
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
"""
_TRIGGERS = "SELECT tgname AS name FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal"
_FOREIGN_KEYS = """
SELECT k.conname AS name, k.conkey::int[] AS cols, k.confkey::int[] AS target_cols,
       (SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = k.conrelid) AS source,
       (SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = k.confrelid) AS target
FROM pg_constraint k WHERE k.contype = 'f'
"""


async def _key_attnum(conn: asyncpg.Connection, table: str) -> int | None:
    row = await conn.fetchrow(_KEY_COLUMN, table, DISTRIBUTION_COLUMN)
    return None if row is None else int(row["attnum"])


async def _foreign_key_gaps(conn: asyncpg.Connection, kinds: Mapping[str, Kind]) -> set[Gap]:
    """Citus accepts a foreign key from a distributed table to a reference table, or to a co-located
    distributed table on the distribution column; from a coordinator-local table to a reference or
    local one; from a reference table only to another. The rest it refuses."""
    gaps = set()
    for fk in await conn.fetch(_FOREIGN_KEYS):
        source, target = kinds.get(fk["source"]), kinds.get(fk["target"])
        if source is None or target is None:
            continue  # a table the placement misses: test_the_placement_covers_every_table says so
        if source is Kind.DISTRIBUTED and target is Kind.DISTRIBUTED:
            src_key, dst_key = await _key_attnum(conn, fk["source"]), await _key_attnum(conn, fk["target"])
            pairs = set(zip(fk["cols"], fk["target_cols"], strict=True))
            ok = src_key is not None and dst_key is not None and (src_key, dst_key) in pairs
        else:
            allowed = {
                Kind.DISTRIBUTED: {Kind.REFERENCE},
                Kind.REFERENCE: {Kind.REFERENCE},
                Kind.LOCAL: {Kind.REFERENCE, Kind.LOCAL},
            }
            ok = target in allowed[source]
        if not ok:
            gaps.add(Gap(fk["source"], Rule.FOREIGN_KEY, fk["name"]))
    return gaps


async def citus_gaps(conn: asyncpg.Connection, placements: Sequence[Placement] = PLACEMENTS) -> set[Gap]:
    """What blocks the placement on Citus, as the database stands."""
    gaps: set[Gap] = set()
    for p in placements:
        if p.kind is not Kind.DISTRIBUTED:
            continue
        row = await conn.fetchrow(_KEY_COLUMN, p.table, DISTRIBUTION_COLUMN)
        key = None if row is None else int(row["attnum"])
        if row is None:
            gaps.add(Gap(p.table, Rule.NO_KEY_COLUMN, DISTRIBUTION_COLUMN))
        elif not row["well_typed"]:
            gaps.add(Gap(p.table, Rule.KEY_COLUMN_TYPE, DISTRIBUTION_COLUMN))
        for u in await conn.fetch(_UNIQUE, p.table):
            if key is None or key not in u["cols"]:
                gaps.add(Gap(p.table, Rule.UNIQUE_WITHOUT_KEY, u["name"]))
        gaps |= {Gap(p.table, Rule.TRIGGER, t["name"]) for t in await conn.fetch(_TRIGGERS, p.table)}
    return gaps | await _foreign_key_gaps(conn, {p.table: p.kind for p in placements})


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        yield connection
    finally:
        await connection.close()


async def test_the_placement_covers_every_table(conn: asyncpg.Connection) -> None:
    tables = {r["name"] for r in await conn.fetch(_TABLES)}
    declared = [p.table for p in PLACEMENTS]
    assert len(declared) == len(set(declared)), "a table placed twice"
    assert sorted(tables - set(declared)) == [], "tables with no placement"
    assert sorted(set(declared) - tables) == [], "placements of tables that do not exist"


async def test_the_gaps_are_exactly_the_known_ones(conn: asyncpg.Connection) -> None:
    found = await citus_gaps(conn)
    assert sorted(found - KNOWN_GAPS) == [], "new Citus gaps: fix them (or, knowingly, declare them)"
    assert sorted(KNOWN_GAPS - found) == [], "gaps fixed: remove them from KNOWN_GAPS"


async def test_a_new_gap_is_caught(conn: asyncpg.Connection) -> None:
    """The ratchet has teeth: each kind of gap, on tables made for it in a transaction rolled back and
    placed beside the real ones, is found, and a table that keeps the rules adds none."""
    probes = [
        Placement("ledger.probe_good", Kind.DISTRIBUTED, "keeps every rule"),
        Placement("ledger.probe_bad", Kind.DISTRIBUTED, "breaks them"),
        Placement("ledger.probe_bare", Kind.DISTRIBUTED, "has no member key"),
        Placement("ledger.probe_config", Kind.REFERENCE, "points at a distributed table"),
    ]
    tx = conn.transaction()
    await tx.start()
    try:
        before = await citus_gaps(conn)
        await conn.execute("""
            CREATE TABLE ledger.probe_good (id bigint, member_key int NOT NULL, program_id int
                REFERENCES ledger.programs (id), PRIMARY KEY (member_key, id));
            CREATE UNIQUE INDEX probe_good_id ON ledger.probe_good (id, member_key);
            CREATE TABLE ledger.probe_bad (id bigint PRIMARY KEY, good bigint, member_key bigint NOT NULL,
                FOREIGN KEY (member_key, good) REFERENCES ledger.probe_good (id, member_key));
            CREATE UNIQUE INDEX probe_bad_good ON ledger.probe_bad (good);
            CREATE TRIGGER probe_bad_trigger BEFORE UPDATE ON ledger.probe_bad
                FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
            CREATE TABLE ledger.probe_bare (id bigint PRIMARY KEY);
            CREATE TABLE ledger.probe_config (id bigint REFERENCES ledger.probe_bare (id));
        """)
        found = await citus_gaps(conn, [*PLACEMENTS, *probes])
    finally:
        await tx.rollback()
    assert found - before == {
        Gap("ledger.probe_bad", Rule.KEY_COLUMN_TYPE, "member_key"),  # bigint: not co-locatable
        Gap("ledger.probe_bad", Rule.UNIQUE_WITHOUT_KEY, "probe_bad_pkey"),
        Gap("ledger.probe_bad", Rule.UNIQUE_WITHOUT_KEY, "probe_bad_good"),
        Gap("ledger.probe_bad", Rule.TRIGGER, "probe_bad_trigger"),
        Gap("ledger.probe_bad", Rule.FOREIGN_KEY, "probe_bad_member_key_good_fkey"),  # key to the id
        Gap("ledger.probe_bare", Rule.NO_KEY_COLUMN, "member_key"),
        Gap("ledger.probe_bare", Rule.UNIQUE_WITHOUT_KEY, "probe_bare_pkey"),
        Gap("ledger.probe_config", Rule.FOREIGN_KEY, "probe_config_id_fkey"),
    }
    assert before - found == set()


async def test_member_key_is_the_same_in_python_and_sql(conn: asyncpg.Connection) -> None:
    refs = ["", "m1", "partner:WLT:issued", "会员-007", "x" * 200]
    sql = f"SELECT r, {MEMBER_KEY_SQL.format(ref='r')} AS k FROM unnest($1::text[]) r"
    assert {r["r"]: r["k"] for r in await conn.fetch(sql, refs)} == {r: member_key(r) for r in refs}
    assert all(-(2**31) <= member_key(r) < 2**31 for r in refs)


def test_every_distributed_table_co_locates_with_accounts() -> None:
    assert BY_TABLE[COLOCATE_WITH].kind is Kind.DISTRIBUTED
    assert all(p.column == DISTRIBUTION_COLUMN for p in of_kind(Kind.DISTRIBUTED))
    assert all(p.column is None and not p.key for p in PLACEMENTS if p.kind is not Kind.DISTRIBUTED)
    assert all(p.reason for p in PLACEMENTS)


def test_the_citus_commands_place_every_table_once() -> None:
    lines = citus_commands(shard_count=64)
    assert "SET citus.shard_count = 64;" in lines
    calls = [line for line in lines if line.startswith("SELECT create_") or "add_local_table" in line]
    assert len(calls) == len(PLACEMENTS)
    first = next(i for i, line in enumerate(lines) if "create_distributed_table" in line)
    assert lines[first].startswith(f"SELECT create_distributed_table('{COLOCATE_WITH}', 'member_key'")
    assert "colocate_with => 'none'" in lines[first]
    last_reference = max(i for i, line in enumerate(lines) if "create_reference_table" in line)
    assert last_reference < first  # foreign keys to reference tables need them in place first
    assert "SELECT create_distributed_table('ledger.postings', 'member_key', colocate_with => " \
           "'ledger.accounts');" in lines  # fmt: skip


def test_jifen_placement_prints_the_table_and_the_calls(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["placement"]) == 0
    table = capsys.readouterr().out
    assert "ledger.postings" in table and "distributed" in table and "coordinator-local" in table
    assert f"{len(KNOWN_GAPS)} known gaps" in table
    assert main(["placement", "--citus", "--shards", "16"]) == 0
    assert capsys.readouterr().out.splitlines() == citus_commands(shard_count=16)


def test_docs_hold_the_generated_tables() -> None:
    text = (ROOT / "docs" / "scale-out.md").read_text()
    for table in "\n".join(markdown()).split("\n\n"):
        assert table in text, "regenerate them: jifen placement --markdown"
    assert f"**{len(KNOWN_GAPS)} known gaps**" in text
