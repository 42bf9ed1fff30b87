CREATE OR REPLACE FUNCTION ledger.op_burn(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    pts bigint := (a->>'points')::bigint;
    v_at timestamptz := coalesce((a->>'occurred_at')::timestamptz, now());
    -- A burn at an acceptor partner goes to its accepted account (DESIGN §8).
    pp ledger.partner_programs := ledger.partner_row(a->>'partner', prog.id, 'acceptor', v_at, true);
    acc ledger.accounts;
    t ledger.transactions;
BEGIN
    acc := ledger.debit_member(prog, a->>'member_ref', pts, false);
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, reference, reason,
                                     metadata, api_key_id, occurred_at, partner_id)
    VALUES (ledger.new_id(), prog.id, 'burn', acc.id, acc.member_ref, pts, a->>'reference', a->>'reason',
            a->'metadata', p_key, v_at, pp.partner_id)
    RETURNING * INTO t;
    PERFORM ledger.post_pair(t.id, acc.id,
        coalesce(pp.accepted_account, ledger.counter_account(prog, a->>'clearing', prog.redemption_account)), pts);
    PERFORM ledger.consume_lots(acc.id, t.id, pts, NULL);
    RETURN ledger.txn_json(t, prog.code, acc);
END $$;

CREATE OR REPLACE FUNCTION ledger.op_reverse(a jsonb, p_key bigint, p_programs text[], p_scopes text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    o ledger.transactions; prog ledger.programs; acc ledger.accounts; t ledger.transactions;
    remaining bigint; pts bigint; needed text; counter bigint; own_lot bigint;
    own_pending bigint := 0; policy text;
BEGIN
    SELECT * INTO o FROM ledger.transactions WHERE id = (a->>'transaction_id')::uuid FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM ledger.fail('transaction_not_found', 404, format('No transaction with id %s.', a->>'transaction_id'));
    END IF;
    prog := ledger.program_by_id(o.program_id, p_programs);
    PERFORM ledger.check_acting_partner(a->>'acting_partner', o.partner_id);
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
        -- The clawback takes its own earn's lot first; while that lot is pending, what it takes from
        -- it leaves `available` as it was. The returns policy says what else it may take.
        PERFORM ledger.release_pending_of(o.account_id);  -- after it, a lot with pending_until is pending now
        SELECT l.id, CASE WHEN l.pending_until IS NOT NULL THEN least(l.remaining, pts) ELSE 0 END
        INTO own_lot, own_pending FROM ledger.lots l WHERE l.txn_id = o.id LIMIT 1;  -- one lot per earn
        own_pending := coalesce(own_pending, 0);
        policy := CASE WHEN prog.allow_negative THEN 'allow_negative' ELSE prog.returns_policy END;
        IF policy = 'only_pending' AND pts > own_pending THEN
            PERFORM ledger.fail('clawback_not_pending', 422,
                format('Program %s takes back only pending points (returns_policy only_pending): transaction %s '
                       'has %s pending points; the clawback needs %s.', prog.code, o.id, own_pending, pts));
        END IF;
        -- pending as ledger.debit_member keeps it: the rest may reach other pending lots only when
        -- the policy lets the balance go below them.
        UPDATE ledger.accounts SET balance = balance - pts, lifetime_earned = lifetime_earned - pts,
            pending = least(pending - own_pending, greatest(balance - pts, 0))
        WHERE id = o.account_id AND (policy <> 'within_balance' OR balance - held - pending >= pts - own_pending)
        RETURNING * INTO acc;
        IF NOT FOUND THEN
            SELECT * INTO acc FROM ledger.accounts WHERE id = o.account_id;
            PERFORM ledger.fail('insufficient_points', 422,
                format('Member %s has %s points available; the clawback needs %s (returns_policy within_balance).',
                       o.member_ref, acc.balance - acc.held - acc.pending, pts - own_pending));
        END IF;
    ELSE
        UPDATE ledger.accounts SET balance = balance + pts WHERE id = o.account_id RETURNING * INTO acc;
    END IF;
    UPDATE ledger.transactions SET reversed_points = reversed_points + pts WHERE id = o.id;
    INSERT INTO ledger.transactions (id, program_id, type, account_id, member_ref, points, kind, reference,
                                     reason, original_id, merchant_id, api_key_id, occurred_at, partner_id)
    VALUES (ledger.new_id(), prog.id, 'reversal', acc.id, acc.member_ref, pts, o.type, o.reference,
            a->>'reason', o.id, o.merchant_id, p_key, now(), o.partner_id)
    RETURNING * INTO t;
    IF o.partner_id IS NOT NULL AND o.type = 'earn' THEN
        PERFORM ledger.uncount_partner_earn(o.partner_id, o.program_id, pts, t.occurred_at);
    END IF;
    -- Back against whichever system account the original posted to (issuance, redemption, conversion...).
    SELECT account_id INTO counter FROM ledger.postings WHERE txn_id = o.id AND account_id <> o.account_id LIMIT 1;
    IF o.type = 'earn' THEN
        PERFORM ledger.post_pair(t.id, acc.id, counter, pts);
        PERFORM ledger.consume_lots(acc.id, t.id, pts, own_lot);
        IF o.kind = ANY (prog.qualifying_kinds) AND jsonb_array_length(prog.tiers) > 0 THEN
            UPDATE ledger.tier_buckets SET points = points - pts
            WHERE account_id = acc.id AND month = date_trunc('month', o.occurred_at AT TIME ZONE prog.timezone)::date;
        END IF;
    ELSE
        PERFORM ledger.post_pair(t.id, counter, acc.id, pts);
        PERFORM ledger.restore_lots(prog, acc, o.id, t.id, ledger.lot_points(acc.balance, pts));
    END IF;
    RETURN ledger.txn_json(t, prog.code, acc);
END $$;

CREATE OR REPLACE FUNCTION ledger.op_transfer(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
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
    -- The recipient's points keep the expiry dates of the sender's lots they came from, and whether
    -- they were rolled over already (they roll once).
    backed := ledger.lot_points(acc_to.balance, pts);
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at, rolled)
    SELECT acc_to.id, prog.id, t.id, x.take, x.take, x.expires_at, x.rolled FROM (
        SELECT l.expires_at, l.rolled,
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

CREATE OR REPLACE FUNCTION ledger.op_adjust(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
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
