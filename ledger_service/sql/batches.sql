-- The partition of a staged row: rows of one member (one member_ref) are always in the same one,
-- so the workers posting a batch's partitions in parallel never lock the same member account and
-- each member's rows are posted in file order. Rows without a member (rejected) go to partition 0.
CREATE OR REPLACE FUNCTION ledger.batch_part(p_member text, p_parts int) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_parts <= 1 OR p_member IS NULL THEN 0
                ELSE ((hashtext(p_member)::bigint & 2147483647) % p_parts)::int END
$$;

-- Posts the earn rows of lines (p_from, p_to] of a batch that are in partition p_part of p_parts
-- (all of them with p_parts = 1), set-based, in the caller's transaction, and rejects the bad rows
-- of that partition. Touches no cursor or counter of the batch: the callers do.
CREATE OR REPLACE FUNCTION ledger.post_batch_lines(b ledger.batches, p_from bigint, p_to bigint, p_part int,
    p_parts int, OUT posted bigint, OUT duplicates bigint, OUT rejected bigint, OUT points bigint,
    OUT processed bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE candidates bigint; partner_rejected bigint; refused bigint;
BEGIN
    INSERT INTO ledger.batch_rejections (batch_id, line, external_id, reason)
    SELECT b.id, line, external_id, reject FROM ledger.batch_staging
    WHERE batch_id = b.id AND line > p_from AND line <= p_to AND reject IS NOT NULL
      AND ledger.batch_part(member_ref, p_parts) = p_part
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS rejected = ROW_COUNT;
    -- Earn rows above the program's max_points_per_transaction, or naming a partner that may not
    -- fund them (unknown, suspended, no issuer, no terms).
    INSERT INTO ledger.batch_rejections (batch_id, line, external_id, reason)
    SELECT x.batch_id, x.line, x.external_id, x.why FROM (
        SELECT s.batch_id, s.line, s.external_id,
               CASE WHEN s.points > p.max_points_per_transaction THEN 'points_limit_exceeded'
                    WHEN s.partner IS NOT NULL THEN ledger.partner_refusal(s.partner, p.id, 'issuer', s.occurred_at)
               END AS why
        FROM ledger.batch_staging s JOIN ledger.programs p ON p.code = s.program
        WHERE s.batch_id = b.id AND s.line > p_from AND s.line <= p_to AND s.reject IS NULL AND s.type = 'earn'
          AND (s.partner IS NOT NULL OR s.points > p.max_points_per_transaction)
          AND ledger.batch_part(s.member_ref, p_parts) = p_part) x
    WHERE x.why IS NOT NULL
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS partner_rejected = ROW_COUNT;

    -- The first line of each external_id in this chunk; later ones are duplicates. The rows go
    -- through the one earn (ledger.post_earns), like every API earn: kind purchase, the program's
    -- issuance account on the other side, the caps of the rule set that priced the row.
    PERFORM ledger.earn_rows();
    INSERT INTO earn_in (i, program_id, account_id, member_ref, points, kind, reference, merchant_id, mcc,
                         channel, rule_set_id, caps, api_key_id, occurred_at, external_id, amount_minor, partner_id,
                         partner_account, pending_days)
    SELECT DISTINCT ON (s.external_id) s.line, p.id, ledger.member_id(p.id, s.member_ref), s.member_ref, s.points, 'purchase', s.external_id,
           s.merchant_id, nullif(s.mcc, ''), nullif(s.channel, ''), s.rule_set_id,
           CASE WHEN jsonb_typeof(rs.body->'caps'->'per_member_per_day') = 'number'
                  OR jsonb_typeof(rs.body->'caps'->'per_member_per_month') = 'number' THEN rs.body->'caps' END,
           b.api_key_id, s.occurred_at, s.external_id, s.amount_minor, (pp.r).partner_id, (pp.r).issued_account,
           s.pending_days
    FROM ledger.batch_staging s JOIN ledger.programs p ON p.code = s.program
    LEFT JOIN ledger.rule_sets rs ON rs.id = s.rule_set_id
    CROSS JOIN LATERAL (SELECT CASE WHEN s.partner IS NOT NULL
                                    THEN ledger.partner_row(s.partner, p.id, 'issuer', s.occurred_at, false) END AS r
                        OFFSET 0) pp
    WHERE s.batch_id = b.id AND s.line > p_from AND s.line <= p_to AND s.reject IS NULL AND s.type = 'earn'
      AND ledger.batch_part(s.member_ref, p_parts) = p_part
      AND s.points <= p.max_points_per_transaction AND (s.partner IS NULL OR (pp.r).partner_id IS NOT NULL)
    ORDER BY s.external_id, s.line;
    -- The partition's earn rows, and every line but the valid reverse rows (which
    -- process_batch_reversals counts), in one pass.
    SELECT count(*) FILTER (WHERE reject IS NULL AND type = 'earn'),
           count(*) FILTER (WHERE type IS DISTINCT FROM 'reverse' OR reject IS NOT NULL)
    INTO candidates, processed FROM ledger.batch_staging
    WHERE batch_id = b.id AND line > p_from AND line <= p_to AND ledger.batch_part(member_ref, p_parts) = p_part;
    PERFORM ledger.post_earns();
    -- Rows beyond a prepaid partner's funds or a postpaid partner's credit limit.
    INSERT INTO ledger.batch_rejections (batch_id, line, external_id, reason)
    SELECT b.id, e.i, e.external_id, e.refused FROM earn_in e WHERE e.refused IS NOT NULL
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS refused = ROW_COUNT;
    rejected := rejected + partner_rejected + refused;
    SELECT count(*) FILTER (WHERE posted), coalesce(sum(points) FILTER (WHERE posted), 0)
    INTO post_batch_lines.posted, post_batch_lines.points FROM earn_in;
    duplicates := candidates - partner_rejected - refused - post_batch_lines.posted;
