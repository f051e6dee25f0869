//! Reading chains for verification: rows 5,000 at a time merged in sequence order
//! with the tombstones retention left, so any length verifies in flat memory; the
//! next chunk is fetched while the current one is hashed.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

use super::checkpoints;
use super::rows::{stored_row, ROW_SELECT};
use crate::integrity::chain::SHARD_BITS;
use crate::integrity::checkpoint::{Checkpoint, Keyring};
use crate::integrity::verify::Tombstone;
use crate::tiers::chain_walk::{self, decode_and_hash, ChainSource, HashedRows};
pub use crate::tiers::chain_walk::ChainReport;
use crate::tiers::{BoxFuture, Chain, Table};

/// Rows read per round trip.
const CHUNK: i64 = 5000;

/// The chains that hold rows, optionally of one tenant and one table, each with its
/// head.
pub async fn chains(pool: &PgPool, tenant: Option<&str>, table: Option<Table>) -> Result<Vec<(Chain, i64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT tenant_id, table_name, seq FROM chain_heads
         WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR table_name = $2)
           AND seq > (shard::int8 << $3)
         ORDER BY tenant_id, table_name, shard",
    )
    .bind(tenant)
    .bind(table.map(Table::as_str))
    .bind(SHARD_BITS as i32)
    .fetch_all(pool)
    .await?;
    Ok(chain_walk::known_chains(rows))
}

/// Tombstones of one chain from `after` on, at most `limit`.
pub(crate) async fn tombstones(conn: &mut PgConnection, chain: &Chain, after: i64, limit: i64) -> Result<Vec<Tombstone>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, expires_at, deleted_at, prev_hash, content_hash, row_hash FROM chain_tombstones
         WHERE tenant_id = $1 AND table_name = $2 AND seq > $3 AND seq < $5 ORDER BY seq LIMIT $4",
    )
    .bind(&chain.tenant)
    .bind(chain.table.as_str())
    .bind(after)
    .bind(limit)
    .bind(chain.end())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Tombstone {
                seq: row.try_get("seq")?,
                expires_at: row.try_get::<DateTime<Utc>, _>("expires_at")?,
                deleted_at: row.try_get("deleted_at")?,
                prev_hash: row.try_get("prev_hash")?,
                content_hash: row.try_get("content_hash")?,
                row_hash: row.try_get("row_hash")?,
            })
        })
        .collect()
}

/// The raw rows of the next chunk; decoding is left to [`decode_and_hash`].
async fn raw_after(conn: &mut PgConnection, chain: &Chain, after: i64) -> Result<Vec<PgRow>, sqlx::Error> {
    let table = chain.table;
    let sql = format!("SELECT {ROW_SELECT} FROM {table} WHERE tenant_id = $1 AND seq > $2 AND seq < $4 ORDER BY seq LIMIT $3");
    sqlx::query(&sql).bind(&chain.tenant).bind(after).bind(CHUNK).bind(chain.end()).fetch_all(&mut *conn).await
}

/// The oldest sequence number of one chain held as a row or a tombstone, and the
/// oldest held as a row.
pub(crate) async fn first_held(conn: &mut PgConnection, chain: &Chain) -> Result<(Option<i64>, Option<i64>), sqlx::Error> {
    let table = chain.table;
    let sql = format!(
        "SELECT (SELECT min(seq) FROM {table} WHERE tenant_id = $1 AND seq > $3 AND seq < $4) AS first_row,
                (SELECT min(seq) FROM chain_tombstones WHERE tenant_id = $1 AND table_name = $2 AND seq > $3 AND seq < $4) AS first_tomb"
    );
    let (first_row, first_tomb): (Option<i64>, Option<i64>) = sqlx::query_as(&sql)
        .bind(&chain.tenant)
        .bind(table.as_str())
        .bind(chain.base())
        .bind(chain.end())
        .fetch_one(&mut *conn)
        .await?;
    let first = match (first_row, first_tomb) {
        (Some(row), Some(tomb)) => Some(row.min(tomb)),
        (row, tomb) => row.or(tomb),
    };
    Ok((first, first_row))
}

/// One chain's recorded head (`None` when it has none).
pub(crate) async fn head(conn: &mut PgConnection, chain: &Chain) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM chain_heads WHERE tenant_id = $1 AND table_name = $2 AND shard = $3")
        .bind(&chain.tenant)
        .bind(chain.table.as_str())
        .bind(chain.shard)
        .fetch_optional(&mut *conn)
        .await
}

/// One chain read from a repeatable-read transaction. While a chunk is decoded and
/// hashed on the blocking pool, the next one is fetched.
struct PgSource<'t> {
    tx: Transaction<'t, Postgres>,
    chain: Chain,
    /// A prefetched chunk and the sequence number it follows.
    pending: Option<(i64, Vec<PgRow>)>,
}

impl ChainSource for PgSource<'_> {
    fn head(&mut self) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
        Box::pin(async move { Ok(head(&mut self.tx, &self.chain).await?.unwrap_or(self.chain.base())) })
    }

    fn first_held(&mut self) -> BoxFuture<'_, Result<Option<i64>, sqlx::Error>> {
        Box::pin(async move { Ok(first_held(&mut self.tx, &self.chain).await?.0) })
    }

    fn checkpoints(&mut self) -> BoxFuture<'_, Result<Vec<Checkpoint>, sqlx::Error>> {
        Box::pin(checkpoints::for_chain(&mut *self.tx, &self.chain))
    }

    fn tombstones_after(&mut self, after: i64, limit: i64) -> BoxFuture<'_, Result<Vec<Tombstone>, sqlx::Error>> {
        Box::pin(tombstones(&mut self.tx, &self.chain, after, limit))
    }

    fn rows_after(&mut self, after: i64) -> BoxFuture<'_, Result<HashedRows, sqlx::Error>> {
        Box::pin(async move {
            let raw = match self.pending.take() {
                Some((from, raw)) if from == after => raw,
                _ => raw_after(&mut self.tx, &self.chain, after).await?,
            };
            let last = raw.last().map(|row| row.try_get::<i64, _>("seq")).transpose()?;
            let full = raw.len() as i64 == CHUNK;
            let table = self.chain.table;
            let decoding = tokio::task::spawn_blocking(move || decode_and_hash(&raw, |row| stored_row(table, row)));
            if let (Some(last), true) = (last, full) {
                let next = raw_after(&mut self.tx, &self.chain, last).await?;
                self.pending = Some((last, next));
            }
            decoding.await.map_err(|e| sqlx::Error::Protocol(format!("row decoder failed: {e}")))?
        })
    }
}

/// Verifies one chain against its recorded head and its signed checkpoints, all read
/// in one repeatable-read snapshot, so concurrent ingest and retention never look
/// like tampering.
pub async fn verify_chain(pool: &PgPool, keys: &Keyring, chain: &Chain) -> Result<ChainReport, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let mut source = PgSource { tx, chain: chain.clone(), pending: None };
    chain_walk::verify(&mut source, keys, chain).await
}
