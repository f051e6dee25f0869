//! The embedded durable store: SQLite (WAL mode, `synchronous = FULL`, so a commit is
//! on disk before it returns) in one file under the data directory. Same tables,
//! chains and rules as the Postgres store, behind the same [`DurableStore`] trait.
//!
//! SQLite has one writer at a time: each batch is one `BEGIN IMMEDIATE` transaction,
//! which is also what keeps every chain's head consistent (the Postgres store needs
//! row locks for that).

pub mod checkpoints;
pub mod erasure;
pub mod query;
pub mod retention;
pub mod stats;
pub mod verify;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::postgres::migrate::Embedded;
use super::stored::{decode_err, decode_stored, paths_json, RowSource, StoredRow};
use super::{BoxFuture, Chain, DurableStore, PersistRequest, StoreError, Table};
use crate::event::format_timestamp;
use crate::integrity::chain::{self, GENESIS_HASH};

/// The embedded schema, compiled in.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "embedded schema", include_str!("../../../migrations/sqlite/0001_schema.sql")),
    // Written to run on both databases as it is.
    (2, "detection and webhooks", include_str!("../../../migrations/0011_detection_webhooks.sql")),
];

/// Every stored column of an event table, as rows are read back.
pub(crate) const ROW_SELECT: &str = "tenant_id, seq, id, occurred_at, received_at, expires_at, category, level, logger, \
     message, event_type, action, status, application, user_id, username, email, resource, resource_id, \
     ip_address, user_agent, request_id, session_id, details, changes, security, financial, \
     prev_hash, row_hash, pii_salt, pii_hash, pii_paths";

/// The SQLite durable store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// An instant as the embedded store keeps it: fixed-width RFC 3339 text.
pub fn instant_text(at: &DateTime<Utc>) -> String {
    format_timestamp(at)
}

impl SqliteStore {
    /// Opens (creating and migrating when needed) the database file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteStore, sqlx::Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate::Migrator::new(Embedded(MIGRATIONS))
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?
            .run(&pool)
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        Ok(SqliteStore { pool })
    }

    /// The pool, for readers.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Up to `limit` rows of one chain after sequence `after`, in order.
    pub async fn read_chain_after(&self, chain: &Chain, after: i64, limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
        read_chain_after(&mut *self.pool.acquire().await?, chain, after, limit).await
    }

    async fn persist_batch(&self, batch: &[PersistRequest<'_>]) -> Result<usize, StoreError> {
        let mut chains: BTreeMap<(Table, &str), Vec<&PersistRequest<'_>>> = BTreeMap::new();
        for request in batch {
            chains.entry((request.table, request.event.tenant_id.as_str())).or_default().push(request);
        }
        if chains.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::Unavailable)?;
        let mut inserted = 0;
        for ((table, tenant), requests) in chains {
            inserted += extend_chain(&mut tx, table, tenant, &requests).await.map_err(StoreError::Write)?;
        }
        if batch.iter().any(|r| crate::detect::alert::is_alert(r.event)) {
            let mut conn = crate::tiers::portable::Conn::Lite(&mut tx);
            crate::webhooks::store::enqueue_alerts(&mut conn, batch.iter().map(|r| r.event)).await.map_err(StoreError::Write)?;
        }
        tx.commit().await.map_err(StoreError::Write)?;
        Ok(inserted)
    }
}

/// Rows per multi-row INSERT (33 parameters each, well under SQLite's limit).
const INSERT_ROWS: usize = 200;

