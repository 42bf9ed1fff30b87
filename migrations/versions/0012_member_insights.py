"""members: profiles, segments and their members; purchase mcc and channel on transactions; feed
events that are not transactions (segment.entered, segment.left, points.expiring)

Revision ID: 0012_member_insights
Revises: 0010_batch_ops
"""

from migrations.script_sql import run_script

revision = "0012_member_insights"
down_revision = "0010_batch_ops"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE ledger.transactions ADD COLUMN mcc text, ADD COLUMN channel text;

-- Behaviour per member, recomputed set-based from postings and lots (ledger.refresh_profiles).
-- Point figures are numeric: no stored value can make a refresh fail.
CREATE TABLE ledger.member_profiles (
    account_id bigint PRIMARY KEY,
    program_id int NOT NULL,
    member_ref text NOT NULL,
    first_activity_at timestamptz,
    last_activity_at timestamptz,
    last_earn_at timestamptz,
    last_burn_at timestamptz,
    earned_points_30d numeric NOT NULL DEFAULT 0,
    earned_points_90d numeric NOT NULL DEFAULT 0,
    earned_points_365d numeric NOT NULL DEFAULT 0,
    earn_count_30d bigint NOT NULL DEFAULT 0,
    earn_count_90d bigint NOT NULL DEFAULT 0,
    earn_count_365d bigint NOT NULL DEFAULT 0,
    redeemed_points_30d numeric NOT NULL DEFAULT 0,
    redeemed_points_90d numeric NOT NULL DEFAULT 0,
    redeemed_points_365d numeric NOT NULL DEFAULT 0,
    lifetime_earned numeric NOT NULL DEFAULT 0,
    lifetime_redeemed numeric NOT NULL DEFAULT 0,
    lifetime_expired numeric NOT NULL DEFAULT 0,
    top_mcc text[] NOT NULL DEFAULT '{}',
    channels text[] NOT NULL DEFAULT '{}',
    expiring_points_30d numeric NOT NULL DEFAULT 0,
    expiring_points_90d numeric NOT NULL DEFAULT 0,
    tier text NOT NULL,
    balance bigint NOT NULL,
    tags text[] NOT NULL DEFAULT '{}',
    refreshed_at timestamptz NOT NULL
);
CREATE INDEX member_profiles_program ON ledger.member_profiles (program_id, account_id);

CREATE TABLE ledger.segments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id int NOT NULL REFERENCES ledger.programs (id),
    code text NOT NULL CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    name text NOT NULL,
    criteria jsonb NOT NULL,
    member_count bigint NOT NULL DEFAULT 0,
    refreshed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, code)
);

CREATE TABLE ledger.segment_members (
    segment_id bigint NOT NULL REFERENCES ledger.segments (id),
    account_id bigint NOT NULL,
    member_ref text NOT NULL,
    entered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment_id, account_id)
);
CREATE INDEX segment_members_account ON ledger.segment_members (account_id);

-- The feed also carries events that are not transactions: a type and a payload of their own.
ALTER TABLE ledger.outbox ALTER COLUMN txn_id DROP NOT NULL,
    ADD COLUMN type text, ADD COLUMN program_id int, ADD COLUMN payload jsonb,
    ADD CONSTRAINT outbox_event_kind CHECK ((txn_id IS NULL) = (type IS NOT NULL AND payload IS NOT NULL));
"""

# Defined by the sources from this revision on (downgrade drops them).
NEW = (
    "ledger.refresh_profiles(integer, bigint, integer, timestamptz)",
    "ledger.finish_profiles(integer, timestamptz)",
)

DOWNGRADE = """
DELETE FROM ledger.outbox WHERE txn_id IS NULL;
ALTER TABLE ledger.outbox DROP CONSTRAINT outbox_event_kind, DROP COLUMN type, DROP COLUMN program_id,
    DROP COLUMN payload, ALTER COLUMN txn_id SET NOT NULL;
DROP TABLE ledger.segment_members;
DROP TABLE ledger.segments;
DROP TABLE ledger.member_profiles;
ALTER TABLE ledger.transactions DROP COLUMN mcc, DROP COLUMN channel;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script("\n".join(f"DROP FUNCTION IF EXISTS {f};" for f in NEW))
    run_script(DOWNGRADE)
