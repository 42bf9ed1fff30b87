"""conversion schema: program settings, versioned rates, quotes, conversions (sagas) and their history,
per-member daily usage, idempotency keys

Revision ID: 0003_conversion
Revises: 0002_ledger
"""

from migrations.script_sql import run_script
from services.idempotency import IDEMPOTENCY_TABLE_DDL

revision = "0003_conversion"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE SCHEMA conversion;

-- Per-program policy kept by the conversion service (the ledger has no such flags).
CREATE TABLE conversion.program_settings (
    program text PRIMARY KEY CHECK (program ~ '^[A-Z0-9_]{2,16}$'),
    allow_derived_rates boolean NOT NULL DEFAULT false,
    derived_fee_bps int NOT NULL DEFAULT 0 CHECK (derived_fee_bps BETWEEN 0 AND 9999),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (from, to) pair: the id pages the rate lists, `versions` numbers the versions.
CREATE TABLE conversion.rate_pairs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_program text NOT NULL,
    to_program text NOT NULL,
    versions int NOT NULL DEFAULT 1,
    UNIQUE (from_program, to_program),
    CHECK (from_program <> to_program)
);

-- Rate versions: inserted, never updated. The one in force at t is the latest effective_from <= t.
CREATE TABLE conversion.rates (
    pair_id bigint NOT NULL REFERENCES conversion.rate_pairs (id),
    version int NOT NULL,
    from_points bigint NOT NULL CHECK (from_points > 0),
    to_points bigint NOT NULL CHECK (to_points > 0),
    fee_bps int NOT NULL CHECK (fee_bps BETWEEN 0 AND 9999),
    min_from_points bigint NOT NULL CHECK (min_from_points > 0),
    daily_limit_from_points bigint CHECK (daily_limit_from_points > 0),
    effective_from timestamptz NOT NULL,
    api_key_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pair_id, version)
);
CREATE INDEX rates_in_force ON conversion.rates (pair_id, effective_from DESC, version DESC);

CREATE TABLE conversion.quotes (
    id uuid PRIMARY KEY,
    from_program text NOT NULL,
    to_program text NOT NULL,
    member_ref text NOT NULL,
    from_points bigint NOT NULL CHECK (from_points > 0),
    fee_points bigint NOT NULL CHECK (fee_points >= 0),
    to_points bigint NOT NULL CHECK (to_points > 0),
    rate_source text NOT NULL CHECK (rate_source IN ('direct', 'derived')),
    rate_version int,
    rate_from_points bigint NOT NULL,
    rate_to_points bigint NOT NULL,
    fee_bps int NOT NULL,
    min_from_points bigint NOT NULL,
    daily_limit_from_points bigint,
    api_key_id bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quotes_expires ON conversion.quotes (expires_at);

-- A conversion is a saga; `state` is stored before each step. `lease_*` marks who drives it now,
-- `next_attempt_at` when recovery may retry it.
CREATE TABLE conversion.conversions (
    id uuid PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    state text NOT NULL CHECK (state IN ('created', 'debiting', 'debited', 'crediting', 'completed',
                                         'rejected', 'compensating', 'compensated', 'failed')),
    quote_id uuid UNIQUE,
    from_program text NOT NULL,
    to_program text NOT NULL,
    member_ref text NOT NULL,
    from_points bigint NOT NULL CHECK (from_points > 0),
    fee_points bigint NOT NULL CHECK (fee_points >= 0 AND fee_points < from_points),
    to_points bigint NOT NULL CHECK (to_points > 0),
    rate_source text NOT NULL CHECK (rate_source IN ('direct', 'derived')),
    rate_version int,
    rate_from_points bigint NOT NULL,
    rate_to_points bigint NOT NULL,
    fee_bps int NOT NULL,
    limit_day date,
    debit_txn_id uuid,
    credit_txn_id uuid,
    compensation_txn_id uuid,
    error_status int,
    error_code text,
    error_detail text,
    attempts int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner text,
    lease_until timestamptz,
    api_key_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((state = 'completed') = (credit_txn_id IS NOT NULL)),
    CHECK (state <> 'compensated' OR (debit_txn_id IS NOT NULL AND compensation_txn_id IS NOT NULL))
);
CREATE INDEX conversions_member ON conversion.conversions (member_ref, seq DESC);
CREATE INDEX conversions_due ON conversion.conversions (next_attempt_at)
    WHERE state NOT IN ('completed', 'rejected', 'compensated', 'failed');

CREATE TABLE conversion.conversion_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversion_id uuid NOT NULL REFERENCES conversion.conversions (id),
    event text NOT NULL,
    state text NOT NULL,
    detail jsonb,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX conversion_events_conversion ON conversion.conversion_events (conversion_id, id);

-- Points converted per member, pair and UTC day, against the rate's daily limit. Updated with a
-- conditional upsert, so concurrent conversions cannot both pass the limit.
CREATE TABLE conversion.daily_usage (
    from_program text NOT NULL,
    to_program text NOT NULL,
    member_ref text NOT NULL,
    day date NOT NULL,
    from_points bigint NOT NULL CHECK (from_points >= 0),
    PRIMARY KEY (from_program, to_program, member_ref, day)
);
"""


def upgrade() -> None:
    run_script(SCHEMA)
    run_script(IDEMPOTENCY_TABLE_DDL.format(schema="conversion"))


def downgrade() -> None:
    run_script("DROP SCHEMA conversion CASCADE")
