"""ledger schema: programs, accounts, transactions, postings, holds, idempotency keys, posting engine

The posting engine is a set of PL/pgSQL functions: each ledger write is one statement, one round
trip and one database transaction, with its idempotency record written in that same transaction.

Revision ID: 0002_ledger
Revises: 0001_auth
"""

from alembic import op

from migrations.script_sql import run_script

revision = "0002_ledger"
down_revision = "0001_auth"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE SCHEMA ledger;

CREATE TABLE ledger.programs (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code ~ '^[A-Z0-9_]{2,16}$'),
    name text NOT NULL,
    cash_points bigint NOT NULL CHECK (cash_points > 0),
    cash_minor bigint NOT NULL CHECK (cash_minor >= 0),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    expiry jsonb NOT NULL DEFAULT '{"policy": "never"}',
    rollover_bps int NOT NULL DEFAULT 0 CHECK (rollover_bps BETWEEN 0 AND 10000),
    tiers jsonb NOT NULL DEFAULT '[]',
    tier_window_months int NOT NULL DEFAULT 12,
    qualifying_kinds text[] NOT NULL DEFAULT '{purchase}',
    allow_negative boolean NOT NULL DEFAULT false,
    issuance_account bigint,
    redemption_account bigint,
    breakage_account bigint,
    conversion_account bigint,
    merchant_account bigint,
    adjustment_account bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Member accounts carry materialized balances (updated under a row lock). System accounts do not:
-- every earn would otherwise queue on one issuance row. Their balances are sums of postings.
CREATE TABLE ledger.accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id int NOT NULL REFERENCES ledger.programs (id),
    kind text NOT NULL CHECK (kind IN ('member', 'issuance', 'redemption', 'breakage',
                                       'conversion', 'merchant', 'adjustment')),
    member_ref text NOT NULL,
    balance bigint NOT NULL DEFAULT 0,
    held bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    lifetime_earned bigint NOT NULL DEFAULT 0,
    tier text NOT NULL DEFAULT 'basic',
    tier_since timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'member') = (member_ref <> ''))
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX accounts_program_kind_member ON ledger.accounts (program_id, kind, member_ref);

CREATE TABLE ledger.transactions (
    id uuid PRIMARY KEY,
    program_id int NOT NULL,
    type text NOT NULL CHECK (type IN ('earn', 'burn', 'capture', 'reversal', 'transfer', 'adjustment',
                                       'expiry')),
    account_id bigint NOT NULL,
    member_ref text NOT NULL,
    counterparty_ref text,
    points bigint NOT NULL,
    kind text,
    reference text,
    reason text,
    metadata jsonb,
    original_id uuid,
    hold_id uuid,
    reversed_points bigint NOT NULL DEFAULT 0,
    merchant_id text,
    rule_set_id bigint,
    breakdown jsonb,
    api_key_id bigint,
    occurred_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (reversed_points >= 0 AND (type = 'adjustment' OR reversed_points <= points))
);
CREATE INDEX transactions_original ON ledger.transactions (original_id) WHERE original_id IS NOT NULL;
CREATE INDEX transactions_program_created ON ledger.transactions (program_id, created_at);
-- Caps per member per day and month sum the member's rule-priced earns.
CREATE INDEX transactions_rule_earns ON ledger.transactions (account_id, occurred_at)
    WHERE type = 'earn' AND rule_set_id IS NOT NULL;

-- Every earn (and every credit) creates a lot; debits consume lots earliest-expiring first and record
-- what they took in lot_moves, so a refund can give back exactly what was taken.
-- For every member account: sum(remaining) = greatest(balance, 0).
CREATE TABLE ledger.lots (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL,
    program_id int NOT NULL,
    txn_id uuid,
    points bigint NOT NULL CHECK (points > 0),
    remaining bigint NOT NULL CHECK (remaining >= 0 AND remaining <= points),
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);
CREATE INDEX lots_account_open ON ledger.lots (account_id, expires_at, id) WHERE remaining > 0;
CREATE INDEX lots_due ON ledger.lots (expires_at, id) WHERE remaining > 0 AND expires_at IS NOT NULL;
CREATE INDEX lots_txn ON ledger.lots (txn_id);

CREATE TABLE ledger.lot_moves (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id uuid NOT NULL,
    lot_id bigint NOT NULL,
    points bigint NOT NULL CHECK (points > 0),
    restored bigint NOT NULL DEFAULT 0 CHECK (restored >= 0 AND restored <= points)
);
CREATE INDEX lot_moves_txn ON ledger.lot_moves (txn_id);

-- Qualifying points per member per calendar month (UTC), for tiers over a rolling window of months.
CREATE TABLE ledger.tier_buckets (
    account_id bigint NOT NULL,
    month date NOT NULL,
    points bigint NOT NULL,
    PRIMARY KEY (account_id, month)
);

CREATE TABLE ledger.tier_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL,
    from_tier text NOT NULL,
    to_tier text NOT NULL,
    qualifying_points bigint NOT NULL,
    reason text NOT NULL CHECK (reason IN ('earn', 'review')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tier_history_account ON ledger.tier_history (account_id, id);

-- Earning rules: versions per program, each in force from effective_from until the next one.
CREATE TABLE ledger.rule_sets (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id int NOT NULL REFERENCES ledger.programs (id),
    version int NOT NULL,
    effective_from timestamptz NOT NULL,
    body jsonb NOT NULL,
    api_key_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, version),
    UNIQUE (program_id, effective_from)
);

-- Transactional outbox: a row per committed ledger transaction (written by a trigger in the same
-- database transaction). A single sequencer at a time gives committed rows consecutive `seq`
-- numbers in the order it finds them, so the feed never skips a transaction that committed late.
CREATE TABLE ledger.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id uuid NOT NULL,
    seq bigint UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    sequenced_at timestamptz
);
CREATE INDEX outbox_unsequenced ON ledger.outbox (id) WHERE seq IS NULL;

