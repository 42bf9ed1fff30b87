"""ledger: functions and triggers from their source files; one earn for every caller

From here on the ledger's logic lives in ledger_service/sql/*.sql and is applied at head by
migrations/env.py. This migration only drops what the sources no longer define, and the functions
whose result type changed (CREATE OR REPLACE cannot change it); the sources then create them.

Revision ID: 0009_ledger_sql_source
Revises: 0008_batch_chunk_guard
"""

import importlib

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


# Defined by the sources from 0009 on (downgrade drops them).
NEW = (
    "ledger.earn_rows()",
    "ledger.stage_earns(jsonb, boolean)",
    "ledger.post_earns()",
    "ledger.cap_earns()",
    "ledger.earn_json(ledger.transactions, text, bigint, bigint)",
    "ledger.member_id(integer, text)",
    "ledger.earn_set(jsonb)",
)


def upgrade() -> None:
    run_script("\n".join(f"DROP FUNCTION {f};" for f in GONE))


def downgrade() -> None:
    # Below 0009 the definitions are the versioned migrations' own text again (0002, then 0006-0008).
    def replaceable(sql: str) -> str:
        return sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
            "CREATE TRIGGER", "CREATE OR REPLACE TRIGGER"
        )

    run_script("\n".join(f"DROP FUNCTION IF EXISTS {f};" for f in NEW))
    run_script(replaceable(importlib.import_module("migrations.versions.0002_ledger").FUNCTIONS))
    run_script(replaceable(importlib.import_module("migrations.versions.0006_earn_setbased").FUNCTIONS))
    importlib.import_module("migrations.versions.0007_stable_functions").upgrade()
    importlib.import_module("migrations.versions.0008_batch_chunk_guard").upgrade()
