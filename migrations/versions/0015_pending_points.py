"""members: pending points (DESIGN §10) and returns policies per program

- programs get `pending_days` (earns stay pending this many days from occurred_at; an earning rule
  may override it) and `returns_policy` (what a clawback may take: within_balance, only_pending,
  allow_negative);
- lots get `pending_until`, accounts `pending` (the points of lots not released yet). The points
  are posted to the member account when earned (the liability exists from the earn), so postings,
  balances and lots keep DESIGN §7 as before; `available` = balance - held - pending. Release
  clears a lot's pending_until under the account lock: lazily when a debit would be refused, or
  by the background job; readers subtract lots already due, so release is on time for all;
- batch staging rows carry the pending_days their rule gave them.

Revision ID: 0015_pending_points
Revises: 0011_partners
"""

from migrations.script_sql import run_script

revision = "0015_pending_points"
down_revision = "0011_partners"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE ledger.programs
    ADD COLUMN pending_days int NOT NULL DEFAULT 0 CHECK (pending_days BETWEEN 0 AND 365),
    ADD COLUMN returns_policy text NOT NULL DEFAULT 'within_balance'
        CHECK (returns_policy IN ('within_balance', 'only_pending', 'allow_negative'));
ALTER TABLE ledger.lots ADD COLUMN pending_until timestamptz;
-- The points of the member's lots that have a pending_until (not released yet); available is
-- balance - held - pending, checked on the row under its lock like held.
ALTER TABLE ledger.accounts ADD COLUMN pending bigint NOT NULL DEFAULT 0 CHECK (pending >= 0);
-- The open lots not released yet, by member and release time: a member's lots already due (what
-- readers subtract, what a release clears) are one range of it, and the index stays as small as
-- the points pending now.
CREATE INDEX lots_pending ON ledger.lots (account_id, pending_until) INCLUDE (remaining)
    WHERE pending_until IS NOT NULL AND remaining > 0;
ALTER TABLE ledger.batch_staging ADD COLUMN pending_days int;
ALTER TABLE ledger.member_profiles ADD COLUMN pending_points numeric NOT NULL DEFAULT 0;
-- Replaced by the version taking the member's pending points (ledger_service/sql/earn.sql).
DROP FUNCTION IF EXISTS ledger.earn_json(ledger.transactions, text, bigint, bigint);
"""

# Defined by the sources from 0015 on (the downgrade drops them and restores the earn_json they
# replaced; functions that read accounts.pending keep their text until a lower revision restores
# its own).
NEW = (
    "ledger.pending_until(ledger.programs, timestamptz, integer)",
    "ledger.pending_now(bigint, bigint)",
    "ledger.due_pending(bigint)",
    "ledger.release_pending_of(bigint)",
    "ledger.release_due_pending(integer)",
    "ledger.earn_json(ledger.transactions, text, bigint, bigint, bigint)",
)

DOWNGRADE = """
CREATE FUNCTION ledger.earn_json(t ledger.transactions, p_code text, p_balance bigint, p_held bigint)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT ledger.txn_json(t, p_code, NULL::ledger.accounts) || jsonb_build_object('balance_after',
        jsonb_build_object('balance', p_balance, 'held', p_held, 'available', p_balance - p_held))
$$;
ALTER TABLE ledger.batch_staging DROP COLUMN pending_days;
ALTER TABLE ledger.member_profiles DROP COLUMN pending_points;
DROP INDEX ledger.lots_pending;
ALTER TABLE ledger.lots DROP COLUMN pending_until;
ALTER TABLE ledger.accounts DROP COLUMN pending;
ALTER TABLE ledger.programs DROP COLUMN pending_days, DROP COLUMN returns_policy;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script("\n".join(f"DROP FUNCTION IF EXISTS {f};" for f in NEW) + DOWNGRADE)
