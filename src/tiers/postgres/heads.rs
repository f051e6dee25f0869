//! Chain heads: the last `(seq, row_hash)` of every `(tenant, table, shard)` chain,
//! kept in `chain_heads` and extended by every batch. A store writes the chains of
//! its own writer shard only ([`super::shard`]), so the heads below are always that
//! shard's.
//!
//! Two ways to extend them:
//!
//! - **Known heads, one statement.** The store remembers the heads it last committed
//!   ([`HeadCache`]). When every chain of a batch is in the cache, the links are
//!   computed from the cached heads and the whole batch is one autocommit statement
//!   ([`extend_if_unchanged`]): it locks the batch's head rows *only if each still
//!   holds the cached value*, and only when all of them do, moves the heads and
//!   inserts the rows. One round trip, one commit.
//! - **Locking, several statements.** When a head is not cached (a chain's first
//!   batch in this process) or has moved (another process extended the chain), the
//!   batch's heads are created if missing and locked in a fixed order inside a
//!   transaction ([`lock_heads`]), the links are computed from what is read, and rows
//!   and heads are written by the same one statement as the first way
//!   ([`extend_if_unchanged`]), so the locks are held for one round trip and the
//!   commit. After a head is found moved, a process takes this way straight away
//!   for a while (several nodes writing one tenant would only make the first way
//!   fail after waiting on their locks).
//!
//! Both paths take row locks on the heads, so a chain is never extended by two
//! writers at once, in this process or another (two processes on one shard, after a
//! shard claim was lost, only wait on each other), and a stale cache costs one
//! wasted statement, never a fork in a chain.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sqlx::{Postgres, Row, Transaction};

use super::rows::{self, insert_sql, RowColumns, INSERT_PARAMS};
use crate::integrity::chain::{GENESIS_HASH, SHARD_BITS};
use crate::tiers::Table;

/// A chain's last sequence number and row hash.
pub(super) type Head = (i64, [u8; 32]);

/// A chain the store extends, as `(table, tenant, chain shard)`: one per retention
/// class of its writer shard.
pub(super) type ChainKey<'k> = (Table, &'k str, i32);

/// One chain's move in a batch.
pub(super) struct HeadMove<'k> {
    pub key: ChainKey<'k>,
    pub from: Head,
    pub to: Head,
}

/// The heads this process last committed or read, per chain. Bounded: past
/// [`HeadCache::MAX_CHAINS`] it starts over (the next batch of each chain then takes
/// the locking path once).
#[derive(Debug, Default)]
pub(super) struct HeadCache {
    heads: Mutex<HashMap<(Table, String, i32), Head>>,
}

impl HeadCache {
    const MAX_CHAINS: usize = 200_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Table, String, i32), Head>> {
        self.heads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached head of every chain in `keys`, or `None` when one is missing.
    pub(super) fn get_all<'k>(&self, keys: impl Iterator<Item = ChainKey<'k>>) -> Option<BTreeMap<ChainKey<'k>, Head>> {
        let heads = self.lock();
        keys.map(|(table, tenant, shard)| heads.get(&(table, tenant.to_owned(), shard)).map(|head| ((table, tenant, shard), *head)))
            .collect()
    }

    /// Records heads known to be committed.
    pub(super) fn remember<'k>(&self, heads: impl Iterator<Item = (ChainKey<'k>, Head)>) {
        let mut cache = self.lock();
        for ((table, tenant, shard), head) in heads {
            let key = (table, tenant.to_owned(), shard);
            if cache.len() >= Self::MAX_CHAINS && !cache.contains_key(&key) {
                cache.clear();
            }
            cache.insert(key, head);
        }
    }

    /// Drops chains whose head is no longer known (a write of unknown outcome).
    pub(super) fn forget<'k>(&self, keys: impl Iterator<Item = ChainKey<'k>>) {
        let mut cache = self.lock();
        for (table, tenant, shard) in keys {
            cache.remove(&(table, tenant.to_owned(), shard));
        }
    }
}

/// What [`extend_if_unchanged`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Extended {
    /// Heads moved and rows inserted.
    Done,
    /// A head no longer held its `from` value: nothing changed.
    HeadsMoved,
}

