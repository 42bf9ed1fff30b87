"""ledger batches: a chunk is applied only at the batch's cursor, under a per-batch lock

Revision ID: 0008_batch_chunk_guard
Revises: 0007_stable_functions
"""

import importlib

from migrations.script_sql import run_script

revision = "0008_batch_chunk_guard"
down_revision = "0007_stable_functions"
branch_labels = None
depends_on = None

# A lease that runs out under a processor that is still alive (a long stall) lets a second one
# claim the batch; both then posted the same chunks. Exactly-once held (the unique index), but the
# batch's counters took each chunk twice (duplicates inflated). Now each chunk function takes a
# per-batch advisory lock (not the batch row: the upload keeps updating it while chunks post) and
# does nothing unless the batch's cursor is where the caller thinks it is; reverse rows are never
# taken past the posted earns (a stale processor's chunk end could otherwise reject a refund as
# `unknown_original` before its earn was posted).
_previous = importlib.import_module("migrations.versions.0005_batches").FUNCTIONS

_EARNS_OLD = """BEGIN
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch;
    CREATE TEMP TABLE IF NOT EXISTS be_rows"""
_EARNS_NEW = """BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('batch:' || p_batch, 0));
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch;
    IF b.next_line IS DISTINCT FROM p_from THEN  -- another processor posted this chunk already
        posted := 0; duplicates := 0; rejected := 0; points := 0;
        RETURN;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS be_rows"""
_REVERSALS_OLD = """BEGIN
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch;
    next_after := p_after; rows_done := 0; posted := 0; duplicates := 0; rejected := 0; points := 0;
"""
_REVERSALS_NEW = """BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('batch:' || p_batch, 0));
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch;
    next_after := p_after; rows_done := 0; posted := 0; duplicates := 0; rejected := 0; points := 0;
    IF b.reversals_after IS DISTINCT FROM p_after THEN  -- another processor is past this point
        next_after := b.reversals_after;
        RETURN;
    END IF;
    IF b.stage = 'earns' THEN  -- never past the posted earns: a refund needs its earn posted first
        p_until := least(p_until, b.next_line);
    END IF;
"""


def _functions(guarded: bool) -> str:
    text = _previous.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
    if guarded:
        for old, new in ((_EARNS_OLD, _EARNS_NEW), (_REVERSALS_OLD, _REVERSALS_NEW)):
            assert text.count(old) == 1, old
            text = text.replace(old, new)
    return text


def upgrade() -> None:
    run_script(_functions(guarded=True))


def downgrade() -> None:
    run_script(_functions(guarded=False))
