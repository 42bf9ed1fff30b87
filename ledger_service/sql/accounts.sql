-- Debits a member's posted balance, refusing to take `available` (balance - held - pending) below
-- zero unless the program allows it; with p_hold it reserves (held) instead of debiting. A debit
-- the program lets go negative may reach pending lots (ledger.consume_lots takes them last):
-- pending then keeps to what they still hold, least(pending, greatest(balance, 0)).
CREATE OR REPLACE FUNCTION ledger.debit_member(prog ledger.programs, p_member text, p_points bigint, p_hold boolean)
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
              AND (prog.allow_negative OR balance - held - pending >= p_points)
            RETURNING * INTO acc;
        ELSE
            UPDATE ledger.accounts SET balance = balance - p_points,
                pending = least(pending, greatest(balance - p_points, 0))
            WHERE program_id = prog.id AND kind = 'member' AND member_ref = p_member
              AND (prog.allow_negative OR balance - held - pending >= p_points)
            RETURNING * INTO acc;
        END IF;
        IF FOUND THEN
            RETURN acc;
        END IF;
        SELECT * INTO acc FROM ledger.accounts
        WHERE program_id = prog.id AND kind = 'member' AND member_ref = p_member;
        -- Only on the refusal path: free holds that have expired but not yet been swept, and pending
        -- points whose time has come but not yet been released, then retry once.
        IF attempt = 0 AND FOUND
           AND ledger.release_expired_holds_of(acc.id) + ledger.release_pending_of(acc.id) > 0 THEN
            attempt := 1;
            CONTINUE;
        END IF;
        avail := coalesce(acc.balance - acc.held - ledger.pending_now(acc.id, acc.pending), 0);
        PERFORM ledger.fail('insufficient_points', 422,
            format('Member %s has %s points available in %s; %s requested.', p_member, avail, prog.code, p_points));
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION ledger.credit_member(prog ledger.programs, p_member text, p_points bigint, p_earned bigint)
RETURNS ledger.accounts
LANGUAGE sql AS $$
    INSERT INTO ledger.accounts AS a (program_id, kind, member_ref, balance, lifetime_earned)
    VALUES (prog.id, 'member', p_member, p_points, p_earned)
    ON CONFLICT (program_id, kind, member_ref) DO UPDATE
        SET balance = a.balance + EXCLUDED.balance, lifetime_earned = a.lifetime_earned + EXCLUDED.lifetime_earned
    RETURNING *
$$;
