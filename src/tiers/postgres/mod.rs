//! The Postgres tier: the system of record for persisted categories. A batch extends
//! the chains of this process's writer shard ([`shard`]): one statement checks (or a
//! short transaction locks) the batch's chain heads and inserts each table's rows
//! with a single multi-row `INSERT ... SELECT FROM UNNEST`.

pub(crate) mod migrate;
pub mod query;
pub mod report;
pub mod stats;
pub mod verify;
pub mod checkpoints;
pub mod retention;
pub mod erasure;
pub mod search;
pub mod signing_keys;
pub mod partitions;
pub mod replica;
pub mod leads;
mod heads;
mod rows;
mod shard;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use heads::{ChainKey, Extended, Head, HeadCache, HeadMove};
use shard::WriterShard;

pub use migrate::{migrate, migrate_through, MigrateError};
pub use crate::tiers::stored::StoredRow;

use super::{BoxFuture, Chain, DurableStore, PersistRequest, StoreError, Table};
use crate::config::PostgresSettings;
use crate::integrity::chain::{self, shard_base, GENESIS_HASH};

/// The Postgres durable store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The writers' connections: same database, default plan caching, so the batch
    /// insert is planned once per connection instead of once per batch.
    writes: PgPool,
    /// The writer shard whose chains this store extends, claimed on first write.
    shard: Arc<WriterShard>,
    /// The chain heads this store last committed (see [`heads`]).
    heads: Arc<HeadCache>,
    /// Batches that found a remembered head moved by another writer.
    moved_heads: Arc<AtomicU64>,
    /// Batches left that go straight to the locking path after a moved head.
    contended: Arc<AtomicU32>,
    /// False from a start while Postgres was unreachable until the schema is migrated:
    /// writes wait in the spool meanwhile.
    schema_ready: Arc<AtomicBool>,
    /// How long a batch write may take before it counts as unreachable (a link cut
    /// without a reset leaves a write waiting on TCP retransmits for many minutes).
    write_timeout: Duration,
    /// How long the ids of written events are kept in `event_ids`, where a retry of
    /// the same event is recognised (see [`heads::extend_if_unchanged`]).
    retry_window: Duration,
    /// The width of new time partitions.
    partition_interval: partitions::PartitionInterval,
    /// The streaming replica the read endpoints use while it is up and current.
    replica: Option<Arc<replica::ReadReplica>>,
    /// The expiry leads known recorded, kept by every write (see [`leads`]).
    leads: Arc<leads::LeadFloor>,
}

/// The retry window of a store made from a pool.
const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Batches that skip the optimistic statement after one found a head moved.
const CONTENDED_BATCHES: u32 = 32;

/// The write deadline of a store made from a pool.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(15);

