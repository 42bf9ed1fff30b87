"""batches: partitions posted in parallel (issue 17)

- batch_parts: per batch, its partitions (rows of one member are always in the same one, by
  ledger.batch_part) and each one's cursor; a worker posting a chunk of a partition holds its row,
  so the partitions of one batch are posted at once by as many workers, and no two of them lock
  the same member. The batch's `next_line` is where every partition has got to (the reverse rows'
  limit). A batch with no partitions yet gets them from the first processor that starts on it.

Revision ID: 0017_batch_parallel
Revises: 0015_pending_points
"""

from migrations.script_sql import run_script

revision = "0017_batch_parallel"
down_revision = "0015_pending_points"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE ledger.batch_parts (
    batch_id uuid NOT NULL REFERENCES ledger.batches (id) ON DELETE CASCADE,
    part int NOT NULL,
    parts int NOT NULL CHECK (parts > 0 AND part >= 0 AND part < parts),
    next_line bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, part)
);
"""

NEW = (
    "ledger.batch_part(text, integer)",
    "ledger.post_batch_lines(ledger.batches, bigint, bigint, integer, integer)",
    "ledger.batch_parts_init(uuid, integer)",
    "ledger.process_batch_part(uuid, bigint)",
)

DOWNGRADE = """
DROP TABLE ledger.batch_parts;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script("\n".join(f"DROP FUNCTION IF EXISTS {f};" for f in NEW) + DOWNGRADE)
