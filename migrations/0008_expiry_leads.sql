-- The least gap between an event's time and its expiry, per event table
-- (src/tiers/postgres/leads.rs). Every row written into a time partition keeps
-- expires_at - occurred_at >= lead_seconds: a writer lowers the lead, committed,
-- before it writes a row that would break this. So a read of the events since a
-- time T can skip the partitions that expire before T + lead_seconds, which are
-- ranges of expires_at. NULL: no such row yet. Rows of <table>_legacy, written
-- before partitions, are not bound by it and are always read.
CREATE TABLE expiry_leads (
    table_name text PRIMARY KEY,
    lead_seconds bigint
);

DO $$
DECLARE
    t text;
    least_gap bigint;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_logs', 'security_events', 'financial_audit_logs'] LOOP
        -- The rows written since the tables were partitioned.
        EXECUTE format(
            'SELECT floor(extract(epoch FROM min(expires_at - occurred_at)))::bigint FROM %I
             WHERE tableoid IS DISTINCT FROM to_regclass(%L)',
            t, t || '_legacy')
        INTO least_gap;
        INSERT INTO expiry_leads (table_name, lead_seconds) VALUES (t, least_gap);
    END LOOP;
END $$;
