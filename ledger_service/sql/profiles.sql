-- Member profiles (DESIGN §10), recomputed set-based from postings, transactions and lots: never from
-- the counters on accounts. One call refreshes the next p_limit members of a program after account
-- id p_after, in the caller's transaction, and returns the last account id done (NULL: none left),
-- (and how many were), so a refresh of a million members is a loop of bounded transactions and
-- bounded memory.
-- Windows are days of the program's calendar (its `timezone`, as for caps and finance): "30 days" is
-- the local day of p_now and the 29 before it, from local midnight, over occurred_at; "expiring within
-- 30 days" is an expiry by the end of the 30th local day (today the first). Earned points are earns
-- less the clawbacks of earns, redeemed points burns and captures less their refunds, each at its own
-- occurred_at.
CREATE OR REPLACE FUNCTION ledger.refresh_profiles(p_program int, p_after bigint, p_limit int, p_now timestamptz,
    OUT last_id bigint, OUT members int)
LANGUAGE plpgsql AS $$
DECLARE
    tz text := (SELECT timezone FROM ledger.programs WHERE id = p_program);
    today date := (p_now AT TIME ZONE tz)::date;
    -- local midnight opening each window, and closing the expiry windows
    s30 timestamptz := (today - 29)::timestamp AT TIME ZONE tz;
    s90 timestamptz := (today - 89)::timestamp AT TIME ZONE tz;
    s180 timestamptz := (today - 179)::timestamp AT TIME ZONE tz;
    s365 timestamptz := (today - 364)::timestamp AT TIME ZONE tz;
    u30 timestamptz := (today + 30)::timestamp AT TIME ZONE tz;
    u90 timestamptz := (today + 90)::timestamp AT TIME ZONE tz;
