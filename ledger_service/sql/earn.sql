-- The one earn. Every credit of a purchase or of given points, from any caller, is a row of the
-- temp table earn_in, posted by ledger.post_earns: a single API earn (ledger.op_earn, one row), the
-- earns of a coalesced batch (ledger.earn_set, up to 48 rows) and a chunk of a card-issuer file
-- (ledger.process_batch_earns, up to 20,000 rows). The callers differ only in how they fill the
-- table and what they do with the result (an idempotency record and a response per request, or a
-- batch's counters). `i` orders the rows: the request's place in its batch, or the file line.
CREATE OR REPLACE FUNCTION ledger.earn_rows() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- The session setting jifen.earn_in names the shape this session's table has; a connection
    -- opened before a migration changed the shape (or a new one) makes it again. Bump the number
    -- with every change of the columns below. (A setting, not a catalog lookup: this runs for every
    -- coalesced batch; like the table, it is undone when the transaction that set it rolls back.)
    IF current_setting('jifen.earn_in', true) IS DISTINCT FROM '5' THEN
        DROP TABLE IF EXISTS pg_temp.earn_in;
        PERFORM set_config('jifen.earn_in', '5', false);
        CREATE TEMP TABLE earn_in (
            i bigint NOT NULL,
            program_id int NOT NULL,
            member_ref text NOT NULL,
            points bigint NOT NULL,        -- as asked or priced; after post_earns, after the member caps
            kind text NOT NULL,
            clearing text,                 -- the other side: NULL for issuance, or conversion / merchant
            reference text,
            metadata jsonb,
            merchant_id text,
            mcc text,                      -- the purchase's, kept for member profiles
            channel text,
            rule_set_id bigint,
            breakdown jsonb,
            caps jsonb,                    -- per-member caps of the rule set that priced it
            api_key_id bigint,
            occurred_at timestamptz NOT NULL,
            external_id text,              -- batch rows: exactly once per (api_key_id, external_id)
            amount_minor bigint,
            idem_key text,                 -- API rows: their Idempotency-Key and request fingerprint
            request_hash bytea,
            txn_id uuid NOT NULL DEFAULT ledger.new_id(),
            txn ledger.transactions,       -- the row posted (NULL: a duplicate)
            account_id bigint,
            posted boolean NOT NULL DEFAULT false,
            balance_after bigint,
            held bigint,
            partner_id int,                -- the issuer partner funding it (ledger.partner_earns)
            partner_account bigint,        -- its partner:{code}:issued account, the other side
            cash numeric,                  -- what the partner pays for it, exact: points at the issue price
            issue_cash_minor bigint,       -- the issue price in force at occurred_at: issue_cash_minor fen
            issue_points bigint,           -- for issue_points points
            partner_checked boolean,       -- the partner is prepaid or has a credit limit (a check under its lock)
            partner_terms_from timestamptz, -- effective_from of the partner's terms that priced it
            coalesced boolean,             -- staged from a coalesced batch (ledger.earn_set)
            refused text,                  -- a partner check's code: not posted
            room_points numeric,           -- the partner's funds or credit left before this call
            room_cash numeric,
            pending_days int,              -- the matched rule's (NULL: the program's pending_days)
            pending_until timestamptz,     -- when the row's lot is released (NULL: spendable now)
            pending_after bigint           -- the member's pending points after the row
        ) ON COMMIT PRESERVE ROWS;
    -- Emptied here rather than at commit: ON COMMIT DELETE ROWS truncates, at every commit of a
    -- transaction that touched any temp table, every such table of the session (a file truncation
    -- each, toast and index included), which cost the coalesced earn more than its own SQL. The
    -- rows deleted here leave dead line pointers no vacuum reclaims in a temp table, so once the
    -- table has grown past 1 MB (a card-issuer chunk, or some thousands of batches) it is
    -- truncated instead, which gives it a new, empty file.
    ELSIF pg_relation_size('pg_temp.earn_in') > 1048576 THEN
        TRUNCATE earn_in;
    ELSE
        DELETE FROM earn_in;
    END IF;
END $$;

