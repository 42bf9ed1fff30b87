-- Expiry notices (DESIGN §10): a `points.expiring` event once per lot and threshold of the program's
-- expiry_notices_days, for lots still holding points. Days are the program's (its `timezone`, as for
-- caps and finance): the threshold of d days is reached at local midnight d days before the local day
-- on which the lot expires, so a lot expiring at 04:00 on 1 March is announced 7 days ahead from
-- 00:00 on 22 February, and one expiring at midnight exactly d days ahead.
-- A lot first seen past several thresholds gets one event, for the nearest; the others are recorded
-- as passed, so they never fire later. Bounded: at most p_limit lots per call (call again until
-- `lots` is 0). The primary key of ledger.expiry_notices makes it exactly once: a second process
-- at the same time waits on the first one's rows, then inserts nothing and sends nothing.
CREATE OR REPLACE FUNCTION ledger.send_expiry_notices(p_program int, p_as_of timestamptz, p_limit int,
    OUT lots int, OUT events int)
LANGUAGE plpgsql AS $$
BEGIN
    WITH programs AS (
        SELECT g.id, g.code, g.expiry_notices_days AS days, g.timezone AS tz,
               (SELECT max(d) FROM unnest(g.expiry_notices_days) d) AS widest,
               (p_as_of AT TIME ZONE g.timezone)::date AS today
        FROM ledger.programs g
        WHERE (p_program IS NULL OR g.id = p_program) AND cardinality(g.expiry_notices_days) > 0
    ), due AS MATERIALIZED (
        SELECT l.id AS lot_id, l.account_id, l.remaining, l.expires_at, g.id AS program_id, g.code, g.days,
               g.today, g.tz
        FROM programs g
        JOIN LATERAL (
            -- expiring on a local day at most d days after today: before the local midnight ending it
            SELECT l.* FROM ledger.lots l
            WHERE l.program_id = g.id AND l.remaining > 0 AND l.expires_at IS NOT NULL
              AND l.expires_at > p_as_of AND l.expires_at < (g.today + g.widest + 1)::timestamp AT TIME ZONE g.tz
              AND EXISTS (SELECT 1 FROM unnest(g.days) d
                          WHERE l.expires_at < (g.today + d + 1)::timestamp AT TIME ZONE g.tz
                            AND NOT EXISTS (SELECT 1 FROM ledger.expiry_notices n
                                            WHERE n.lot_id = l.id AND n.days_before = d))
            ORDER BY l.expires_at, l.id LIMIT p_limit
        ) l ON true
        ORDER BY l.expires_at, l.id LIMIT p_limit
    ), reached AS (
        SELECT due.*, d AS days_before, d = min(d) OVER (PARTITION BY due.lot_id) AS nearest
        FROM due, unnest(due.days) d
        WHERE due.expires_at < (due.today + d + 1)::timestamp AT TIME ZONE due.tz
    ), ins AS (
        INSERT INTO ledger.expiry_notices (lot_id, days_before, account_id, sent)
        SELECT r.lot_id, r.days_before, r.account_id, r.nearest FROM reached r ORDER BY 1, 2
        ON CONFLICT DO NOTHING
        RETURNING lot_id, days_before, sent
    ), ev AS (
        INSERT INTO ledger.outbox (type, program_id, payload)
        SELECT 'points.expiring', r.program_id, jsonb_build_object(
                   'program', r.code, 'member_ref', a.member_ref, 'points', r.remaining,
                   'expires_at', ledger.ts(r.expires_at), 'days_before', r.days_before, 'lot_id', r.lot_id,
                   -- the program's last local day on which the points can be spent, for the reminder
                   'last_day', ((r.expires_at AT TIME ZONE r.tz) - interval '1 microsecond')::date,
                   'timezone', r.tz)
        FROM ins JOIN reached r ON r.lot_id = ins.lot_id AND r.days_before = ins.days_before
        JOIN ledger.accounts a ON a.id = r.account_id
        WHERE ins.sent
        ORDER BY r.expires_at, r.lot_id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM ev) INTO lots, events;
END $$;
