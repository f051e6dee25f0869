//! Reading chains for verification: rows 5,000 at a time merged in sequence order
//! with the tombstones retention left, so any length verifies in flat memory; the
//! next chunk is fetched while the current one is hashed.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use super::checkpoints;
use super::rows::{stored_row, ROW_SELECT};
use super::StoredRow;
use crate::integrity::checkpoint::Keyring;
use crate::integrity::verify::{Anchor, Break, RowHashes, Tombstone, Verifier};
use crate::tiers::Table;

/// Rows read per round trip.
const CHUNK: i64 = 5000;

/// The verdict on one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    pub tenant_id: String,
    pub table: String,
    /// Rows and tombstones checked.
    pub rows_checked: u64,
    /// The oldest sequence number still held (rows before it were deleted by
    /// retention and are vouched for by a signed checkpoint).
    pub first_seq: i64,
    /// The head recorded when the last row was written.
    pub head_seq: i64,
    /// Signed checkpoints of this chain whose signatures were checked.
    pub checkpoints: usize,
    pub ok: bool,
    /// The first link that does not hold.
    #[schema(value_type = Option<Object>)]
    pub first_break: Option<Break>,
}

/// The chains that exist, optionally of one tenant and one table.
pub async fn chains(pool: &PgPool, tenant: Option<&str>, table: Option<Table>) -> Result<Vec<(String, Table, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tenant_id, table_name, seq FROM chain_heads
         WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR table_name = $2) AND seq > 0
         ORDER BY tenant_id, table_name",
    )
    .bind(tenant)
    .bind(table.map(Table::as_str))
    .fetch_all(pool)
    .await?;
    let mut chains = Vec::new();
    for row in rows {
        let name: String = row.try_get("table_name")?;
        if let Some(table) = Table::parse(&name) {
            chains.push((row.try_get("tenant_id")?, table, row.try_get("seq")?));
        }
    }
    Ok(chains)
}

/// Tombstones of one chain from `after` on, at most `limit`.
pub(crate) async fn tombstones(
    conn: &mut PgConnection,
    tenant: &str,
    table: Table,
    after: i64,
    limit: i64,
) -> Result<Vec<Tombstone>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, expires_at, deleted_at, prev_hash, content_hash, row_hash FROM chain_tombstones
         WHERE tenant_id = $1 AND table_name = $2 AND seq > $3 ORDER BY seq LIMIT $4",
    )
    .bind(tenant)
    .bind(table.as_str())
    .bind(after)
    .bind(limit)
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
async fn raw_after(conn: &mut PgConnection, tenant: &str, table: Table, after: i64) -> Result<Vec<PgRow>, sqlx::Error> {
    let sql = format!("SELECT {ROW_SELECT} FROM {table} WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");
    sqlx::query(&sql).bind(tenant).bind(after).bind(CHUNK).fetch_all(&mut *conn).await
}

/// Decodes and hashes a chunk on every core: both depend on each row alone.
fn decode_and_hash(table: Table, raw: &[PgRow]) -> Result<(Vec<StoredRow>, Vec<RowHashes>), sqlx::Error> {
    let work = |part: &[PgRow]| -> Result<Vec<(StoredRow, RowHashes)>, sqlx::Error> {
        part.iter()
            .map(|row| {
                let stored = stored_row(table, row)?;
                let hashes = RowHashes::of(&stored);
                Ok((stored, hashes))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let done: Vec<(StoredRow, RowHashes)> = if threads < 2 || raw.len() < 256 {
        work(raw)?
    } else {
        let per = raw.len().div_ceil(threads);
        let parts: Vec<Result<Vec<(StoredRow, RowHashes)>, sqlx::Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = raw.chunks(per).map(|part| scope.spawn(move || work(part))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(sqlx::Error::Protocol("row decoder panicked".into()))))
                .collect()
        });
        let mut all = Vec::with_capacity(raw.len());
        for part in parts {
            all.extend(part?);
        }
        all
    };
    Ok(done.into_iter().unzip())
}

/// The oldest sequence number held as a row or a tombstone.
async fn first_held(conn: &mut PgConnection, tenant: &str, table: Table) -> Result<Option<i64>, sqlx::Error> {
    let sql = format!(
        "SELECT LEAST((SELECT min(seq) FROM {table} WHERE tenant_id = $1),
                      (SELECT min(seq) FROM chain_tombstones WHERE tenant_id = $1 AND table_name = $2))"
    );
    sqlx::query_scalar(&sql).bind(tenant).bind(table.as_str()).fetch_one(&mut *conn).await
}

/// The chain's checkpoints as verified anchors; the first bad signature is a break.
pub(crate) async fn anchors(
    conn: &mut PgConnection,
    keys: &Keyring,
    tenant: &str,
    table: Table,
) -> Result<(Vec<Anchor>, Option<Break>), sqlx::Error> {
    let mut anchors = Vec::new();
    for checkpoint in checkpoints::for_chain(&mut *conn, tenant, table).await? {
        let seq = checkpoint.head.seq;
        if let Err(reason) = checkpoint.verify(keys) {
            return Ok((anchors, Some(Break::BadCheckpoint { seq, reason })));
        }
        match checkpoint.hash_bytes() {
            Some(hash) => anchors.push(Anchor { seq, hash }),
            None => return Ok((anchors, Some(Break::BadCheckpoint { seq, reason: crate::integrity::checkpoint::SignatureError::Invalid }))),
        }
    }
    Ok((anchors, None))
}

