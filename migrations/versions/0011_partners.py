"""ledger: coalition partners and settlement (DESIGN §8), program time zones (§4)

- programs get `timezone` (IANA name; days, months, expiry dates, periods are computed in it);
- partners, their versioned terms per program, prepaid fundings;
- partner_programs: per partner and program, its two system accounts (`partner:{code}:issued`,
  `partner:{code}:accepted`) and the counters the prepaid and credit checks read under its row lock;
- transactions and holds name their partner; a transaction records the statement line that settled it;
- settlements and their statement lines (immutable once written);
- API keys may be bound to a partner.

Revision ID: 0011_partners
Revises: 0013_member_policies
"""

from migrations.script_sql import run_script

revision = "0011_partners"
down_revision = "0013_member_policies"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE ledger.programs ADD COLUMN timezone text NOT NULL DEFAULT 'UTC';

CREATE TABLE ledger.partners (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code ~ '^[A-Z0-9_]{2,16}$'),
    name text NOT NULL,
    roles text[] NOT NULL CHECK (cardinality(roles) > 0 AND roles <@ '{issuer,acceptor}'),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Versions of a partner's commercial terms for one program, each in force from effective_from until
-- the next one. Never updated: a change is a new version.
CREATE TABLE ledger.partner_terms (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id int NOT NULL REFERENCES ledger.partners (id),
    program_id int NOT NULL REFERENCES ledger.programs (id),
    issue_points bigint NOT NULL CHECK (issue_points > 0),
    issue_cash_minor bigint NOT NULL CHECK (issue_cash_minor >= 0),
    accept_points bigint NOT NULL CHECK (accept_points > 0),
    accept_cash_minor bigint NOT NULL CHECK (accept_cash_minor >= 0),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    period text NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    funding text NOT NULL CHECK (funding IN ('prepaid', 'postpaid')),
    credit_limit_minor bigint CHECK (credit_limit_minor >= 0),
    effective_from timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_id, program_id, effective_from)
);

CREATE TABLE ledger.partner_programs (
    partner_id int NOT NULL REFERENCES ledger.partners (id),
    program_id int NOT NULL REFERENCES ledger.programs (id),
    issued_account bigint NOT NULL,
    accepted_account bigint NOT NULL,
    funded_points bigint NOT NULL DEFAULT 0,
    issued_points bigint NOT NULL DEFAULT 0,        -- earned at the partner, less clawbacks, ever
    open_cash numeric NOT NULL DEFAULT 0,           -- cash due from it for issues not yet on a statement
    PRIMARY KEY (partner_id, program_id)
);

