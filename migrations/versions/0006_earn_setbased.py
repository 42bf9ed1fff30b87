"""ledger group commit: plain earns of a batch applied with set-based statements

Revision ID: 0006_earn_setbased
Revises: 0005_batches
"""

from migrations.script_sql import run_script

revision = "0006_earn_setbased"
down_revision = "0005_batches"
branch_labels = None
depends_on = None

FUNCTIONS = r"""
-- The plain earns of a coalesced batch (points given or priced, no per-member caps, a first use of
-- their Idempotency-Key, a program the key may act on), applied with one statement per table instead
-- of one PL/pgSQL call each: accounts upserted once per member in lock order, then transactions,
-- postings, lots and idempotency records. Each request keeps its own transaction, response and
-- balance_after (a running sum over the batch's earns of that member, in batch order). Anything
-- else, and the later uses of a key repeated within the batch, is left to ledger.execute.
-- The primary key of ledger.idempotency_keys stays the last guard: a key committed by another
-- transaction after this statement's snapshot fails the whole batch, which the caller retries one
-- request at a time.
CREATE FUNCTION ledger.earn_set(p_requests jsonb)
RETURNS TABLE (i int, body jsonb, account_id bigint, program_id int, points bigint, occurred_at timestamptz,
               qualifies boolean)
LANGUAGE sql AS $$
WITH req AS (
    SELECT (x.ord - 1)::int AS i, (x.r->>'k')::bigint AS api_key, x.r->>'key' AS key,
           decode(x.r->>'h', 'hex') AS h, x.r->'a' AS a, x.r->'p' AS p
    FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS x(r, ord)
    WHERE x.r->>'op' = 'earn' AND NOT (x.r->'a' ? 'caps') AND jsonb_typeof(x.r->'a'->'points') = 'number'
),
firsts AS (
    SELECT DISTINCT ON (api_key, key) * FROM req ORDER BY api_key, key, i
),
ok AS MATERIALIZED (
    SELECT f.i, f.api_key, f.key, f.h, f.a, g AS prog, g.id AS program_id, g.code,
           (f.a->>'points')::bigint AS pts,
           coalesce((f.a->>'occurred_at')::timestamptz, now()) AS at,
           coalesce(f.a->>'kind', 'purchase') AS kind,
           ledger.new_id() AS txn_id
    FROM firsts f
    JOIN ledger.programs g ON g.code = f.a->>'program'
    WHERE (f.a->>'points')::bigint > 0
      AND (jsonb_typeof(f.p) IS DISTINCT FROM 'array'
           OR g.code IN (SELECT jsonb_array_elements_text(f.p)))
      AND NOT EXISTS (SELECT 1 FROM ledger.idempotency_keys k WHERE k.api_key_id = f.api_key AND k.key = f.key)
      AND pg_try_advisory_xact_lock(hashtextextended('idem:' || f.api_key || ':' || f.key, 0))
),
acc AS (
    INSERT INTO ledger.accounts AS a (program_id, kind, member_ref, balance, lifetime_earned)
    SELECT m.program_id, 'member', m.member_ref, m.total, m.total
    FROM (SELECT ok.program_id, ok.a->>'member_ref' AS member_ref, sum(ok.pts)::bigint AS total
          FROM ok GROUP BY 1, 2) m
    LEFT JOIN ledger.accounts e ON e.program_id = m.program_id AND e.kind = 'member' AND e.member_ref = m.member_ref
    ORDER BY e.id NULLS LAST, m.program_id, m.member_ref  -- existing members by id, like every writer
    ON CONFLICT (program_id, kind, member_ref) DO UPDATE
        SET balance = a.balance + EXCLUDED.balance, lifetime_earned = a.lifetime_earned + EXCLUDED.lifetime_earned
    RETURNING a AS account, a.id, a.program_id, a.member_ref, a.balance
),
calc AS MATERIALIZED (
    SELECT ok.*, acc.account, acc.id AS acc_id,
           (acc.balance - sum(ok.pts) OVER w_all + sum(ok.pts) OVER w_upto)::bigint AS bal_after
    FROM ok JOIN acc ON acc.program_id = ok.program_id AND acc.member_ref = ok.a->>'member_ref'
    WINDOW w_all AS (PARTITION BY acc.id),
           w_upto AS (PARTITION BY acc.id ORDER BY ok.i ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
txn AS (
    INSERT INTO ledger.transactions AS t (id, program_id, type, account_id, member_ref, points, kind, reference,
                                          metadata, merchant_id, rule_set_id, breakdown, api_key_id, occurred_at)
    SELECT c.txn_id, c.program_id, 'earn', c.acc_id, c.a->>'member_ref', c.pts, c.kind, c.a->>'reference',
           c.a->'metadata', c.a->'purchase'->>'merchant_id', (c.a->>'rule_set_id')::bigint, c.a->'breakdown',
           c.api_key, c.at
    FROM calc c ORDER BY c.i
    RETURNING t AS row, t.id
),
posted AS (
    INSERT INTO ledger.postings (txn_id, account_id, amount)
    SELECT c.txn_id, x.account_id, x.amount
    FROM calc c, LATERAL (VALUES (ledger.counter_account(c.prog, c.a->>'clearing', (c.prog).issuance_account),
                                  -c.pts),
                                 (c.acc_id, c.pts)) AS x(account_id, amount)
),
lots AS (
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at)
    SELECT c.acc_id, c.program_id, c.txn_id, lp.points, lp.points, ledger.lot_expiry(c.prog, c.at)
    FROM calc c, LATERAL (SELECT ledger.lot_points(c.bal_after, c.pts) AS points) lp
    WHERE lp.points > 0
),
result AS (
    SELECT c.i, c.api_key, c.key, c.h, c.acc_id, c.program_id, c.pts, c.at,
           c.kind = ANY ((c.prog).qualifying_kinds) AND jsonb_array_length((c.prog).tiers) > 0 AS qualifies,
           ledger.txn_json(t.row, c.code, c.account) || jsonb_build_object('balance_after', jsonb_build_object(
               'balance', c.bal_after, 'held', (c.account).held, 'available', c.bal_after - (c.account).held))
               AS body
    FROM calc c JOIN txn t ON t.id = c.txn_id
),
idem AS (
    INSERT INTO ledger.idempotency_keys (api_key_id, key, request_hash, status, body)
    SELECT r.api_key, r.key, r.h, 201, r.body FROM result r
)
SELECT r.i, r.body, r.acc_id, r.program_id, r.pts, r.at, r.qualifies FROM result r ORDER BY r.i
$$;

-- Group commit: several requests in one database transaction (one WAL flush, one round trip).
-- Plain earns go set-based (ledger.earn_set); every other request, in batch order, through
-- ledger.execute, where a refusal rolls back only its own subtransaction. Anything else (a
-- deadlock) fails the whole batch, which the caller then retries one request at a time.
-- Input: [{k, key, h (hex), op, a, p, s}, ...].
CREATE OR REPLACE FUNCTION ledger.execute_batch(p_requests jsonb)
RETURNS TABLE (i int, status int, body text, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r jsonb; res record; n int; done int[] := '{}'; prog ledger.programs; acc ledger.accounts;
    q_acc bigint[] := '{}'; q_prog int[] := '{}'; q_pts bigint[] := '{}'; q_at timestamptz[] := '{}';
BEGIN
    -- A batch with anything but plain earns takes its locks up front, in the order every writer
    -- uses: documents (holds, then transactions) by id, then member accounts by id. Without it the
    -- set-based earns lock their members before the other requests do, and a capture or reversal
    -- locks its document after members of earlier requests: orders two batches can cross (a
    -- deadlock, then a retry one request at a time).
    -- (An earn that earn_set leaves to ledger.execute counts as "anything but": priced at 0 points.)
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_requests) x(r)
               WHERE x.r->>'op' <> 'earn' OR x.r->'a' ? 'caps'
                  OR jsonb_typeof(x.r->'a'->'points') IS DISTINCT FROM 'number'
                  OR (x.r->'a'->>'points')::numeric <= 0) THEN
        PERFORM 1 FROM ledger.holds h
        WHERE h.id IN (SELECT (x.r->'a'->>'hold_id')::uuid FROM jsonb_array_elements(p_requests) x(r)
                       WHERE x.r->'a' ? 'hold_id')
        ORDER BY h.id FOR UPDATE;
        PERFORM 1 FROM ledger.transactions t
        WHERE t.id IN (SELECT (x.r->'a'->>'transaction_id')::uuid FROM jsonb_array_elements(p_requests) x(r)
                       WHERE x.r->'a' ? 'transaction_id')
        ORDER BY t.id FOR UPDATE;
        PERFORM 1 FROM ledger.accounts a
        WHERE a.id IN (
            SELECT a2.id FROM ledger.accounts a2
            JOIN ledger.programs g ON g.id = a2.program_id
            JOIN (SELECT x.r->'a'->>'program' AS code, m.ref
                  FROM jsonb_array_elements(p_requests) x(r),
                       LATERAL (VALUES (x.r->'a'->>'member_ref'), (x.r->'a'->>'from_member_ref'),
                                       (x.r->'a'->>'to_member_ref')) m(ref)
                  WHERE m.ref IS NOT NULL) w ON w.code = g.code AND a2.member_ref = w.ref
            WHERE a2.kind = 'member'
            UNION
            SELECT h.account_id FROM ledger.holds h
            WHERE h.id IN (SELECT (x.r->'a'->>'hold_id')::uuid FROM jsonb_array_elements(p_requests) x(r)
                           WHERE x.r->'a' ? 'hold_id')
            UNION
            SELECT t.account_id FROM ledger.transactions t
            WHERE t.id IN (SELECT (x.r->'a'->>'transaction_id')::uuid FROM jsonb_array_elements(p_requests) x(r)
                           WHERE x.r->'a' ? 'transaction_id'))
        ORDER BY a.id FOR UPDATE;
    END IF;
    FOR res IN SELECT * FROM ledger.earn_set(p_requests) LOOP
        i := res.i; status := 201; body := res.body::text; replayed := false;
        RETURN NEXT;
        done := done || res.i;
        IF res.qualifies THEN
            q_acc := q_acc || res.account_id; q_prog := q_prog || res.program_id;
            q_pts := q_pts || res.points; q_at := q_at || res.occurred_at;
        END IF;
    END LOOP;
    -- Tiers: one qualify per member and month of the batch's qualifying earns, after the balances.
    FOR res IN SELECT o.account_id, o.program_id, date_trunc('month', o.occurred_at AT TIME ZONE 'UTC') AS month,
                      sum(o.points)::bigint AS points, max(o.occurred_at) AS at
               FROM unnest(q_acc, q_prog, q_pts, q_at) AS o(account_id, program_id, points, occurred_at)
               GROUP BY 1, 2, 3 ORDER BY 1, 3 LOOP
        SELECT * INTO prog FROM ledger.programs WHERE id = res.program_id;
        SELECT * INTO acc FROM ledger.accounts WHERE id = res.account_id;
        PERFORM ledger.qualify(prog, acc, res.points, res.at);
    END LOOP;
    FOR r, n IN SELECT x.value, (x.ord - 1)::int FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS x(value, ord)
                WHERE NOT ((x.ord - 1)::int = ANY (done)) ORDER BY x.ord LOOP
        SELECT * INTO res FROM ledger.execute(
            (r->>'k')::bigint, r->>'key', decode(r->>'h', 'hex'), r->>'op', r->'a',
            CASE WHEN jsonb_typeof(r->'p') = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(r->'p')) END,
            ARRAY(SELECT jsonb_array_elements_text(r->'s')));
        i := n; status := res.status; body := res.body::text; replayed := res.replayed;
        RETURN NEXT;
    END LOOP;
END $$;
"""

PREVIOUS_BATCH = r"""
CREATE OR REPLACE FUNCTION ledger.execute_batch(p_requests jsonb)
RETURNS TABLE (i int, status int, body text, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE r jsonb; res record; n int := 0;
BEGIN
    FOR r IN SELECT value FROM jsonb_array_elements(p_requests) LOOP
        SELECT * INTO res FROM ledger.execute(
            (r->>'k')::bigint, r->>'key', decode(r->>'h', 'hex'), r->>'op', r->'a',
            CASE WHEN jsonb_typeof(r->'p') = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(r->'p')) END,
            ARRAY(SELECT jsonb_array_elements_text(r->'s')));
        i := n; status := res.status; body := res.body::text; replayed := res.replayed;
        RETURN NEXT;
        n := n + 1;
    END LOOP;
END $$;
DROP FUNCTION ledger.earn_set(jsonb);
"""


def upgrade() -> None:
    run_script(FUNCTIONS)


def downgrade() -> None:
    run_script(PREVIOUS_BATCH)