END $$;

-- Posts the earn rows of lines (p_from, p_to] of a batch, every partition at once, in the caller's
-- transaction: a batch driven by hand, one range at a time (the processor posts by partition,
-- ledger.process_batch_part). Nothing once a partition is past p_from.
CREATE OR REPLACE FUNCTION ledger.process_batch_earns(p_batch uuid, p_from bigint, p_to bigint,
    OUT posted bigint, OUT duplicates bigint, OUT rejected bigint, OUT points bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE b ledger.batches; r record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('batch:' || p_batch, 0));
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch;
    -- Another processor posted this chunk already, or partition workers are past its start.
    IF b.next_line IS DISTINCT FROM p_from
       OR EXISTS (SELECT 1 FROM ledger.batch_parts WHERE batch_id = p_batch AND next_line > p_from) THEN
        posted := 0; duplicates := 0; rejected := 0; points := 0;
        RETURN;
    END IF;
    r := ledger.post_batch_lines(b, p_from, p_to, 0, 1);
    posted := r.posted; duplicates := r.duplicates; rejected := r.rejected; points := r.points;
    UPDATE ledger.batch_parts SET next_line = p_to WHERE batch_id = p_batch;
    UPDATE ledger.batches SET posted = ledger.batches.posted + r.posted,
        duplicates = ledger.batches.duplicates + r.duplicates,
        rejected = ledger.batches.rejected + r.rejected,
        points_posted = points_posted + r.points,
        processed = processed + r.processed,
        next_line = p_to, lease_until = now() + interval '60 seconds'
    WHERE id = p_batch;
END $$;