CREATE TABLE ledger.webhooks (
    id uuid PRIMARY KEY,
    url text NOT NULL,
    secret text NOT NULL,
    programs text[],
    types text[],
    api_key_id bigint NOT NULL,
    active boolean NOT NULL DEFAULT true,
    after_seq bigint NOT NULL DEFAULT 0,
    failures int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    delivered int NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_due ON ledger.webhooks (next_attempt_at) WHERE active;

CREATE TABLE ledger.postings (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id uuid NOT NULL,
    account_id bigint NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX postings_account ON ledger.postings (account_id, id);
CREATE INDEX postings_txn ON ledger.postings (txn_id);

CREATE TABLE ledger.holds (
    id uuid PRIMARY KEY,
    program_id int NOT NULL,
    account_id bigint NOT NULL,
    member_ref text NOT NULL,
    points bigint NOT NULL CHECK (points > 0),
    status text NOT NULL CHECK (status IN ('held', 'captured', 'voided', 'expired')),
    captured_points bigint,
    capture_txn_id uuid,
    reference text,
    api_key_id bigint,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX holds_due ON ledger.holds (expires_at) WHERE status = 'held';
CREATE INDEX holds_account_active ON ledger.holds (account_id) WHERE status = 'held';

CREATE TABLE ledger.idempotency_keys (
    api_key_id bigint NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    status int NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_created ON ledger.idempotency_keys (created_at);
"""

FUNCTIONS = r"""
-- Time-ordered ids (UUIDv7 on PostgreSQL 18+): new rows land at the right edge of the primary
-- key and of every index on the id, instead of on random pages. Older servers get random UUIDs.
DO $do$
BEGIN
    IF current_setting('server_version_num')::int >= 180000 THEN
        CREATE FUNCTION ledger.new_id() RETURNS uuid LANGUAGE sql VOLATILE AS 'SELECT uuidv7()';
    ELSE
        CREATE FUNCTION ledger.new_id() RETURNS uuid LANGUAGE sql VOLATILE AS 'SELECT gen_random_uuid()';
    END IF;
END
$do$;

-- Domain errors travel as SQLSTATE JF000: MESSAGE = stable code, DETAIL = text, HINT = HTTP status.
CREATE FUNCTION ledger.fail(p_code text, p_status int, p_detail text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'JF000', MESSAGE = p_code, DETAIL = p_detail, HINT = p_status::text;
END $$;

CREATE FUNCTION ledger.ts(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION ledger.program_for(p_code text, p_programs text[]) RETURNS ledger.programs
LANGUAGE plpgsql STABLE AS $$
DECLARE prog ledger.programs;
BEGIN
    SELECT * INTO prog FROM ledger.programs WHERE code = p_code;
    IF NOT FOUND THEN
        PERFORM ledger.fail('program_not_found', 404, format('No program with code %s.', p_code));
    END IF;
    IF p_programs IS NOT NULL AND NOT (p_code = ANY (p_programs)) THEN
        PERFORM ledger.fail('program_forbidden', 403, format('This API key may not act on program %s.', p_code));
    END IF;
    RETURN prog;
END $$;

CREATE FUNCTION ledger.program_by_id(p_id int, p_programs text[]) RETURNS ledger.programs
LANGUAGE plpgsql STABLE AS $$
DECLARE prog ledger.programs;
BEGIN
    SELECT * INTO prog FROM ledger.programs WHERE id = p_id;
    IF p_programs IS NOT NULL AND NOT (prog.code = ANY (p_programs)) THEN
        PERFORM ledger.fail('program_forbidden', 403, format('This API key may not act on program %s.', prog.code));
    END IF;
    RETURN prog;
END $$;

CREATE FUNCTION ledger.balance_json(acc ledger.accounts) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('balance', acc.balance, 'held', acc.held, 'available', acc.balance - acc.held)
$$;

CREATE FUNCTION ledger.txn_json(t ledger.transactions, p_code text, acc ledger.accounts) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', t.id, 'type', t.type, 'program', p_code, 'member_ref', t.member_ref,
        'points', t.points, 'kind', t.kind, 'reference', t.reference, 'reason', t.reason,
        'metadata', t.metadata, 'original_id', t.original_id, 'hold_id', t.hold_id,
        'to_member_ref', t.counterparty_ref, 'reversed_points', t.reversed_points,
        'merchant_id', t.merchant_id, 'breakdown', t.breakdown,
        'occurred_at', ledger.ts(t.occurred_at), 'created_at', ledger.ts(t.created_at),
        'balance_after', ledger.balance_json(acc))
$$;

CREATE FUNCTION ledger.hold_json(h ledger.holds, p_code text, acc ledger.accounts) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', h.id, 'type', 'hold', 'status', h.status, 'program', p_code, 'member_ref', h.member_ref,
        'points', h.points, 'captured_points', h.captured_points, 'capture_transaction_id', h.capture_txn_id,
        'reference', h.reference, 'expires_at', ledger.ts(h.expires_at),
        'created_at', ledger.ts(h.created_at), 'updated_at', ledger.ts(h.updated_at),
        'balance_after', ledger.balance_json(acc))
$$;

-- Releases a member's holds that are past their expiry. Locks holds before the account, the
-- same order as capture and void, so the two cannot deadlock.
CREATE FUNCTION ledger.release_expired_holds_of(p_account bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE released bigint;
BEGIN
    WITH due AS (
        SELECT id, points FROM ledger.holds
        WHERE account_id = p_account AND status = 'held' AND expires_at <= now()
        ORDER BY id FOR UPDATE
    ), done AS (
        UPDATE ledger.holds h SET status = 'expired', updated_at = now()
        FROM due WHERE h.id = due.id RETURNING due.points
    )
    SELECT coalesce(sum(points), 0) INTO released FROM done;
    IF released > 0 THEN
        UPDATE ledger.accounts SET held = held - released WHERE id = p_account;
    END IF;
    RETURN released;
END $$;

-- The background sweeper: expires due holds in batches; SKIP LOCKED lets several processes run it.
CREATE FUNCTION ledger.expire_due_holds(p_limit int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
    WITH due AS (
        SELECT id, account_id, points FROM ledger.holds
        WHERE status = 'held' AND expires_at <= now()
        ORDER BY account_id, id LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), done AS (
        UPDATE ledger.holds h SET status = 'expired', updated_at = now()
        FROM due WHERE h.id = due.id RETURNING due.account_id, due.points
    ), per_account AS (
        SELECT account_id, sum(points) AS points FROM done GROUP BY account_id
    ), upd AS (
        UPDATE ledger.accounts a SET held = a.held - p.points
        FROM per_account p WHERE a.id = p.account_id RETURNING 1
    )
    SELECT count(*) INTO n FROM done, (SELECT count(*) FROM upd) u;
    RETURN n;
END $$;

-- Debits a member's posted balance, refusing to take `available` below zero unless the program
-- allows it; with p_hold it reserves (held) instead of debiting.
CREATE FUNCTION ledger.debit_member(prog ledger.programs, p_member text, p_points bigint, p_hold boolean)
RETURNS ledger.accounts
LANGUAGE plpgsql AS $$
DECLARE acc ledger.accounts; avail bigint; attempt int := 0;
BEGIN
    IF prog.allow_negative THEN
        INSERT INTO ledger.accounts (program_id, kind, member_ref) VALUES (prog.id, 'member', p_member)
        ON CONFLICT DO NOTHING;
    END IF;
    LOOP
        IF p_hold THEN
            UPDATE ledger.accounts SET held = held + p_points
            WHERE program_id = prog.id AND kind = 'member' AND member_ref = p_member
              AND (prog.allow_negative OR balance - held >= p_points)
            RETURNING * INTO acc;
        ELSE
            UPDATE ledger.accounts SET balance = balance - p_points
            WHERE program_id = prog.id AND kind = 'member' AND member_ref = p_member
              AND (prog.allow_negative OR balance - held >= p_points)
            RETURNING * INTO acc;
        END IF;
        IF FOUND THEN
            RETURN acc;
        END IF;
        SELECT * INTO acc FROM ledger.accounts
        WHERE program_id = prog.id AND kind = 'member' AND member_ref = p_member;
        -- Only on the refusal path: free holds that have expired but not yet been swept, then retry once.
        IF attempt = 0 AND FOUND AND ledger.release_expired_holds_of(acc.id) > 0 THEN
            attempt := 1;
            CONTINUE;
        END IF;
        avail := coalesce(acc.balance - acc.held, 0);
        PERFORM ledger.fail('insufficient_points', 422,
            format('Member %s has %s points available in %s; %s requested.', p_member, avail, prog.code, p_points));
    END LOOP;
END $$;

CREATE FUNCTION ledger.credit_member(prog ledger.programs, p_member text, p_points bigint, p_earned bigint)
RETURNS ledger.accounts
LANGUAGE sql AS $$
    INSERT INTO ledger.accounts AS a (program_id, kind, member_ref, balance, lifetime_earned)
    VALUES (prog.id, 'member', p_member, p_points, p_earned)
    ON CONFLICT (program_id, kind, member_ref) DO UPDATE
        SET balance = a.balance + EXCLUDED.balance, lifetime_earned = a.lifetime_earned + EXCLUDED.lifetime_earned
    RETURNING *
$$;

-- The member's row, created if new, locked for the rest of the transaction.
CREATE FUNCTION ledger.lock_member(prog ledger.programs, p_member text) RETURNS ledger.accounts
LANGUAGE plpgsql AS $$
DECLARE acc ledger.accounts;
BEGIN
    INSERT INTO ledger.accounts (program_id, kind, member_ref) VALUES (prog.id, 'member', p_member)
    ON CONFLICT DO NOTHING;
    SELECT * INTO acc FROM ledger.accounts
    WHERE program_id = prog.id AND kind = 'member' AND member_ref = p_member FOR UPDATE;
    RETURN acc;
END $$;

-- The system account on the other side of an earn or burn: the program's default, or its
-- conversion clearing or merchant funding account when the caller names one.
CREATE FUNCTION ledger.counter_account(prog ledger.programs, p_clearing text, p_default bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_clearing WHEN 'conversion' THEN prog.conversion_account
                           WHEN 'merchant' THEN prog.merchant_account
                           ELSE p_default END
$$;

CREATE FUNCTION ledger.post_pair(p_txn uuid, p_debit bigint, p_credit bigint, p_points bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ledger.postings (txn_id, account_id, amount)
    VALUES (p_txn, p_debit, -p_points), (p_txn, p_credit, p_points)
$$;

-- When points earned at `p_at` expire under the program's policy (NULL: never). Fixed dates are
-- the end of that day in UTC; a fixed date already past rolls to the next year.
CREATE FUNCTION ledger.lot_expiry(prog ledger.programs, p_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    -- Plain SQL (no PL/pgSQL) so the planner inlines it into set-based inserts of many lots.
    SELECT CASE prog.expiry->>'policy'
        WHEN 'rolling' THEN p_at + make_interval(months => (prog.expiry->>'months')::int)
        WHEN 'fixed' THEN
            (make_date(extract(year FROM p_at AT TIME ZONE 'UTC')::int + (prog.expiry->>'years_after')::int,
                       (prog.expiry->>'month')::int, (prog.expiry->>'day')::int) + 1)::timestamp AT TIME ZONE 'UTC'
            + CASE WHEN (make_date(extract(year FROM p_at AT TIME ZONE 'UTC')::int
                                   + (prog.expiry->>'years_after')::int,
                                   (prog.expiry->>'month')::int, (prog.expiry->>'day')::int) + 1)::timestamp
                        AT TIME ZONE 'UTC' <= p_at
                   THEN interval '1 year' ELSE interval '0' END
    END
$$;

-- The expiry of a lot rolled over from one that expired at `p_old`: the next period of the policy.
CREATE FUNCTION ledger.next_period(prog ledger.programs, p_old timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE prog.expiry->>'policy'
        WHEN 'rolling' THEN p_old + make_interval(months => (prog.expiry->>'months')::int)
        WHEN 'fixed' THEN p_old + interval '1 year'
        ELSE NULL END
$$;

-- Points a credit adds to lots: the part of it that is not repaying a negative balance.
CREATE FUNCTION ledger.lot_points(p_balance_after bigint, p_credit bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(p_balance_after, 0) - greatest(p_balance_after - p_credit, 0)
$$;

CREATE FUNCTION ledger.new_lot(acc ledger.accounts, p_txn uuid, p_points bigint, p_expires timestamptz)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at)
    SELECT acc.id, acc.program_id, p_txn, p_points, p_points, p_expires WHERE p_points > 0
$$;

-- Takes `p_points` from the member's lots, earliest expiry first (never-expiring last), starting
-- with `p_first_lot` when given (a clawback takes from its own earn's lot first). The caller holds
-- the account's row lock. Points beyond the lots (a negative balance) are backed by no lot.
CREATE FUNCTION ledger.consume_lots(p_account bigint, p_txn uuid, p_points bigint, p_first_lot bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE l record; left_over bigint := p_points; take bigint; rem bigint;
BEGIN
    IF p_first_lot IS NOT NULL THEN
        SELECT remaining INTO rem FROM ledger.lots WHERE id = p_first_lot AND account_id = p_account AND remaining > 0;
        IF FOUND THEN
            take := least(rem, left_over);
            UPDATE ledger.lots SET remaining = remaining - take WHERE id = p_first_lot;
            INSERT INTO ledger.lot_moves (txn_id, lot_id, points) VALUES (p_txn, p_first_lot, take);
            left_over := left_over - take;
        END IF;
    END IF;
    -- In the order of the index lots_account_open, so a member with thousands of lots costs
    -- only the lots actually taken (the loop's cursor stops early).
    FOR l IN
        SELECT id, remaining FROM ledger.lots
        WHERE account_id = p_account AND remaining > 0
        ORDER BY expires_at, id
    LOOP
        EXIT WHEN left_over <= 0;
        take := least(l.remaining, left_over);
        UPDATE ledger.lots SET remaining = remaining - take WHERE id = l.id;
        INSERT INTO ledger.lot_moves (txn_id, lot_id, points) VALUES (p_txn, l.id, take);
        left_over := left_over - take;
    END LOOP;
END $$;

-- A refund gives back what the original debit took, to the same lots (they keep their expiry),
-- latest-expiring first; whatever cannot go back (a lot gone, a negative balance) gets a new lot.
CREATE FUNCTION ledger.restore_lots(prog ledger.programs, acc ledger.accounts, p_orig uuid, p_txn uuid,
                                    p_points bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE m record; left_over bigint := p_points; take bigint;
BEGIN
    FOR m IN
        SELECT mv.id, mv.lot_id, mv.points - mv.restored AS open
        FROM ledger.lot_moves mv JOIN ledger.lots l ON l.id = mv.lot_id
        WHERE mv.txn_id = p_orig AND mv.points > mv.restored
        ORDER BY l.expires_at DESC NULLS FIRST, mv.id DESC
    LOOP
        EXIT WHEN left_over <= 0;
        take := least(m.open, left_over);
        UPDATE ledger.lots SET remaining = remaining + take WHERE id = m.lot_id;
        UPDATE ledger.lot_moves SET restored = restored + take WHERE id = m.id;
        left_over := left_over - take;
    END LOOP;
    PERFORM ledger.new_lot(acc, p_txn, left_over, ledger.lot_expiry(prog, now()));
END $$;

-- Tiers: `tiers` is [{code, min_points}, ...] by increasing min_points; below all of them is basic.
CREATE FUNCTION ledger.tier_for(p_tiers jsonb, p_points bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce((SELECT t->>'code' FROM jsonb_array_elements(p_tiers) t
                     WHERE (t->>'min_points')::bigint <= p_points
                     ORDER BY (t->>'min_points')::bigint DESC LIMIT 1), 'basic')
$$;

CREATE FUNCTION ledger.tier_rank(p_tiers jsonb, p_tier text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce((SELECT i::int FROM jsonb_array_elements(p_tiers) WITH ORDINALITY AS x(t, i)
                     WHERE t->>'code' = p_tier), 0)
$$;

-- Qualifying points in the window: this calendar month (UTC) and the months before it.
CREATE FUNCTION ledger.qualifying_points(prog ledger.programs, p_account bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(points), 0)::bigint FROM ledger.tier_buckets
    WHERE account_id = p_account
      AND month > (date_trunc('month', now() AT TIME ZONE 'UTC')
                   - make_interval(months => prog.tier_window_months))::date
$$;

-- Counts a qualifying earn towards tiers; upgrades at the earn that crosses a threshold.
CREATE FUNCTION ledger.qualify(prog ledger.programs, acc ledger.accounts, p_points bigint, p_at timestamptz)
RETURNS ledger.accounts
LANGUAGE plpgsql AS $$
DECLARE q bigint; new_tier text;
BEGIN
    INSERT INTO ledger.tier_buckets (account_id, month, points)
    VALUES (acc.id, date_trunc('month', p_at AT TIME ZONE 'UTC')::date, p_points)
    ON CONFLICT (account_id, month) DO UPDATE SET points = ledger.tier_buckets.points + EXCLUDED.points;
    q := ledger.qualifying_points(prog, acc.id);
    new_tier := ledger.tier_for(prog.tiers, q);
    IF ledger.tier_rank(prog.tiers, new_tier) > ledger.tier_rank(prog.tiers, acc.tier) THEN
        INSERT INTO ledger.tier_history (account_id, from_tier, to_tier, qualifying_points, reason)
        VALUES (acc.id, acc.tier, new_tier, q, 'earn');
        UPDATE ledger.accounts SET tier = new_tier, tier_since = now() WHERE id = acc.id RETURNING * INTO acc;
    END IF;
    RETURN acc;
END $$;

-- Rule-priced earns may be capped per member per day and per month (UTC): the caller's points are
-- cut to what is left under each cap, with the member's row locked so two earns cannot both pass.
CREATE FUNCTION ledger.apply_member_caps(acc ledger.accounts, p_points bigint, p_caps jsonb, p_at timestamptz,
                                         INOUT breakdown jsonb, OUT points bigint)
LANGUAGE plpgsql AS $$
DECLARE cap bigint; used bigint; start_at timestamptz; len interval; period text;
BEGIN
    points := p_points;
    FOREACH period IN ARRAY ARRAY['per_member_per_day', 'per_member_per_month'] LOOP
        CONTINUE WHEN p_caps->period IS NULL OR jsonb_typeof(p_caps->period) = 'null';
        cap := (p_caps->>period)::bigint;
        IF period = 'per_member_per_day' THEN
            start_at := date_trunc('day', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'; len := interval '1 day';
        ELSE
            start_at := date_trunc('month', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'; len := interval '1 month';
        END IF;
        SELECT coalesce(sum(t.points), 0) INTO used FROM ledger.transactions t
        WHERE t.account_id = acc.id AND t.type = 'earn' AND t.rule_set_id IS NOT NULL
          AND t.occurred_at >= start_at AND t.occurred_at < start_at + len;
        IF points > greatest(cap - used, 0) THEN
            points := greatest(cap - used, 0);
            breakdown := jsonb_set(coalesce(breakdown, '{}'), '{caps_applied}',
                coalesce(breakdown->'caps_applied', '[]') || jsonb_build_array(
                    jsonb_build_object('cap', period, 'limit', cap, 'already_earned', used, 'points_after', points)));
        END IF;
    END LOOP;
    breakdown := jsonb_set(coalesce(breakdown, '{}'), '{points}', to_jsonb(points));
END $$;

CREATE FUNCTION ledger.op_earn(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    pts bigint := (a->>'points')::bigint;
    at timestamptz := coalesce((a->>'occurred_at')::timestamptz, now());
    v_kind text := coalesce(a->>'kind', 'purchase');
    breakdown jsonb := a->'breakdown';
    acc ledger.accounts;
    t ledger.transactions;
BEGIN
    IF a ? 'caps' THEN
        acc := ledger.lock_member(prog, a->>'member_ref');
        SELECT c.breakdown, c.points INTO breakdown, pts FROM ledger.apply_member_caps(acc, pts, a->'caps', at, breakdown) c;
    END IF;
    IF pts > 0 THEN
        acc := ledger.credit_member(prog, a->>'member_ref', pts, pts);
    ELSIF acc.id IS NULL THEN
        acc := ledger.lock_member(prog, a->>'member_ref');
    END IF;
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, kind, reference,
                                     metadata, merchant_id, rule_set_id, breakdown, api_key_id, occurred_at)
    VALUES (ledger.new_id(), prog.id, 'earn', acc.id, acc.member_ref, pts, v_kind, a->>'reference',
            a->'metadata', a->'purchase'->>'merchant_id', (a->>'rule_set_id')::bigint, breakdown, p_key, at)
    RETURNING * INTO t;
    IF pts > 0 THEN
        PERFORM ledger.post_pair(t.id, ledger.counter_account(prog, a->>'clearing', prog.issuance_account), acc.id, pts);
        PERFORM ledger.new_lot(acc, t.id, ledger.lot_points(acc.balance, pts), ledger.lot_expiry(prog, at));
        IF v_kind = ANY (prog.qualifying_kinds) AND jsonb_array_length(prog.tiers) > 0 THEN
            acc := ledger.qualify(prog, acc, pts, at);
        END IF;
    END IF;
    RETURN ledger.txn_json(t, prog.code, acc);
END $$;

CREATE FUNCTION ledger.op_burn(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    pts bigint := (a->>'points')::bigint;
    acc ledger.accounts;
    t ledger.transactions;
BEGIN
    acc := ledger.debit_member(prog, a->>'member_ref', pts, false);
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, reference, reason,
                                     metadata, api_key_id, occurred_at)
    VALUES (ledger.new_id(), prog.id, 'burn', acc.id, acc.member_ref, pts, a->>'reference', a->>'reason',
            a->'metadata', p_key, now())
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, acc.id, ledger.counter_account(prog, a->>'clearing', prog.redemption_account), pts);
    PERFORM ledger.consume_lots(acc.id, t.id, pts, NULL);
    RETURN ledger.txn_json(t, prog.code, acc);
END $$;

CREATE FUNCTION ledger.op_hold(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    pts bigint := (a->>'points')::bigint;
    acc ledger.accounts;
    h ledger.holds;
BEGIN
    acc := ledger.debit_member(prog, a->>'member_ref', pts, true);
    INSERT INTO ledger.holds (id, program_id, account_id, member_ref, points, status, reference, api_key_id, expires_at)
    VALUES (ledger.new_id(), prog.id, acc.id, acc.member_ref, pts, 'held', a->>'reference', p_key,
            now() + make_interval(secs => (a->>'expires_in_s')::int))
    RETURNING * INTO h;
    RETURN ledger.hold_json(h, prog.code, acc);
END $$;

CREATE FUNCTION ledger.locked_hold(p_id uuid, p_programs text[]) RETURNS ledger.holds
LANGUAGE plpgsql AS $$
DECLARE h ledger.holds;
BEGIN
    SELECT * INTO h FROM ledger.holds WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM ledger.fail('hold_not_found', 404, format('No hold with id %s.', p_id));
    END IF;
    PERFORM ledger.program_by_id(h.program_id, p_programs);
    IF h.status <> 'held' THEN
        PERFORM ledger.fail('hold_not_active', 409, format('Hold %s is %s, not held.', p_id, h.status));
    END IF;
    IF h.expires_at <= now() THEN
        PERFORM ledger.fail('hold_expired', 409,
            format('Hold %s expired at %s; its points are released.', p_id, ledger.ts(h.expires_at)));
    END IF;
    RETURN h;
END $$;

CREATE FUNCTION ledger.op_capture(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    h ledger.holds; prog ledger.programs; acc ledger.accounts; t ledger.transactions; pts bigint;
BEGIN
    h := ledger.locked_hold((a->>'hold_id')::uuid, p_programs);
    SELECT * INTO prog FROM ledger.programs WHERE id = h.program_id;
    pts := coalesce((a->>'points')::bigint, h.points);
    IF pts > h.points THEN
        PERFORM ledger.fail('capture_exceeds_hold', 422,
            format('Cannot capture %s points from a hold of %s.', pts, h.points));
    END IF;
    UPDATE ledger.accounts SET balance = balance - pts, held = held - h.points
    WHERE id = h.account_id RETURNING * INTO acc;
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, reference,
                                     hold_id, api_key_id, occurred_at)
    VALUES (ledger.new_id(), prog.id, 'capture', acc.id, acc.member_ref, pts, h.reference, h.id, p_key, now())
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, acc.id, prog.redemption_account, pts);
    PERFORM ledger.consume_lots(acc.id, t.id, pts, NULL);
    UPDATE ledger.holds SET status = 'captured', captured_points = pts, capture_txn_id = t.id, updated_at = now()
    WHERE id = h.id;
    RETURN ledger.txn_json(t, prog.code, acc);
END $$;

CREATE FUNCTION ledger.op_void(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE h ledger.holds; prog ledger.programs; acc ledger.accounts;
BEGIN
    h := ledger.locked_hold((a->>'hold_id')::uuid, p_programs);
    SELECT * INTO prog FROM ledger.programs WHERE id = h.program_id;
    UPDATE ledger.accounts SET held = held - h.points WHERE id = h.account_id RETURNING * INTO acc;
    UPDATE ledger.holds SET status = 'voided', updated_at = now() WHERE id = h.id RETURNING * INTO h;
    RETURN ledger.hold_json(h, prog.code, acc);
END $$;

CREATE FUNCTION ledger.op_reverse(a jsonb, p_key bigint, p_programs text[], p_scopes text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    o ledger.transactions; prog ledger.programs; acc ledger.accounts; t ledger.transactions;
    remaining bigint; pts bigint; needed text; counter bigint; own_lot bigint;
BEGIN
    SELECT * INTO o FROM ledger.transactions WHERE id = (a->>'transaction_id')::uuid FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM ledger.fail('transaction_not_found', 404, format('No transaction with id %s.', a->>'transaction_id'));
    END IF;
    prog := ledger.program_by_id(o.program_id, p_programs);
    IF o.type NOT IN ('earn', 'burn', 'capture') THEN
        PERFORM ledger.fail('not_reversible', 422,
            format('A %s transaction cannot be reversed; only earn, burn and capture can.', o.type));
    END IF;
    needed := CASE o.type WHEN 'earn' THEN 'ledger:earn' ELSE 'ledger:burn' END;
    IF NOT (needed = ANY (p_scopes) OR 'ledger:admin' = ANY (p_scopes)) THEN
        PERFORM ledger.fail('insufficient_scope', 403, format('Reversing a %s needs the scope %s.', o.type, needed));
    END IF;
    remaining := o.points - o.reversed_points;
    pts := coalesce((a->>'points')::bigint, remaining);
    IF remaining = 0 OR pts > remaining THEN
        PERFORM ledger.fail('reversal_exceeds_original', 422,
            format('Transaction %s has %s of %s points left to reverse; %s requested.', o.id, remaining, o.points, pts));
    END IF;
    IF o.type = 'earn' THEN
        UPDATE ledger.accounts SET balance = balance - pts, lifetime_earned = lifetime_earned - pts
        WHERE id = o.account_id AND (prog.allow_negative OR balance - held >= pts)
        RETURNING * INTO acc;
        IF NOT FOUND THEN
            SELECT * INTO acc FROM ledger.accounts WHERE id = o.account_id;
            PERFORM ledger.fail('insufficient_points', 422,
                format('Member %s has %s points available; the clawback needs %s.', o.member_ref,
                       acc.balance - acc.held, pts));
        END IF;
    ELSE
        UPDATE ledger.accounts SET balance = balance + pts WHERE id = o.account_id RETURNING * INTO acc;
    END IF;
    UPDATE ledger.transactions SET reversed_points = reversed_points + pts WHERE id = o.id;
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, kind, reference,
                                     reason, original_id, merchant_id, api_key_id, occurred_at)
    VALUES (ledger.new_id(), prog.id, 'reversal', acc.id, acc.member_ref, pts, o.type, o.reference,
            a->>'reason', o.id, o.merchant_id, p_key, now())
    RETURNING * INTO t;
    -- Back against whichever system account the original posted to (issuance, redemption, conversion...).
    SELECT account_id INTO counter FROM ledger.postings WHERE txn_id = o.id AND account_id <> o.account_id LIMIT 1;
    IF o.type = 'earn' THEN
        PERFORM ledger.post_pair(t.id, acc.id, counter, pts);
        SELECT id INTO own_lot FROM ledger.lots WHERE txn_id = o.id LIMIT 1;  -- one lot per earn
        PERFORM ledger.consume_lots(acc.id, t.id, pts, own_lot);
        IF o.kind = ANY (prog.qualifying_kinds) AND jsonb_array_length(prog.tiers) > 0 THEN
            UPDATE ledger.tier_buckets SET points = points - pts
            WHERE account_id = acc.id AND month = date_trunc('month', o.occurred_at AT TIME ZONE 'UTC')::date;
        END IF;
    ELSE
        PERFORM ledger.post_pair(t.id, counter, acc.id, pts);
        PERFORM ledger.restore_lots(prog, acc, o.id, t.id, ledger.lot_points(acc.balance, pts));
    END IF;
    RETURN ledger.txn_json(t, prog.code, acc);
END $$;

CREATE FUNCTION ledger.op_transfer(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    pts bigint := (a->>'points')::bigint;
    src text := a->>'from_member_ref';
    dst text := a->>'to_member_ref';
    acc_from ledger.accounts; acc_to ledger.accounts; t ledger.transactions; body jsonb; backed bigint;
BEGIN
    IF src = dst THEN
        PERFORM ledger.fail('same_member', 422, 'A transfer needs two different members.');
    END IF;
    INSERT INTO ledger.accounts (program_id, kind, member_ref) VALUES (prog.id, 'member', dst)
    ON CONFLICT DO NOTHING;
    -- Both rows locked in id order, so opposite transfers between two members cannot deadlock.
    PERFORM 1 FROM ledger.accounts
    WHERE program_id = prog.id AND kind = 'member' AND member_ref IN (src, dst) ORDER BY id FOR UPDATE;
    acc_from := ledger.debit_member(prog, src, pts, false);
    acc_to := ledger.credit_member(prog, dst, pts, 0);
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, counterparty_ref, points,
                                     reference, reason, metadata, api_key_id, occurred_at)
    VALUES (ledger.new_id(), prog.id, 'transfer', acc_from.id, src, dst, pts, a->>'reference', a->>'reason',
            a->'metadata', p_key, now())
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, acc_from.id, acc_to.id, pts);
    PERFORM ledger.consume_lots(acc_from.id, t.id, pts, NULL);
    -- The recipient's points keep the expiry dates of the sender's lots they came from.
    backed := ledger.lot_points(acc_to.balance, pts);
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at)
    SELECT acc_to.id, prog.id, t.id, x.take, x.take, x.expires_at FROM (
        SELECT l.expires_at,
               least(m.points, greatest(backed - coalesce(sum(m.points) OVER w, 0), 0)) AS take
        FROM ledger.lot_moves m JOIN ledger.lots l ON l.id = m.lot_id
        WHERE m.txn_id = t.id
        WINDOW w AS (ORDER BY m.id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ) x WHERE x.take > 0;
    PERFORM ledger.new_lot(acc_to, t.id,
        (backed - coalesce((SELECT sum(points) FROM ledger.lots WHERE txn_id = t.id AND account_id = acc_to.id), 0))::bigint,
        ledger.lot_expiry(prog, now()));
    body := ledger.txn_json(t, prog.code, acc_from);
    RETURN body || jsonb_build_object('to_balance_after', ledger.balance_json(acc_to));
END $$;

CREATE FUNCTION ledger.op_adjust(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    pts bigint := (a->>'points')::bigint;
    acc ledger.accounts; t ledger.transactions;
BEGIN
    IF pts > 0 THEN
        acc := ledger.credit_member(prog, a->>'member_ref', pts, 0);
    ELSE
        acc := ledger.debit_member(prog, a->>'member_ref', -pts, false);
    END IF;
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, reference, reason,
                                     metadata, api_key_id, occurred_at)
    VALUES (ledger.new_id(), prog.id, 'adjustment', acc.id, acc.member_ref, pts, a->>'reference', a->>'reason',
            a->'metadata', p_key, now())
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, prog.adjustment_account, acc.id, pts);
    IF pts > 0 THEN
        PERFORM ledger.new_lot(acc, t.id, ledger.lot_points(acc.balance, pts), ledger.lot_expiry(prog, now()));
    ELSE
        PERFORM ledger.consume_lots(acc.id, t.id, -pts, NULL);
    END IF;
    RETURN ledger.txn_json(t, prog.code, acc);
END $$;

-- Expiry of lots due at p_as_of, one batch per call and per database transaction, set-based.
-- Batches follow (expires_at, id) from the cursor the caller passes back. Accounts are locked
-- (SKIP LOCKED: one busy now is taken by the next run); what a held amount protects stays until
-- the hold ends. Each account's expired points go to breakage in one `expiry` transaction, or
-- rollover_bps of them into a new lot for the next period. Running twice, or from two processes
-- at once, expires nothing twice: `remaining` is re-read under the account lock.
CREATE FUNCTION ledger.expire_lots(p_as_of timestamptz, p_limit int, p_after_at timestamptz, p_after_id bigint,
    OUT next_at timestamptz, OUT next_id bigint, OUT lots int, OUT expired bigint, OUT rolled bigint,
    OUT transactions int)
LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS expiry_due (lot_id bigint, account_id bigint, expires_at timestamptz)
        ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS expiry_acc (account_id bigint, program_id int, member_ref text, cap bigint)
        ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS expiry_take (lot_id bigint, account_id bigint, expires_at timestamptz,
        take bigint, roll bigint) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS expiry_txn (txn_id uuid, account_id bigint) ON COMMIT DELETE ROWS;
    TRUNCATE expiry_due, expiry_acc, expiry_take, expiry_txn;

    INSERT INTO expiry_due
    SELECT id, account_id, expires_at FROM ledger.lots
    WHERE remaining > 0 AND expires_at IS NOT NULL AND expires_at <= p_as_of
      AND (expires_at, id) > (p_after_at, p_after_id)
    ORDER BY expires_at, id LIMIT p_limit;
    GET DIAGNOSTICS lots = ROW_COUNT;
    SELECT d.expires_at, d.lot_id INTO next_at, next_id FROM expiry_due d ORDER BY d.expires_at DESC, d.lot_id DESC LIMIT 1;
    expired := 0; rolled := 0; transactions := 0;
    IF lots = 0 THEN
        RETURN;
    END IF;

    WITH locked AS (
        SELECT a.id, a.program_id, a.member_ref, greatest(a.balance - a.held, 0) AS cap
        FROM ledger.accounts a WHERE a.id IN (SELECT DISTINCT account_id FROM expiry_due)
        ORDER BY a.id FOR UPDATE SKIP LOCKED
    )
    INSERT INTO expiry_acc SELECT * FROM locked;

    INSERT INTO expiry_take
    SELECT x.lot_id, x.account_id, x.expires_at, x.take, x.take * p.rollover_bps / 10000
    FROM (
        SELECT d.lot_id, d.account_id, d.expires_at, a.program_id,
               least(l.remaining, greatest(a.cap - coalesce(sum(l.remaining) OVER w, 0), 0)) AS take
        FROM expiry_due d
        JOIN expiry_acc a ON a.account_id = d.account_id
        JOIN ledger.lots l ON l.id = d.lot_id
        WINDOW w AS (PARTITION BY d.account_id ORDER BY d.expires_at, d.lot_id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ) x JOIN ledger.programs p ON p.id = x.program_id
    WHERE x.take > 0;

    UPDATE ledger.lots l SET remaining = l.remaining - t.take FROM expiry_take t WHERE l.id = t.lot_id;

    -- Rolled-over points stay the member's: a new lot per old expiry date, no posting.
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at)
    SELECT t.account_id, p.id, NULL, sum(t.roll), sum(t.roll), ledger.next_period(p, t.expires_at)
    FROM expiry_take t JOIN expiry_acc a ON a.account_id = t.account_id JOIN ledger.programs p ON p.id = a.program_id
    WHERE t.roll > 0
    GROUP BY t.account_id, p.id, t.expires_at;

    WITH per_account AS (
        SELECT t.account_id, sum(t.take - t.roll) AS broken, sum(t.roll) AS rolled, count(*) AS lots
        FROM expiry_take t GROUP BY t.account_id HAVING sum(t.take - t.roll) > 0
    ), txn AS (
        INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, reason, metadata,
                                         occurred_at)
        SELECT ledger.new_id(), a.program_id, 'expiry', a.account_id, a.member_ref, pa.broken,
               'points expired', jsonb_build_object('rolled_over', pa.rolled, 'lots', pa.lots, 'as_of', p_as_of),
               now()
        FROM per_account pa JOIN expiry_acc a ON a.account_id = pa.account_id
        RETURNING id, account_id, points, program_id
    ), posted AS (
        INSERT INTO ledger.postings (txn_id, account_id, amount)
        SELECT txn.id, txn.account_id, -txn.points FROM txn
        UNION ALL
        SELECT txn.id, p.breakage_account, txn.points FROM txn JOIN ledger.programs p ON p.id = txn.program_id
        RETURNING 1
    ), balances AS (
        UPDATE ledger.accounts ac SET balance = ac.balance - txn.points FROM txn WHERE ac.id = txn.account_id
        RETURNING 1
    )
    INSERT INTO expiry_txn SELECT id, account_id FROM txn;
    GET DIAGNOSTICS transactions = ROW_COUNT;
    SELECT coalesce(sum(take - roll), 0), coalesce(sum(roll), 0) INTO expired, rolled FROM expiry_take;
END $$;

-- Tier review: recomputes members' tiers from their qualifying points (up and down), in batches
-- by account id. Downgrades happen only here.
CREATE FUNCTION ledger.review_tiers(p_after bigint, p_limit int, OUT next_after bigint, OUT reviewed int,
                                    OUT changed int)
LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS tier_review (account_id bigint, old_tier text, new_tier text, points bigint)
        ON COMMIT DELETE ROWS;
    TRUNCATE tier_review;
    INSERT INTO tier_review
    SELECT c.id, c.tier, ledger.tier_for(c.tiers, c.points), c.points FROM (
        SELECT a.id, a.tier, p.tiers, ledger.qualifying_points(p, a.id) AS points
        FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
        WHERE a.kind = 'member' AND a.id > p_after AND (jsonb_array_length(p.tiers) > 0 OR a.tier <> 'basic')
        ORDER BY a.id LIMIT p_limit
    ) c;
    GET DIAGNOSTICS reviewed = ROW_COUNT;
    SELECT max(account_id) INTO next_after FROM tier_review;
    WITH moved AS (
        UPDATE ledger.accounts a SET tier = r.new_tier, tier_since = now()
        FROM tier_review r WHERE a.id = r.account_id AND a.tier = r.old_tier AND r.new_tier <> r.old_tier
        RETURNING a.id, r.old_tier, r.new_tier, r.points
    )
    INSERT INTO ledger.tier_history (account_id, from_tier, to_tier, qualifying_points, reason)
    SELECT id, old_tier, new_tier, points, 'review' FROM moved;
    GET DIAGNOSTICS changed = ROW_COUNT;
END $$;

-- The outbox trigger and the single sequencer of the event feed.
-- Statement-level with a transition table, so a bulk insert of a million rows is one trigger call.
CREATE FUNCTION ledger.outbox_on_transaction() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger.outbox (txn_id) SELECT id FROM inserted;
    RETURN NULL;
END $$;

CREATE TRIGGER transactions_outbox AFTER INSERT ON ledger.transactions
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION ledger.outbox_on_transaction();

CREATE FUNCTION ledger.sequence_events(p_limit int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE n int; base bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('ledger.sequence_events', 0)) THEN
        RETURN 0;
    END IF;
    SELECT coalesce(max(seq), 0) INTO base FROM ledger.outbox;
    WITH pending AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM (SELECT id FROM ledger.outbox WHERE seq IS NULL ORDER BY id LIMIT p_limit) x
    )
    UPDATE ledger.outbox o SET seq = base + pending.n, sequenced_at = now() FROM pending WHERE o.id = pending.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- The one entry point for ledger writes. Idempotency lives here, in the same database transaction
-- as the effect: an advisory lock on the key answers "in use" at once, the stored response answers
-- a replay, and the primary key on (api_key_id, key) is the last guard against a second application.
CREATE FUNCTION ledger.execute(
    p_api_key bigint, p_key text, p_hash bytea, p_op text, p_args jsonb, p_programs text[], p_scopes text[],
    OUT status int, OUT body jsonb, OUT replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE r record; v_code text; v_detail text; v_hint text;
BEGIN
    replayed := false;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('idem:' || p_api_key || ':' || p_key, 0)) THEN
        status := 409;
        body := jsonb_build_object('code', 'idempotency_key_in_use',
            'detail', 'A request with this Idempotency-Key is still being processed; retry shortly.');
        RETURN;
    END IF;
    SELECT k.request_hash, k.status, k.body INTO r
    FROM ledger.idempotency_keys k WHERE k.api_key_id = p_api_key AND k.key = p_key;
    IF FOUND THEN
        IF r.request_hash <> p_hash THEN
            status := 409;
            body := jsonb_build_object('code', 'idempotency_key_reused',
                'detail', 'This Idempotency-Key was used with a different request; use a new key.');
            RETURN;
        END IF;
        status := r.status; body := r.body; replayed := true;
        RETURN;
    END IF;
    BEGIN
        status := 201;
        CASE p_op
            WHEN 'earn' THEN body := ledger.op_earn(p_args, p_api_key, p_programs);
            WHEN 'burn' THEN body := ledger.op_burn(p_args, p_api_key, p_programs);
            WHEN 'hold' THEN body := ledger.op_hold(p_args, p_api_key, p_programs);
            WHEN 'capture' THEN body := ledger.op_capture(p_args, p_api_key, p_programs);
            WHEN 'void' THEN body := ledger.op_void(p_args, p_api_key, p_programs); status := 200;
            WHEN 'reverse' THEN body := ledger.op_reverse(p_args, p_api_key, p_programs, p_scopes);
            WHEN 'transfer' THEN body := ledger.op_transfer(p_args, p_api_key, p_programs);
            WHEN 'adjust' THEN body := ledger.op_adjust(p_args, p_api_key, p_programs);
            ELSE PERFORM ledger.fail('unknown_operation', 400, format('Unknown ledger operation %s.', p_op));
        END CASE;
    EXCEPTION
        WHEN SQLSTATE 'JF000' THEN
            GET STACKED DIAGNOSTICS v_code = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
            status := v_hint::int;
            body := jsonb_build_object('code', v_code, 'detail', v_detail);
        WHEN numeric_value_out_of_range THEN
            status := 422;
            body := jsonb_build_object('code', 'points_out_of_range',
                'detail', 'The operation would take a balance outside the 64-bit integer range.');
    END;
    INSERT INTO ledger.idempotency_keys (api_key_id, key, request_hash, status, body)
    VALUES (p_api_key, p_key, p_hash, status, body);
END $$;

-- Group commit: several requests in one database transaction (one WAL flush, one round trip).
-- Each keeps its own idempotency record and its own result: a refusal rolls back only its own
-- subtransaction inside ledger.execute. Anything else (a deadlock) fails the whole batch, which
-- the caller then retries one request at a time. Input: [{k, key, h (hex), op, a, p, s}, ...].
CREATE FUNCTION ledger.execute_batch(p_requests jsonb)
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
"""


def upgrade() -> None:
    run_script(SCHEMA)
    run_script(FUNCTIONS)


def downgrade() -> None:
    op.execute("DROP SCHEMA ledger CASCADE")
