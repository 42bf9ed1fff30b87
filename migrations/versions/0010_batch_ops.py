"""batches: a list order, file line numbers, rejections by reason

- `seq`: the order of `GET /v1/batches` (newest first) and its cursor.
- `last_line`: the file's last line number. Staged rows carry their line in the file (the CSV header
  is line 1), so the processor's cursors (`staged`, `next_line`, `reversals_after`) run up to it,
  while `rows` stays the count of data rows. Batches staged before keep `last_line = rows` (their
  lines were data-row numbers).
- an index for `/rejections?reason=` and the per-reason counts.

Revision ID: 0010_batch_ops
Revises: 0009_saga_status
"""

from migrations.script_sql import run_script

revision = "0010_batch_ops"
down_revision = "0009_saga_status"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE ledger.batches ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE ledger.batches ADD COLUMN last_line bigint NOT NULL DEFAULT 0;
UPDATE ledger.batches SET last_line = rows;
CREATE UNIQUE INDEX batches_seq ON ledger.batches (seq);
CREATE INDEX batches_key_seq ON ledger.batches (api_key_id, seq);
CREATE INDEX batch_rejections_reason ON ledger.batch_rejections (batch_id, reason, line);
"""

DOWNGRADE = """
DROP INDEX ledger.batch_rejections_reason;
ALTER TABLE ledger.batches DROP COLUMN last_line;
ALTER TABLE ledger.batches DROP COLUMN seq;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
