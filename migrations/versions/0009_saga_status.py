"""sagas: one vocabulary and one shape for conversions and redemptions (services/saga.py runs both)

- conversion: `state` is `status` (conversions and their events), as in the catalog (DESIGN §4); a
  conversion keeps the Idempotency-Key that created it, so the saga writes the key's final answer in the
  transaction that ends it (as redemptions do); `lease_owner` is gone (a driver holds `lease_until`).
- catalog: a redemption has `attempts` and `next_attempt_at` like a conversion. `lease_until` is only the
  driver's lease now, NULL when nobody drives it; before, it was also when a parked saga was retried.
- both: the partial index of due sagas lists the unfinished statuses as the runner's query does.

Revision ID: 0009_saga_status
Revises: 0009_ledger_sql_source
"""

from migrations.script_sql import run_script

revision = "0009_saga_status"
down_revision = "0009_ledger_sql_source"
branch_labels = None
depends_on = None

CONVERSION_UNFINISHED = "('created', 'debiting', 'debited', 'crediting', 'compensating')"
CATALOG_UNFINISHED = "('debiting', 'refunding', 'cancelling')"

UPGRADE = f"""
ALTER TABLE conversion.conversions RENAME COLUMN state TO status;
ALTER TABLE conversion.conversions RENAME CONSTRAINT conversions_state_check TO conversions_status_check;
ALTER TABLE conversion.conversion_events RENAME COLUMN state TO status;
ALTER TABLE conversion.conversions DROP COLUMN lease_owner;
ALTER TABLE conversion.conversions ADD COLUMN idempotency_key text;
ALTER TABLE conversion.conversions
    ADD CONSTRAINT conversions_idempotency_key UNIQUE (api_key_id, idempotency_key);
DROP INDEX conversion.conversions_due;
CREATE INDEX conversions_due ON conversion.conversions (next_attempt_at)
    WHERE status IN {CONVERSION_UNFINISHED};

-- A key's record used to point at its conversion (202 with `conversion_id`) and every replay answered
-- from the row; now it is pending until the saga writes the final answer (a replay of a conversion
-- that ended before this migration records it then).
UPDATE conversion.conversions c SET idempotency_key = k.key
FROM conversion.idempotency_keys k
WHERE k.api_key_id = c.api_key_id AND k.status = 202 AND k.body ->> 'conversion_id' = c.id::text;
UPDATE conversion.idempotency_keys SET status = 0 WHERE status = 202 AND body ? 'conversion_id';

ALTER TABLE catalog.redemptions
    ADD COLUMN attempts int NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ALTER COLUMN lease_until DROP NOT NULL;
UPDATE catalog.redemptions SET next_attempt_at = lease_until WHERE status IN {CATALOG_UNFINISHED};
UPDATE catalog.redemptions SET lease_until = NULL WHERE status NOT IN {CATALOG_UNFINISHED};
DROP INDEX catalog.redemptions_due;
CREATE INDEX redemptions_due ON catalog.redemptions (next_attempt_at) WHERE status IN {CATALOG_UNFINISHED};
"""

DOWNGRADE = f"""
DROP INDEX catalog.redemptions_due;
UPDATE catalog.redemptions SET lease_until = greatest(lease_until, next_attempt_at)
WHERE status IN {CATALOG_UNFINISHED};
UPDATE catalog.redemptions SET lease_until = updated_at WHERE lease_until IS NULL;
ALTER TABLE catalog.redemptions
    ALTER COLUMN lease_until SET NOT NULL,
    DROP COLUMN attempts,
    DROP COLUMN next_attempt_at;
CREATE INDEX redemptions_due ON catalog.redemptions (lease_until) WHERE status IN {CATALOG_UNFINISHED};

-- Every record of a key that created a conversion points at it again (before 0009 a replay answered
-- from the row); records of refusals that created none stay as they are.
UPDATE conversion.idempotency_keys k SET status = 202, body = jsonb_build_object('conversion_id', c.id)
FROM conversion.conversions c
WHERE c.api_key_id = k.api_key_id AND c.idempotency_key = k.key;
DROP INDEX conversion.conversions_due;
ALTER TABLE conversion.conversions DROP CONSTRAINT conversions_idempotency_key;
ALTER TABLE conversion.conversions DROP COLUMN idempotency_key;
ALTER TABLE conversion.conversions ADD COLUMN lease_owner text;
ALTER TABLE conversion.conversion_events RENAME COLUMN status TO state;
ALTER TABLE conversion.conversions RENAME CONSTRAINT conversions_status_check TO conversions_state_check;
ALTER TABLE conversion.conversions RENAME COLUMN status TO state;
CREATE INDEX conversions_due ON conversion.conversions (next_attempt_at)
    WHERE state NOT IN ('completed', 'rejected', 'compensated', 'failed');
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
