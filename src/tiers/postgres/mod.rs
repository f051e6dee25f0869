//! The Postgres tier: the system of record for persisted categories. One transaction
//! per batch locks the batch's chain heads, skips ids already stored, and inserts each
//! table's rows with a single multi-row `INSERT ... SELECT FROM UNNEST`.

pub(crate) mod migrate;
pub mod query;
pub mod stats;
pub mod verify;
pub mod checkpoints;
pub mod retention;
pub mod erasure;
mod rows;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

pub use migrate::{migrate, MigrateError};
pub use crate::tiers::stored::StoredRow;

use super::{BoxFuture, DurableStore, PersistRequest, StoreError, Table};
use crate::config::PostgresSettings;
use crate::integrity::chain::{self, GENESIS_HASH};

/// The Postgres durable store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects lazily: start-up succeeds while Postgres is down, writes then fail
    /// (and are not acknowledged) until it is back.
    pub fn connect_lazy(settings: &PostgresSettings) -> Result<PgStore, sqlx::Error> {
        // Read queries vary wildly in selectivity per tenant (a term common in one
        // tenant is rare in the next); a generic cached plan picks badly for some of
        // them, so every execution is planned for its own values.
        let options: PgConnectOptions =
            settings.url.parse::<PgConnectOptions>()?.options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .connect_lazy_with(options.application_name("tierlog"));
        Ok(PgStore { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> PgStore {
        PgStore { pool }
    }

    /// The pool, for migrations and readers.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every row of one chain, in sequence order.
    pub async fn read_chain(&self, tenant: &str, table: Table) -> Result<Vec<StoredRow>, sqlx::Error> {
        rows::read_chain(&self.pool, tenant, table).await
    }

    /// Up to `limit` rows of one chain after sequence `after`, in order.
    pub async fn read_chain_after(&self, tenant: &str, table: Table, after: i64, limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
        rows::read_chain_after(&self.pool, tenant, table, after, limit).await
    }

    /// Inserts optimistically; only when an id turns out to be stored already (a
    /// retry) is the batch written again with the slower check for known ids.
    async fn persist_batch(&self, batch: &[PersistRequest<'_>]) -> Result<usize, StoreError> {
        match self.attempt(batch, false).await {
            Err(StoreError::Write(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                tracing::debug!("batch holds stored ids; writing it again without them");
                self.attempt(batch, true).await
            }
            other => other,
        }
    }

    async fn attempt(&self, batch: &[PersistRequest<'_>], skip_stored: bool) -> Result<usize, StoreError> {
        let mut chains: BTreeMap<(Table, &str), Vec<&PersistRequest<'_>>> = BTreeMap::new();
        let mut seen: HashSet<(Table, &str, Uuid)> = HashSet::new();
        for request in batch {
            let tenant = request.event.tenant_id.as_str();
            if seen.insert((request.table, tenant, request.event.id)) {
                chains.entry((request.table, tenant)).or_default().push(request);
            }
        }
        if chains.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::Unavailable)?;
        let heads = lock_heads(&mut tx, chains.keys().copied()).await.map_err(StoreError::Write)?;
        let mut new_heads: Vec<((Table, &str), i64, [u8; 32])> = Vec::new();
        let mut inserted = 0;
        for table in Table::ALL {
            let table_chains: Vec<(&str, &Vec<&PersistRequest<'_>>)> = chains
                .iter()
                .filter(|((t, _), _)| *t == table)
                .map(|((_, tenant), requests)| (*tenant, requests))
                .collect();
            if table_chains.is_empty() {
                continue;
            }
            let stored = if skip_stored {
                let ids: Vec<Uuid> =
                    table_chains.iter().flat_map(|(_, reqs)| reqs.iter().map(|r| r.event.id)).collect();
                stored_ids(&mut tx, table, &ids).await.map_err(StoreError::Write)?
            } else {
                HashSet::new()
            };
            let mut rows = rows::RowColumns::default();
            for (tenant, requests) in table_chains {
                let (mut seq, mut hash) = heads.get(&(table, tenant)).copied().unwrap_or((0, GENESIS_HASH));
                let mut extended = false;
                for request in requests {
                    if stored.contains(&(tenant.to_owned(), request.event.id)) {
                        continue;
                    }
                    let (link, seal) =
                        chain::next_link(
                        table.as_str(),
                        seq,
                        &hash,
                        &request.expires_at,
                        &request.pii_paths,
                        request.event,
                    );
                    rows.push(request, &link, &seal);
                    seq = link.seq;
                    hash = link.row_hash;
                    extended = true;
                }
                if extended {
                    new_heads.push(((table, tenant), seq, hash));
                }
            }
            inserted += rows.len();
            rows.insert(&mut tx, table).await.map_err(StoreError::Write)?;
        }
        update_heads(&mut tx, &new_heads).await.map_err(StoreError::Write)?;
        tx.commit().await.map_err(StoreError::Write)?;
        Ok(inserted)
    }
}

impl DurableStore for PgStore {
    fn persist<'a>(&'a self, batch: &'a [PersistRequest<'a>]) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(self.persist_batch(batch))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await.map_err(StoreError::Unavailable)?;
            Ok(())
        })
    }
}