BEGIN
    WITH acc AS MATERIALIZED (
        SELECT a.id, a.member_ref, a.balance, a.tier
        FROM ledger.accounts a
        WHERE a.program_id = p_program AND a.kind = 'member' AND a.id > p_after
        ORDER BY a.id LIMIT p_limit
    ), moves AS MATERIALIZED (
        SELECT po.account_id, po.amount, t.occurred_at, t.mcc, t.channel,
               CASE WHEN t.type = 'earn' OR (t.type = 'reversal' AND t.kind = 'earn') THEN 'earn'
                    WHEN t.type IN ('burn', 'capture') OR (t.type = 'reversal' AND t.kind IN ('burn', 'capture'))
                        THEN 'redeem'
                    WHEN t.type = 'expiry' THEN 'expire' END AS flow,
               t.type
        FROM ledger.postings po JOIN ledger.transactions t ON t.id = po.txn_id
        WHERE po.account_id = ANY (ARRAY(SELECT id FROM acc))
    ), figures AS (
        SELECT m.account_id,
               -- activity is what the member did: expiries, adjustments and clawbacks are not
               min(m.occurred_at) FILTER (WHERE m.type IN ('earn', 'burn', 'capture', 'transfer')) AS first_at,
               max(m.occurred_at) FILTER (WHERE m.type IN ('earn', 'burn', 'capture', 'transfer')) AS last_at,
               max(m.occurred_at) FILTER (WHERE m.type = 'earn') AS last_earn,
               max(m.occurred_at) FILTER (WHERE m.type IN ('burn', 'capture')) AS last_burn,
               coalesce(sum(m.amount) FILTER (WHERE m.flow = 'earn' AND m.occurred_at >= s30), 0) AS e30,
               coalesce(sum(m.amount) FILTER (WHERE m.flow = 'earn' AND m.occurred_at >= s90), 0) AS e90,
               coalesce(sum(m.amount) FILTER (WHERE m.flow = 'earn' AND m.occurred_at >= s365), 0) AS e365,
               count(*) FILTER (WHERE m.type = 'earn' AND m.occurred_at >= s30) AS c30,
               count(*) FILTER (WHERE m.type = 'earn' AND m.occurred_at >= s90) AS c90,
               count(*) FILTER (WHERE m.type = 'earn' AND m.occurred_at >= s365) AS c365,
               coalesce(-sum(m.amount) FILTER (WHERE m.flow = 'redeem' AND m.occurred_at >= s30), 0) AS r30,
               coalesce(-sum(m.amount) FILTER (WHERE m.flow = 'redeem' AND m.occurred_at >= s90), 0) AS r90,
               coalesce(-sum(m.amount) FILTER (WHERE m.flow = 'redeem' AND m.occurred_at >= s365), 0) AS r365,
               coalesce(sum(m.amount) FILTER (WHERE m.flow = 'earn'), 0) AS le,
               coalesce(-sum(m.amount) FILTER (WHERE m.flow = 'redeem'), 0) AS lr,
               coalesce(-sum(m.amount) FILTER (WHERE m.flow = 'expire'), 0) AS lx,
               coalesce(array_agg(DISTINCT m.channel ORDER BY m.channel)
                        FILTER (WHERE m.channel IS NOT NULL AND m.occurred_at >= s365), '{}')
                   AS channels
        FROM moves m GROUP BY m.account_id
    ), mcc AS (
        -- the five most frequent merchant categories of the member's earns over 365 days
        SELECT x.account_id, (array_agg(x.mcc ORDER BY x.n DESC, x.mcc))[1:5] AS top
        FROM (SELECT m.account_id, m.mcc, count(*) AS n FROM moves m
              WHERE m.type = 'earn' AND m.mcc IS NOT NULL AND m.occurred_at >= s365
              GROUP BY 1, 2) x
        GROUP BY x.account_id
    ), expiring AS (
        SELECT l.account_id,
               coalesce(sum(l.remaining) FILTER (WHERE l.expires_at <= u30), 0) AS x30,
               coalesce(sum(l.remaining) FILTER (WHERE l.expires_at <= u90), 0) AS x90,
               coalesce(sum(l.remaining) FILTER (WHERE l.pending_until > p_now), 0) AS pend
        FROM ledger.lots l
        WHERE l.account_id = ANY (ARRAY(SELECT id FROM acc)) AND l.remaining > 0
          AND (l.expires_at IS NOT NULL OR l.pending_until IS NOT NULL)
        GROUP BY l.account_id
    ), prof AS (
        SELECT a.id, a.member_ref, a.balance, a.tier, f.*, coalesce(mcc.top, '{}') AS top_mcc,
               coalesce(x.x30, 0) AS x30, coalesce(x.x90, 0) AS x90, coalesce(x.pend, 0) AS pend
        FROM acc a LEFT JOIN figures f ON f.account_id = a.id LEFT JOIN mcc ON mcc.account_id = a.id
        LEFT JOIN expiring x ON x.account_id = a.id
    ), up AS (
        INSERT INTO ledger.member_profiles AS mp (
            account_id, program_id, member_ref, first_activity_at, last_activity_at, last_earn_at, last_burn_at,
            earned_points_30d, earned_points_90d, earned_points_365d, earn_count_30d, earn_count_90d,
            earn_count_365d, redeemed_points_30d, redeemed_points_90d, redeemed_points_365d, lifetime_earned,
            lifetime_redeemed, lifetime_expired, top_mcc, channels, expiring_points_30d, expiring_points_90d,
            tier, balance, pending_points, tags, refreshed_at)
        SELECT p.id, p_program, p.member_ref, p.first_at, p.last_at, p.last_earn, p.last_burn,
               coalesce(p.e30, 0), coalesce(p.e90, 0), coalesce(p.e365, 0), coalesce(p.c30, 0), coalesce(p.c90, 0),
               coalesce(p.c365, 0), coalesce(p.r30, 0), coalesce(p.r90, 0), coalesce(p.r365, 0), coalesce(p.le, 0),
               coalesce(p.lr, 0), coalesce(p.lx, 0), p.top_mcc, coalesce(p.channels, '{}'), p.x30, p.x90,
               p.tier, p.balance, p.pend,
               -- high_value needs the whole program: ledger.finish_profiles keeps it up to date
               ARRAY(SELECT tag FROM (VALUES
                   ('new', p.first_at >= s30),
                   ('active', p.last_at >= s90),
                   ('dormant', p.last_at IS NULL OR p.last_at < s180),
                   ('never_redeemed', coalesce(p.lr, 0) <= 0),
                   ('expiring_soon', p.x30 > 0),
                   ('high_value', 'high_value' = ANY (old.tags))) v(tag, yes) WHERE yes),
               p_now
        FROM prof p LEFT JOIN ledger.member_profiles old ON old.account_id = p.id
        ORDER BY p.id
        ON CONFLICT (account_id) DO UPDATE SET
            first_activity_at = EXCLUDED.first_activity_at, last_activity_at = EXCLUDED.last_activity_at,
            last_earn_at = EXCLUDED.last_earn_at, last_burn_at = EXCLUDED.last_burn_at,
            earned_points_30d = EXCLUDED.earned_points_30d, earned_points_90d = EXCLUDED.earned_points_90d,
            earned_points_365d = EXCLUDED.earned_points_365d, earn_count_30d = EXCLUDED.earn_count_30d,
            earn_count_90d = EXCLUDED.earn_count_90d, earn_count_365d = EXCLUDED.earn_count_365d,
            redeemed_points_30d = EXCLUDED.redeemed_points_30d, redeemed_points_90d = EXCLUDED.redeemed_points_90d,
            redeemed_points_365d = EXCLUDED.redeemed_points_365d, lifetime_earned = EXCLUDED.lifetime_earned,
            lifetime_redeemed = EXCLUDED.lifetime_redeemed, lifetime_expired = EXCLUDED.lifetime_expired,
            top_mcc = EXCLUDED.top_mcc, channels = EXCLUDED.channels,
            expiring_points_30d = EXCLUDED.expiring_points_30d, expiring_points_90d = EXCLUDED.expiring_points_90d,
            tier = EXCLUDED.tier, balance = EXCLUDED.balance, pending_points = EXCLUDED.pending_points, tags = EXCLUDED.tags, refreshed_at = EXCLUDED.refreshed_at
        RETURNING mp.account_id
    )
    SELECT max(account_id), count(*) INTO last_id, members FROM up;
END $$;

-- After every chunk of a program is refreshed: high_value, the top 10% of the program's members by
-- earned points over 365 days: above the 90th percentile of those who earned anything (so ties at
-- the threshold stay out, and one member alone is not "top"). Returns the threshold (NULL when
-- nobody earned).
CREATE OR REPLACE FUNCTION ledger.finish_profiles(p_program int, p_now timestamptz) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE threshold numeric;
BEGIN
    SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY earned_points_365d) INTO threshold
    FROM ledger.member_profiles WHERE program_id = p_program AND earned_points_365d > 0;
    UPDATE ledger.member_profiles mp
    SET tags = CASE WHEN want THEN array_append(array_remove(mp.tags, 'high_value'), 'high_value')
                    ELSE array_remove(mp.tags, 'high_value') END
    FROM (SELECT account_id, threshold IS NOT NULL AND earned_points_365d > threshold AS want
          FROM ledger.member_profiles WHERE program_id = p_program) x
    WHERE mp.account_id = x.account_id AND x.want <> ('high_value' = ANY (mp.tags));
    RETURN threshold;
END $$;