CREATE TABLE ledger.partner_fundings (
    id uuid PRIMARY KEY,
    partner_id int NOT NULL,
    program_id int NOT NULL,
    points bigint NOT NULL CHECK (points > 0),
    cash_minor bigint NOT NULL CHECK (cash_minor >= 0),
    currency text NOT NULL,
    reference text NOT NULL,
    api_key_id bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX partner_fundings_partner ON ledger.partner_fundings (partner_id, program_id, created_at);

ALTER TABLE ledger.accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE ledger.accounts ADD CONSTRAINT accounts_kind_check CHECK (kind IN ('member', 'issuance',
    'redemption', 'breakage', 'conversion', 'merchant', 'adjustment', 'partner_issued', 'partner_accepted'));
-- Partner accounts are named partner:{code}:issued / :accepted in member_ref (unique per program).
ALTER TABLE ledger.accounts DROP CONSTRAINT accounts_check;
ALTER TABLE ledger.accounts ADD CONSTRAINT accounts_check
    CHECK ((kind IN ('member', 'partner_issued', 'partner_accepted')) = (member_ref <> ''));

CREATE TABLE ledger.settlements (
    id uuid PRIMARY KEY,
    as_of timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger.statement_lines (
    id uuid PRIMARY KEY,
    settlement_id uuid NOT NULL REFERENCES ledger.settlements (id),
    partner_id int NOT NULL,
    program_id int NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    points_issued numeric NOT NULL,
    points_issued_reversed numeric NOT NULL,
    points_accepted numeric NOT NULL,
    points_accepted_reversed numeric NOT NULL,
    cash_due_from_partner_minor numeric NOT NULL,
    cash_due_to_partner_minor numeric NOT NULL,
    net_minor numeric NOT NULL,
    currency text NOT NULL,
    transactions bigint NOT NULL,
    cash_from_exact numeric NOT NULL,               -- the sums before rounding, for audit
    cash_to_exact numeric NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_id, program_id, period_start)
);
CREATE INDEX statement_lines_settlement ON ledger.statement_lines (settlement_id);
CREATE INDEX statement_lines_partner ON ledger.statement_lines (partner_id, period_start, id);

ALTER TABLE ledger.transactions ADD COLUMN partner_id int, ADD COLUMN statement_line_id uuid;
-- What the next settlement of a partner and program takes: its transactions on no statement yet.
CREATE INDEX transactions_partner_open ON ledger.transactions (partner_id, program_id, occurred_at)
    WHERE partner_id IS NOT NULL AND statement_line_id IS NULL;
CREATE INDEX transactions_statement_line ON ledger.transactions (statement_line_id)
    WHERE statement_line_id IS NOT NULL;
ALTER TABLE ledger.holds ADD COLUMN partner_id int;
ALTER TABLE ledger.batch_staging ADD COLUMN partner text;

ALTER TABLE auth.api_keys ADD COLUMN partner text;
"""

# Defined by the sources from 0011 on (the downgrade drops them; the earn, burn, hold and reversal
# functions keep their text naming partners until a lower revision restores its own, as 0009 does).
NEW = (
    "ledger.period_unit(text)",
    "ledger.period_start(timestamptz, text, text)",
    "ledger.period_end(timestamptz, text, text)",
    "ledger.half_up(numeric)",
    "ledger.partner_terms_at(int, int, timestamptz)",
    "ledger.partner_program(int, int)",
    "ledger.partner_refusal(text, int, text, timestamptz)",
    "ledger.partner_row(text, int, text, timestamptz, boolean)",
    "ledger.check_acting_partner(text, int)",
    "ledger.partner_earns()",
    "ledger.count_partner_earns()",
    "ledger.uncount_partner_earn(int, int, bigint, timestamptz)",
    "ledger.op_fund(jsonb, bigint, text[])",
    "ledger.partner_figures(int, int, text, text, bigint, timestamptz)",
    "ledger.settle_partner(uuid, int, int, timestamptz)",
)

DOWNGRADE = r"""
ALTER TABLE auth.api_keys DROP COLUMN partner;
ALTER TABLE ledger.batch_staging DROP COLUMN partner;
ALTER TABLE ledger.holds DROP COLUMN partner_id;
DROP INDEX ledger.transactions_statement_line;
DROP INDEX ledger.transactions_partner_open;
ALTER TABLE ledger.transactions DROP COLUMN statement_line_id, DROP COLUMN partner_id;
DROP TABLE ledger.statement_lines;
DROP TABLE ledger.settlements;
-- Points at partners go back to the program's issuance and redemption accounts (still zero-sum).
UPDATE ledger.postings po SET account_id = CASE a.kind WHEN 'partner_issued' THEN g.issuance_account
                                                       ELSE g.redemption_account END
FROM ledger.accounts a JOIN ledger.programs g ON g.id = a.program_id
WHERE a.id = po.account_id AND a.kind IN ('partner_issued', 'partner_accepted');
DELETE FROM ledger.accounts WHERE kind IN ('partner_issued', 'partner_accepted');
ALTER TABLE ledger.accounts DROP CONSTRAINT accounts_check;
ALTER TABLE ledger.accounts ADD CONSTRAINT accounts_check CHECK ((kind = 'member') = (member_ref <> ''));
ALTER TABLE ledger.accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE ledger.accounts ADD CONSTRAINT accounts_kind_check CHECK (kind IN ('member', 'issuance',
    'redemption', 'breakage', 'conversion', 'merchant', 'adjustment'));
DROP TABLE ledger.partner_fundings;
DROP TABLE ledger.partner_programs;
DROP TABLE ledger.partner_terms;
DROP TABLE ledger.partners;
ALTER TABLE ledger.programs DROP COLUMN timezone;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script("\n".join(f"DROP FUNCTION IF EXISTS {f};" for f in NEW) + DOWNGRADE)