/// Verifies one chain against its recorded head and its signed checkpoints, all read
/// in one repeatable-read snapshot, so concurrent ingest and retention never look
/// like tampering.
pub async fn verify_chain(pool: &PgPool, keys: &Keyring, tenant: &str, table: Table) -> Result<ChainReport, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let head_seq: i64 = sqlx::query_scalar("SELECT seq FROM chain_heads WHERE tenant_id = $1 AND table_name = $2")
        .bind(tenant)
        .bind(table.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(0);
    let (anchors, bad_checkpoint) = anchors(&mut tx, keys, tenant, table).await?;
    let checkpoint_count = anchors.len();
    let first_seq = first_held(&mut tx, tenant, table).await?.unwrap_or(head_seq + 1);
    let report = |rows_checked, first_break: Option<Break>| ChainReport {
        tenant_id: tenant.to_owned(),
        table: table.as_str().to_owned(),
        rows_checked,
        first_seq,
        head_seq,
        checkpoints: checkpoint_count,
        ok: first_break.is_none(),
        first_break,
    };
    if bad_checkpoint.is_some() {
        return Ok(report(0, bad_checkpoint));
    }
    let mut verifier = match Verifier::starting_at(first_seq, anchors) {
        Ok(verifier) => verifier,
        Err(broken) => return Ok(report(0, Some(broken))),
    };
    let first_break = walk(&mut tx, &mut verifier, tenant, table, first_seq - 1).await?;
    let first_break = first_break.or_else(|| verifier.finish(head_seq).err());
    Ok(report(verifier.checked(), first_break))
}

/// Why the row walk stopped early.
enum Stop {
    Broken(Break),
    /// The tombstone buffer ran dry inside this stretch of rows.
    NeedTombstones,
}

impl From<Break> for Stop {
    fn from(broken: Break) -> Stop {
        Stop::Broken(broken)
    }
}

/// Checks `rows`, and the buffered tombstones that fall before each of them.
fn check_rows(
    verifier: &mut Verifier,
    rows: &[StoredRow],
    hashes: &[RowHashes],
    tombs: &mut VecDeque<Tombstone>,
    tombs_done: bool,
) -> Result<(), Stop> {
    for (row, hashes) in rows.iter().zip(hashes) {
        if row.seq <= verifier.last_seq() {
            continue;
        }
        while let Some(tomb) = tombs.front().filter(|t| t.seq < row.seq) {
            verifier.check_tombstone(tomb)?;
            tombs.pop_front();
            if tombs.is_empty() && !tombs_done {
                return Err(Stop::NeedTombstones);
            }
        }
        verifier.check_hashed(row, hashes)?;
    }
    Ok(())
}

/// Walks rows and tombstones after `after` in sequence order. Each chunk is decoded
/// and hashed on the blocking pool while the next one is fetched.
async fn walk(
    conn: &mut PgConnection,
    verifier: &mut Verifier,
    tenant: &str,
    table: Table,
    after: i64,
) -> Result<Option<Break>, sqlx::Error> {
    let mut tombs: VecDeque<Tombstone> = tombstones(conn, tenant, table, after, CHUNK).await?.into();
    let mut tombs_done = (tombs.len() as i64) < CHUNK;
    let mut raw = raw_after(conn, tenant, table, after).await?;
    while !raw.is_empty() {
        let last = raw.last().map(|row| row.try_get::<i64, _>("seq")).transpose()?;
        let full = raw.len() as i64 == CHUNK;
        let decoding = tokio::task::spawn_blocking(move || decode_and_hash(table, &raw));
        let next = match last {
            Some(last) if full => raw_after(conn, tenant, table, last).await?,
            _ => Vec::new(),
        };
        let (rows, hashes) =
            decoding.await.map_err(|e| sqlx::Error::Protocol(format!("row decoder failed: {e}")))??;
        match check_rows(verifier, &rows, &hashes, &mut tombs, tombs_done) {
            Ok(()) => raw = next,
            Err(Stop::Broken(broken)) => return Ok(Some(broken)),
            Err(Stop::NeedTombstones) => {
                tombs.extend(tombstones(conn, tenant, table, verifier.last_seq(), CHUNK).await?);
                tombs_done = (tombs.len() as i64) < CHUNK;
                // Rows already checked are skipped; the rest are read again.
                raw = raw_after(conn, tenant, table, verifier.last_seq()).await?;
            }
        }
    }
    // Tombstones after the last row.
    loop {
        while let Some(tomb) = tombs.pop_front() {
            if let Err(broken) = verifier.check_tombstone(&tomb) {
                return Ok(Some(broken));
            }
        }
        if tombs_done {
            return Ok(None);
        }
        tombs.extend(tombstones(conn, tenant, table, verifier.last_seq(), CHUNK).await?);
        tombs_done = (tombs.len() as i64) < CHUNK;
    }
}
