-- Expiry of lots due at p_as_of, one batch per call and per database transaction, set-based.
-- Batches follow (expires_at, id) from the cursor the caller passes back. Accounts are locked
-- (SKIP LOCKED: one busy now is taken by the next run); what a held amount protects stays until
-- the hold ends (holds are taken from released points, so a pending lot due to expire goes whole
-- and takes its points off accounts.pending). Each account's expired points go to breakage in one `expiry` transaction, or
-- rollover_bps of them into a new lot for the next period. Running twice, or from two processes
-- at once, expires nothing twice: `remaining` is re-read under the account lock.
-- A run is a fixed point (DESIGN §4): rolled-over points roll once (a rolled lot, at this member or
-- transferred to another, goes all to breakage when it is due), and points whose rolled lot would
-- itself be due by p_as_of go to breakage at once, so a run as of T leaves no unheld lot due at T and
-- a second run with the same T changes nothing. p_program limits the run to one program (NULL: all).
CREATE OR REPLACE FUNCTION ledger.expire_lots(p_as_of timestamptz, p_limit int, p_after_at timestamptz, p_after_id bigint,
    p_program int,
    OUT next_at timestamptz, OUT next_id bigint, OUT lots int, OUT expired bigint, OUT rolled bigint,
    OUT transactions int)
LANGUAGE plpgsql AS $$
BEGIN
    -- Dropped at commit, not emptied: an ON COMMIT DELETE ROWS table is truncated at every later
    -- commit of the session that touches a temp table, the pooled connection's earns included.
    CREATE TEMP TABLE IF NOT EXISTS expiry_due (lot_id bigint, account_id bigint, expires_at timestamptz)
        ON COMMIT DROP;
    CREATE TEMP TABLE IF NOT EXISTS expiry_acc (account_id bigint, program_id int, member_ref text, cap bigint)
        ON COMMIT DROP;
    CREATE TEMP TABLE IF NOT EXISTS expiry_take (lot_id bigint, account_id bigint, expires_at timestamptz,
        take bigint, roll bigint, pending_until timestamptz) ON COMMIT DROP;
    CREATE TEMP TABLE IF NOT EXISTS expiry_txn (txn_id uuid, account_id bigint) ON COMMIT DROP;
    TRUNCATE expiry_due, expiry_acc, expiry_take, expiry_txn;

    INSERT INTO expiry_due
    SELECT id, account_id, expires_at FROM ledger.lots
    WHERE remaining > 0 AND expires_at IS NOT NULL AND expires_at <= p_as_of
      AND (expires_at, id) > (p_after_at, p_after_id) AND (p_program IS NULL OR program_id = p_program)
    ORDER BY expires_at, id LIMIT p_limit;
    GET DIAGNOSTICS lots = ROW_COUNT;
    SELECT d.expires_at, d.lot_id INTO next_at, next_id FROM expiry_due d ORDER BY d.expires_at DESC, d.lot_id DESC LIMIT 1;
    expired := 0; rolled := 0; transactions := 0;
    IF lots = 0 THEN
        RETURN;
    END IF;

    WITH locked AS (
        SELECT a.id, a.program_id, a.member_ref, greatest(a.balance - a.held - a.pending, 0) AS cap
        -- = ANY (ARRAY(...)): one index probe per account, whatever the planner guesses of a temp
        -- table (it has no statistics).
        FROM ledger.accounts a WHERE a.id = ANY (ARRAY(SELECT DISTINCT account_id FROM expiry_due))
        ORDER BY a.id FOR UPDATE SKIP LOCKED
    )
    INSERT INTO expiry_acc SELECT * FROM locked;

    INSERT INTO expiry_take
    SELECT x.lot_id, x.account_id, x.expires_at, x.take,
           CASE WHEN x.is_rolled OR NOT coalesce(ledger.next_period(p, x.expires_at) > p_as_of, false) THEN 0
                ELSE x.take * p.rollover_bps / 10000 END,
           x.pending_until
    FROM (
        SELECT d.lot_id, d.account_id, d.expires_at, a.program_id, l.rolled AS is_rolled,
               l.pending_until,
               CASE WHEN l.pending_until IS NOT NULL THEN l.remaining
                    ELSE least(l.remaining, greatest(a.cap - coalesce(sum(l.remaining) FILTER (
                             WHERE l.pending_until IS NULL) OVER w, 0), 0)) END AS take
        FROM expiry_due d
        JOIN expiry_acc a ON a.account_id = d.account_id
        JOIN ledger.lots l ON l.id = d.lot_id
        WINDOW w AS (PARTITION BY d.account_id ORDER BY d.expires_at, d.lot_id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ) x JOIN ledger.programs p ON p.id = x.program_id
    WHERE x.take > 0;

    UPDATE ledger.lots l SET remaining = l.remaining - t.take FROM expiry_take t WHERE l.id = t.lot_id;
    -- A pending lot's points leave accounts.pending, except what rolls over before the lot's release
    -- time: that stays pending in the rolled lot, released when the original would have been.
    UPDATE ledger.accounts a SET pending = a.pending - s.points
    FROM (SELECT account_id, sum(take - CASE WHEN pending_until > now() THEN roll ELSE 0 END) AS points
          FROM expiry_take WHERE pending_until IS NOT NULL GROUP BY 1) s
    WHERE a.id = s.account_id AND s.points <> 0;

    -- Rolled-over points stay the member's: a new lot per old expiry date (and release time), no posting.
    INSERT INTO ledger.lots (account_id, program_id, txn_id, points, remaining, expires_at, pending_until, rolled)
    SELECT t.account_id, p.id, NULL, sum(t.roll), sum(t.roll), ledger.next_period(p, t.expires_at),
           CASE WHEN t.pending_until > now() THEN t.pending_until END, true
    FROM expiry_take t JOIN expiry_acc a ON a.account_id = t.account_id JOIN ledger.programs p ON p.id = a.program_id
    WHERE t.roll > 0
    GROUP BY t.account_id, p.id, t.expires_at, CASE WHEN t.pending_until > now() THEN t.pending_until END;

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
