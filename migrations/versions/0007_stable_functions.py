"""ledger: helper functions labelled STABLE, so the planner inlines them

Revision ID: 0007_stable_functions
Revises: 0006_earn_setbased
"""

from migrations.script_sql import run_script

revision = "0007_stable_functions"
down_revision = "0006_earn_setbased"
branch_labels = None
depends_on = None

# These SQL functions were labelled IMMUTABLE but call STABLE ones (to_char, jsonb_build_object,
# timestamptz + interval). PostgreSQL does not inline a function whose body is more volatile than
# its label, so each call went through the SQL-function executor: txn_json cost 13 us a row, 6.6 us
# inlined, and it is built for every ledger response. STABLE is also the true label.
FUNCTIONS = (
    "ledger.ts(timestamptz)",
    "ledger.balance_json(ledger.accounts)",
    "ledger.txn_json(ledger.transactions, text, ledger.accounts)",
    "ledger.hold_json(ledger.holds, text, ledger.accounts)",
    "ledger.lot_expiry(ledger.programs, timestamptz)",
    "ledger.next_period(ledger.programs, timestamptz)",
)


def upgrade() -> None:
    run_script("\n".join(f"ALTER FUNCTION {f} STABLE;" for f in FUNCTIONS))


def downgrade() -> None:
    run_script("\n".join(f"ALTER FUNCTION {f} IMMUTABLE;" for f in FUNCTIONS))
