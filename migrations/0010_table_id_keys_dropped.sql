-- The event tables no longer carry a unique index on (id, tenant_id, expires_at).
-- Since the tables are partitioned by expiry it could not refuse a retry (which
-- expires later) anyway: event_ids does that, in the write's own statement, for
-- every id written within postgres.retry_window_hours. The index only still served a
-- spool replay older than that window; a replay now looks its events up itself,
-- under the chain heads' locks, by (tenant_id, occurred_at, id) in the partition of
-- their expiry (src/tiers/postgres/mod.rs). Every persisted row thus costs one
-- random index insert less: the layout before partitions had one id index per row
-- (UNIQUE (id, tenant_id)), the partitioned one has event_ids' key instead.
ALTER TABLE audit_logs DROP CONSTRAINT IF EXISTS audit_logs_id_key;
ALTER TABLE security_events DROP CONSTRAINT IF EXISTS security_events_id_key;
ALTER TABLE financial_audit_logs DROP CONSTRAINT IF EXISTS financial_audit_logs_id_key;
