-- When points earned at `p_at` expire under the program's policy (NULL: never), in the program's
-- time zone: rolling months are counted on its calendar, and a fixed date ends at midnight there
-- (31 December expires at 00:00 local time on 1 January); a fixed date already past rolls to the
-- next year.
CREATE OR REPLACE FUNCTION ledger.lot_expiry(prog ledger.programs, p_at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    -- Plain SQL (no PL/pgSQL) so the planner inlines it into set-based inserts of many lots.
    SELECT CASE prog.expiry->>'policy'
        WHEN 'rolling' THEN ((p_at AT TIME ZONE prog.timezone) + make_interval(months => (prog.expiry->>'months')::int))
                             AT TIME ZONE prog.timezone
        WHEN 'fixed' THEN
            (make_date(extract(year FROM p_at AT TIME ZONE prog.timezone)::int + (prog.expiry->>'years_after')::int,
                       (prog.expiry->>'month')::int, (prog.expiry->>'day')::int) + 1)::timestamp AT TIME ZONE prog.timezone
            + CASE WHEN (make_date(extract(year FROM p_at AT TIME ZONE prog.timezone)::int
                                   + (prog.expiry->>'years_after')::int,
                                   (prog.expiry->>'month')::int, (prog.expiry->>'day')::int) + 1)::timestamp
                        AT TIME ZONE prog.timezone <= p_at
                   THEN interval '1 year' ELSE interval '0' END
    END
$$;

-- The expiry of a lot rolled over from one that expired at `p_old`: the next period of the policy,
-- on the program's calendar.
CREATE OR REPLACE FUNCTION ledger.next_period(prog ledger.programs, p_old timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE prog.expiry->>'policy'
        WHEN 'rolling' THEN ((p_old AT TIME ZONE prog.timezone) + make_interval(months => (prog.expiry->>'months')::int))
                            AT TIME ZONE prog.timezone
        WHEN 'fixed' THEN ((p_old AT TIME ZONE prog.timezone) + interval '1 year') AT TIME ZONE prog.timezone
        ELSE NULL END
$$;

-- When an earn at `p_at` with `p_days` pending days (the rule's; NULL: the program's) becomes
-- spendable, in the program's calendar; NULL when it is spendable now (no pending days, or a
-- back-dated earn already past them). One expression with no FROM, so the planner inlines it into
-- the set-based earn (a function call per row costs more than the earn's own arithmetic).
CREATE OR REPLACE FUNCTION ledger.pending_until(prog ledger.programs, p_at timestamptz, p_days int)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN coalesce(p_days, prog.pending_days) > 0
                 AND ((p_at AT TIME ZONE prog.timezone)
                      + make_interval(days => coalesce(p_days, prog.pending_days))) AT TIME ZONE prog.timezone > now()
                THEN ((p_at AT TIME ZONE prog.timezone)
                      + make_interval(days => coalesce(p_days, prog.pending_days))) AT TIME ZONE prog.timezone
           END
$$;

-- A member's pending points now: accounts.pending (`p_pending`) less its lots whose release time
-- has passed but that no one has released yet (ledger.release_pending_of). An expression with no
-- subquery, so it is inlined: the lots are read (ledger.due_pending) only for members with pending
-- points, and every other member costs a comparison.
CREATE OR REPLACE FUNCTION ledger.pending_now(p_account bigint, p_pending bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN coalesce(p_pending, 0) <= 0 THEN 0::bigint ELSE p_pending - ledger.due_pending(p_account) END
$$;

-- A member's pending points whose release time has passed.
CREATE OR REPLACE FUNCTION ledger.due_pending(p_account bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(remaining), 0)::bigint FROM ledger.lots
    WHERE account_id = p_account AND pending_until IS NOT NULL AND remaining > 0 AND pending_until <= now()
$$;

-- Releases a member's pending lots whose time has come: clears their pending_until and takes their
-- points off accounts.pending, under the account's row lock (the order of every writer: account,
-- then its lots), so it is safe beside any debit and a second run finds nothing to do.
CREATE OR REPLACE FUNCTION ledger.release_pending_of(p_account bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE released bigint;
BEGIN
    PERFORM 1 FROM ledger.accounts WHERE id = p_account AND pending > 0 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    WITH due AS (
        UPDATE ledger.lots SET pending_until = NULL
        WHERE account_id = p_account AND pending_until IS NOT NULL AND remaining > 0 AND pending_until <= now()
        RETURNING remaining
    )
    SELECT coalesce(sum(remaining), 0) INTO released FROM due;
    IF released > 0 THEN
        UPDATE ledger.accounts SET pending = pending - released WHERE id = p_account;
    END IF;
    RETURN released;
END $$;

-- The background release: members with lots due, a batch at a time; SKIP LOCKED lets several
-- processes run it and leaves a member busy now to the next run (or to its own next debit).
CREATE OR REPLACE FUNCTION ledger.release_due_pending(p_limit int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE released bigint;
BEGIN
    WITH due AS (
        SELECT DISTINCT account_id FROM ledger.lots
        WHERE pending_until IS NOT NULL AND remaining > 0 AND pending_until <= now()
        LIMIT p_limit
    ), locked AS (
        SELECT a.id FROM ledger.accounts a WHERE a.id IN (SELECT account_id FROM due)
        ORDER BY a.id FOR UPDATE SKIP LOCKED
    ), lots AS (
        UPDATE ledger.lots l SET pending_until = NULL
        WHERE l.account_id IN (SELECT id FROM locked)
          AND l.pending_until IS NOT NULL AND l.remaining > 0 AND l.pending_until <= now()
        RETURNING l.account_id, l.remaining
    ), per_account AS (
        SELECT account_id, sum(remaining) AS points FROM lots GROUP BY account_id
    ), upd AS (
        UPDATE ledger.accounts a SET pending = a.pending - p.points FROM per_account p WHERE a.id = p.account_id
        RETURNING p.points
    )
    SELECT coalesce(sum(points), 0) INTO released FROM upd;
    RETURN released;
END $$;

-- Points a credit adds to lots: the part of it that is not repaying a negative balance.
CREATE OR REPLACE FUNCTION ledger.lot_points(p_balance_after bigint, p_credit bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(p_balance_after, 0) - greatest(p_balance_after - p_credit, 0)
$$;

CREATE OR REPLACE FUNCTION ledger.new_lot(acc ledger.accounts, p_txn uuid, p_points bigint, p_expires timestamptz)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at)
    SELECT acc.id, acc.program_id, p_txn, p_points, p_points, p_expires WHERE p_points > 0
$$;

-- Takes `p_points` from the member's lots, earliest expiry first (never-expiring last), starting
-- with `p_first_lot` when given (a clawback takes from its own earn's lot first). The caller holds
-- the account's row lock. Pending lots (pending_until set, counted in accounts.pending) come last:
-- a debit checked against `available` never reaches them; only a debit the program lets go
-- negative, or a clawback, does, and its caller keeps accounts.pending equal to what they hold
-- (ledger.debit_member: least(pending, greatest(balance, 0))). Points beyond the lots (a
-- negative balance) are backed by no lot.
CREATE OR REPLACE FUNCTION ledger.consume_lots(p_account bigint, p_txn uuid, p_points bigint, p_first_lot bigint)
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
        WHERE account_id = p_account AND remaining > 0 AND pending_until IS NULL
        ORDER BY expires_at, id
    LOOP
        EXIT WHEN left_over <= 0;
        take := least(l.remaining, left_over);
        UPDATE ledger.lots SET remaining = remaining - take WHERE id = l.id;
        INSERT INTO ledger.lot_moves (txn_id, lot_id, points) VALUES (p_txn, l.id, take);
        left_over := left_over - take;
    END LOOP;
    IF left_over > 0 THEN
        FOR l IN
            SELECT id, remaining FROM ledger.lots
            WHERE account_id = p_account AND remaining > 0 AND pending_until IS NOT NULL
            ORDER BY pending_until, id
        LOOP
            EXIT WHEN left_over <= 0;
            take := least(l.remaining, left_over);
            UPDATE ledger.lots SET remaining = remaining - take WHERE id = l.id;
            INSERT INTO ledger.lot_moves (txn_id, lot_id, points) VALUES (p_txn, l.id, take);
            left_over := left_over - take;
        END LOOP;
    END IF;
END $$;

-- A refund gives back what the original debit took, to the same lots (they keep their expiry),
-- latest-expiring first; whatever cannot go back (a lot gone, a negative balance, a lot still
-- pending, which only a debit that went negative reaches) gets a new lot.
CREATE OR REPLACE FUNCTION ledger.restore_lots(prog ledger.programs, acc ledger.accounts, p_orig uuid, p_txn uuid,
                                    p_points bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE m record; left_over bigint := p_points; take bigint;
BEGIN
    FOR m IN
        SELECT mv.id, mv.lot_id, mv.points - mv.restored AS open
        FROM ledger.lot_moves mv JOIN ledger.lots l ON l.id = mv.lot_id
        WHERE mv.txn_id = p_orig AND mv.points > mv.restored AND l.pending_until IS NULL
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
