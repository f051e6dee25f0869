-- event_ids is keyed by the id first (src/tiers/postgres/heads.rs). Every persisted
-- event inserts one entry, and ids are mostly random (UUIDv4 from clients): with
-- the id first, the insert's descent compares 16 bytes and rarely reaches the
-- text columns, where the key led by tenant_id compared a tenant name on every
-- level. Measured in `cargo bench --bench ingest -- --raw-pg` (docs/benchmarks.md).
ALTER TABLE event_ids DROP CONSTRAINT event_ids_pkey;
ALTER TABLE event_ids ADD PRIMARY KEY (id, tenant_id, table_name);