-- The partitions of a batch (ledger.batch_part), each with its own cursor, made once: the first
-- processor to start on the batch fixes their number.
CREATE OR REPLACE FUNCTION ledger.batch_parts_init(p_batch uuid, p_parts int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE b ledger.batches; n int;
BEGIN
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch FOR UPDATE;
    SELECT count(*) INTO n FROM ledger.batch_parts WHERE batch_id = p_batch;
    IF n = 0 THEN
        n := greatest(p_parts, 1);
        INSERT INTO ledger.batch_parts (batch_id, part, parts, next_line)
        SELECT p_batch, g, n, b.next_line FROM generate_series(0, n - 1) g;
    END IF;
    RETURN n;
END $$;

-- One chunk of one partition: the partition furthest behind that no other worker holds (its row
-- locked, SKIP LOCKED: one worker per partition at a time, so no two lock the same member, and a
-- worker that dies mid-chunk rolls back and leaves the partition to the next), its rows in lines
-- (next_line, next_line + p_lines] up to what is staged, posted in the caller's transaction with
-- the partition's cursor. part is NULL when no partition has work free.
CREATE OR REPLACE FUNCTION ledger.process_batch_part(p_batch uuid, p_lines bigint,
    OUT part int, OUT from_line bigint, OUT to_line bigint, OUT posted bigint, OUT duplicates bigint,
    OUT rejected bigint, OUT points bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE b ledger.batches; p ledger.batch_parts; r record;
BEGIN
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch;
    SELECT * INTO p FROM ledger.batch_parts x
    WHERE x.batch_id = p_batch AND x.next_line < b.staged
    ORDER BY x.next_line, x.part LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    part := p.part; from_line := p.next_line; to_line := least(p.next_line + p_lines, b.staged);
    r := ledger.post_batch_lines(b, from_line, to_line, p.part, p.parts);
    posted := r.posted; duplicates := r.duplicates; rejected := r.rejected; points := r.points;
    UPDATE ledger.batch_parts x SET next_line = to_line WHERE x.batch_id = p_batch AND x.part = p.part;
    -- The batch's row last and briefly (every worker adds to its counters); after the lock, so the
    -- next statement's snapshot sees every partition committed before: next_line is the line up to
    -- which every partition is posted, the reverse rows' limit.
    PERFORM 1 FROM ledger.batches WHERE id = p_batch FOR UPDATE;
    UPDATE ledger.batches SET posted = ledger.batches.posted + r.posted,
        duplicates = ledger.batches.duplicates + r.duplicates,
        rejected = ledger.batches.rejected + r.rejected,
        points_posted = points_posted + r.points,
        processed = processed + r.processed,
        next_line = greatest(next_line, (SELECT min(x.next_line) FROM ledger.batch_parts x WHERE x.batch_id = p_batch)),
        lease_until = now() + interval '60 seconds'
    WHERE id = p_batch;
END $$;

-- Reversal rows up to line p_until, once the earns before them are posted (while their pages are
-- still in memory): each through ledger.execute (the same write path as the API), keyed by the
-- row's external_id, so a re-sent refund replays instead of applying. A row whose key already holds
-- a posted reversal is a duplicate before anything is computed: on a re-send, what is left of the
-- original (nothing, after a whole reversal) no longer gives the first request's points.
CREATE OR REPLACE FUNCTION ledger.process_batch_reversals(p_batch uuid, p_after bigint, p_until bigint, p_limit int,
    OUT next_after bigint, OUT rows_done int, OUT posted bigint, OUT duplicates bigint, OUT rejected bigint,
    OUT points bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    b ledger.batches; r record; o ledger.transactions; res record; pts bigint; remaining bigint; reason text;
    rkey text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('batch:' || p_batch, 0));
    SELECT * INTO b FROM ledger.batches WHERE id = p_batch;
    next_after := p_after; rows_done := 0; posted := 0; duplicates := 0; rejected := 0; points := 0;
    IF b.reversals_after IS DISTINCT FROM p_after THEN  -- another processor is past this point
        next_after := b.reversals_after;
        RETURN;
    END IF;
    IF b.stage = 'earns' THEN  -- never past the posted earns: a refund needs its earn posted first
        p_until := least(p_until, b.next_line);
    END IF;
    -- The members of these rows locked first, in account-id order, as every earn chunk locks them:
    -- the partition workers post earns meanwhile, and a chunk of reverse rows that took its members
    -- one by one could hold one a worker waits for while it waits for another the worker holds.
    -- One index lookup per row (a scalar subquery, the plan a join may not keep).
    PERFORM 1 FROM ledger.accounts a
    WHERE a.id = ANY (ARRAY(
        SELECT (SELECT o.account_id FROM ledger.transactions o
                WHERE o.api_key_id = b.api_key_id AND o.type = 'earn'
                  AND o.external_id = coalesce(s.original_external_id, s.external_id))
        FROM (SELECT x.external_id, x.original_external_id FROM ledger.batch_staging x
              WHERE x.batch_id = p_batch AND x.type = 'reverse' AND x.reject IS NULL
                AND x.line > p_after AND x.line <= p_until
              ORDER BY x.line LIMIT p_limit) s))
    ORDER BY a.id FOR UPDATE;
    FOR r IN
        SELECT * FROM ledger.batch_staging
        WHERE batch_id = p_batch AND type = 'reverse' AND reject IS NULL AND line > p_after AND line <= p_until
        ORDER BY line LIMIT p_limit
    LOOP
        next_after := r.line; rows_done := rows_done + 1; reason := NULL;
        rkey := chr(31) || 'batch-reverse:' || r.external_id;
        IF EXISTS (SELECT 1 FROM ledger.idempotency_keys
                   WHERE api_key_id = b.api_key_id AND key = rkey AND status = 201) THEN
            duplicates := duplicates + 1;
            CONTINUE;
        END IF;
        SELECT * INTO o FROM ledger.transactions
        WHERE api_key_id = b.api_key_id AND type = 'earn' AND external_id = coalesce(r.original_external_id, r.external_id);
        IF NOT FOUND THEN
            reason := 'unknown_original';
        ELSE
            remaining := o.points - o.reversed_points;
            pts := coalesce(r.points,
                            CASE WHEN r.amount_minor IS NOT NULL AND o.amount_minor > 0
                                 THEN o.points * r.amount_minor / o.amount_minor END,
                            remaining);
            pts := least(pts, remaining);
            IF pts <= 0 THEN
                reason := 'nothing_to_reverse';
            ELSE
                -- Two uploads of one file may reach the same refund at once: wait for the other.
                FOR attempt IN 1..200 LOOP
                    SELECT * INTO res FROM ledger.execute(
                        b.api_key_id, rkey,
                        sha256(convert_to(o.id::text || ':' || pts, 'UTF8')), 'reverse',
                        jsonb_build_object('transaction_id', o.id, 'points', pts,
                                           'reason', 'card refund ' || r.external_id),
                        NULL, ARRAY['ledger:admin']);
                    EXIT WHEN res.body->>'code' IS DISTINCT FROM 'idempotency_key_in_use';
                    PERFORM pg_sleep(0.05);
                END LOOP;
                IF res.status = 201 AND res.replayed THEN
                    duplicates := duplicates + 1;
                ELSIF res.status = 201 THEN
                    posted := posted + 1; points := points - pts;
                ELSE
                    reason := res.body->>'code';
                END IF;
            END IF;
        END IF;
        IF reason IN ('nothing_to_reverse', 'idempotency_key_reused') AND EXISTS (
                SELECT 1 FROM ledger.idempotency_keys
                WHERE api_key_id = b.api_key_id AND key = rkey AND status = 201) THEN
            -- Another upload of the file posted this row after the check above.
            reason := NULL;
            duplicates := duplicates + 1;
        END IF;
        IF reason IS NOT NULL THEN
            INSERT INTO ledger.batch_rejections (batch_id, line, external_id, reason)
            VALUES (p_batch, r.line, r.external_id, reason) ON CONFLICT DO NOTHING;
            rejected := rejected + 1;
        END IF;
    END LOOP;
    UPDATE ledger.batches SET posted = ledger.batches.posted + process_batch_reversals.posted,
        duplicates = ledger.batches.duplicates + process_batch_reversals.duplicates,
        rejected = ledger.batches.rejected + process_batch_reversals.rejected,
        points_posted = points_posted + process_batch_reversals.points,
        processed = processed + rows_done,
        reversals_after = greatest(next_after, CASE WHEN rows_done < p_limit THEN p_until ELSE next_after END),
        lease_until = now() + interval '60 seconds'
    WHERE id = p_batch;
END $$;
