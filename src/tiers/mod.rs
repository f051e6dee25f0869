//! The three tiers an event is written to, behind narrow traits so the pipeline never
//! names a backend:
//!
//! - [`DurableStore`]: the system of record for persisted categories (Postgres).
//! - [`HotTier`]: the per-tenant, per-category recent lists (Redis, or in this
//!   process: [`memory`]), a cache.
//! - [`files::RollingFiles`]: JSON lines for shippers and backup, the system of record
//!   for everything else.

pub mod chain_walk;
pub mod database;
pub mod files;
pub mod memory;
pub mod portable;
pub mod postgres;
pub mod redis;
pub mod shipper;
pub mod spool;
pub mod sqlite;
pub mod stored;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{AuditEvent, Category};


/// A boxed future, so the tier traits can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The Postgres tables events are persisted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    AuditLogs,
    SecurityEvents,
    FinancialAuditLogs,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 3] = [Table::AuditLogs, Table::SecurityEvents, Table::FinancialAuditLogs];

    /// The SQL table name.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::AuditLogs => "audit_logs",
            Table::SecurityEvents => "security_events",
            Table::FinancialAuditLogs => "financial_audit_logs",
        }
    }

    /// Parses an SQL table name.
    pub fn parse(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The category this table is made for: its retention class 0.
    fn primary(self) -> Category {
        match self {
            Table::AuditLogs => Category::Auth,
            Table::SecurityEvents => Category::Security,
            Table::FinancialAuditLogs => Category::Financial,
        }
    }

    /// The retention class of `category`'s rows in this table: which of a writer's
    /// chains of a tenant they extend (see [`crate::integrity::chain::CLASSES`]).
    /// Each category has its own class in each table, the table's own category 0;
    /// so a single node writing only a table's own category extends chain shard 0,
    /// numbered 1, 2, 3, ... as before classes.
    pub fn class_of(self, category: Category) -> i32 {
        let index = |c: Category| Category::ALL.iter().position(|x| *x == c).unwrap_or(0) as i32;
        (index(category) - index(self.primary())).rem_euclid(crate::integrity::chain::CLASSES)
    }

    /// The category whose rows form retention class `class` of this table.
    pub fn category_of_class(self, class: i32) -> Option<Category> {
        Category::ALL.into_iter().find(|c| self.class_of(*c) == class)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One hash chain: a tenant's rows of one table written under one writer shard (see
/// [`crate::integrity::chain`]). Its rows are numbered within `(base, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Chain {
    pub tenant: String,
    pub table: Table,
    pub shard: i32,
}

impl Chain {
    pub fn new(tenant: &str, table: Table, shard: i32) -> Chain {
        Chain { tenant: tenant.to_owned(), table, shard }
    }

    /// The chain of the shard that numbered `seq`.
    pub fn holding(tenant: &str, table: Table, seq: i64) -> Chain {
        Chain::new(tenant, table, crate::integrity::chain::shard_of(seq))
    }

    /// The head position of the empty chain; its first row is `base() + 1`.
    pub fn base(&self) -> i64 {
        crate::integrity::chain::shard_base(self.shard)
    }

    /// The first position past the chain (the next shard's base).
    pub fn end(&self) -> i64 {
        crate::integrity::chain::shard_base(self.shard + 1)
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} shard {}", self.tenant, self.table, self.shard)
    }
}

/// An event bound for a durable table, with the expiry fixed at ingest.
#[derive(Debug, Clone)]
pub struct PersistRequest<'a> {
    pub table: Table,
    pub expires_at: DateTime<Utc>,
    /// Paths inside `details`/`changes` holding personal values (sealed apart).
    pub pii_paths: Vec<crate::integrity::chain::PiiPath>,
    pub event: &'a AuditEvent,
}

/// An event bound for the hot tier, with its encoded line and its list's policy.
#[derive(Debug, Clone)]
pub struct HotEntry<'a> {
    pub event: &'a AuditEvent,
    pub line: &'a [u8],
    pub ttl_seconds: u64,
    pub max_len: u64,
}

/// A batch of events with each one's JSON line, encoded once for the file and hot
/// tiers. The lines lie back to back in one buffer, each followed by its newline, so
/// the file tier writes a batch as it is, without copying it.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    pub events: Vec<AuditEvent>,
    text: Vec<u8>,
    /// `text[ends[i - 1]..ends[i]]` is `events[i]`'s line and newline.
    ends: Vec<usize>,
}

