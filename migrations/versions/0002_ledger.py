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
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'member') = (member_ref <> ''))
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX accounts_program_kind_member ON ledger.accounts (program_id, kind, member_ref);

CREATE TABLE ledger.transactions (
    id uuid PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    program_id int NOT NULL,
    type text NOT NULL CHECK (type IN ('earn', 'burn', 'capture', 'reversal', 'transfer', 'adjustment')),
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
    api_key_id bigint,
    occurred_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (reversed_points >= 0 AND (type = 'adjustment' OR reversed_points <= points))
);
CREATE INDEX transactions_original ON ledger.transactions (original_id) WHERE original_id IS NOT NULL;
CREATE INDEX transactions_program_created ON ledger.transactions (program_id, created_at);

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
-- allows it; `also_hold` reserves instead of debiting.
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

CREATE FUNCTION ledger.op_earn(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    pts bigint := (a->>'points')::bigint;
    acc ledger.accounts;
    t ledger.transactions;
BEGIN
    acc := ledger.credit_member(prog, a->>'member_ref', pts, pts);
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, kind, reference,
                                     metadata, api_key_id, occurred_at)
    VALUES (gen_random_uuid(), prog.id, 'earn', acc.id, acc.member_ref, pts, coalesce(a->>'kind', 'purchase'),
            a->>'reference', a->'metadata', p_key, coalesce((a->>'occurred_at')::timestamptz, now()))
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, ledger.counter_account(prog, a->>'clearing', prog.issuance_account), acc.id, pts);
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
    VALUES (gen_random_uuid(), prog.id, 'burn', acc.id, acc.member_ref, pts, a->>'reference', a->>'reason',
            a->'metadata', p_key, now())
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, acc.id, ledger.counter_account(prog, a->>'clearing', prog.redemption_account), pts);
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
    VALUES (gen_random_uuid(), prog.id, acc.id, acc.member_ref, pts, 'held', a->>'reference', p_key,
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
    VALUES (gen_random_uuid(), prog.id, 'capture', acc.id, acc.member_ref, pts, h.reference, h.id, p_key, now())
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, acc.id, prog.redemption_account, pts);
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
    remaining bigint; pts bigint; needed text; counter bigint;
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
                                     reason, original_id, api_key_id, occurred_at)
    VALUES (gen_random_uuid(), prog.id, 'reversal', acc.id, acc.member_ref, pts, o.type, o.reference,
            a->>'reason', o.id, p_key, now())
    RETURNING * INTO t;
    -- Back against whichever system account the original posted to (issuance, redemption, conversion...).
    SELECT account_id INTO counter FROM ledger.postings WHERE txn_id = o.id AND account_id <> o.account_id LIMIT 1;
    IF o.type = 'earn' THEN
        PERFORM ledger.post_pair(t.id, acc.id, counter, pts);
    ELSE
        PERFORM ledger.post_pair(t.id, counter, acc.id, pts);
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
    acc_from ledger.accounts; acc_to ledger.accounts; t ledger.transactions; body jsonb;
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
    VALUES (gen_random_uuid(), prog.id, 'transfer', acc_from.id, src, dst, pts, a->>'reference', a->>'reason',
            a->'metadata', p_key, now())
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, acc_from.id, acc_to.id, pts);
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
    VALUES (gen_random_uuid(), prog.id, 'adjustment', acc.id, acc.member_ref, pts, a->>'reference', a->>'reason',
            a->'metadata', p_key, now())
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, prog.adjustment_account, acc.id, pts);
    RETURN ledger.txn_json(t, prog.code, acc);
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
"""


def upgrade() -> None:
    run_script(SCHEMA)
    run_script(FUNCTIONS)


def downgrade() -> None:
    op.execute("DROP SCHEMA ledger CASCADE")
