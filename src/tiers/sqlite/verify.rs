//! Verifying chains in the embedded store: one read transaction (a WAL snapshot),
//! walked by [`crate::tiers::chain_walk`]. The embedded store has one writer, so its
//! chains are shard 0's; every read is still bounded to the chain's positions.

use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::{parse_instant, ROW_SELECT};
use crate::integrity::checkpoint::{Checkpoint, Keyring};
use crate::integrity::verify::Tombstone;
use crate::tiers::chain_walk::{self, decode_and_hash, ChainReport, ChainSource, HashedRows};
use crate::tiers::stored::decode_stored;
use crate::tiers::{BoxFuture, Chain, Table};

/// Rows read per round trip.
const CHUNK: i64 = 5000;

/// One chain read inside one transaction.
pub(crate) struct SqliteSource<'t> {
    pub(crate) tx: Transaction<'t, Sqlite>,
    pub(crate) chain: Chain,
}

impl ChainSource for SqliteSource<'_> {
    fn head(&mut self) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
        Box::pin(async move {
            let head: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM chain_heads WHERE tenant_id = ?1 AND table_name = ?2 AND seq >= ?3 AND seq < ?4")
                    .bind(&self.chain.tenant)
                    .bind(self.chain.table.as_str())
                    .bind(self.chain.base())
                    .bind(self.chain.end())
                    .fetch_optional(&mut *self.tx)
                    .await?;
            Ok(head.unwrap_or(self.chain.base()))
        })
    }

    fn first_held(&mut self) -> BoxFuture<'_, Result<Option<i64>, sqlx::Error>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT min(s) FROM (SELECT min(seq) AS s FROM {} WHERE tenant_id = ?1 AND seq > ?3 AND seq < ?4
                                     UNION ALL SELECT min(seq) FROM chain_tombstones
                                               WHERE tenant_id = ?1 AND table_name = ?2 AND seq > ?3 AND seq < ?4)",
                self.chain.table
            );
            sqlx::query_scalar(&sql)
                .bind(&self.chain.tenant)
                .bind(self.chain.table.as_str())
                .bind(self.chain.base())
                .bind(self.chain.end())
                .fetch_one(&mut *self.tx)
                .await
        })
    }

    fn checkpoints(&mut self) -> BoxFuture<'_, Result<Vec<Checkpoint>, sqlx::Error>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT * FROM checkpoints WHERE tenant_id = ?1 AND table_name = ?2 AND seq >= ?3 AND seq < ?4 ORDER BY seq, id",
            )
            .bind(&self.chain.tenant)
            .bind(self.chain.table.as_str())
            .bind(self.chain.base())
            .bind(self.chain.end())
            .fetch_all(&mut *self.tx)
            .await?;
            rows.iter().map(super::checkpoints::checkpoint).collect()
        })
    }

    fn tombstones_after(&mut self, after: i64, limit: i64) -> BoxFuture<'_, Result<Vec<Tombstone>, sqlx::Error>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, expires_at, deleted_at, prev_hash, content_hash, row_hash FROM chain_tombstones
                 WHERE tenant_id = ?1 AND table_name = ?2 AND seq > ?3 AND seq < ?5 ORDER BY seq LIMIT ?4",
            )
            .bind(&self.chain.tenant)
            .bind(self.chain.table.as_str())
            .bind(after)
            .bind(limit)
            .bind(self.chain.end())
            .fetch_all(&mut *self.tx)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(Tombstone {
                        seq: row.try_get("seq")?,
                        expires_at: parse_instant("expires_at", &row.try_get::<String, _>("expires_at")?)?,
                        deleted_at: parse_instant("deleted_at", &row.try_get::<String, _>("deleted_at")?)?,
                        prev_hash: row.try_get("prev_hash")?,
                        content_hash: row.try_get("content_hash")?,
                        row_hash: row.try_get("row_hash")?,
                    })
                })
                .collect()
        })
    }

    fn rows_after(&mut self, after: i64) -> BoxFuture<'_, Result<HashedRows, sqlx::Error>> {
        Box::pin(async move {
            let table = self.chain.table;
            let sql = format!("SELECT {ROW_SELECT} FROM {table} WHERE tenant_id = ?1 AND seq > ?2 AND seq < ?4 ORDER BY seq LIMIT ?3");
            let raw =
                sqlx::query(&sql).bind(&self.chain.tenant).bind(after).bind(CHUNK).bind(self.chain.end()).fetch_all(&mut *self.tx).await?;
            tokio::task::spawn_blocking(move || decode_and_hash(&raw, |row| decode_stored(table, row)))
                .await
                .map_err(|e| sqlx::Error::Protocol(format!("row decoder failed: {e}")))?
        })
    }
}

/// Verifies one chain of the embedded store.
pub async fn verify_chain(pool: &SqlitePool, keys: &Keyring, chain: &Chain) -> Result<ChainReport, sqlx::Error> {
    let tx = pool.begin().await?;
    let mut source = SqliteSource { tx, chain: chain.clone() };
    chain_walk::verify(&mut source, keys, chain).await
}

/// The chains that hold rows, optionally of one tenant and one table, each with its
/// head.
pub async fn chains(pool: &SqlitePool, tenant: Option<&str>, table: Option<Table>) -> Result<Vec<(Chain, i64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT tenant_id, table_name, seq FROM chain_heads
         WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR table_name = ?2) AND seq > 0
         ORDER BY tenant_id, table_name",
    )
    .bind(tenant)
    .bind(table.map(Table::as_str))
    .fetch_all(pool)
    .await?;
    Ok(chain_walk::known_chains(rows))
}
