"""ledger batches: card-issuer accrual files, staged by COPY and posted set-based

Revision ID: 0005_batches
Revises: 0004_catalog
"""

from migrations.script_sql import run_script

revision = "0005_batches"
down_revision = "0004_catalog"
branch_labels = None
depends_on = None

SCHEMA = r"""
ALTER TABLE ledger.transactions ADD COLUMN external_id text, ADD COLUMN amount_minor bigint;
-- Exactly once per (issuing API key, external_id): a re-sent or overlapping file conflicts here.
CREATE UNIQUE INDEX transactions_external ON ledger.transactions (api_key_id, external_id)
    WHERE type = 'earn' AND external_id IS NOT NULL;

CREATE TABLE ledger.batches (
    id uuid PRIMARY KEY,
    api_key_id bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('receiving', 'received', 'processing', 'completed', 'failed')),
    format text NOT NULL CHECK (format IN ('csv', 'ndjson')),
    sha256 text,
    rows bigint NOT NULL DEFAULT 0,
    staged bigint NOT NULL DEFAULT 0,
    processed bigint NOT NULL DEFAULT 0,
    posted bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    rejected bigint NOT NULL DEFAULT 0,
    points_posted bigint NOT NULL DEFAULT 0,
    next_line bigint NOT NULL DEFAULT 0,
    reversals_after bigint NOT NULL DEFAULT 0,
    stage text NOT NULL DEFAULT 'earns' CHECK (stage IN ('earns', 'reversals', 'done')),
    error text,
    lease_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    received_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX batches_pending ON ledger.batches (created_at) WHERE status IN ('receiving', 'received', 'processing');

-- Rows as uploaded, already parsed, card numbers already tokenized, points already priced by the
-- rules (or given). `reject` is set for rows that failed parsing or validation.
CREATE TABLE ledger.batch_staging (
    batch_id uuid NOT NULL,
    line bigint NOT NULL,
    type text,
    external_id text,
    original_external_id text,
    program text,
    member_ref text,
    amount_minor bigint,
    currency text,
    merchant_id text,
    mcc text,
    channel text,
    occurred_at timestamptz,
    points bigint,
    rule_set_id bigint,
    reject text,
    PRIMARY KEY (batch_id, line)
);

CREATE TABLE ledger.batch_rejections (
    batch_id uuid NOT NULL,
    line bigint NOT NULL,
    external_id text,
    reason text NOT NULL,
    PRIMARY KEY (batch_id, line)
);
"""

