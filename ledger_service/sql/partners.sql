-- Coalition partners (DESIGN §8): who funded a point and where it was spent, prepaid and credit
-- checks under the posting's own locks, and settlement into immutable statement lines.

-- Periods in the program's time zone: a day, an ISO week (from Monday) or a calendar month.
CREATE OR REPLACE FUNCTION ledger.period_unit(p_period text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_period WHEN 'daily' THEN 'day' WHEN 'weekly' THEN 'week' WHEN 'monthly' THEN 'month'
                         ELSE p_period END
$$;

CREATE OR REPLACE FUNCTION ledger.period_start(p_at timestamptz, p_period text, p_tz text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT date_trunc(ledger.period_unit(p_period), p_at AT TIME ZONE p_tz) AT TIME ZONE p_tz
$$;

CREATE OR REPLACE FUNCTION ledger.period_end(p_at timestamptz, p_period text, p_tz text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT (date_trunc(ledger.period_unit(p_period), p_at AT TIME ZONE p_tz)
            + ('1 ' || ledger.period_unit(p_period))::interval) AT TIME ZONE p_tz
$$;

-- Round half up (2.5 -> 3, -2.5 -> -2), once per statement line.
CREATE OR REPLACE FUNCTION ledger.half_up(p numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT floor(p + 0.5)
$$;

-- The version of a partner's terms for a program in force at p_at (NULL before the first).
CREATE OR REPLACE FUNCTION ledger.partner_terms_at(p_partner int, p_program int, p_at timestamptz)
RETURNS ledger.partner_terms
LANGUAGE sql STABLE AS $$
    SELECT * FROM ledger.partner_terms
    WHERE partner_id = p_partner AND program_id = p_program AND effective_from <= p_at
    ORDER BY effective_from DESC LIMIT 1
$$;

-- A partner's row for a program, with its two system accounts, created on first use (terms or a
-- funding). Accounts are named partner:{code}:issued and partner:{code}:accepted.
CREATE OR REPLACE FUNCTION ledger.partner_program(p_partner int, p_program int) RETURNS ledger.partner_programs
LANGUAGE plpgsql AS $$
DECLARE pp ledger.partner_programs; v_code text;
BEGIN
    SELECT * INTO pp FROM ledger.partner_programs WHERE partner_id = p_partner AND program_id = p_program;
    IF FOUND THEN
        RETURN pp;
    END IF;
    SELECT code INTO v_code FROM ledger.partners WHERE id = p_partner;
    INSERT INTO ledger.accounts (program_id, kind, member_ref)
    VALUES (p_program, 'partner_issued', 'partner:' || v_code || ':issued'),
           (p_program, 'partner_accepted', 'partner:' || v_code || ':accepted')
    ON CONFLICT DO NOTHING;
    INSERT INTO ledger.partner_programs (partner_id, program_id, issued_account, accepted_account)
    SELECT p_partner, p_program,
           (SELECT id FROM ledger.accounts WHERE program_id = p_program AND kind = 'partner_issued'
                AND member_ref = 'partner:' || v_code || ':issued'),
           (SELECT id FROM ledger.accounts WHERE program_id = p_program AND kind = 'partner_accepted'
                AND member_ref = 'partner:' || v_code || ':accepted')
    ON CONFLICT DO NOTHING;
    SELECT * INTO pp FROM ledger.partner_programs WHERE partner_id = p_partner AND program_id = p_program;
    RETURN pp;
END $$;

-- Why a posting may not name partner p_code (NULL: it may): unknown, suspended, without the role
-- (issuer for an earn, acceptor for a burn or capture) or without terms for the program in force at p_at.
CREATE OR REPLACE FUNCTION ledger.partner_refusal(p_code text, p_program int, p_role text, p_at timestamptz)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p.id IS NULL THEN 'partner_not_found'
                WHEN p.status <> 'active' THEN 'partner_suspended'
                WHEN NOT (p_role = ANY (p.roles)) THEN 'partner_role_missing'
                WHEN ledger.partner_terms_at(p.id, p_program, p_at) IS NULL THEN 'partner_terms_missing' END
    FROM (SELECT 1) one LEFT JOIN ledger.partners p ON p.code = p_code
$$;

-- The partner row a posting names, checked (ledger.partner_refusal); NULL when p_code is NULL (no
-- partner). On a refusal it raises, or with p_raise false returns NULL (the coalesced path leaves
-- such a request to ledger.execute, which answers it with the error).
CREATE OR REPLACE FUNCTION ledger.partner_row(p_code text, p_program int, p_role text, p_at timestamptz,
                                              p_raise boolean) RETURNS ledger.partner_programs
LANGUAGE plpgsql STABLE AS $$
DECLARE refusal text; pp ledger.partner_programs;
BEGIN
    IF p_code IS NULL THEN
        RETURN NULL;
    END IF;
    refusal := ledger.partner_refusal(p_code, p_program, p_role, p_at);
    IF refusal IS NULL THEN
        SELECT x.* INTO pp FROM ledger.partner_programs x JOIN ledger.partners p ON p.id = x.partner_id
        WHERE p.code = p_code AND x.program_id = p_program;
        RETURN pp;
    END IF;
    IF p_raise THEN
        PERFORM ledger.fail(refusal, CASE refusal WHEN 'partner_not_found' THEN 404 ELSE 422 END,
            CASE refusal
                WHEN 'partner_not_found' THEN format('No partner with code %s.', p_code)
                WHEN 'partner_suspended' THEN format('Partner %s is suspended.', p_code)
                WHEN 'partner_role_missing' THEN format('Partner %s is not an %s.', p_code, p_role)
                ELSE format('Partner %s has no terms for this program in force at %s.', p_code, ledger.ts(p_at)) END);
    END IF;
    RETURN NULL;
END $$;

-- A partner-bound API key may capture holds and reverse transactions only at its own partner.
CREATE OR REPLACE FUNCTION ledger.check_acting_partner(p_code text, p_partner int) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_code IS NOT NULL AND p_code IS DISTINCT FROM (SELECT code FROM ledger.partners WHERE id = p_partner) THEN
        PERFORM ledger.fail('partner_forbidden', 403,
            format('This API key is bound to partner %s; the hold or transaction is not at it.', p_code));
    END IF;
END $$;

-- The partner rows of earn_in, after the member locks: a prepaid partner's purchased points or a
-- postpaid partner's credit limit (for what is not on a statement yet) is checked against its
-- counters, read under the row lock of partner_programs (taken here, after the members, as every
-- writer does). What the slots' rooms hold counts as used (ledger.take_partner_rooms keeps each
-- slot's counted plus room constant, so that sum needs no slot lock); when the rows do not fit in
-- what is left besides the rooms, the rooms are taken back first (every slot locked) and the rows
-- checked against everything left. The rows are taken in `i` order while they fit (set-based: the
-- running sums), then any later row that still fits, one at a time: the same answer as posting them
-- one by one. A row that does not fit is marked refused; it is not posted and its caller answers it
-- (op_earn: the error; earn_set: ledger.execute, which refuses it on its own; a batch file: a
-- rejection). Rows of a re-sent file already posted are left unchecked (duplicates, not refusals).
CREATE OR REPLACE FUNCTION ledger.partner_earns() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE rr record; room jsonb := '{}'; left_points numeric; left_cash numeric; pass int;
BEGIN
    PERFORM 1 FROM ledger.partner_programs pp
    WHERE (pp.partner_id, pp.program_id) IN (SELECT DISTINCT e.partner_id, e.program_id FROM earn_in e WHERE e.partner_checked)
    ORDER BY pp.partner_id, pp.program_id FOR UPDATE;
    FOR pass IN 1..2 LOOP
        WITH locked AS (  -- the rooms count as used
            SELECT pp.partner_id, pp.program_id, pp.funded_points, pp.issued_points + pp.room_points AS issued_points,
                   pp.open_cash + pp.room_cash AS open_cash
            FROM ledger.partner_totals pp
            WHERE (pp.partner_id, pp.program_id) IN (SELECT DISTINCT e.partner_id, e.program_id FROM earn_in e
                                                     WHERE e.partner_checked)
        ), priced AS (
            SELECT e.i, e.partner_id, e.program_id, e.points, e.cash, t.funding, t.credit_limit_minor
            FROM earn_in e, LATERAL ledger.partner_terms_at(e.partner_id, e.program_id, e.occurred_at) t
            WHERE e.partner_checked
              AND (e.external_id IS NULL OR NOT EXISTS (
                  SELECT 1 FROM ledger.transactions x
                  WHERE x.api_key_id = e.api_key_id AND x.external_id = e.external_id AND x.type = 'earn'))
        ), run AS (
            SELECT p.*, l.funded_points - l.issued_points AS room_points, l.open_cash,
                   sum(p.points) OVER w AS run_points, sum(p.cash) OVER w AS run_cash
            FROM priced p JOIN locked l ON l.partner_id = p.partner_id AND l.program_id = p.program_id
            WINDOW w AS (PARTITION BY p.partner_id, p.program_id ORDER BY p.i)
        )
        UPDATE earn_in e SET
            refused = CASE
                WHEN r.funding = 'prepaid' AND r.points > 0 AND r.run_points > r.room_points THEN 'partner_funds_exhausted'
                WHEN r.funding = 'postpaid' AND r.credit_limit_minor IS NOT NULL AND r.cash > 0
                     AND r.open_cash + r.run_cash > r.credit_limit_minor THEN 'partner_credit_exceeded' END,
            room_points = CASE WHEN r.funding = 'prepaid' THEN r.room_points END,
            room_cash = CASE WHEN r.funding = 'postpaid' THEN r.credit_limit_minor - r.open_cash END
        FROM run r WHERE e.i = r.i;

        EXIT WHEN pass = 2 OR NOT EXISTS (SELECT 1 FROM earn_in WHERE refused IS NOT NULL);
        -- Not all fit besides the rooms: the rooms of these partners come back (their slots locked,
        -- in order), and the rows are checked again against all that is left.
        WITH back AS (
            SELECT s.partner_id, s.program_id, s.slot FROM ledger.partner_slots s
            WHERE (s.partner_id, s.program_id) IN (SELECT DISTINCT e.partner_id, e.program_id FROM earn_in e
                                                   WHERE e.refused IS NOT NULL)
            ORDER BY s.partner_id, s.program_id, s.slot FOR UPDATE
        )
        UPDATE ledger.partner_slots s SET room_points = NULL, room_cash = NULL, room_terms = NULL
        FROM back b WHERE s.partner_id = b.partner_id AND s.program_id = b.program_id AND s.slot = b.slot;
        UPDATE earn_in SET refused = NULL WHERE refused IS NOT NULL;
    END LOOP;

    IF NOT EXISTS (SELECT 1 FROM earn_in WHERE refused IS NOT NULL) THEN
        RETURN;
    END IF;
    -- What each partner has left after the rows taken so far; then the later rows, in order.
    SELECT jsonb_object_agg(g.k, jsonb_build_object('p', g.lp, 'c', g.lc)) INTO room FROM (
        SELECT e.partner_id || ':' || e.program_id AS k,
               min(e.room_points) - coalesce(sum(e.points) FILTER (WHERE e.refused IS NULL), 0) AS lp,
               min(e.room_cash) - coalesce(sum(e.cash) FILTER (WHERE e.refused IS NULL), 0) AS lc
        FROM earn_in e WHERE e.room_points IS NOT NULL OR e.room_cash IS NOT NULL GROUP BY 1) g;  -- the rows checked
    FOR rr IN SELECT e.i, e.partner_id || ':' || e.program_id AS k, e.points, e.cash FROM earn_in e
              WHERE e.refused IS NOT NULL ORDER BY e.i LOOP
        left_points := (room->rr.k->>'p')::numeric;
        left_cash := (room->rr.k->>'c')::numeric;
        IF (left_points IS NULL OR rr.points <= left_points) AND (left_cash IS NULL OR rr.cash <= left_cash) THEN
            UPDATE earn_in SET refused = NULL WHERE i = rr.i;
            room := jsonb_set(room, ARRAY[rr.k],
                              jsonb_build_object('p', left_points - rr.points, 'c', left_cash - rr.cash));
        END IF;
    END LOOP;
END $$;

-- The counters after posted partner earns (post_checked_earns, under the row lock partner_earns took).
-- Counts the posted partner rows: those ledger.partner_earns checked (room_points or room_cash set)
-- on their partner_programs row, which it locked; an unchecked partner's on this connection's slot,
-- so that concurrent batches earning for the same partner do not queue on one row (readers add the
-- slots: ledger.partner_totals). On the plain path ledger.take_partner_rooms counts instead.
CREATE OR REPLACE FUNCTION ledger.count_partner_earns() RETURNS void
LANGUAGE sql AS $$
    UPDATE ledger.partner_programs pp SET issued_points = pp.issued_points + s.points, open_cash = pp.open_cash + s.cash
    FROM (SELECT e.partner_id, e.program_id, sum(e.points) AS points, sum(e.cash) AS cash FROM earn_in e
          WHERE e.posted AND (e.room_points IS NOT NULL OR e.room_cash IS NOT NULL) GROUP BY 1, 2) s
    WHERE pp.partner_id = s.partner_id AND pp.program_id = s.program_id;
    INSERT INTO ledger.partner_slots AS x (partner_id, program_id, slot, issued_points, open_cash)
    SELECT e.partner_id, e.program_id, ledger.partner_slot(), sum(e.points), sum(e.cash) FROM earn_in e
    WHERE e.posted AND e.partner_id IS NOT NULL AND NOT e.partner_checked
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (partner_id, program_id, slot) DO UPDATE
        SET issued_points = x.issued_points + EXCLUDED.issued_points, open_cash = x.open_cash + EXCLUDED.open_cash;
$$;

-- How many slots a partner's counters and rooms are spread over: more than the connections of a
-- usual deployment (two ledger workers of 16), so that consecutive backend pids rarely share one.
CREATE OR REPLACE FUNCTION ledger.partner_slot_count() RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT 64
$$;

-- This connection's slot of partner counters (ledger.count_partner_earns), by backend pid.
CREATE OR REPLACE FUNCTION ledger.partner_slot() RETURNS smallint
LANGUAGE sql STABLE AS $$
    SELECT (pg_backend_pid() % ledger.partner_slot_count())::smallint
$$;

-- The partner rows of earn_in not priced when staged (a batch file's) get their cash at the issue
-- price in force at their occurred_at, and whether their terms check anything (prepaid, or a credit
-- limit): ledger.partner_earns then checks them under the partner's lock; the others only count.
CREATE OR REPLACE FUNCTION ledger.price_partner_earns() RETURNS void
LANGUAGE sql AS $$
    WITH d AS MATERIALIZED (  -- one lookup of the terms per partner, program and time
        SELECT d.partner_id, d.program_id, d.occurred_at, t.issue_cash_minor, t.issue_points, t.effective_from,
               (t.funding = 'prepaid' OR t.credit_limit_minor IS NOT NULL) AS checked
        FROM (SELECT DISTINCT x.partner_id, x.program_id, x.occurred_at FROM earn_in x
              WHERE x.partner_id IS NOT NULL AND x.partner_checked IS NULL) d,
             LATERAL ledger.partner_terms_at(d.partner_id, d.program_id, d.occurred_at) t
    )
    UPDATE earn_in e SET cash = e.points * d.issue_cash_minor::numeric / d.issue_points,
        issue_cash_minor = d.issue_cash_minor, issue_points = d.issue_points, partner_checked = d.checked,
        partner_terms_from = d.effective_from
    FROM d WHERE e.partner_id = d.partner_id AND e.program_id = d.program_id AND e.occurred_at = d.occurred_at
      AND e.partner_checked IS NULL
$$;

-- The partner rows of a coalesced batch, posted by the plain path, counted on this connection's
-- slot in one statement. An unchecked partner's (postpaid, no credit limit) are simply added. A
-- checked partner's total comes out of the slot's room (prepaid points or credit cash), under that
-- slot's row lock only, when the room was allotted under the terms that priced every row and covers
-- the total. Otherwise (no room, too little, other terms, or checked and unchecked rows of one
-- partner) the batch fails with JF001 and the caller retries its requests one at a time, each
-- checked exactly (ledger.partner_earns) and re-allotting the rooms. The rooms never add up to more
-- than the partner has left (ledger.allot_partner_rooms), so no room overdraws it, and a refusal is
-- only ever made against the exact totals.
CREATE OR REPLACE FUNCTION ledger.take_partner_rooms() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE short bigint;
BEGIN
    WITH n AS MATERIALIZED (
        SELECT e.partner_id, e.program_id, sum(e.points) AS points, sum(e.cash) AS cash,
               bool_or(e.partner_checked) AS checked, bool_and(e.partner_checked) AS all_checked,
               min(e.partner_terms_from) AS terms_from, count(DISTINCT e.partner_terms_from) AS versions
        FROM earn_in e WHERE e.posted AND e.partner_id IS NOT NULL GROUP BY 1, 2
    ), took AS (
        UPDATE ledger.partner_slots s
        SET room_points = s.room_points - n.points, room_cash = s.room_cash - n.cash,
            issued_points = s.issued_points + n.points, open_cash = s.open_cash + n.cash
        FROM n
        WHERE n.checked AND n.all_checked AND n.versions = 1
          AND s.partner_id = n.partner_id AND s.program_id = n.program_id AND s.slot = ledger.partner_slot()
          AND s.room_terms = n.terms_from AND (s.room_points IS NOT NULL OR s.room_cash IS NOT NULL)
          AND (s.room_points IS NULL OR s.room_points >= n.points) AND (s.room_cash IS NULL OR s.room_cash >= n.cash)
        RETURNING 1
    ), counted AS (
        INSERT INTO ledger.partner_slots AS x (partner_id, program_id, slot, issued_points, open_cash)
        SELECT n.partner_id, n.program_id, ledger.partner_slot(), n.points, n.cash FROM n WHERE NOT n.checked
        ORDER BY 1, 2
        ON CONFLICT (partner_id, program_id, slot) DO UPDATE
            SET issued_points = x.issued_points + EXCLUDED.issued_points, open_cash = x.open_cash + EXCLUDED.open_cash
    )
    SELECT (SELECT count(*) FROM n WHERE n.checked) - (SELECT count(*) FROM took) INTO short;
    IF short > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'JF001', MESSAGE = 'partner_room_short',
            DETAIL = 'A partner''s room on this slot does not cover the batch; retry its requests one at a time.';
    END IF;
END $$;

-- After an exact check (ledger.partner_earns), for each checked partner and program of earn_in whose
-- slots are missing, under other terms, or one of them dry (below a quarter of the average): every
-- slot locked, in order, and half of what the partner has left under the terms in force now shared
-- out over them, rounded down, so that the next coalesced batches take from their slot alone and an
-- exact check still finds the other half. Otherwise the rooms stay (no slot lock).
CREATE OR REPLACE FUNCTION ledger.allot_partner_rooms() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE pairs jsonb;
BEGIN
    SELECT jsonb_agg(jsonb_build_array(pp.partner_id, pp.program_id)) INTO pairs
    FROM ledger.partner_programs pp
    CROSS JOIN LATERAL ledger.partner_terms_at(pp.partner_id, pp.program_id, now()) t
    WHERE (pp.partner_id, pp.program_id) IN (SELECT DISTINCT e.partner_id, e.program_id FROM earn_in e
                                             WHERE e.room_points IS NOT NULL OR e.room_cash IS NOT NULL)
      AND (t.funding = 'prepaid' OR t.credit_limit_minor IS NOT NULL)
      AND (SELECT count(*) < ledger.partner_slot_count()
                  OR bool_or(x.room_terms IS DISTINCT FROM t.effective_from)
                  OR min(coalesce(x.room_points, x.room_cash, 0)) * 4 < avg(coalesce(x.room_points, x.room_cash, 0))
                  OR max(coalesce(x.room_points, x.room_cash, 0)) = 0
           FROM ledger.partner_slots x WHERE x.partner_id = pp.partner_id AND x.program_id = pp.program_id);
    IF pairs IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM ledger.partner_slots s
    WHERE (s.partner_id, s.program_id) IN (SELECT (x->>0)::int, (x->>1)::int FROM jsonb_array_elements(pairs) x)
    ORDER BY s.partner_id, s.program_id, s.slot FOR UPDATE;
    -- A new statement, so it reads the slots as they are now that they are locked.
    INSERT INTO ledger.partner_slots AS s (partner_id, program_id, slot, room_points, room_cash, room_terms)
    SELECT tot.partner_id, tot.program_id, k.slot,
           CASE WHEN t.funding = 'prepaid'
                THEN greatest(floor((tot.funded_points - tot.issued_points) / (2 * ledger.partner_slot_count())::numeric), 0) END,
           CASE WHEN t.funding = 'postpaid'
                THEN greatest(floor((t.credit_limit_minor - tot.open_cash) / (2 * ledger.partner_slot_count())), 0) END,
           t.effective_from
    FROM ledger.partner_totals tot
    CROSS JOIN LATERAL ledger.partner_terms_at(tot.partner_id, tot.program_id, now()) t
    CROSS JOIN generate_series(0, ledger.partner_slot_count() - 1) k(slot)
    WHERE (tot.partner_id, tot.program_id) IN (SELECT (x->>0)::int, (x->>1)::int FROM jsonb_array_elements(pairs) x)
    ORDER BY 1, 2, 3
    ON CONFLICT (partner_id, program_id, slot) DO UPDATE
        SET room_points = EXCLUDED.room_points, room_cash = EXCLUDED.room_cash, room_terms = EXCLUDED.room_terms;
END $$;

-- A partner's counters for a program: its partner_programs row plus its slots.
CREATE OR REPLACE VIEW ledger.partner_totals AS
    SELECT pp.partner_id, pp.program_id, pp.issued_account, pp.accepted_account, pp.funded_points,
           pp.issued_points + coalesce(s.issued_points, 0) AS issued_points,
           pp.open_cash + coalesce(s.open_cash, 0) AS open_cash,
           coalesce(s.room_points, 0) AS room_points,  -- allotted to the slots, not yet issued
           coalesce(s.room_cash, 0) AS room_cash
    FROM ledger.partner_programs pp
    LEFT JOIN LATERAL (SELECT sum(x.issued_points)::bigint AS issued_points, sum(x.open_cash) AS open_cash,
                              sum(x.room_points) AS room_points, sum(x.room_cash) AS room_cash
                       FROM ledger.partner_slots x
                       WHERE x.partner_id = pp.partner_id AND x.program_id = pp.program_id) s ON true;

-- A clawback of a partner's earn gives its points back to the partner's prepaid funds and lowers
-- what it owes for the open period (priced at the terms in force now, as the settlement prices it).
CREATE OR REPLACE FUNCTION ledger.uncount_partner_earn(p_partner int, p_program int, p_points bigint, p_at timestamptz)
RETURNS void
LANGUAGE sql AS $$
    UPDATE ledger.partner_programs pp SET issued_points = pp.issued_points - p_points,
        open_cash = pp.open_cash - p_points * t.issue_cash_minor::numeric / t.issue_points
    FROM ledger.partner_terms_at(p_partner, p_program, p_at) t
    WHERE pp.partner_id = p_partner AND pp.program_id = p_program
$$;

-- A prepaid partner buys points: {partner, program, points, cash_minor, reference}. Needs terms for
-- the program (the partner's row exists from then on).
CREATE OR REPLACE FUNCTION ledger.op_fund(a jsonb, p_key bigint, p_programs text[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    prog ledger.programs := ledger.program_for(a->>'program', p_programs);
    p ledger.partners; tot ledger.partner_totals; t ledger.partner_terms; f ledger.partner_fundings;
BEGIN
    SELECT * INTO p FROM ledger.partners WHERE code = a->>'partner';
    IF NOT FOUND THEN
        PERFORM ledger.fail('partner_not_found', 404, format('No partner with code %s.', a->>'partner'));
    END IF;
    t := ledger.partner_terms_at(p.id, prog.id, now());
    IF t IS NULL THEN
        PERFORM ledger.fail('partner_terms_missing', 422,
            format('Partner %s has no terms for program %s in force now.', p.code, prog.code));
    END IF;
    UPDATE ledger.partner_programs SET funded_points = funded_points + (a->>'points')::bigint
    WHERE partner_id = p.id AND program_id = prog.id;
    SELECT * INTO tot FROM ledger.partner_totals WHERE partner_id = p.id AND program_id = prog.id;
    INSERT INTO ledger.partner_fundings (id, partner_id, program_id, points, cash_minor, currency, reference, api_key_id)
    VALUES (ledger.new_id(), p.id, prog.id, (a->>'points')::bigint, (a->>'cash_minor')::bigint, t.currency,
            a->>'reference', p_key)
    RETURNING * INTO f;
    RETURN jsonb_build_object('id', f.id, 'partner', p.code, 'program', prog.code, 'points', f.points,
        'cash_minor', f.cash_minor, 'currency', f.currency, 'reference', f.reference,
        'created_at', ledger.ts(f.created_at),
        'prepaid_points', tot.funded_points - tot.issued_points);
END $$;

-- What one partner transaction adds to a statement line: points issued or accepted, or their
-- reversals, and the cash each way at the prices in force at the transaction's occurred_at (exact;
-- the line rounds once).
CREATE OR REPLACE FUNCTION ledger.partner_figures(p_partner int, p_program int, p_type text, p_kind text,
    p_points bigint, p_at timestamptz,
    OUT issued bigint, OUT issued_reversed bigint, OUT accepted bigint, OUT accepted_reversed bigint,
    OUT cash_from numeric, OUT cash_to numeric)
LANGUAGE sql STABLE AS $$
    SELECT x.i, x.ir, x.a, x.ar,
           (x.i - x.ir) * t.issue_cash_minor::numeric / t.issue_points,
           (x.a - x.ar) * t.accept_cash_minor::numeric / t.accept_points
    FROM (SELECT CASE WHEN p_type = 'earn' THEN p_points ELSE 0 END AS i,
                 CASE WHEN p_type = 'reversal' AND p_kind = 'earn' THEN p_points ELSE 0 END AS ir,
                 CASE WHEN p_type IN ('burn', 'capture') THEN p_points ELSE 0 END AS a,
                 CASE WHEN p_type = 'reversal' AND p_kind IN ('burn', 'capture') THEN p_points ELSE 0 END AS ar) x
    LEFT JOIN LATERAL ledger.partner_terms_at(p_partner, p_program, p_at) t ON true
$$;

-- Closes every period of one partner and program that ended by p_as_of, in the program's time zone,
-- each into one statement line of settlement p_settlement. A period is the partner's terms' period
-- in force at its start (a change of period applies from the next boundary). A line takes every
-- transaction of the partner on no statement yet that occurred before the period's end: its own,
-- and late ones whose period had already closed. Transactions are marked with their line, so a
-- closed line never changes, and what commits after this statement's snapshot is left for the
-- next period. An advisory lock per partner and program serializes two settlements; the second
-- then finds the periods closed. Lock order: transactions, then the partner's row (as reversals).
CREATE OR REPLACE FUNCTION ledger.settle_partner(p_settlement uuid, p_partner int, p_program int, p_as_of timestamptz)
RETURNS SETOF ledger.statement_lines
LANGUAGE plpgsql AS $$
DECLARE
    tz text; cur timestamptz; t ledger.partner_terms; first_terms ledger.partner_terms; fin timestamptz;
    line ledger.statement_lines; v_id uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('settle:' || p_partner || ':' || p_program, 0));
    SELECT timezone INTO tz FROM ledger.programs WHERE id = p_program;
    SELECT * INTO first_terms FROM ledger.partner_terms WHERE partner_id = p_partner AND program_id = p_program
    ORDER BY effective_from LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT max(period_end) INTO cur FROM ledger.statement_lines WHERE partner_id = p_partner AND program_id = p_program;
    cur := coalesce(cur, ledger.period_start(first_terms.effective_from, first_terms.period, tz));
    LOOP
        t := coalesce(ledger.partner_terms_at(p_partner, p_program, cur), first_terms);
        fin := ledger.period_end(cur, t.period, tz);
        EXIT WHEN fin > p_as_of;
        v_id := ledger.new_id();
        WITH moved AS (
            UPDATE ledger.transactions x SET statement_line_id = v_id
            WHERE x.partner_id = p_partner AND x.program_id = p_program AND x.statement_line_id IS NULL
              AND x.occurred_at < fin
            RETURNING x.type, x.kind, x.points, x.occurred_at
        ), s AS (
            SELECT count(*) AS n, coalesce(sum(f.issued), 0) AS i, coalesce(sum(f.issued_reversed), 0) AS ir,
                   coalesce(sum(f.accepted), 0) AS a, coalesce(sum(f.accepted_reversed), 0) AS ar,
                   coalesce(sum(f.cash_from), 0) AS cf, coalesce(sum(f.cash_to), 0) AS ct
            FROM moved m, LATERAL ledger.partner_figures(p_partner, p_program, m.type, m.kind, m.points,
                                                         m.occurred_at) f
        )
        INSERT INTO ledger.statement_lines (id, settlement_id, partner_id, program_id, period_start, period_end,
            points_issued, points_issued_reversed, points_accepted, points_accepted_reversed,
            cash_due_from_partner_minor, cash_due_to_partner_minor, net_minor, currency, transactions,
            cash_from_exact, cash_to_exact)
        SELECT v_id, p_settlement, p_partner, p_program, cur, fin, s.i, s.ir, s.a, s.ar,
               ledger.half_up(s.cf), ledger.half_up(s.ct), ledger.half_up(s.cf) - ledger.half_up(s.ct),
               t.currency, s.n, s.cf, s.ct
        FROM s
        RETURNING * INTO line;
        UPDATE ledger.partner_programs SET open_cash = open_cash - line.cash_from_exact
        WHERE partner_id = p_partner AND program_id = p_program;
        RETURN NEXT line;
        cur := fin;
    END LOOP;
END $$;