/// Appends `requests` to one chain, skipping ids it already holds: one query for the
/// known ids, then multi-row INSERTs.
async fn extend_chain(
    conn: &mut SqliteConnection,
    table: Table,
    tenant: &str,
    requests: &[&PersistRequest<'_>],
) -> Result<usize, sqlx::Error> {
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, head_hash FROM chain_heads WHERE tenant_id = ?1 AND table_name = ?2")
            .bind(tenant)
            .bind(table.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    let (mut seq, mut hash) = match head {
        Some((seq, hash)) => (seq, <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| decode_err("head_hash", "not 32 bytes"))?),
        None => (0, GENESIS_HASH),
    };
    let ids: Vec<String> = requests.iter().map(|r| r.event.id.to_string()).collect();
    let known: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT id FROM {table} WHERE tenant_id = ?1 AND id IN (SELECT value FROM json_each(?2))"
    ))
    .bind(tenant)
    .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
    .fetch_all(&mut *conn)
    .await?;
    let mut skip: std::collections::HashSet<String> = known.into_iter().collect();
    let mut rows = Vec::with_capacity(requests.len());
    for (request, id) in requests.iter().zip(ids) {
        if !skip.insert(id.clone()) {
            continue;
        }
        let (link, seal) =
            chain::next_link(table.as_str(), seq, &hash, &request.expires_at, &request.pii_paths, request.event);
        seq = link.seq;
        hash = link.row_hash;
        rows.push((*request, id, link, seal));
    }
    let json = |value: Option<serde_json::Value>| value.map(|v| v.to_string());
    for chunk in rows.chunks(INSERT_ROWS) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "INSERT INTO {table} (tenant_id, seq, id, occurred_at, received_at, expires_at, category, level, logger, message,
                 event_type, action, status, application, user_id, username, email, resource, resource_id, ip_address,
                 user_agent, request_id, session_id, details, changes, security, financial, prev_hash, row_hash, pii_salt,
                 pii_hash, pii_paths, ip_key) "
        ));
        insert.push_values(chunk, |mut b, (request, id, link, seal)| {
            let event = request.event;
            b.push_bind(tenant)
                .push_bind(link.seq)
                .push_bind(id.clone())
                .push_bind(instant_text(&event.timestamp))
                .push_bind(instant_text(&event.received_at))
                .push_bind(instant_text(&request.expires_at))
                .push_bind(event.category.as_str())
                .push_bind(event.level.as_str())
                .push_bind(event.logger.clone())
                .push_bind(event.message.clone())
                .push_bind(event.event_type.clone())
                .push_bind(event.action.clone())
                .push_bind(event.status.map(|s| s.as_str()))
                .push_bind(event.application.clone())
                .push_bind(event.user_id.clone())
                .push_bind(event.username.clone())
                .push_bind(event.email.clone())
                .push_bind(event.resource.clone())
                .push_bind(event.resource_id.clone())
                .push_bind(event.ip_address.map(|ip| ip.to_string()))
                .push_bind(event.user_agent.clone())
                .push_bind(event.request_id.clone())
                .push_bind(event.session_id.clone())
                .push_bind(json(event.details.clone().map(serde_json::Value::Object)))
                .push_bind(json(event.changes.as_ref().and_then(|c| serde_json::to_value(c).ok())))
                .push_bind(json(event.security.as_ref().and_then(|c| serde_json::to_value(c).ok())))
                .push_bind(json(event.financial.as_ref().and_then(|c| serde_json::to_value(c).ok())))
                .push_bind(link.prev_hash.to_vec())
                .push_bind(link.row_hash.to_vec())
                .push_bind(seal.salt.to_vec())
                .push_bind(seal.hash.to_vec())
                .push_bind(json(paths_json(&request.pii_paths)))
                .push_bind(event.ip_address.map(ip_key));
        });
        insert.build().execute(&mut *conn).await?;
    }
    if !rows.is_empty() {
        sqlx::query(
            "INSERT INTO chain_heads (tenant_id, table_name, seq, head_hash, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant_id, table_name) DO UPDATE SET seq = excluded.seq, head_hash = excluded.head_hash,
                 updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(table.as_str())
        .bind(seq)
        .bind(hash.to_vec())
        .bind(instant_text(&Utc::now()))
        .execute(&mut *conn)
        .await?;
    }
    Ok(rows.len())
}

pub(crate) async fn read_chain_after(
    conn: &mut SqliteConnection,
    chain: &Chain,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredRow>, sqlx::Error> {
    let table = chain.table;
    let sql = format!("SELECT {ROW_SELECT} FROM {table} WHERE tenant_id = ?1 AND seq > ?2 AND seq < ?4 ORDER BY seq LIMIT ?3");
    let rows = sqlx::query(&sql).bind(&chain.tenant).bind(after).bind(limit).bind(chain.end()).fetch_all(&mut *conn).await?;
    rows.iter().map(|row| decode_stored(table, row)).collect()
}

impl DurableStore for SqliteStore {
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

/// An address as sortable text: `4:` and 8 hex digits, or `6:` and 32. Text order
/// is address order within a family; families never mix (as in Postgres, an IPv6
/// network holds no IPv4 address).
pub(crate) fn ip_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("4:{:08x}", u32::from(v4)),
        std::net::IpAddr::V6(v6) => format!("6:{:032x}", u128::from(v6)),
    }
}

/// The first and last key of a network (a single address: both the same).
pub(crate) fn ip_key_range(filter: &crate::query::IpFilter) -> (String, String) {
    match filter.addr {
        std::net::IpAddr::V4(v4) => {
            let host_bits = 32 - u32::from(filter.prefix.unwrap_or(32)).min(32);
            let mask = if host_bits == 32 { u32::MAX } else { (1u32 << host_bits) - 1 };
            let base = u32::from(v4);
            (format!("4:{:08x}", base & !mask), format!("4:{:08x}", base | mask))
        }
        std::net::IpAddr::V6(v6) => {
            let host_bits = 128 - u32::from(filter.prefix.unwrap_or(128)).min(128);
            let mask = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
            let base = u128::from(v6);
            (format!("6:{:032x}", base & !mask), format!("6:{:032x}", base | mask))
        }
    }
}

/// Parses an instant stored as text.
pub fn parse_instant(column: &str, text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).map_err(|_| decode_err(column, "not an RFC 3339 instant"))
}

impl RowSource for SqliteRow {
    fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn id(&self) -> Result<Uuid, sqlx::Error> {
        let text: String = self.try_get("id")?;
        Uuid::parse_str(&text).map_err(|_| decode_err("id", "not a UUID"))
    }

    fn instant(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
        let text: String = self.try_get(column)?;
        parse_instant(column, &text)
    }

    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        self.try_get(column)
    }

    fn ip_text(&self) -> Result<Option<String>, sqlx::Error> {
        self.try_get("ip_address")
    }

    fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<Option<T>, sqlx::Error> {
        let text: Option<String> = self.try_get(column)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| decode_err(column, &e.to_string()))).transpose()
    }
}
