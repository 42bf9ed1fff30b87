-- Releases a member's holds that are past their expiry. Locks holds before the account, the
-- same order as capture and void, so the two cannot deadlock.
CREATE OR REPLACE FUNCTION ledger.release_expired_holds_of(p_account bigint) RETURNS bigint
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
CREATE OR REPLACE FUNCTION ledger.expire_due_holds(p_limit int) RETURNS int
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

CREATE OR REPLACE FUNCTION ledger.locked_hold(p_id uuid, p_programs text[]) RETURNS ledger.holds
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

CREATE OR REPLACE FUNCTION ledger.op_hold(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    pts bigint := (a->>'points')::bigint;
    -- A hold at an acceptor partner is captured to its accepted account.
    pp ledger.partner_programs := ledger.partner_row(a->>'partner', prog.id, 'acceptor', now(), true);
    acc ledger.accounts;
    h ledger.holds;
BEGIN
    acc := ledger.debit_member(prog, a->>'member_ref', pts, true);
    INSERT INTO ledger.holds (id, program_id, account_id, member_ref, points, status, reference, api_key_id, expires_at,
                              partner_id)
    VALUES (ledger.new_id(), prog.id, acc.id, acc.member_ref, pts, 'held', a->>'reference', p_key,
            now() + make_interval(secs => (a->>'expires_in_s')::int), pp.partner_id)
    RETURNING * INTO h;
    RETURN ledger.hold_json(h, prog.code, acc);
END $$;

CREATE OR REPLACE FUNCTION ledger.op_capture(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    h ledger.holds; prog ledger.programs; acc ledger.accounts; t ledger.transactions; pts bigint;
    pp ledger.partner_programs; v_at timestamptz := coalesce((a->>'occurred_at')::timestamptz, now());
BEGIN
    h := ledger.locked_hold((a->>'hold_id')::uuid, p_programs);
    SELECT * INTO prog FROM ledger.programs WHERE id = h.program_id;
    PERFORM ledger.check_acting_partner(a->>'acting_partner', h.partner_id);
    IF h.partner_id IS NOT NULL THEN
        pp := ledger.partner_row((SELECT code FROM ledger.partners WHERE id = h.partner_id), prog.id, 'acceptor', v_at, true);
    END IF;
    pts := coalesce((a->>'points')::bigint, h.points);
    IF pts > h.points THEN
        PERFORM ledger.fail('capture_exceeds_hold', 422,
            format('Cannot capture %s points from a hold of %s.', pts, h.points));
    END IF;
    UPDATE ledger.accounts SET balance = balance - pts, held = held - h.points,
        pending = least(pending, greatest(balance - pts, 0))  -- as ledger.debit_member
    WHERE id = h.account_id RETURNING * INTO acc;
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, reference,
                                     hold_id, api_key_id, occurred_at, partner_id)
    VALUES (ledger.new_id(), prog.id, 'capture', acc.id, acc.member_ref, pts, h.reference, h.id, p_key, v_at,
            h.partner_id)
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, acc.id, coalesce(pp.accepted_account, prog.redemption_account), pts);
    PERFORM ledger.consume_lots(acc.id, t.id, pts, NULL);
    UPDATE ledger.holds SET status = 'captured', captured_points = pts, capture_txn_id = t.id, updated_at = now()
    WHERE id = h.id;
    RETURN ledger.txn_json(t, prog.code, acc);
END $$;

CREATE OR REPLACE FUNCTION ledger.op_void(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE h ledger.holds; prog ledger.programs; acc ledger.accounts;
BEGIN
    h := ledger.locked_hold((a->>'hold_id')::uuid, p_programs);
    SELECT * INTO prog FROM ledger.programs WHERE id = h.program_id;
    UPDATE ledger.accounts SET held = held - h.points WHERE id = h.account_id RETURNING * INTO acc;
    UPDATE ledger.holds SET status = 'voided', updated_at = now() WHERE id = h.id RETURNING * INTO h;
    RETURN ledger.hold_json(h, prog.code, acc);
END $$;
