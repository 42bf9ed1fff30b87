-- Time-ordered ids (UUIDv7 on PostgreSQL 18+): new rows land at the right edge of the primary
-- key and of every index on the id, instead of on random pages. Older servers get random UUIDs.
DO $do$
BEGIN
    IF current_setting('server_version_num')::int >= 180000 THEN
        CREATE OR REPLACE FUNCTION ledger.new_id() RETURNS uuid LANGUAGE sql VOLATILE AS 'SELECT uuidv7()';
    ELSE
        CREATE OR REPLACE FUNCTION ledger.new_id() RETURNS uuid LANGUAGE sql VOLATILE AS 'SELECT gen_random_uuid()';
    END IF;
END
$do$;

-- Domain errors travel as SQLSTATE JF000: MESSAGE = stable code, DETAIL = text, HINT = HTTP status.
CREATE OR REPLACE FUNCTION ledger.fail(p_code text, p_status int, p_detail text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'JF000', MESSAGE = p_code, DETAIL = p_detail, HINT = p_status::text;
END $$;

CREATE OR REPLACE FUNCTION ledger.ts(t timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE OR REPLACE FUNCTION ledger.program_for(p_code text, p_programs text[]) RETURNS ledger.programs
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

-- The program's max_points_per_transaction (DESIGN §4) for a request naming `program` and `points`
-- (an adjustment's are signed). An unknown or forbidden program is left to the operation's own
-- lookup, so its refusal stays what it was.
CREATE OR REPLACE FUNCTION ledger.check_points_limit(a jsonb, p_programs text[]) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE lim bigint;
BEGIN
    IF jsonb_typeof(a->'points') IS DISTINCT FROM 'number' OR a->>'program' IS NULL
       OR (p_programs IS NOT NULL AND NOT (a->>'program' = ANY (p_programs))) THEN
        RETURN;
    END IF;
    SELECT max_points_per_transaction INTO lim FROM ledger.programs WHERE code = a->>'program';
    IF FOUND AND abs((a->>'points')::numeric) > lim THEN
        PERFORM ledger.fail('points_limit_exceeded', 422,
            format('Program %s takes at most %s points in one transaction.', a->>'program', lim));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ledger.program_by_id(p_id int, p_programs text[]) RETURNS ledger.programs
LANGUAGE plpgsql STABLE AS $$
DECLARE prog ledger.programs;
BEGIN
    SELECT * INTO prog FROM ledger.programs WHERE id = p_id;
    IF p_programs IS NOT NULL AND NOT (prog.code = ANY (p_programs)) THEN
        PERFORM ledger.fail('program_forbidden', 403, format('This API key may not act on program %s.', prog.code));
    END IF;
    RETURN prog;
END $$;

CREATE OR REPLACE FUNCTION ledger.balance_json(acc ledger.accounts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    -- No FROM, so it is inlined into txn_json and hold_json; ledger.pending_now costs a comparison
    -- for a member without pending points (it reads lots only for the others, twice here).
    SELECT jsonb_build_object('balance', acc.balance, 'held', acc.held, 'pending', ledger.pending_now(acc.id, acc.pending),
                              'available', acc.balance - acc.held - ledger.pending_now(acc.id, acc.pending))
$$;

CREATE OR REPLACE FUNCTION ledger.txn_json(t ledger.transactions, p_code text, acc ledger.accounts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', t.id, 'type', t.type, 'program', p_code, 'member_ref', t.member_ref,
        'points', t.points, 'kind', t.kind, 'reference', t.reference, 'reason', t.reason,
        'metadata', t.metadata, 'original_id', t.original_id, 'hold_id', t.hold_id,
        'to_member_ref', t.counterparty_ref, 'reversed_points', t.reversed_points,
        'merchant_id', t.merchant_id, 'breakdown', t.breakdown,
        'occurred_at', ledger.ts(t.occurred_at), 'created_at', ledger.ts(t.created_at),
        'balance_after', ledger.balance_json(acc))
$$;

CREATE OR REPLACE FUNCTION ledger.hold_json(h ledger.holds, p_code text, acc ledger.accounts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', h.id, 'type', 'hold', 'status', h.status, 'program', p_code, 'member_ref', h.member_ref,
        'points', h.points, 'captured_points', h.captured_points, 'capture_transaction_id', h.capture_txn_id,
        'reference', h.reference, 'expires_at', ledger.ts(h.expires_at),
        'created_at', ledger.ts(h.created_at), 'updated_at', ledger.ts(h.updated_at),
        'balance_after', ledger.balance_json(acc))
$$;

-- The system account on the other side of an earn or burn: the program's default, or its
-- conversion clearing or merchant funding account when the caller names one.
CREATE OR REPLACE FUNCTION ledger.counter_account(prog ledger.programs, p_clearing text, p_default bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_clearing WHEN 'conversion' THEN prog.conversion_account
                           WHEN 'merchant' THEN prog.merchant_account
                           ELSE p_default END
$$;

CREATE OR REPLACE FUNCTION ledger.post_pair(p_txn uuid, p_debit bigint, p_credit bigint, p_points bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ledger.postings (txn_id, account_id, amount)
    VALUES (p_txn, p_debit, -p_points), (p_txn, p_credit, p_points)
$$;