/// Creates missing heads, then locks every head of the batch in one fixed order
/// (table name, tenant) so concurrent writers, in this process or another, cannot
/// deadlock and each chain is extended by one writer at a time.
async fn lock_heads<'k>(
    tx: &mut Transaction<'_, Postgres>,
    keys: impl Iterator<Item = (Table, &'k str)>,
) -> Result<BTreeMap<(Table, &'k str), (i64, [u8; 32])>, sqlx::Error> {
    let mut sorted: Vec<(Table, &str)> = keys.collect();
    sorted.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    let tenants: Vec<&str> = sorted.iter().map(|(_, tenant)| *tenant).collect();
    let tables: Vec<&str> = sorted.iter().map(|(table, _)| table.as_str()).collect();
    sqlx::query(
        "INSERT INTO chain_heads (tenant_id, table_name, seq, head_hash)
         SELECT t, n, 0, $3 FROM unnest($1::text[], $2::text[]) AS k(t, n)
         ORDER BY n, t
         ON CONFLICT DO NOTHING",
    )
    .bind(&tenants)
    .bind(&tables)
    .bind(&GENESIS_HASH[..])
    .execute(&mut **tx)
    .await?;
    let locked = sqlx::query(
        "SELECT tenant_id, table_name, seq, head_hash FROM chain_heads
         WHERE (tenant_id, table_name) IN (SELECT * FROM unnest($1::text[], $2::text[]))
         ORDER BY table_name, tenant_id
         FOR UPDATE",
    )
    .bind(&tenants)
    .bind(&tables)
    .fetch_all(&mut **tx)
    .await?;
    let mut heads = BTreeMap::new();
    for row in locked {
        let tenant: String = row.try_get("tenant_id")?;
        let table_name: String = row.try_get("table_name")?;
        let seq: i64 = row.try_get("seq")?;
        let hash: Vec<u8> = row.try_get("head_hash")?;
        let key = sorted.iter().find(|(t, n)| t.as_str() == table_name && *n == tenant).copied();
        if let (Some(key), Ok(hash)) = (key, <[u8; 32]>::try_from(hash.as_slice())) {
            heads.insert(key, (seq, hash));
        }
    }
    if heads.len() != sorted.len() {
        return Err(sqlx::Error::Protocol("chain_heads rows missing or malformed".into()));
    }
    Ok(heads)
}

async fn stored_ids(
    tx: &mut Transaction<'_, Postgres>,
    table: Table,
    ids: &[Uuid],
) -> Result<HashSet<(String, Uuid)>, sqlx::Error> {
    let sql = format!("SELECT tenant_id, id FROM {table} WHERE id = ANY($1)");
    let rows = sqlx::query(&sql).bind(ids).fetch_all(&mut **tx).await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get("tenant_id")?, row.try_get("id")?)))
        .collect()
}

async fn update_heads(
    tx: &mut Transaction<'_, Postgres>,
    heads: &[((Table, &str), i64, [u8; 32])],
) -> Result<(), sqlx::Error> {
    if heads.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = heads.iter().map(|((_, tenant), _, _)| *tenant).collect();
    let tables: Vec<&str> = heads.iter().map(|((table, _), _, _)| table.as_str()).collect();
    let seqs: Vec<i64> = heads.iter().map(|(_, seq, _)| *seq).collect();
    let hashes: Vec<Vec<u8>> = heads.iter().map(|(_, _, hash)| hash.to_vec()).collect();
    sqlx::query(
        "UPDATE chain_heads h SET seq = k.seq, head_hash = k.hash, updated_at = now()
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[]) AS k(t, n, seq, hash)
         WHERE h.tenant_id = k.t AND h.table_name = k.n",
    )
    .bind(&tenants)
    .bind(&tables)
    .bind(&seqs)
    .bind(&hashes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