impl PgStore {
    /// Connects lazily: start-up succeeds while Postgres is down, writes then fail
    /// (and are not acknowledged) until it is back.
    pub fn connect_lazy(settings: &PostgresSettings) -> Result<PgStore, sqlx::Error> {
        // Read queries vary wildly in selectivity per tenant (a term common in one
        // tenant is rare in the next); a generic cached plan picks badly for some of
        // them, so every execution is planned for its own values.
        // Notices ("relation ... already exists, skipping" from migrations) are not
        // worth a log line; warnings and errors still reach the client.
        let options: PgConnectOptions = settings
            .url
            .parse::<PgConnectOptions>()?
            .application_name("tierlog")
            .options([("client_min_messages", "warning")]);
        let pool_options = || {
            PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms))
        };
        let pool = pool_options().connect_lazy_with(options.clone().options([("plan_cache_mode", "force_custom_plan")]));
        // Opened on demand: one per writer task (and the spool's replay) at most.
        // A writer holds chain-head locks inside its transaction; should its node
        // vanish mid-transaction (a cut link sends no reset), Postgres ends the
        // session once it has idled half the write timeout in the transaction or its
        // unacknowledged data has waited that long, so the locks do not stall every
        // other node writing the same chains until TCP gives up, and a node waiting
        // on them still finishes within its own write timeout.
        let write_timeout = (settings.write_timeout_ms / 2).max(1).to_string();
        let writes = pool_options().connect_lazy_with(options.options([
            ("idle_in_transaction_session_timeout", write_timeout.as_str()),
            ("tcp_user_timeout", write_timeout.as_str()),
        ]));
        Ok(PgStore {
            pool,
            writes,
            shard: Arc::default(),
            heads: Arc::default(),
            moved_heads: Arc::default(),
            contended: Arc::default(),
            schema_ready: Arc::new(AtomicBool::new(true)),
            write_timeout: Duration::from_millis(settings.write_timeout_ms.max(1)),
            retry_window: Duration::from_secs(settings.retry_window_hours * 3600),
            // Validated with the rest of the settings.
            partition_interval: settings.partition_interval.parse().unwrap_or(partitions::PartitionInterval::Week),
            replica: None,
            leads: Arc::default(),
        })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> PgStore {
        PgStore {
            writes: pool.clone(),
            pool,
            shard: Arc::default(),
            heads: Arc::default(),
            moved_heads: Arc::default(),
            contended: Arc::default(),
            schema_ready: Arc::new(AtomicBool::new(true)),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            retry_window: DEFAULT_RETRY_WINDOW,
            partition_interval: partitions::PartitionInterval::Week,
            replica: None,
            leads: Arc::default(),
        }
    }

    /// This store with `replica` serving its reads (see [`PgStore::read`]).
    pub fn with_replica(mut self, replica: Arc<replica::ReadReplica>) -> PgStore {
        self.replica = Some(replica);
        self
    }

    /// The read replica, when one is configured.
    pub fn replica(&self) -> Option<&Arc<replica::ReadReplica>> {
        self.replica.as_ref()
    }

    /// Runs the read `query` on the replica while it serves reads, else on the
    /// primary; a read the replica fails as a server down does (or cancels for a
    /// conflict with its recovery) runs again on the primary.
    pub async fn read<T, F, Fut>(&self, query: F) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let Some(replica) = self.replica.as_ref().filter(|r| r.serving()) else {
            return query(self.pool.clone()).await;
        };
        match query(replica.pool().clone()).await {
            Err(e) if replica::retry_on_primary(&e) => {
                if super::is_unreachable(&e) {
                    replica.failed(&e);
                }
                tracing::warn!(error = %e, "a read failed on the replica; running it on the primary");
                query(self.pool.clone()).await
            }
            other => {
                if other.is_ok() {
                    replica.answered();
                }
                other
            }
        }
    }

    /// This store writing the chains of `shard` without claiming it, as a process
    /// whose claim was lost and taken by another does. For tools and tests: chains
    /// stay whole, as heads are row-locked, but the writers sharing a shard wait on
    /// each other.
    pub fn with_shard(mut self, shard: i32) -> PgStore {
        self.shard = Arc::new(WriterShard::pinned(shard.clamp(0, chain::MAX_WRITERS - 1)));
        self.heads = Arc::default();
        self
    }

    /// Migrates the schema now if Postgres answers; otherwise holds writes back (they
    /// spool) and keeps trying every `retry` in the background until it can, so a
    /// node starts while Postgres is down. Errors other than an unreachable database
    /// are returned.
    pub async fn migrate_or_defer(&self, retry: Duration) -> Result<(), MigrateError> {
        match migrate(&self.pool).await {
            Ok(()) => return Ok(()),
            Err(MigrateError::Execute(e)) if super::is_unreachable(&e) => {
                tracing::warn!(error = %e, "Postgres unreachable at start: events are spooled until it answers, then the schema is migrated and the spool replayed");
            }
            Err(e) => return Err(e),
        }
        self.schema_ready.store(false, Ordering::Release);
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(retry).await;
                match migrate(&store.pool).await {
                    Ok(()) => {
                        store.schema_ready.store(true, Ordering::Release);
                        tracing::info!("Postgres answers: schema migrated");
                        return;
                    }
                    Err(MigrateError::Execute(e)) if super::is_unreachable(&e) => {
                        tracing::debug!(error = %e, "Postgres still unreachable; migrating later");
                    }
                    Err(e) => tracing::error!(error = %e, "cannot migrate the database; retrying"),
                }
            }
        });
        Ok(())
    }

    fn schema_ready(&self) -> Result<(), StoreError> {
        if self.schema_ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::SchemaPending)
        }
    }

    /// Opens up to `connections` writer connections and has each plan a read of the
    /// event tables and `chain_heads`, so the first batches after start do not pay
    /// for connecting and for loading the tables' and indexes' descriptions (tens to
    /// hundreds of milliseconds, which every request queued behind them would wait).
    /// Best effort: while Postgres is down this does nothing, and writes connect when
    /// they need to.
    pub async fn warm_up(&self, connections: usize) {
        let mut held = Vec::new();
        for _ in 0..connections {
            match self.writes.acquire().await {
                Ok(connection) => held.push(connection),
                Err(e) => {
                    tracing::debug!(error = %e, "writer connections not warmed up");
                    break;
                }
            }
        }
        for connection in &mut held {
            for table in Table::ALL {
                let sql = format!(
                    "SELECT id FROM {table} WHERE tenant_id = '' AND id IS NULL AND request_id IS NULL
                     AND user_id IS NULL AND ip_address IS NULL ORDER BY occurred_at DESC LIMIT 0"
                );
                let _ = sqlx::query(&sql).execute(&mut **connection).await;
            }
            let _ = sqlx::query("SELECT seq FROM chain_heads WHERE tenant_id = '' LIMIT 0").execute(&mut **connection).await;
        }
    }

    /// Creates the time partitions that rows expiring after each retention length
    /// in `days` (per table) will need (see [`partitions::ensure_ahead`]), and warns
    /// of rows left in a default partition, whose counts go to `metrics`. Returns
    /// the partitions created.
    pub async fn upkeep_partitions(
        &self,
        days: &BTreeMap<Table, std::collections::BTreeSet<u32>>,
        now: chrono::DateTime<chrono::Utc>,
        metrics: Option<&crate::telemetry::Metrics>,
    ) -> Result<Vec<String>, sqlx::Error> {
        let created = partitions::ensure_ahead(&self.pool, self.partition_interval, days, now).await?;
        let forgotten = partitions::forget_old_ids(&self.pool, self.retry_window).await?;
        tracing::debug!(ids = forgotten, "ids past the retry window forgotten");
        if !created.is_empty() {
            tracing::info!(partitions = ?created, "time partitions created");
        }
        for (table, rows) in partitions::default_rows(&self.pool).await? {
            if let Some(metrics) = metrics {
                metrics.partition_default_rows(table.as_str()).set(rows as f64);
            }
            if rows > 0 {
                tracing::warn!(
                    table = %table, rows,
                    "rows in the default partition {table}_default: no time partition covered their expires_at \
                     (made late, or could not be made); they are read as usual and move into their partition \
                     at the next upkeep that can make it"
                );
            }
        }
        Ok(created)
    }

    /// How many batches found a chain head it had committed moved by another writer
    /// (another process on the same database) and took the locking path.
    pub fn moved_heads(&self) -> u64 {
        self.moved_heads.load(Ordering::Relaxed)
    }

    /// The writer shard this store writes, once its first write claimed one.
    pub fn writer_shard(&self) -> Option<i32> {
        self.shard.get()
    }

    /// The pool, for migrations and readers.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every row of one chain, in sequence order.
    pub async fn read_chain(&self, chain: &Chain) -> Result<Vec<StoredRow>, sqlx::Error> {
        rows::read_chain_after(&self.pool, chain, chain.base(), i64::MAX).await
    }

    /// Up to `limit` rows of one chain after sequence `after`, in order.
    pub async fn read_chain_after(&self, chain: &Chain, after: i64, limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
        rows::read_chain_after(&self.pool, chain, after, limit).await
    }

    /// Inserts optimistically; only when an id turns out to be stored already (a
    /// retry) is the batch written again with the slower check for known ids.
    /// `replayed`: the batch comes from the spool, so it may hold events written
    /// longer ago than the retry window (a write whose outcome was unknown); it takes
    /// the checked path at once, which also finds those.
    /// Writes `batch` within the write deadline. A write cut off by it has an unknown
    /// outcome: written again (from the spool), its stored ids are skipped, and a
    /// remembered head it may have moved only costs the next batch the locking path.
    async fn persist_batch(&self, batch: &[PersistRequest<'_>], replayed: bool) -> Result<usize, StoreError> {
        match tokio::time::timeout(self.write_timeout, self.persist_now(batch, replayed)).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(writer) = self.shard.get() {
                    self.heads.forget(group_by_chain(batch, writer).keys().copied());
                }
                Err(StoreError::Write(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the write took over {} ms (postgres.write_timeout_ms)", self.write_timeout.as_millis()),
                ))))
            }
        }
    }

    async fn persist_now(&self, batch: &[PersistRequest<'_>], replayed: bool) -> Result<usize, StoreError> {
        self.schema_ready()?;
        // Before any row: a read by event time may skip partitions only as far as
        // every row allows.
        self.leads.cover(&self.pool, batch).await.map_err(StoreError::Write)?;
        match self.attempt(batch, replayed).await {
            Err(StoreError::Write(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                tracing::debug!("batch holds stored ids; writing it again without them");
                self.attempt(batch, true).await
            }
            other => other,
        }
    }

    async fn attempt(&self, batch: &[PersistRequest<'_>], skip_stored: bool) -> Result<usize, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let writer = self.shard.claim(&self.pool).await.map_err(StoreError::Unavailable)?;
        let chains = group_by_chain(batch, writer);
        let cached = self.heads.get_all(chains.keys().copied());
        // While other writers keep moving these heads (several nodes on one tenant),
        // the optimistic statement would only fail, after waiting on their locks.
        let contended = self.contended.load(Ordering::Relaxed) > 0;
        if contended {
            self.contended.fetch_sub(1, Ordering::Relaxed);
        }
        // A batch with alerts writes their webhook messages in the same transaction
        // as its rows: the optimistic statement then runs inside one.
        let alerts = batch.iter().any(|r| crate::detect::alert::is_alert(r.event));
        if !skip_stored && !contended {
            if let Some(cached) = &cached {
                let plan = Plan::build(&chains, cached, &HashSet::new());
                let tables: Vec<(Table, &rows::RowColumns<'_>)> = plan.tables.iter().map(|(t, r)| (*t, r)).collect();
                let extended = match alerts {
                    false => heads::extend_if_unchanged(&self.writes, &plan.moves, &tables).await,
                    true => self.extend_with_messages(batch, &plan.moves, &tables).await,
                };
                match extended {
                    Ok(Extended::Done) => {
                        self.heads.remember(plan.moves.iter().map(|m| (m.key, m.to)));
                        return Ok(plan.inserted);
                    }
                    Ok(Extended::HeadsMoved) => {
                        self.moved_heads.fetch_add(1, Ordering::Relaxed);
                        self.contended.store(CONTENDED_BATCHES, Ordering::Relaxed);
                        tracing::debug!("a chain head moved under this process; locking the heads");
                    }
                    Err(e) => {
                        self.heads.forget(chains.keys().copied());
                        return Err(StoreError::Write(e));
                    }
                }
            }
        }
        let result = self.attempt_locked(&chains, skip_stored, cached.is_some()).await;
        if result.is_err() {
            self.heads.forget(chains.keys().copied());
        }
        result
    }

    /// The optimistic statement and the alerts' webhook messages, in one transaction
    /// (rolled back when the heads moved).
    async fn extend_with_messages(
        &self,
        batch: &[PersistRequest<'_>],
        moves: &[HeadMove<'_>],
        tables: &[(Table, &rows::RowColumns<'_>)],
    ) -> Result<Extended, sqlx::Error> {
        // Most tenants have no endpoint: then there is nothing to write beside the rows.
        let mut tenants: Vec<&str> =
            batch.iter().filter(|r| crate::detect::alert::is_alert(r.event)).map(|r| r.event.tenant_id.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut pooled = self.writes.acquire().await?;
        if !crate::webhooks::store::any_endpoint(&mut crate::tiers::portable::Conn::Pg(&mut pooled), &tenants).await? {
            return heads::extend_if_unchanged(&mut *pooled, moves, tables).await;
        }
        drop(pooled);
        let mut tx = self.writes.begin().await?;
        let extended = heads::extend_if_unchanged(&mut *tx, moves, tables).await?;
        if extended == Extended::Done {
            let mut conn = crate::tiers::portable::Conn::Pg(&mut tx);
            crate::webhooks::store::enqueue_alerts(&mut conn, batch.iter().map(|r| r.event)).await?;
            tx.commit().await?;
        }
        Ok(extended)
    }

    /// The locking path: creates and locks the batch's heads, inserts, moves them.
    /// `heads_exist`: every head is known to this process, so none needs creating.
    async fn attempt_locked(
        &self,
        chains: &Chains<'_, '_>,
        skip_stored: bool,
        heads_exist: bool,
    ) -> Result<usize, StoreError> {
        let mut tx = self.writes.begin().await.map_err(StoreError::Unavailable)?;
        let locked = heads::lock_heads(&mut tx, chains.keys().copied(), heads_exist).await.map_err(StoreError::Write)?;
        let mut stored = HashSet::new();
        if skip_stored {
            for table in Table::ALL {
                let requests: Vec<&PersistRequest<'_>> = chains
                    .iter()
                    .filter(|((t, _, _), _)| *t == table)
                    .flat_map(|(_, requests)| requests.iter().copied())
                    .collect();
                if !requests.is_empty() {
                    let found = stored_ids(&mut tx, table, &requests).await.map_err(StoreError::Write)?;
                    stored.extend(found.into_iter().map(|(tenant, id)| (table, tenant, id)));
                }
            }
        }
        let plan = Plan::build(chains, &locked, &stored);
        // Rows and heads in one statement: the heads are locked by this transaction,
        // so they are as read, and the time under the locks is one round trip.
        let tables: Vec<(Table, &rows::RowColumns<'_>)> = plan.tables.iter().map(|(t, r)| (*t, r)).collect();
        if !plan.moves.is_empty() {
            match heads::extend_if_unchanged(&mut *tx, &plan.moves, &tables).await {
                Ok(Extended::Done) => {}
                Ok(Extended::HeadsMoved) => {
                    return Err(StoreError::Write(sqlx::Error::Protocol("a locked chain head moved".into())))
                }
                Err(e) => return Err(StoreError::Write(e)),
            }
        }
        let events = || chains.values().flatten().map(|r| r.event);
        if events().any(crate::detect::alert::is_alert) {
            let mut conn = crate::tiers::portable::Conn::Pg(&mut tx);
            crate::webhooks::store::enqueue_alerts(&mut conn, events()).await.map_err(StoreError::Write)?;
        }
        tx.commit().await.map_err(StoreError::Write)?;
        // Heads as locked (chains whose ids were all stored stay there), then moved.
        self.heads.remember(locked.into_iter());
        self.heads.remember(plan.moves.iter().map(|m| (m.key, m.to)));
        Ok(plan.inserted)
    }
}

/// A batch's requests per chain, duplicates of one id in one chain dropped.
type Chains<'b, 'r> = BTreeMap<ChainKey<'b>, Vec<&'b PersistRequest<'r>>>;

/// Each request's chain is its table's, its tenant's and its retention class's under
/// writer shard `writer`.
fn group_by_chain<'b, 'r>(batch: &'b [PersistRequest<'r>], writer: i32) -> Chains<'b, 'r> {
    let mut chains: Chains<'b, 'r> = BTreeMap::new();
    let mut seen: foldhash::HashSet<(Table, &str, Uuid)> = Default::default();
    for request in batch {
        let tenant = request.event.tenant_id.as_str();
        if seen.insert((request.table, tenant, request.event.id)) {
            let shard = chain::chain_shard(writer, request.table.class_of(request.event.category));
            chains.entry((request.table, tenant, shard)).or_default().push(request);
        }
    }
    chains
}

/// A batch linked onto given heads: each table's rows and each chain's move.
struct Plan<'k, 'e> {
    tables: Vec<(Table, rows::RowColumns<'e>)>,
    moves: Vec<HeadMove<'k>>,
    inserted: usize,
}

impl<'k, 'e> Plan<'k, 'e> {
    /// Links every request not in `stored` onto its chain's head in `heads` (a
    /// chain without one starts at its shard's base).
    fn build(
        chains: &Chains<'k, 'e>,
        heads: &BTreeMap<ChainKey<'k>, Head>,
        stored: &HashSet<(Table, String, Uuid)>,
    ) -> Plan<'k, 'e> {
        let mut plan = Plan { tables: Vec::new(), moves: Vec::new(), inserted: 0 };
        for table in Table::ALL {
            let mut rows = rows::RowColumns::default();
            for (&key, requests) in chains.range((table, "", i32::MIN)..).take_while(|((t, _, _), _)| *t == table) {
                let from = heads.get(&key).copied().unwrap_or((shard_base(key.2), GENESIS_HASH));
                let (mut seq, mut hash) = from;
                for request in requests {
                    if !stored.is_empty() && stored.contains(&(table, key.1.to_owned(), request.event.id)) {
                        continue;
                    }
                    let (link, seal) =
                        chain::next_link(table.as_str(), seq, &hash, &request.expires_at, &request.pii_paths, request.event);
                    rows.push(request, &link, &seal);
                    seq = link.seq;
                    hash = link.row_hash;
                }
                if (seq, hash) != from {
                    plan.moves.push(HeadMove { key, from, to: (seq, hash) });
                }
            }
            if rows.len() > 0 {
                plan.inserted += rows.len();
                plan.tables.push((table, rows));
            }
        }
        plan
    }
}

impl DurableStore for PgStore {
    fn persist<'a>(&'a self, batch: &'a [PersistRequest<'a>]) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(self.persist_batch(batch, false))
    }

    fn persist_replayed<'a>(&'a self, batch: &'a [PersistRequest<'a>]) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(self.persist_batch(batch, true))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await.map_err(StoreError::Unavailable)?;
            self.schema_ready()
        })
    }
}

/// Which of `requests` (all bound for `table`) are stored already, as (tenant, id):
/// those whose id `event_ids` holds (a retry within the retry window, whatever its
/// expiry), and those found as they are, by tenant, event time and id in the
/// partition of their expiry (a spool replay of a write made before that window).
async fn stored_ids(
    tx: &mut Transaction<'_, Postgres>,
    table: Table,
    requests: &[&PersistRequest<'_>],
) -> Result<HashSet<(String, Uuid)>, sqlx::Error> {
    let tenants: Vec<&str> = requests.iter().map(|r| r.event.tenant_id.as_str()).collect();
    let ids: Vec<Uuid> = requests.iter().map(|r| r.event.id).collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> = requests.iter().map(|r| r.event.timestamp).collect();
    let expiries: Vec<chrono::DateTime<chrono::Utc>> = requests.iter().map(|r| r.expires_at).collect();
    let sql = format!(
        "SELECT e.tenant_id, e.id FROM event_ids e
         JOIN unnest($1::text[], $2::uuid[]) AS k(tenant, id) ON e.id = k.id AND e.tenant_id = k.tenant
         WHERE e.table_name = '{table}'
         UNION
         SELECT t.tenant_id, t.id FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::timestamptz[]) AS k(tenant, id, at, expiry)
         JOIN LATERAL (SELECT tenant_id, id FROM {table}
                       WHERE tenant_id = k.tenant AND occurred_at = k.at AND id = k.id AND expires_at = k.expiry) t ON true"
    );
    let rows = sqlx::query(&sql).bind(&tenants).bind(&ids).bind(&times).bind(&expiries).fetch_all(&mut **tx).await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get("tenant_id")?, row.try_get("id")?)))
        .collect()
}
