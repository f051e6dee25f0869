-- Writer shards (src/tiers/postgres/shard.rs): each writing node claims a shard and
-- extends only its own chain of every (tenant, table), so nodes writing one tenant
-- never wait on one another's chain heads. Shard s numbers its rows s * 2^48 + 1,
-- s * 2^48 + 2, ... (src/integrity/chain.rs), so a row's seq names its chain and the
-- row tables, tombstones and checkpoints need no new column. Existing chains are
-- shard 0's, whose numbers are those they already have.
ALTER TABLE chain_heads ADD COLUMN shard integer NOT NULL DEFAULT 0;
ALTER TABLE chain_heads DROP CONSTRAINT chain_heads_pkey;
ALTER TABLE chain_heads ADD PRIMARY KEY (tenant_id, table_name, shard);
ALTER TABLE chain_heads ADD CONSTRAINT chain_heads_seq_in_shard
    CHECK (shard >= 0 AND seq >= (shard::int8 << 48) AND seq < ((shard::int8 + 1) << 48));

-- Every batch rewrites the heads of the chains it extends: keep room on each page so
-- the new versions stay on it (HOT updates, pruned in place), and let autovacuum
-- clean the table as soon as a few thousand versions are dead, whatever its size.
ALTER TABLE chain_heads SET (fillfactor = 30, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);