/// In one statement: if every head in `moves` still holds its `from` value, locks the
/// heads (in `(table, tenant, shard)` order), moves each to its `to` value, inserts
/// every table's rows and records their ids in `event_ids`. Otherwise changes
/// nothing. Run on the pool it is the whole write, committed; inside the locking
/// path's transaction (heads already locked) it is the write's one statement under
/// the locks.
///
/// An event stored already (a retry) makes the statement fail with a unique
/// violation on `event_ids` (the event tables are partitioned by expiry, and a retry
/// expires later, so they hold no unique index on the id); when the first attempt is
/// still being written by another writer, the violation comes once that one commits.
pub(super) async fn extend_if_unchanged<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    moves: &[HeadMove<'_>],
    tables: &[(Table, &RowColumns<'_>)],
) -> Result<Extended, sqlx::Error> {
    let mut sql = String::from(
        "WITH k AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[], $5::int8[], $6::bytea[], $8::int4[])
             AS k(t, n, from_seq, from_hash, to_seq, to_hash, s)
         ),
         held AS (
             SELECT h.tenant_id FROM chain_heads h
             JOIN k ON h.tenant_id = k.t AND h.table_name = k.n AND h.shard = k.s
             WHERE h.seq = k.from_seq AND h.head_hash = k.from_hash
             ORDER BY h.table_name, h.tenant_id, h.shard
             FOR UPDATE OF h
         ),
         ok AS (SELECT (SELECT count(*) FROM held) = $7 AS unchanged),
         moved AS (
             UPDATE chain_heads h SET seq = k.to_seq, head_hash = k.to_hash, updated_at = now()
             FROM k, ok
             WHERE ok.unchanged AND h.tenant_id = k.t AND h.table_name = k.n AND h.shard = k.s
         )",
    );
    let mut next_param = 9;
    for (i, (table, _)) in tables.iter().enumerate() {
        let insert = insert_sql(*table, next_param, Some(("ok", "ok.unchanged")));
        sql.push_str(&format!(", rows_{i} AS ({insert})"));
        // The ids, unique per tenant and table: a second copy of an event, stored or
        // being stored by another writer, makes the statement fail (after that writer
        // commits) with a unique violation, and the batch is written again without it.
        sql.push_str(&format!(
            ", ids_{i} AS (INSERT INTO event_ids (tenant_id, table_name, id)
                SELECT d.t, '{table}', d.id FROM unnest(${tenant}::text[], ${id}::uuid[]) AS d(t, id), ok WHERE ok.unchanged)",
            tenant = next_param + rows::TENANT_PARAM,
            id = next_param + rows::ID_PARAM,
        ));
        next_param += INSERT_PARAMS;
    }
    let sql = format!("{sql} SELECT unchanged FROM ok");

    let (tenants, names, to_seqs, to_hashes) = targets(moves);
    let from_seqs: Vec<i64> = moves.iter().map(|m| m.from.0).collect();
    let from_hashes: Vec<&[u8]> = moves.iter().map(|m| &m.from.1[..]).collect();
    let shards: Vec<i32> = moves.iter().map(|m| m.key.2).collect();
    let mut query = sqlx::query(&sql)
        .bind(&tenants)
        .bind(&names)
        .bind(&from_seqs)
        .bind(&from_hashes)
        .bind(&to_seqs)
        .bind(&to_hashes)
        .bind(moves.len() as i64)
        .bind(&shards);
    for (_, rows) in tables {
        query = rows.bind(query);
    }
    let row = query.fetch_one(executor).await?;
    Ok(if row.try_get::<bool, _>("unchanged")? { Extended::Done } else { Extended::HeadsMoved })
}

/// Creates missing heads (unless `all_exist`), then locks every head of the batch in
/// one fixed order (table name, tenant, shard) so concurrent writers, in this process
/// or another, cannot deadlock and each chain is extended by one writer at a time.
pub(super) async fn lock_heads<'k>(
    tx: &mut Transaction<'_, Postgres>,
    keys: impl Iterator<Item = ChainKey<'k>>,
    all_exist: bool,
) -> Result<BTreeMap<ChainKey<'k>, Head>, sqlx::Error> {
    let sorted: Vec<ChainKey<'k>> = keys.collect();
    let tenants: Vec<&str> = sorted.iter().map(|(_, tenant, _)| *tenant).collect();
    let tables: Vec<&str> = sorted.iter().map(|(table, _, _)| table.as_str()).collect();
    let shards: Vec<i32> = sorted.iter().map(|(_, _, shard)| *shard).collect();
    if !all_exist {
        sqlx::query(
            "INSERT INTO chain_heads (tenant_id, table_name, shard, seq, head_hash)
             SELECT t, n, s, s::int8 << $4, $3 FROM unnest($1::text[], $2::text[], $5::int4[]) AS k(t, n, s)
             ORDER BY n, t, s
             ON CONFLICT DO NOTHING",
        )
        .bind(&tenants)
        .bind(&tables)
        .bind(&GENESIS_HASH[..])
        .bind(SHARD_BITS as i32)
        .bind(&shards)
        .execute(&mut **tx)
        .await?;
    }
    let locked = sqlx::query(
        "SELECT tenant_id, table_name, shard, seq, head_hash FROM chain_heads
         WHERE (tenant_id, table_name, shard) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::int4[]))
         ORDER BY table_name, tenant_id, shard
         FOR UPDATE",
    )
    .bind(&tenants)
    .bind(&tables)
    .bind(&shards)
    .fetch_all(&mut **tx)
    .await?;
    let mut heads = BTreeMap::new();
    for row in locked {
        let tenant: String = row.try_get("tenant_id")?;
        let table_name: String = row.try_get("table_name")?;
        let shard: i32 = row.try_get("shard")?;
        let seq: i64 = row.try_get("seq")?;
        let hash: Vec<u8> = row.try_get("head_hash")?;
        let key = sorted.iter().find(|(t, n, s)| t.as_str() == table_name && *n == tenant && *s == shard).copied();
        if let (Some(key), Ok(hash)) = (key, <[u8; 32]>::try_from(hash.as_slice())) {
            heads.insert(key, (seq, hash));
        }
    }
    if heads.len() != sorted.len() {
        return Err(sqlx::Error::Protocol("chain_heads rows missing or malformed".into()));
    }
    Ok(heads)
}

/// The chains of `moves` and the heads they move to, column by column.
#[allow(clippy::type_complexity)]
fn targets<'m>(moves: &'m [HeadMove<'_>]) -> (Vec<&'m str>, Vec<&'static str>, Vec<i64>, Vec<&'m [u8]>) {
    (
        moves.iter().map(|m| m.key.1).collect(),
        moves.iter().map(|m| m.key.0.as_str()).collect(),
        moves.iter().map(|m| m.to.0).collect(),
        moves.iter().map(|m| &m.to.1[..]).collect(),
    )
}
