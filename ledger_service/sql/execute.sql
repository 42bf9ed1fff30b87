-- The one entry point for ledger writes. Idempotency lives here, in the same database transaction
-- as the effect: an advisory lock on the key answers "in use" at once, the stored response answers
-- a replay, and the primary key on (api_key_id, key) is the last guard against a second application.
CREATE OR REPLACE FUNCTION ledger.execute(
    p_api_key bigint, p_key text, p_hash bytea, p_op text, p_args jsonb, p_programs text[], p_scopes text[],
    OUT status int, OUT body jsonb, OUT replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE r record; v_code text; v_detail text; v_hint text;
BEGIN
    replayed := false;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('idem:' || p_api_key || ':' || p_key, 0)) THEN
        status := 409;
        body := jsonb_build_object('code', 'idempotency_key_in_use',
            'detail', 'A request with this Idempotency-Key is still being processed; retry shortly.');
        RETURN;
    END IF;
    SELECT k.request_hash, k.status, k.body INTO r
    FROM ledger.idempotency_keys k WHERE k.api_key_id = p_api_key AND k.key = p_key;
    IF FOUND THEN
        IF r.request_hash <> p_hash THEN
            status := 409;
            body := jsonb_build_object('code', 'idempotency_key_reused',
                'detail', 'This Idempotency-Key was used with a different request; use a new key.');
            RETURN;
        END IF;
        status := r.status; body := r.body; replayed := true;
        RETURN;
    END IF;
    BEGIN
        status := 201;
        IF p_op IN ('earn', 'burn', 'hold', 'transfer', 'adjust') THEN
            PERFORM ledger.check_points_limit(p_args, p_programs);
        END IF;
        CASE p_op
            WHEN 'earn' THEN body := ledger.op_earn(p_args, p_api_key, p_programs);
            WHEN 'burn' THEN body := ledger.op_burn(p_args, p_api_key, p_programs);
            WHEN 'hold' THEN body := ledger.op_hold(p_args, p_api_key, p_programs);
            WHEN 'capture' THEN body := ledger.op_capture(p_args, p_api_key, p_programs);
            WHEN 'void' THEN body := ledger.op_void(p_args, p_api_key, p_programs); status := 200;
            WHEN 'reverse' THEN body := ledger.op_reverse(p_args, p_api_key, p_programs, p_scopes);
            WHEN 'transfer' THEN body := ledger.op_transfer(p_args, p_api_key, p_programs);
            WHEN 'adjust' THEN body := ledger.op_adjust(p_args, p_api_key, p_programs);
            WHEN 'fund' THEN body := ledger.op_fund(p_args, p_api_key, p_programs);
            ELSE PERFORM ledger.fail('unknown_operation', 400, format('Unknown ledger operation %s.', p_op));
        END CASE;
    EXCEPTION
        WHEN SQLSTATE 'JF000' THEN
            GET STACKED DIAGNOSTICS v_code = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
            status := v_hint::int;
            body := jsonb_build_object('code', v_code, 'detail', v_detail);
        WHEN numeric_value_out_of_range THEN
            status := 422;
            body := jsonb_build_object('code', 'points_out_of_range',
                'detail', 'The operation would take a balance outside the 64-bit integer range.');
    END;
    INSERT INTO ledger.idempotency_keys (api_key_id, key, request_hash, status, body)
    VALUES (p_api_key, p_key, p_hash, status, body);
END $$;

