-- Tiers: `tiers` is [{code, min_points}, ...] by increasing min_points; below all of them is basic.
CREATE OR REPLACE FUNCTION ledger.tier_for(p_tiers jsonb, p_points bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce((SELECT t->>'code' FROM jsonb_array_elements(p_tiers) t
                     WHERE (t->>'min_points')::bigint <= p_points
                     ORDER BY (t->>'min_points')::bigint DESC LIMIT 1), 'basic')
$$;

CREATE OR REPLACE FUNCTION ledger.tier_rank(p_tiers jsonb, p_tier text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce((SELECT i::int FROM jsonb_array_elements(p_tiers) WITH ORDINALITY AS x(t, i)
                     WHERE t->>'code' = p_tier), 0)
$$;

-- The tier at a rank: 0 is basic, 1 the first of `tiers`.
CREATE OR REPLACE FUNCTION ledger.tier_at(p_tiers jsonb, p_rank int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_rank <= 0 THEN 'basic' ELSE coalesce(p_tiers->(p_rank - 1)->>'code', 'basic') END
$$;

-- The tier a review gives: the qualified one, except that a program with tier_downgrade one_down
-- moves a member down at most one tier per review.
CREATE OR REPLACE FUNCTION ledger.reviewed_tier(p_tiers jsonb, p_policy text, p_current text, p_points bigint)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_policy = 'one_down'
                     AND ledger.tier_rank(p_tiers, q.tier) < ledger.tier_rank(p_tiers, p_current) - 1
                THEN ledger.tier_at(p_tiers, ledger.tier_rank(p_tiers, p_current) - 1)
                ELSE q.tier END
    FROM (SELECT ledger.tier_for(p_tiers, p_points) AS tier) q
$$;

-- Qualifying points in the window: this calendar month (in the program's time zone) and the months
-- before it.
CREATE OR REPLACE FUNCTION ledger.qualifying_points(prog ledger.programs, p_account bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(points), 0)::bigint FROM ledger.tier_buckets
    WHERE account_id = p_account
      AND month > (date_trunc('month', now() AT TIME ZONE prog.timezone)
                   - make_interval(months => prog.tier_window_months))::date
$$;

-- Tier review: recomputes members' tiers from their qualifying points (up and down), in batches
-- by account id. Downgrades happen only here.
CREATE OR REPLACE FUNCTION ledger.review_tiers(p_after bigint, p_limit int, p_program int, OUT next_after bigint,
                                    OUT reviewed int, OUT changed int)
LANGUAGE plpgsql AS $$
BEGIN
    -- Dropped at commit (see ledger.expire_lots).
    CREATE TEMP TABLE IF NOT EXISTS tier_review (account_id bigint, old_tier text, new_tier text, points bigint)
        ON COMMIT DROP;
    TRUNCATE tier_review;
    INSERT INTO tier_review
    SELECT c.id, c.tier, ledger.reviewed_tier(c.tiers, c.tier_downgrade, c.tier, c.points), c.points FROM (
        SELECT a.id, a.tier, p.tiers, p.tier_downgrade, ledger.qualifying_points(p, a.id) AS points
        FROM ledger.accounts a JOIN ledger.programs p ON p.id = a.program_id
        WHERE a.kind = 'member' AND a.id > p_after AND (jsonb_array_length(p.tiers) > 0 OR a.tier <> 'basic')
          AND (p_program IS NULL OR a.program_id = p_program)
        ORDER BY a.id LIMIT p_limit
    ) c;
    GET DIAGNOSTICS reviewed = ROW_COUNT;
    SELECT max(account_id) INTO next_after FROM tier_review;
    WITH moved AS (
        UPDATE ledger.accounts a SET tier = r.new_tier, tier_since = now()
        FROM tier_review r WHERE a.id = r.account_id AND a.tier = r.old_tier AND r.new_tier <> r.old_tier
        RETURNING a.id, r.old_tier, r.new_tier, r.points
    )
    INSERT INTO ledger.tier_history (account_id, from_tier, to_tier, qualifying_points, reason)
    SELECT id, old_tier, new_tier, points, 'review' FROM moved;
    GET DIAGNOSTICS changed = ROW_COUNT;
END $$;
