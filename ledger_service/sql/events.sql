-- The outbox trigger and the single sequencer of the event feed.
-- Statement-level with a transition table, so a bulk insert of a million rows is one trigger call.
CREATE OR REPLACE FUNCTION ledger.outbox_on_transaction() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger.outbox (txn_id) SELECT id FROM inserted;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER transactions_outbox AFTER INSERT ON ledger.transactions
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION ledger.outbox_on_transaction();

CREATE OR REPLACE FUNCTION ledger.sequence_events(p_limit int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE n int; base bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('ledger.sequence_events', 0)) THEN
        RETURN 0;
    END IF;
    SELECT coalesce(max(seq), 0) INTO base FROM ledger.outbox;
    WITH pending AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM (SELECT id FROM ledger.outbox WHERE seq IS NULL ORDER BY id LIMIT p_limit) x
    )
    UPDATE ledger.outbox o SET seq = base + pending.n, sequenced_at = now() FROM pending WHERE o.id = pending.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