-- Group commit: several requests in one database transaction (one WAL flush, one round trip).
-- Earns go set-based (ledger.earn_set: the one earn, ledger.post_earns, as for every caller);
-- every other request, in batch order, through ledger.execute, where a refusal rolls back only
-- its own subtransaction. Anything else (a deadlock) fails the whole batch, which the caller
-- then retries one request at a time.
-- Input: [{k, key, h (hex), op, a, p, s}, ...].
CREATE OR REPLACE FUNCTION ledger.execute_batch(p_requests jsonb)
RETURNS TABLE (i int, status int, body text, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE r jsonb; res record; n int; done int[] := '{}'; earns boolean; others boolean;
BEGIN
    -- An earn priced for each member it could be (`variants`) is an earn like any other here.
    SELECT coalesce(bool_or(x.r->>'op' = 'earn'), false),
           coalesce(bool_or(x.r->>'op' <> 'earn' OR (jsonb_typeof(x.r->'a'->'points') IS DISTINCT FROM 'number'
                                                     AND NOT x.r->'a' ? 'variants')), false)
    INTO earns, others FROM jsonb_array_elements(p_requests) x(r);
    -- A batch with anything but plain earns takes its locks up front, in the order every writer
    -- uses: documents (holds, then transactions) by id, then member accounts by id. Without it the
    -- set-based earns lock their members before the other requests do, and a capture or reversal
    -- locks its document after members of earlier requests: orders two batches can cross (a
    -- deadlock, then a retry one request at a time).
    IF others THEN
        -- Every lookup by = ANY (ARRAY(...)): the ids are computed first and each row is one index
        -- probe, whatever the statistics say (a join planned on stale ones scanned every account once
        -- per request: 400 ms for a batch of 32 burns).
        PERFORM 1 FROM ledger.holds h
        WHERE h.id = ANY (ARRAY(SELECT (x.r->'a'->>'hold_id')::uuid FROM jsonb_array_elements(p_requests) x(r)
                                WHERE x.r->'a' ? 'hold_id'))
        ORDER BY h.id FOR UPDATE;
        PERFORM 1 FROM ledger.transactions t
        WHERE t.id = ANY (ARRAY(SELECT (x.r->'a'->>'transaction_id')::uuid FROM jsonb_array_elements(p_requests) x(r)
                                WHERE x.r->'a' ? 'transaction_id'))
        ORDER BY t.id FOR UPDATE;
        PERFORM 1 FROM ledger.accounts a
        WHERE a.id = ANY (ARRAY(
            SELECT (SELECT a2.id FROM ledger.accounts a2 JOIN ledger.programs g ON g.id = a2.program_id
                    WHERE g.code = x.r->'a'->>'program' AND a2.kind = 'member' AND a2.member_ref = m.ref)
            FROM jsonb_array_elements(p_requests) x(r),
                 LATERAL (VALUES (x.r->'a'->>'member_ref'), (x.r->'a'->>'from_member_ref'),
                                 (x.r->'a'->>'to_member_ref')) m(ref)
            WHERE m.ref IS NOT NULL
            UNION ALL
            SELECT h.account_id FROM ledger.holds h
            WHERE h.id = ANY (ARRAY(SELECT (x.r->'a'->>'hold_id')::uuid FROM jsonb_array_elements(p_requests) x(r)
                                    WHERE x.r->'a' ? 'hold_id'))
            UNION ALL
            SELECT t.account_id FROM ledger.transactions t
            WHERE t.id = ANY (ARRAY(SELECT (x.r->'a'->>'transaction_id')::uuid FROM jsonb_array_elements(p_requests) x(r)
                                    WHERE x.r->'a' ? 'transaction_id'))))
        ORDER BY a.id FOR UPDATE;
    END IF;
    -- A batch without earns (burns, holds, captures) skips the set-based earn's staging.
    IF earns THEN
        FOR res IN SELECT * FROM ledger.earn_set(p_requests) LOOP
            i := res.i; status := 201; body := res.body::text; replayed := false;
            RETURN NEXT;
            done := done || res.i;
        END LOOP;
    END IF;
    FOR r, n IN SELECT x.value, (x.ord - 1)::int FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS x(value, ord)
                WHERE NOT ((x.ord - 1)::int = ANY (done)) ORDER BY x.ord LOOP
        SELECT * INTO res FROM ledger.execute(
            (r->>'k')::bigint, r->>'key', decode(r->>'h', 'hex'), r->>'op', r->'a',
            CASE WHEN jsonb_typeof(r->'p') = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(r->'p')) END,
            ARRAY(SELECT jsonb_array_elements_text(r->'s')));
        i := n; status := res.status; body := res.body::text; replayed := res.replayed;
        RETURN NEXT;
    END LOOP;
END $$;