FUNCTIONS = r"""
-- Posts the earn rows of lines (p_from, p_to] of a batch, set-based, in the caller's transaction.
CREATE FUNCTION ledger.process_batch_earns(p_batch uuid, p_from bigint, p_to bigint,
    OUT posted bigint, OUT duplicates bigint, OUT rejected bigint, OUT points bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE b ledger.batches; candidates bigint;
BEGIN
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch;
    CREATE TEMP TABLE IF NOT EXISTS be_rows (line bigint, external_id text, program_id int, member_ref text,
        amount_minor bigint, merchant_id text, occurred_at timestamptz, points bigint, rule_set_id bigint,
        account_id bigint) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS be_txn (id uuid, account_id bigint, program_id int, points bigint,
        occurred_at timestamptz) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS be_acc (account_id bigint, balance_before bigint, credit bigint)
        ON COMMIT DELETE ROWS;
    TRUNCATE be_rows, be_txn, be_acc;

    INSERT INTO ledger.batch_rejections (batch_id, line, external_id, reason)
    SELECT p_batch, line, external_id, reject FROM ledger.batch_staging
    WHERE batch_id = p_batch AND line > p_from AND line <= p_to AND reject IS NOT NULL
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS rejected = ROW_COUNT;

    -- The first line of each external_id in this chunk; later ones are duplicates.
    INSERT INTO be_rows (line, external_id, program_id, member_ref, amount_minor, merchant_id, occurred_at, points,
                         rule_set_id)
    SELECT DISTINCT ON (s.external_id) s.line, s.external_id, p.id, s.member_ref, s.amount_minor, s.merchant_id,
           s.occurred_at, s.points, s.rule_set_id
    FROM ledger.batch_staging s JOIN ledger.programs p ON p.code = s.program
    WHERE s.batch_id = p_batch AND s.line > p_from AND s.line <= p_to AND s.reject IS NULL AND s.type = 'earn'
    ORDER BY s.external_id, s.line;
    SELECT count(*) INTO candidates FROM ledger.batch_staging
    WHERE batch_id = p_batch AND line > p_from AND line <= p_to AND reject IS NULL AND type = 'earn';

    INSERT INTO ledger.accounts (program_id, kind, member_ref)
    SELECT DISTINCT program_id, 'member', member_ref FROM be_rows ON CONFLICT DO NOTHING;
    UPDATE be_rows r SET account_id = a.id FROM ledger.accounts a
    WHERE a.program_id = r.program_id AND a.kind = 'member' AND a.member_ref = r.member_ref;
    -- Member rows locked in id order, like every other writer.
    PERFORM 1 FROM ledger.accounts WHERE id IN (SELECT account_id FROM be_rows) ORDER BY id FOR UPDATE;

    -- Per-member caps of the rule set, day then month (UTC): capped_i = clamp of the running sum.
    WITH priced AS (
        SELECT r.line, r.account_id, r.occurred_at, r.points, rs.body->'caps' AS caps,
               date_trunc('day', r.occurred_at AT TIME ZONE 'UTC') AS d,
               date_trunc('month', r.occurred_at AT TIME ZONE 'UTC') AS m
        FROM be_rows r JOIN ledger.rule_sets rs ON rs.id = r.rule_set_id
        WHERE jsonb_typeof(rs.body->'caps'->'per_member_per_day') = 'number'
           OR jsonb_typeof(rs.body->'caps'->'per_member_per_month') = 'number'
    ), used AS (
        SELECT p.line,
               (SELECT coalesce(sum(t.points), 0) FROM ledger.transactions t
                WHERE t.account_id = p.account_id AND t.type = 'earn' AND t.rule_set_id IS NOT NULL
                  AND t.occurred_at >= p.d AT TIME ZONE 'UTC' AND t.occurred_at < (p.d + interval '1 day') AT TIME ZONE 'UTC')
                   AS used_day,
               (SELECT coalesce(sum(t.points), 0) FROM ledger.transactions t
                WHERE t.account_id = p.account_id AND t.type = 'earn' AND t.rule_set_id IS NOT NULL
                  AND t.occurred_at >= p.m AT TIME ZONE 'UTC' AND t.occurred_at < (p.m + interval '1 month') AT TIME ZONE 'UTC')
                   AS used_month
        FROM priced p
    ), day_run AS (
        SELECT p.*, u.used_day, u.used_month,
               sum(p.points) OVER (PARTITION BY p.account_id, p.d ORDER BY p.line) AS run_day
        FROM priced p JOIN used u USING (line)
    ), day_capped AS (
        SELECT dr.*,
               CASE WHEN jsonb_typeof(dr.caps->'per_member_per_day') = 'number' THEN
                   greatest(0, least((dr.caps->>'per_member_per_day')::bigint - dr.used_day, dr.run_day)
                             - least((dr.caps->>'per_member_per_day')::bigint - dr.used_day, dr.run_day - dr.points))
               ELSE dr.points END AS pts
        FROM day_run dr
    ), month_run AS (
        SELECT dc.*, sum(dc.pts) OVER (PARTITION BY dc.account_id, dc.m ORDER BY dc.line) AS run_month
        FROM day_capped dc
    ), month_capped AS (
        SELECT mr.line,
               CASE WHEN jsonb_typeof(mr.caps->'per_member_per_month') = 'number' THEN
                   greatest(0, least((mr.caps->>'per_member_per_month')::bigint - mr.used_month, mr.run_month)
                             - least((mr.caps->>'per_member_per_month')::bigint - mr.used_month, mr.run_month - mr.pts))
               ELSE mr.pts END AS pts
        FROM month_run mr
    )
    UPDATE be_rows r SET points = mc.pts FROM month_capped mc WHERE r.line = mc.line AND r.points <> mc.pts;

    INSERT INTO be_acc (account_id, balance_before, credit)
    SELECT a.id, a.balance, 0 FROM ledger.accounts a WHERE a.id IN (SELECT account_id FROM be_rows);

    WITH ins AS (
        INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, kind, reference,
                                         merchant_id, rule_set_id, api_key_id, occurred_at, external_id, amount_minor)
        SELECT ledger.new_id(), r.program_id, 'earn', r.account_id, r.member_ref, r.points, 'purchase',
               r.external_id, r.merchant_id, r.rule_set_id, b.api_key_id, r.occurred_at, r.external_id, r.amount_minor
        FROM be_rows r ORDER BY r.line
        ON CONFLICT (api_key_id, external_id) WHERE type = 'earn' AND external_id IS NOT NULL DO NOTHING
        RETURNING id, account_id, program_id, points, occurred_at
    )
    INSERT INTO be_txn SELECT * FROM ins;
    GET DIAGNOSTICS posted = ROW_COUNT;
    duplicates := candidates - posted;
    SELECT coalesce(sum(t.points), 0) INTO process_batch_earns.points FROM be_txn t;

    INSERT INTO ledger.postings (txn_id, account_id, amount)
    SELECT t.id, t.account_id, t.points FROM be_txn t WHERE t.points > 0
    UNION ALL
    SELECT t.id, p.issuance_account, -t.points FROM be_txn t JOIN ledger.programs p ON p.id = t.program_id
    WHERE t.points > 0;

    UPDATE be_acc x SET credit = s.total
    FROM (SELECT account_id, sum(points) AS total FROM be_txn GROUP BY account_id) s WHERE x.account_id = s.account_id;
    UPDATE ledger.accounts a SET balance = a.balance + x.credit, lifetime_earned = a.lifetime_earned + x.credit
    FROM be_acc x WHERE a.id = x.account_id AND x.credit > 0;

    -- A lot per earn; a member whose balance was negative first repays it, so gets one lot for the rest.
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at)
    SELECT t.account_id, t.program_id, t.id, t.points, t.points, ledger.lot_expiry(p, t.occurred_at)
    FROM be_txn t JOIN ledger.programs p ON p.id = t.program_id JOIN be_acc x ON x.account_id = t.account_id
    WHERE t.points > 0 AND x.balance_before >= 0;
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at)
    SELECT x.account_id, a.program_id, NULL, x.balance_before + x.credit, x.balance_before + x.credit,
           ledger.lot_expiry(p, now())
    FROM be_acc x JOIN ledger.accounts a ON a.id = x.account_id JOIN ledger.programs p ON p.id = a.program_id
    WHERE x.balance_before < 0 AND x.balance_before + x.credit > 0;

    -- Tiers: qualifying points per month, then upgrades of the members that crossed a threshold.
    INSERT INTO ledger.tier_buckets (account_id, month, points)
    SELECT t.account_id, date_trunc('month', t.occurred_at AT TIME ZONE 'UTC')::date, sum(t.points)
    FROM be_txn t JOIN ledger.programs p ON p.id = t.program_id
    WHERE t.points > 0 AND 'purchase' = ANY (p.qualifying_kinds) AND jsonb_array_length(p.tiers) > 0
    GROUP BY 1, 2
    ON CONFLICT (account_id, month) DO UPDATE SET points = ledger.tier_buckets.points + EXCLUDED.points;
    WITH cand AS (
        SELECT a.id, a.tier, p.tiers, ledger.qualifying_points(p, a.id) AS q
        FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
        WHERE a.id IN (SELECT account_id FROM be_txn) AND jsonb_array_length(p.tiers) > 0
    ), up AS (
        UPDATE ledger.accounts a SET tier = ledger.tier_for(c.tiers, c.q), tier_since = now()
        FROM cand c
        WHERE a.id = c.id AND ledger.tier_rank(c.tiers, ledger.tier_for(c.tiers, c.q)) > ledger.tier_rank(c.tiers, c.tier)
        RETURNING a.id, c.tier AS old_tier, a.tier AS new_tier, c.q
    )
    INSERT INTO ledger.tier_history (account_id, from_tier, to_tier, qualifying_points, reason)
    SELECT id, old_tier, new_tier, q, 'earn' FROM up;

    UPDATE ledger.batches SET posted = ledger.batches.posted + process_batch_earns.posted,
        duplicates = ledger.batches.duplicates + process_batch_earns.duplicates,
        rejected = ledger.batches.rejected + process_batch_earns.rejected,
        points_posted = points_posted + process_batch_earns.points,
        processed = processed + (SELECT count(*) FROM ledger.batch_staging
                                 WHERE batch_id = p_batch AND line > p_from AND line <= p_to AND type IS DISTINCT FROM 'reverse'),
        next_line = p_to, lease_until = now() + interval '60 seconds'
    WHERE id = p_batch;
END $$;

-- Reversal rows up to line p_until, once the earns before them are posted (while their pages are
-- still in memory): each through ledger.execute (the same write path as the API), keyed by the
-- row's external_id, so a re-sent refund replays instead of applying.
CREATE FUNCTION ledger.process_batch_reversals(p_batch uuid, p_after bigint, p_until bigint, p_limit int,
    OUT next_after bigint, OUT rows_done int, OUT posted bigint, OUT duplicates bigint, OUT rejected bigint,
    OUT points bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    b ledger.batches; r record; o ledger.transactions; res record; pts bigint; remaining bigint; reason text;
BEGIN
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch;
    next_after := p_after; rows_done := 0; posted := 0; duplicates := 0; rejected := 0; points := 0;
    FOR r IN
        SELECT * FROM ledger.batch_staging
        WHERE batch_id = p_batch AND type = 'reverse' AND reject IS NULL AND line > p_after AND line <= p_until
        ORDER BY line LIMIT p_limit
    LOOP
        next_after := r.line; rows_done := rows_done + 1; reason := NULL;
        SELECT * INTO o FROM ledger.transactions
        WHERE api_key_id = b.api_key_id AND type = 'earn' AND external_id = coalesce(r.original_external_id, r.external_id);
        IF NOT FOUND THEN
            reason := 'unknown_original';
        ELSE
            remaining := o.points - o.reversed_points;
            pts := coalesce(r.points,
                            CASE WHEN r.amount_minor IS NOT NULL AND o.amount_minor > 0
                                 THEN o.points * r.amount_minor / o.amount_minor END,
                            remaining);
            pts := least(pts, remaining);
            IF pts <= 0 THEN
                reason := 'nothing_to_reverse';
            ELSE
                -- Two uploads of one file may reach the same refund at once: wait for the other.
                FOR attempt IN 1..200 LOOP
                    SELECT * INTO res FROM ledger.execute(
                        b.api_key_id, chr(31) || 'batch-reverse:' || r.external_id,
                        sha256(convert_to(o.id::text || ':' || pts, 'UTF8')), 'reverse',
                        jsonb_build_object('transaction_id', o.id, 'points', pts,
                                           'reason', 'card refund ' || r.external_id),
                        NULL, ARRAY['ledger:admin']);
                    EXIT WHEN res.body->>'code' IS DISTINCT FROM 'idempotency_key_in_use';
                    PERFORM pg_sleep(0.05);
                END LOOP;
                IF res.status = 201 AND res.replayed THEN
                    duplicates := duplicates + 1;
                ELSIF res.status = 201 THEN
                    posted := posted + 1; points := points - pts;
                ELSE
                    reason := res.body->>'code';
                END IF;
            END IF;
        END IF;
        IF reason IS NOT NULL THEN
            INSERT INTO ledger.batch_rejections (batch_id, line, external_id, reason)
            VALUES (p_batch, r.line, r.external_id, reason) ON CONFLICT DO NOTHING;
            rejected := rejected + 1;
        END IF;
    END LOOP;
    UPDATE ledger.batches SET posted = ledger.batches.posted + process_batch_reversals.posted,
        duplicates = ledger.batches.duplicates + process_batch_reversals.duplicates,
        rejected = ledger.batches.rejected + process_batch_reversals.rejected,
        points_posted = points_posted + process_batch_reversals.points,
        processed = processed + rows_done,
        reversals_after = greatest(next_after, CASE WHEN rows_done < p_limit THEN p_until ELSE next_after END),
        lease_until = now() + interval '60 seconds'
    WHERE id = p_batch;
END $$;
"""


def upgrade() -> None:
    run_script(SCHEMA)
    run_script(FUNCTIONS)


def downgrade() -> None:
    run_script(
        "DROP FUNCTION ledger.process_batch_reversals; DROP FUNCTION ledger.process_batch_earns;"
        " DROP TABLE ledger.batch_rejections, ledger.batch_staging, ledger.batches;"
        " DROP INDEX ledger.transactions_external;"
        " ALTER TABLE ledger.transactions DROP COLUMN external_id, DROP COLUMN amount_minor;"
    )
