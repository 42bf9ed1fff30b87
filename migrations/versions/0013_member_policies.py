"""members: tier downgrade policy and expiry notice thresholds per program; the notices sent

Revision ID: 0013_member_policies
Revises: 0012_member_insights
"""

from migrations.script_sql import run_script

revision = "0013_member_policies"
down_revision = "0012_member_insights"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE ledger.programs
    ADD COLUMN tier_downgrade text NOT NULL DEFAULT 'to_qualified'
        CHECK (tier_downgrade IN ('to_qualified', 'one_down')),
    ADD COLUMN expiry_notices_days int[] NOT NULL DEFAULT '{}'
        CHECK (0 < ALL (expiry_notices_days) AND cardinality(expiry_notices_days) <= 5);

-- One row per lot and threshold: sent (the event went out) or passed (a nearer threshold's did).
CREATE TABLE ledger.expiry_notices (
    lot_id bigint NOT NULL,
    days_before int NOT NULL,
    account_id bigint NOT NULL,
    sent boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lot_id, days_before)
);
"""

NEW = (
    "ledger.send_expiry_notices(integer, timestamptz, integer)",
    "ledger.reviewed_tier(jsonb, text, text, bigint)",
    "ledger.tier_at(jsonb, integer)",
)

DOWNGRADE = """
DROP TABLE ledger.expiry_notices;
ALTER TABLE ledger.programs DROP COLUMN tier_downgrade, DROP COLUMN expiry_notices_days;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script("\n".join(f"DROP FUNCTION IF EXISTS {f};" for f in NEW))
    run_script(DOWNGRADE)