impl EncodedBatch {
    /// Encodes every event.
    pub fn new(events: Vec<AuditEvent>) -> EncodedBatch {
        // Room for typical lines; a longer batch grows the buffer once or twice.
        let mut text = Vec::with_capacity(events.len() * 768);
        let mut ends = Vec::with_capacity(events.len());
        for event in &events {
            event.write_json_line(&mut text);
            text.push(b'\n');
            ends.push(text.len());
        }
        EncodedBatch { events, text, ends }
    }

    /// Events paired with their lines (without the newline).
    pub fn iter(&self) -> impl Iterator<Item = (&AuditEvent, &[u8])> {
        self.events.iter().zip((0..self.ends.len()).map(|i| {
            let line = self.line_with_newline(i);
            &line[..line.len() - 1]
        }))
    }

    /// The `i`th line followed by its newline.
    pub fn line_with_newline(&self, i: usize) -> &[u8] {
        self.lines_with_newlines(i, i + 1)
    }

    /// Lines `from..to` with their newlines: one slice of the buffer.
    pub fn lines_with_newlines(&self, from: usize, to: usize) -> &[u8] {
        if from >= to {
            return &[];
        }
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        &self.text[start..self.ends[to - 1]]
    }
}

/// Why the durable store refused a batch; nothing of the batch was written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database write failed")]
    Write(#[source] sqlx::Error),
    /// The node started while the database was unreachable and has not migrated it
    /// yet.
    #[error("the database schema is not migrated yet")]
    SchemaPending,
}

impl StoreError {
    /// True when the database could not be reached or refused for want of resources
    /// (the connection failed, the server is shutting down, its disk is full), or is
    /// not migrated yet: the events may wait in the spool. Any other error is about
    /// the batch itself.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Unavailable(error) | StoreError::Write(error) => is_unreachable(error),
            StoreError::SchemaPending => true,
        }
    }
}

/// True when `error` says the database could not be reached or refused for want of
/// resources, rather than refusing the statement itself.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exception; 53: insufficient resources; 57P: operator
        // intervention (shutdown, cannot connect now).
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("53") || code.starts_with("57P"))
        }
        _ => false,
    }
}

/// Why the hot tier missed a batch.
#[derive(Debug, thiserror::Error)]
pub enum HotTierError {
    #[error("redis command failed: {0}")]
    Redis(#[source] ::redis::RedisError),
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("redis is marked down after a recent failure")]
    Backoff,
}

/// The system of record for persisted events.
pub trait DurableStore: Send + Sync {
    /// Writes the batch atomically, extending each (tenant, table) chain, and returns
    /// the number of rows inserted. Events whose (tenant, id) is already stored are
    /// skipped, so retries leave one copy.
    fn persist<'a>(&'a self, batch: &'a [PersistRequest<'a>]) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// [`Self::persist`] for a batch replayed from the spool, whose events may have
    /// been written by an attempt of any age (one whose outcome was unknown): those
    /// are skipped too, however long ago they were written.
    fn persist_replayed<'a>(&'a self, batch: &'a [PersistRequest<'a>]) -> BoxFuture<'a, Result<usize, StoreError>> {
        self.persist(batch)
    }

    /// Answers when the store is reachable.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The recent-events cache.
pub trait HotTier: Send + Sync {
    /// Pushes the entries, trimming each list and refreshing its TTL; an event id
    /// already in its list is not pushed again.
    fn push<'a>(&'a self, entries: &'a [HotEntry<'a>]) -> BoxFuture<'a, Result<(), HotTierError>>;

    /// Every held line of `categories`, for one tenant or (`None`) all of them.
    fn recent<'a>(
        &'a self,
        tenant: Option<&'a str>,
        categories: &'a [Category],
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, HotTierError>>;

    /// Rewrites held entries in place: every line of `tenant`'s (or every tenant's)
    /// lists for which `edit` returns a new line is replaced, atomically per list.
    /// Returns how many were replaced.
    fn rewrite<'a>(&'a self, tenant: Option<&'a str>, edit: &'a LineEdit<'a>) -> BoxFuture<'a, Result<u64, HotTierError>>;

    /// Answers when the hot tier is reachable.
    fn ping(&self) -> BoxFuture<'_, Result<(), HotTierError>>;

    /// The backend's name, as reads label the tier that held an event.
    fn name(&self) -> &'static str {
        "redis"
    }
}

/// An edit of a hot-tier line: the new line, or `None` to leave it.
pub type LineEdit<'e> = dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync + 'e;
