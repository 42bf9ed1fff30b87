"""ledger: functions and triggers from their source files; one earn for every caller

From here on the ledger's logic lives in ledger_service/sql/*.sql and is applied at head by
migrations/env.py. This migration only drops what the sources no longer define, and the functions
whose result type changed (CREATE OR REPLACE cannot change it); the sources then create them.

Revision ID: 0009_ledger_sql_source
Revises: 0008_batch_chunk_guard
"""

from migrations.script_sql import run_script

revision = "0009_ledger_sql_source"
down_revision = "0008_batch_chunk_guard"
branch_labels = None
depends_on = None

# Caps, tier upgrades and member locks of an earn are now steps of ledger.post_earns.
GONE = (
    "ledger.apply_member_caps(ledger.accounts, bigint, jsonb, timestamptz, jsonb)",
    "ledger.qualify(ledger.programs, ledger.accounts, bigint, timestamptz)",
    "ledger.lock_member(ledger.programs, text)",
    "ledger.earn_set(jsonb)",
)


def upgrade() -> None:
    run_script("\n".join(f"DROP FUNCTION {f};" for f in GONE))


def downgrade() -> None:
    # The definitions of 0002-0008 come back with their migrations' own text: replay from 0008.
    raise NotImplementedError("downgrade below 0009 by restoring a backup or re-running 0002-0008")
