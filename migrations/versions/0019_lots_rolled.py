"""ledger: a lot says whether its points were rolled over, so that they roll once wherever they go

A rolled-over lot was the only kind without a txn_id, and expiry rolled a lot only when it had one.
A transfer gives the recipient lots of its own transaction, with the expiry dates of the sender's
lots, so points rolled over at the sender could roll again at the recipient. `rolled` is set on the
lots expiry creates and carried by transfers (ledger_service/sql/expiry.sql, operations.sql).

Revision ID: 0019_lots_rolled
Revises: 0018_partner_slots
"""

from migrations.script_sql import run_script

revision = "0019_lots_rolled"
down_revision = "0018_partner_slots"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE ledger.lots ADD COLUMN rolled boolean NOT NULL DEFAULT false;
UPDATE ledger.lots SET rolled = true WHERE txn_id IS NULL;
"""

DOWNGRADE = """
ALTER TABLE ledger.lots DROP COLUMN rolled;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
