"""ledger: a per-program limit on one transaction's points; jobs for one program

- programs get `max_points_per_transaction` (default 100,000,000): an earn, burn, hold, transfer,
  adjustment or batch row above it is refused (`points_limit_exceeded`), so no single request can
  book a value that later overflows a sum;
- the expiry job and the tier review take the program to run for (NULL: every program), so a key
  limited to programs can run them for its own: their functions change signature, the old ones go.

Revision ID: 0014_input_limits
Revises: 0017_batch_parallel
"""

from migrations.script_sql import run_script

revision = "0014_input_limits"
down_revision = "0017_batch_parallel"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE ledger.programs
    ADD COLUMN max_points_per_transaction bigint NOT NULL DEFAULT 100000000
        CHECK (max_points_per_transaction > 0);
DROP FUNCTION ledger.expire_lots(timestamptz, integer, timestamptz, bigint);
DROP FUNCTION ledger.review_tiers(bigint, integer);
"""

NEW = (
    "ledger.expire_lots(timestamptz, integer, timestamptz, bigint, integer)",
    "ledger.review_tiers(bigint, integer, integer)",
)

DOWNGRADE = """
ALTER TABLE ledger.programs DROP COLUMN max_points_per_transaction;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script("\n".join(f"DROP FUNCTION IF EXISTS {f};" for f in NEW))
    run_script(DOWNGRADE)
