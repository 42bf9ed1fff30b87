"""catalog schema: rewards, stock, voucher codes, redemptions (sagas), idempotency keys

Revision ID: 0004_catalog
Revises: 0003_conversion
"""

from migrations.script_sql import run_script
from services.idempotency import IDEMPOTENCY_TABLE_DDL

revision = "0004_catalog"
down_revision = "0003_conversion"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE SCHEMA catalog;

-- A reward members can redeem points for. `stock` is what is left to redeem (NULL: unlimited);
-- `stock_total` is `stock` plus the units held by live redemptions (debiting, fulfilled, cancelling),
-- so `stock + held units = stock_total` is checkable at any quiet moment.
CREATE TABLE catalog.rewards (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku text NOT NULL UNIQUE CHECK (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    name text NOT NULL,
    description text,
    type text NOT NULL CHECK (type IN ('physical', 'voucher', 'service')),
    program text NOT NULL CHECK (program ~ '^[A-Z0-9_]{2,16}$'),
    price_points bigint NOT NULL CHECK (price_points > 0),
    cash_price_minor bigint CHECK (cash_price_minor >= 0),
    currency text CHECK (currency ~ '^[A-Z]{3}$'),
    stock bigint CHECK (stock >= 0),
    stock_total bigint,
    per_member_limit int CHECK (per_member_limit > 0),
    active_from timestamptz,
    active_to timestamptz,
    category text,
    merchant text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (active_from IS NULL OR active_to IS NULL OR active_from < active_to),
    CHECK ((cash_price_minor IS NULL) = (currency IS NULL)),
    CHECK ((stock IS NULL) = (stock_total IS NULL))
);
CREATE INDEX rewards_program ON catalog.rewards (program, id);

-- E-voucher codes. A code moves available -> reserved (claimed by a redemption that is taking the
-- points) -> issued (shown to the redeemer) -> void (its redemption was cancelled). Only a reserved
-- code goes back to available (its redemption failed before anyone saw it): a code is never given twice.
CREATE TABLE catalog.voucher_codes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reward_id bigint NOT NULL REFERENCES catalog.rewards (id),
    code text NOT NULL UNIQUE,
    status text NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'reserved', 'issued', 'void')),
    redemption_id uuid,
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    issued_at timestamptz,
    CHECK ((status = 'available') = (redemption_id IS NULL)),
    CHECK ((status IN ('issued', 'void')) = (issued_at IS NOT NULL))
);
CREATE INDEX voucher_codes_available ON catalog.voucher_codes (reward_id, id) WHERE status = 'available';
CREATE INDEX voucher_codes_redemption ON catalog.voucher_codes (redemption_id) WHERE redemption_id IS NOT NULL;

CREATE FUNCTION catalog.voucher_code_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('issued', 'void') AND NEW.status NOT IN ('issued', 'void') THEN
        RAISE EXCEPTION 'voucher code % was issued and can never be available again', OLD.id;
    END IF;
    IF OLD.redemption_id IS NOT NULL AND NEW.redemption_id IS NOT NULL
       AND OLD.redemption_id <> NEW.redemption_id THEN
        RAISE EXCEPTION 'voucher code % belongs to redemption %', OLD.id, OLD.redemption_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER voucher_codes_guard BEFORE UPDATE ON catalog.voucher_codes
FOR EACH ROW EXECUTE FUNCTION catalog.voucher_code_guard();

-- Units of a reward held by each member's live redemptions (the per-member allowance in use).
CREATE TABLE catalog.member_usage (
    reward_id bigint NOT NULL REFERENCES catalog.rewards (id),
    member_ref text NOT NULL,
    used bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (reward_id, member_ref)
);

-- A redemption is a saga. States:
--   debiting   stock, allowance and voucher codes are held; the ledger burn is being sent
--   fulfilled  the burn is posted and the codes issued (terminal unless cancelled)
--   refunding  failed after the burn may have been sent: holds released, the burn is being resolved
--              (replayed with its key) and reversed
--   failed     nothing redeemed; any points taken were refunded (terminal)
--   cancelling a cancel was accepted: the refund (ledger reversal) is being sent
--   cancelled  refunded and restocked (terminal)
CREATE TABLE catalog.redemptions (
    id uuid PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    reward_id bigint NOT NULL REFERENCES catalog.rewards (id),
    sku text NOT NULL,
    reward_type text NOT NULL,
    program text NOT NULL,
    member_ref text NOT NULL,
    quantity int NOT NULL CHECK (quantity > 0),
    points bigint NOT NULL CHECK (points > 0),
    cash_minor bigint,
    currency text,
    stock_taken int NOT NULL CHECK (stock_taken >= 0),
    status text NOT NULL CHECK (status IN ('debiting', 'fulfilled', 'refunding', 'failed',
                                           'cancelling', 'cancelled')),
    burn_txn_id uuid,
    refund_txn_id uuid,
    failure_code text,
    failure_detail text,
    api_key_id bigint NOT NULL,
    idempotency_key text NOT NULL,
    cancel_api_key_id bigint,
    cancel_idempotency_key text,
    lease_until timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    fulfilled_at timestamptz,
    finished_at timestamptz,
    UNIQUE (api_key_id, idempotency_key),
    CHECK (status NOT IN ('fulfilled', 'cancelling', 'cancelled') OR burn_txn_id IS NOT NULL),
    CHECK (status <> 'cancelled' OR refund_txn_id IS NOT NULL)
);
CREATE INDEX redemptions_member ON catalog.redemptions (member_ref, seq);
CREATE INDEX redemptions_reward ON catalog.redemptions (reward_id) WHERE status IN ('debiting', 'fulfilled', 'cancelling');
CREATE INDEX redemptions_due ON catalog.redemptions (lease_until) WHERE status IN ('debiting', 'refunding', 'cancelling');

-- The history of every redemption: one row per step, written in the step's transaction.
CREATE TABLE catalog.redemption_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    redemption_id uuid NOT NULL REFERENCES catalog.redemptions (id),
    status text NOT NULL,
    event text NOT NULL,
    detail jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX redemption_events_redemption ON catalog.redemption_events (redemption_id, id);
"""


def upgrade() -> None:
    run_script(SCHEMA + IDEMPOTENCY_TABLE_DDL.format(schema="catalog"))


def downgrade() -> None:
    run_script("DROP SCHEMA catalog CASCADE")