-- A member's account id, NULL if new. A scalar lookup, not a join: earn_in has no statistics,
-- and a join planned on them can scan every account.
CREATE OR REPLACE FUNCTION ledger.member_id(p_program int, p_member text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT id FROM ledger.accounts WHERE program_id = p_program AND kind = 'member' AND member_ref = p_member
$$;

-- API earn requests ([{k, key, h, op, a, p}, ...], `a` the earn's arguments) as rows of earn_in, `i`
-- their place in the array.
-- With p_checked false (a coalesced batch), only the requests that are safe to apply set-based are
-- taken: the first use of their key in the batch and in the database, on a program the key may act
-- on, whose key's advisory lock this transaction gets. The others are left to ledger.execute,
-- which answers them one by one (replay, key reuse or in use, unknown or forbidden program, points
-- above the program's max_points_per_transaction, a partner that is unknown, suspended, no issuer or
-- without terms). A partner row is priced here: its cash at the issue price in force at its
-- occurred_at, and whether those terms check it (prepaid, or a credit limit).
-- An earn priced for each member it could be (ledger_service.rules.engine.price_variants: no
-- `points`, but `conditions`, its rules that name tiers or segments, and `variants`, the price for
-- each set of conditions that hold, indexed by a bit per condition, whose breakdowns add to
-- `shared`) becomes its member's earn here, in the earn's own statement: the member's tier and
-- segments are read with its account, and the breakdown gets that tier and the segments of its
-- rules the member is in (sorted by code point, as Python sorts them). A member not enrolled yet is
-- basic and in no segment.
CREATE OR REPLACE FUNCTION ledger.stage_earns(p_requests jsonb, p_checked boolean) RETURNS void
LANGUAGE sql AS $$
    WITH f AS MATERIALIZED (
        -- The first use of each key in the batch, then its program (a later use is never taken
        -- instead), and its points, breakdown and pending days: the request's, or its member's variant.
        SELECT u.*, g.id AS program_id, g.code, g.max_points_per_transaction,
               coalesce((u.a->>'points')::numeric, (w.v->>'points')::numeric) AS points,
               coalesce(u.a->'breakdown', (u.a->'shared') || (w.v->'breakdown') || jsonb_build_object('tier', w.tier, 'matched_segments',
                   coalesce((SELECT jsonb_agg(x ORDER BY x COLLATE "C") FROM jsonb_array_elements_text(w.v->'segments') x
                             WHERE x = ANY (w.segs)), '[]'))) AS breakdown,
               coalesce((u.a->>'pending_days')::int, (w.v->'breakdown'->>'pending_days')::int) AS pending_days,
               w.account_id AS variant_account
        FROM (SELECT DISTINCT ON (r.api_key, r.key) r.*, coalesce((r.a->>'occurred_at')::timestamptz, now()) AS occ,
                     r.a->>'partner' AS partner
              FROM (SELECT x.ord - 1 AS i, (x.r->>'k')::bigint AS api_key, x.r->>'key' AS key,
                           decode(x.r->>'h', 'hex') AS h, x.r->'a' AS a, x.r->'p' AS p
                    FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS x(r, ord)
                    WHERE x.r->>'op' = 'earn'
                      AND (jsonb_typeof(x.r->'a'->'points') = 'number' OR x.r->'a' ? 'variants')) r
              ORDER BY r.api_key, r.key, r.i) u
        JOIN ledger.programs g ON g.code = u.a->>'program'
        LEFT JOIN LATERAL (  -- the variant of this member: a bit per condition that holds
            SELECT m.account_id, m.tier, m.segs, u.a->'variants'->(
                       SELECT coalesce(bit_or(1 << (c.k - 1)::int), 0)
                       FROM jsonb_array_elements(u.a->'conditions') WITH ORDINALITY c(c, k)
                       WHERE (NOT c.c ? 'tiers' OR c.c->'tiers' ? m.tier)
                         AND (NOT c.c ? 'segments' OR c.c->'segments' ?| m.segs)) AS v
            FROM (SELECT max(a.id) AS account_id, coalesce(max(a.tier), 'basic') AS tier,
                         -- Of the segments its conditions name, those the member is in: a probe of
                         -- segment_members' key each, however many segments the member is in.
                         ARRAY(SELECT s.code FROM ledger.segments s
                               WHERE s.program_id = g.id
                                 AND s.code IN (SELECT jsonb_array_elements_text(c->'segments')
                                                FROM jsonb_array_elements(u.a->'conditions') c)
                                 AND EXISTS (SELECT 1 FROM ledger.segment_members sm
                                             WHERE sm.segment_id = s.id AND sm.account_id = max(a.id))) AS segs
                  FROM ledger.accounts a
                  WHERE a.program_id = g.id AND a.kind = 'member' AND a.member_ref = u.a->>'member_ref') m
            WHERE u.a ? 'variants'
            OFFSET 0  -- kept a subquery: its test gates it, instead of filtering after the join
        ) w ON true
    ), pp AS MATERIALIZED (
        -- One partner lookup per partner, program and time (a batch's earns share now()), none
        -- for the rows without a partner (MATERIALIZED: else the call moves up to every joined row),
        -- with the terms in force that price its rows and say whether they are checked.
        SELECT q.partner, q.program_id, q.occ, (q.r).partner_id, (q.r).issued_account, t.issue_cash_minor,
               t.issue_points, t.effective_from, (t.funding = 'prepaid' OR t.credit_limit_minor IS NOT NULL) AS checked
        FROM (SELECT d.partner, d.program_id, d.occ,
                     ledger.partner_row(d.partner, d.program_id, 'issuer', d.occ, p_checked) AS r
              FROM (SELECT DISTINCT f.partner, f.program_id, f.occ FROM f WHERE f.partner IS NOT NULL) d
              OFFSET 0) q
        LEFT JOIN LATERAL ledger.partner_terms_at((q.r).partner_id, q.program_id, q.occ) t ON true
    )
    INSERT INTO earn_in (i, program_id, account_id, member_ref, points, kind, clearing, reference, metadata,
                         merchant_id, mcc, channel, rule_set_id, breakdown, caps, api_key_id, occurred_at,
                         idem_key, request_hash, partner_id, partner_account, cash, issue_cash_minor, issue_points,
                         partner_checked, partner_terms_from, pending_days, coalesced)
    SELECT f.i, f.program_id,
           -- ledger.member_id's lookup written out: a subquery costs a third of a function call (a
           -- variant earn's member was found already).
           coalesce(f.variant_account, (SELECT m.id FROM ledger.accounts m
            WHERE m.program_id = f.program_id AND m.kind = 'member' AND m.member_ref = f.a->>'member_ref')),
           f.a->>'member_ref', f.points::bigint, coalesce(f.a->>'kind', 'purchase'),
           f.a->>'clearing', f.a->>'reference', f.a->'metadata', f.a->'purchase'->>'merchant_id',
           f.a->'purchase'->>'mcc', f.a->'purchase'->>'channel',
           (f.a->>'rule_set_id')::bigint, f.breakdown, f.a->'caps', f.api_key,
           f.occ, f.key, f.h, pp.partner_id, pp.issued_account,
           f.points * pp.issue_cash_minor / pp.issue_points, pp.issue_cash_minor,
           pp.issue_points, pp.checked, pp.effective_from, f.pending_days, NOT p_checked
    FROM f
    LEFT JOIN pp ON pp.partner = f.partner AND pp.program_id = f.program_id AND pp.occ = f.occ
    WHERE p_checked
       OR (f.points BETWEEN 0 AND f.max_points_per_transaction
           AND (f.partner IS NULL OR pp.partner_id IS NOT NULL)
           AND (jsonb_typeof(f.p) IS DISTINCT FROM 'array' OR f.code IN (SELECT jsonb_array_elements_text(f.p)))
           AND NOT EXISTS (SELECT 1 FROM ledger.idempotency_keys k WHERE k.api_key_id = f.api_key AND k.key = f.key)
           AND pg_try_advisory_xact_lock(hashtextextended('idem:' || f.api_key || ':' || f.key, 0)))
    ORDER BY f.i
$$;

-- Posts every row of earn_in, set-based, in the caller's transaction:
--  1. members created if new, then locked in account-id order (the order of every writer);
--  2. per-member caps (ledger.cap_earns), read after the locks so two earns cannot both pass;
--  3. a transaction per row (a batch row whose external_id is already posted is skipped: posted
--     stays false, a duplicate), the balances once per member, and each row's balance_after (the
--     running sum in `i` order), in one statement;
--  4. two postings per row against the program's issuance account (or the clearing named);
--  5. a lot per row for the part that does not repay a negative balance, expiring by the policy
--     from the earn's occurred_at, pending until ledger.pending_until when the row's rule or the
--     program has pending_days (then counted in the member's accounts.pending);
--  6. qualifying points per member and month, then one upgrade per member that crossed a
--     threshold (two thresholds crossed in one call: one upgrade, to the higher tier).
--  Partner rows (earns funded by an issuer partner, DESIGN §8) post against the partner's issued
--  account; its prepaid funds or credit limit are checked after step 2 (ledger.partner_earns), and a
--  row refused there is not posted (posted stays false, refused says why).
-- Steps 1 to 5 are ledger.post_checked_earns, or, when no row has caps, an external_id or a checked
-- partner (prepaid or with a credit limit) outside a coalesced batch: API earns on the hot path,
-- ledger.post_plain_earns, the same effect in one statement. Partner rows come priced
-- (ledger.stage_earns; a batch file's by ledger.price_partner_earns here) and are counted after
-- posting: on the plain path by ledger.take_partner_rooms, else by ledger.count_partner_earns.
CREATE OR REPLACE FUNCTION ledger.post_earns() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE qualifying int; checked boolean; partnered boolean; unpriced boolean;
BEGIN
    -- A checked partner's earns in a coalesced batch take from their slot's room after the plain
    -- posting (ledger.take_partner_rooms; short: the whole batch is retried one request at a time);
    -- anywhere else they are checked exactly, before posting (ledger.partner_earns).
    SELECT coalesce(bool_or(partner_id IS NOT NULL), false),
           coalesce(bool_or(partner_id IS NOT NULL AND partner_checked IS NULL), false),
           coalesce(bool_or(caps IS NOT NULL OR external_id IS NOT NULL OR (partner_checked AND coalesced IS NOT TRUE)), false)
    INTO partnered, unpriced, checked FROM earn_in;
    IF unpriced THEN
        PERFORM ledger.price_partner_earns();
        SELECT coalesce(bool_or(caps IS NOT NULL OR external_id IS NOT NULL
                                OR (partner_checked AND coalesced IS NOT TRUE)), false)
        INTO checked FROM earn_in;
    END IF;
    IF NOT checked THEN
        PERFORM ledger.post_plain_earns();
        IF partnered THEN
            PERFORM ledger.take_partner_rooms();
        END IF;
    ELSE
        PERFORM ledger.post_checked_earns();
        IF partnered THEN
            PERFORM ledger.count_partner_earns();
            PERFORM ledger.allot_partner_rooms();
        END IF;
    END IF;
    UPDATE ledger.accounts a SET pending = a.pending + s.points
    FROM (SELECT e.account_id, sum(ledger.lot_points(e.balance_after, e.points)) AS points FROM earn_in e
          WHERE e.posted AND e.pending_until IS NOT NULL GROUP BY 1) s
    WHERE a.id = ANY (ARRAY(SELECT account_id FROM earn_in WHERE posted AND pending_until IS NOT NULL))
      AND a.id = s.account_id AND s.points > 0;

    INSERT INTO ledger.tier_buckets (account_id, month, points)
    SELECT e.account_id, date_trunc('month', e.occurred_at AT TIME ZONE g.timezone)::date, sum(e.points)
    FROM earn_in e JOIN ledger.programs g ON g.id = e.program_id
    WHERE e.posted AND e.points > 0 AND e.kind = ANY (g.qualifying_kinds) AND jsonb_array_length(g.tiers) > 0
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (account_id, month) DO UPDATE SET points = ledger.tier_buckets.points + EXCLUDED.points;
    GET DIAGNOSTICS qualifying = ROW_COUNT;
    IF qualifying > 0 THEN
        WITH cand AS (
            SELECT a.id, a.tier, g.tiers, ledger.qualifying_points(g, a.id) AS q
            FROM ledger.accounts a JOIN ledger.programs g ON g.id = a.program_id
            WHERE a.id = ANY (ARRAY(SELECT e.account_id FROM earn_in e JOIN ledger.programs g2 ON g2.id = e.program_id
                                    WHERE e.posted AND e.points > 0 AND e.kind = ANY (g2.qualifying_kinds)))
              AND jsonb_array_length(g.tiers) > 0
        ), up AS (
            UPDATE ledger.accounts a SET tier = ledger.tier_for(c.tiers, c.q), tier_since = now()
            FROM cand c
            WHERE a.id = c.id
              AND ledger.tier_rank(c.tiers, ledger.tier_for(c.tiers, c.q)) > ledger.tier_rank(c.tiers, c.tier)
            RETURNING a.id, c.tier AS old_tier, a.tier AS new_tier, c.q
        )
        INSERT INTO ledger.tier_history (account_id, from_tier, to_tier, qualifying_points, reason)
        SELECT id, old_tier, new_tier, q, 'earn' FROM up ORDER BY id;
    END IF;
END $$;

-- Steps 1 to 5 for rows that need the member locks before anything is computed: rows with caps
-- (read after the locks, so two earns cannot both pass) and batch rows (a row whose external_id is
-- already posted is skipped, so the balances follow what was inserted).
CREATE OR REPLACE FUNCTION ledger.post_checked_earns() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- The callers fill account_id for the members that exist (ledger.member_id); the rest are new.
    IF EXISTS (SELECT 1 FROM earn_in WHERE account_id IS NULL) THEN
        INSERT INTO ledger.accounts (program_id, kind, member_ref)
        SELECT DISTINCT e.program_id, 'member', e.member_ref FROM earn_in e WHERE e.account_id IS NULL
        ORDER BY 1, 3
        ON CONFLICT DO NOTHING;
        UPDATE earn_in e SET account_id = ledger.member_id(e.program_id, e.member_ref)
        WHERE e.account_id IS NULL;
    END IF;
    PERFORM 1 FROM ledger.accounts a WHERE a.id = ANY (ARRAY(SELECT DISTINCT account_id FROM earn_in))
    ORDER BY a.id FOR UPDATE;

    IF EXISTS (SELECT 1 FROM earn_in WHERE caps IS NOT NULL) THEN
        PERFORM ledger.cap_earns();
    END IF;
    IF EXISTS (SELECT 1 FROM earn_in WHERE partner_checked) THEN
        PERFORM ledger.partner_earns();
    END IF;

    WITH ins AS (
        INSERT INTO ledger.transactions AS t (id, program_id, type, account_id, member_ref, points, kind,
                                              reference, metadata, merchant_id, mcc, channel, rule_set_id,
                                              breakdown, api_key_id, occurred_at, external_id, amount_minor,
                                              partner_id)
        SELECT e.txn_id, e.program_id, 'earn', e.account_id, e.member_ref, e.points, e.kind, e.reference,
               e.metadata, e.merchant_id, e.mcc, e.channel, e.rule_set_id, e.breakdown, e.api_key_id,
               e.occurred_at, e.external_id, e.amount_minor, e.partner_id
        FROM earn_in e WHERE e.refused IS NULL ORDER BY e.i
        ON CONFLICT (api_key_id, external_id) WHERE type = 'earn' AND external_id IS NOT NULL DO NOTHING
        RETURNING t
    ), s AS MATERIALIZED (
        SELECT (ins.t).account_id AS account_id, sum((ins.t).points) AS total FROM ins GROUP BY 1
    ), upd AS (
        UPDATE ledger.accounts a SET balance = a.balance + s.total, lifetime_earned = a.lifetime_earned + s.total
        FROM s WHERE a.id = s.account_id AND a.id = ANY (ARRAY(SELECT account_id FROM s))
        RETURNING a.id, a.balance, a.held, a.pending
    )
    UPDATE earn_in e SET posted = true, txn = x.t, balance_after = x.bal, held = x.held, pending_until = x.pu,
        pending_after = ledger.pending_now(x.account_id, x.acc_pending) + x.pend
    FROM (SELECT z.*, sum(z.pl) OVER (PARTITION BY z.account_id ORDER BY z.i) AS pend
          FROM (SELECT y.*, CASE WHEN y.pu IS NOT NULL THEN ledger.lot_points(y.bal, y.points) ELSE 0 END AS pl
                FROM (SELECT r.i, r.account_id, r.points, ins.t, u.held, u.pending AS acc_pending,
                             ledger.pending_until(g, r.occurred_at, r.pending_days) AS pu,
                             (u.balance - sum(r.points) OVER (PARTITION BY r.account_id)
                                        + sum(r.points) OVER (PARTITION BY r.account_id ORDER BY r.i))::bigint AS bal
                      FROM ins JOIN earn_in r ON r.txn_id = (ins.t).id JOIN upd u ON u.id = r.account_id
                      JOIN ledger.programs g ON g.id = r.program_id) y) z) x
    WHERE e.i = x.i;

    WITH postings AS (
        INSERT INTO ledger.postings (txn_id, account_id, amount)
        SELECT e.txn_id, x.account_id, x.amount
        FROM earn_in e JOIN ledger.programs g ON g.id = e.program_id,
             LATERAL (VALUES (coalesce(e.partner_account, ledger.counter_account(g, e.clearing, g.issuance_account)),
                              -e.points),
                             (e.account_id, e.points)) AS x(account_id, amount)
        WHERE e.posted AND e.points > 0
        ORDER BY e.i
    )
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at, pending_until)
    SELECT e.account_id, e.program_id, e.txn_id, l.points, l.points, ledger.lot_expiry(g, e.occurred_at),
           e.pending_until
    FROM earn_in e JOIN ledger.programs g ON g.id = e.program_id,
         LATERAL (SELECT ledger.lot_points(e.balance_after, e.points) AS points) l
    WHERE e.posted AND e.points > 0 AND l.points > 0
    ORDER BY e.i;
END $$;

-- Steps 1 to 5 in one statement for the hot path, API earns without caps or checked partners
-- (a partner row posts against its partner:{code}:issued account): every row is posted,
-- so the members are created, locked in account-id order (existing members first, as every writer
-- locks them) and credited by one ordered upsert, and the transactions, postings and lots follow
-- from its result. Same rows and answers as ledger.post_checked_earns, fewer statements.
CREATE OR REPLACE FUNCTION ledger.post_plain_earns() RETURNS void
LANGUAGE sql AS $$
    WITH m AS (
        SELECT e.program_id, e.member_ref, min(e.account_id) AS id, sum(e.points) AS total
        FROM earn_in e GROUP BY 1, 2
    ), acc AS (
        INSERT INTO ledger.accounts AS a (program_id, kind, member_ref, balance, lifetime_earned)
        SELECT m.program_id, 'member', m.member_ref, m.total, m.total FROM m
        ORDER BY m.id NULLS LAST, m.program_id, m.member_ref
        ON CONFLICT (program_id, kind, member_ref) DO UPDATE
            SET balance = a.balance + EXCLUDED.balance, lifetime_earned = a.lifetime_earned + EXCLUDED.lifetime_earned
        RETURNING a.id, a.program_id, a.member_ref, a.balance, a.held, a.pending
    ), x AS MATERIALIZED (
        SELECT e.*, acc.id AS acc_id, acc.held AS acc_held, acc.pending AS acc_pending,
               ledger.pending_until(g, e.occurred_at, e.pending_days) AS pu,
               (acc.balance - sum(e.points) OVER (PARTITION BY acc.id)
                            + sum(e.points) OVER (PARTITION BY acc.id ORDER BY e.i))::bigint AS bal
        FROM earn_in e JOIN acc ON acc.program_id = e.program_id AND acc.member_ref = e.member_ref
        JOIN ledger.programs g ON g.id = e.program_id
    ), ins AS (
        INSERT INTO ledger.transactions AS t (id, program_id, type, account_id, member_ref, points, kind,
                                              reference, metadata, merchant_id, mcc, channel, rule_set_id,
                                              breakdown, api_key_id, occurred_at, external_id, amount_minor,
                                              partner_id)
        SELECT x.txn_id, x.program_id, 'earn', x.acc_id, x.member_ref, x.points, x.kind, x.reference,
               x.metadata, x.merchant_id, x.mcc, x.channel, x.rule_set_id, x.breakdown, x.api_key_id,
               x.occurred_at, x.external_id, x.amount_minor, x.partner_id
        FROM x ORDER BY x.i
        RETURNING t
    ), postings AS (
        INSERT INTO ledger.postings (txn_id, account_id, amount)
        SELECT x.txn_id, p.account_id, p.amount
        FROM x JOIN ledger.programs g ON g.id = x.program_id,
             LATERAL (VALUES (coalesce(x.partner_account, ledger.counter_account(g, x.clearing, g.issuance_account)),
                              -x.points),
                             (x.acc_id, x.points)) AS p(account_id, amount)
        WHERE x.points > 0
        ORDER BY x.i
    ), lots AS (
        INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at, pending_until)
        SELECT x.acc_id, x.program_id, x.txn_id, l.points, l.points, ledger.lot_expiry(g, x.occurred_at), x.pu
        FROM x JOIN ledger.programs g ON g.id = x.program_id,
             LATERAL (SELECT ledger.lot_points(x.bal, x.points) AS points) l
        WHERE x.points > 0 AND l.points > 0
        ORDER BY x.i
    )
    UPDATE earn_in e SET posted = true, txn = ins.t, account_id = x.acc_id, balance_after = x.bal, held = x.acc_held,
        pending_until = x.pu, pending_after = ledger.pending_now(x.acc_id, x.acc_pending) + x.pend
    FROM (SELECT y.*, sum(y.pl) OVER (PARTITION BY y.acc_id ORDER BY y.i) AS pend
          FROM (SELECT x.*, CASE WHEN x.pu IS NOT NULL THEN ledger.lot_points(x.bal, x.points) ELSE 0 END AS pl
                FROM x) y) x
    JOIN ins ON (ins.t).id = x.txn_id
    WHERE e.i = x.i
$$;

-- Per-member caps per day and per month (in the program's time zone) of the rows of earn_in that carry them, with the same
-- result as applying the rows one at a time in `i` order: each row gets what is left under each cap
-- after the member's rule-priced earns already posted and the rows before it. Set-based: the day
-- cap clamps the running sum of the asked points, the month cap the running sum of that; the
-- breakdown then records, per row, what was already earned before it and what each cap left.
-- A partner row's cash follows its capped points. (Rows without caps in the same call are not
-- counted by the rows with caps after them; only a rule-set change inside one batch could mix the
-- two for one member.)
CREATE OR REPLACE FUNCTION ledger.cap_earns() RETURNS void
LANGUAGE sql AS $$
    WITH c AS (
        SELECT e.i, e.account_id, e.points AS p, g.timezone AS tz,
               (e.caps->>'per_member_per_day')::bigint AS cd, (e.caps->>'per_member_per_month')::bigint AS cm,
               date_trunc('day', e.occurred_at AT TIME ZONE g.timezone) AS d,
               date_trunc('month', e.occurred_at AT TIME ZONE g.timezone) AS m
        FROM earn_in e JOIN ledger.programs g ON g.id = e.program_id WHERE e.caps IS NOT NULL
    ), used AS (
        SELECT c.*,
               (SELECT coalesce(sum(t.points), 0) FROM ledger.transactions t
                WHERE c.cd IS NOT NULL AND t.account_id = c.account_id AND t.type = 'earn'
                  AND t.rule_set_id IS NOT NULL AND t.occurred_at >= c.d AT TIME ZONE c.tz
                  AND t.occurred_at < (c.d + interval '1 day') AT TIME ZONE c.tz) AS ud,
               (SELECT coalesce(sum(t.points), 0) FROM ledger.transactions t
                WHERE c.cm IS NOT NULL AND t.account_id = c.account_id AND t.type = 'earn'
                  AND t.rule_set_id IS NOT NULL AND t.occurred_at >= c.m AT TIME ZONE c.tz
                  AND t.occurred_at < (c.m + interval '1 month') AT TIME ZONE c.tz) AS um
        FROM c
    ), day_capped AS (
        SELECT u.*,
               CASE WHEN u.cd IS NULL THEN u.p
                    ELSE least(greatest(u.cd - u.ud, 0), u.run) - least(greatest(u.cd - u.ud, 0), u.run - u.p)
               END AS a
        FROM (SELECT used.*, sum(used.p) OVER (PARTITION BY used.account_id, used.d ORDER BY used.i) AS run
              FROM used) u
    ), month_capped AS (
        SELECT dc.*,
               CASE WHEN dc.cm IS NULL THEN dc.a
                    ELSE least(greatest(dc.cm - dc.um, 0), dc.run_m) - least(greatest(dc.cm - dc.um, 0), dc.run_m - dc.a)
               END AS b
        FROM (SELECT day_capped.*,
                     sum(day_capped.a) OVER (PARTITION BY day_capped.account_id, day_capped.m ORDER BY day_capped.i)
                         AS run_m
              FROM day_capped) dc
    ), before AS (
        SELECT mc.*,
               mc.ud + coalesce(sum(mc.b) OVER (PARTITION BY mc.account_id, mc.d ORDER BY mc.i
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS day_used,
               mc.um + coalesce(sum(mc.b) OVER (PARTITION BY mc.account_id, mc.m ORDER BY mc.i
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS month_used
        FROM month_capped mc
    ), steps AS (
        SELECT b.*, CASE WHEN b.cd IS NULL THEN b.p ELSE least(b.p, greatest(b.cd - b.day_used, 0)) END AS after_day
        FROM before b
    ), final AS (
        SELECT s.*,
               CASE WHEN s.cm IS NULL THEN s.after_day
                    ELSE least(s.after_day, greatest(s.cm - s.month_used, 0)) END AS pts
        FROM steps s
    )
    UPDATE earn_in e SET points = f.pts, cash = f.pts * e.issue_cash_minor::numeric / e.issue_points,
        breakdown = CASE WHEN e.breakdown IS NULL THEN NULL ELSE jsonb_set(jsonb_set(e.breakdown, '{caps_applied}',
            coalesce(e.breakdown->'caps_applied', '[]')
            || CASE WHEN f.after_day < f.p THEN jsonb_build_array(jsonb_build_object(
                   'cap', 'per_member_per_day', 'limit', f.cd, 'already_earned', f.day_used,
                   'points_after', f.after_day)) ELSE '[]' END
            || CASE WHEN f.pts < f.after_day THEN jsonb_build_array(jsonb_build_object(
                   'cap', 'per_member_per_month', 'limit', f.cm, 'already_earned', f.month_used,
                   'points_after', f.pts)) ELSE '[]' END),
            '{points}', to_jsonb(f.pts)) END
    FROM final f WHERE e.i = f.i
$$;

-- A single earn (ledger.execute), through the same rows as every other earn.
CREATE OR REPLACE FUNCTION ledger.op_earn(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    body jsonb;
BEGIN
    PERFORM ledger.earn_rows();
    PERFORM ledger.stage_earns(jsonb_build_array(jsonb_build_object('k', p_key, 'op', 'earn', 'a', a)), true);
    IF a ? 'variants' THEN  -- priced for its member only now: its limit checked once it has points
        PERFORM ledger.check_points_limit(jsonb_build_object('program', a->'program', 'points', e.points), p_programs)
        FROM earn_in e;
    END IF;
    PERFORM ledger.post_earns();
    SELECT CASE WHEN e.refused IS NULL THEN ledger.earn_json(e.txn, prog.code, e.balance_after, e.held, e.pending_after)
                ELSE jsonb_build_object('refused', e.refused, 'partner', a->>'partner') END
    INTO body FROM earn_in e;
    IF body ? 'refused' THEN
        PERFORM ledger.fail(body->>'refused', 422, CASE body->>'refused'
            WHEN 'partner_funds_exhausted' THEN format('Partner %s has not enough prepaid points left for this earn.', a->>'partner')
            ELSE format('This earn would take partner %s over its credit limit.', a->>'partner') END);
    END IF;
    RETURN body;
END $$;

-- The response to an earn: its transaction, with the member's balances right after it.
CREATE OR REPLACE FUNCTION ledger.earn_json(t ledger.transactions, p_code text, p_balance bigint, p_held bigint,
                                            p_pending bigint)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT ledger.txn_json(t, p_code, NULL::ledger.accounts) || jsonb_build_object('balance_after',
        jsonb_build_object('balance', p_balance, 'held', p_held, 'pending', p_pending,
                           'available', p_balance - p_held - p_pending))
$$;

-- The earns of a coalesced batch that can go set-based (ledger.stage_earns says which), each with
-- its own transaction, response and idempotency record. The primary key of
-- ledger.idempotency_keys stays the last guard: a key committed by another transaction after this
-- statement's snapshot fails the whole batch, which the caller retries one request at a time.
CREATE OR REPLACE FUNCTION ledger.earn_set(p_requests jsonb)
RETURNS TABLE (i int, body jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger.earn_rows();
    PERFORM ledger.stage_earns(p_requests, false);
    PERFORM ledger.post_earns();
    RETURN QUERY
    WITH result AS (
        SELECT e.i::int AS i, e.api_key_id, e.idem_key, e.request_hash, ledger.earn_json(e.txn, g.code, e.balance_after, e.held, e.pending_after) AS body
        FROM earn_in e JOIN ledger.programs g ON g.id = e.program_id
        WHERE e.refused IS NULL  -- left to ledger.execute, which refuses them one by one
    ), idem AS (
        INSERT INTO ledger.idempotency_keys (api_key_id, key, request_hash, status, body)
        SELECT r.api_key_id, r.idem_key, r.request_hash, 201, r.body FROM result r
    )
    SELECT r.i, r.body FROM result r ORDER BY r.i;
END $$;
