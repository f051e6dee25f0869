-- Time partitions (src/tiers/postgres/partitions.rs). Each event table becomes a
-- table range-partitioned by expires_at: every row of a partition expires within the
-- partition's range, so once the range has passed the whole partition leaves at once
-- (archived, then detached and dropped) instead of row by row. tierlog itself creates
-- the partitions ahead of the rows (no extension needed); a default partition catches
-- a row no partition covers, and is watched (tierlog_partition_default_rows).
--
-- Existing rows are not copied or re-chained: the old table becomes the partition
-- `<table>_legacy` for every expiry up to its last one, keeping its
-- indexes (attached to the new table's, not rebuilt) except the two unique ones, which
-- must now include the partition key (a unique constraint of a partitioned table
-- has to). An empty old table is simply dropped.
-- A unique constraint of a partitioned table must include the partition key, so the
-- event tables can no longer refuse a second row with the same id: a retry arrives
-- later and expires later. event_ids holds the ids of recent events, unique per
-- tenant and table; every write inserts its ids here in the same statement, so a
-- retry, even one racing the first attempt's commit on another node, is refused and
-- skipped. Ids older than postgres.retry_window_hours are deleted by the upkeep; a
-- batch replayed from the spool later than that carries its first expires_at and is
-- refused by the tables' own unique index (id, tenant_id, expires_at).
CREATE TABLE event_ids (
    tenant_id   text        NOT NULL,
    table_name  text        NOT NULL,
    id          uuid        NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id, table_name)
);
CREATE INDEX event_ids_seen ON event_ids (seen_at);

DO $$
DECLARE
    t text;
    legacy text;
    bound timestamptz;
    has_rows boolean;
    r record;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_logs', 'security_events', 'financial_audit_logs'] LOOP
        legacy := t || '_legacy';
        EXECUTE format('ALTER TABLE %I RENAME TO %I', t, legacy);
        EXECUTE format('DROP TRIGGER %I ON %I', t || '_append_only', legacy);
        FOR r IN SELECT conname FROM pg_constraint WHERE conrelid = legacy::regclass AND contype IN ('p', 'u') LOOP
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', legacy, r.conname);
        END LOOP;

        EXECUTE format(
            'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING STORAGE)
             PARTITION BY RANGE (expires_at)', t, legacy);
        -- A chain position (tenant, seq) and an event id are still unique: the chain
        -- heads hand out each seq once, and ingest checks ids (src/tiers/postgres/heads.rs).
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (tenant_id, seq, expires_at)', t, t || '_pkey');
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I UNIQUE (id, tenant_id, expires_at)', t, t || '_id_key');
        FOR r IN
            SELECT c.relname AS name, pg_get_indexdef(c.oid) AS def
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE i.indrelid = legacy::regclass
        LOOP
            EXECUTE format('ALTER INDEX %I RENAME TO %I', r.name, left(r.name, 55) || '_legacy');
            EXECUTE regexp_replace(r.def, ' ON \S+ ', ' ON ' || quote_ident(t) || ' ');
        END LOOP;
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION tierlog_refuse_change()',
            t || '_append_only', t);

        -- Recent events' ids, so that their retries are still found (see event_ids below).
        EXECUTE format('INSERT INTO event_ids (tenant_id, table_name, id, seen_at)
                        SELECT tenant_id, %L, id, received_at FROM %I WHERE received_at > now() - interval ''7 days''
                        ON CONFLICT DO NOTHING', t, legacy);
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I), max(expires_at) + interval ''1 microsecond'' FROM %I', legacy, legacy)
            INTO has_rows, bound;
        IF has_rows THEN
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)', t, legacy, bound);
        ELSE
            EXECUTE format('DROP TABLE %I', legacy);
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
    END LOOP;
END $$;
