//! The retention job: deletes expired rows in bounded batches, each batch in its own
//! short transaction that locks only the rows it deletes (`FOR UPDATE SKIP LOCKED`),
//! so ingest and queries never wait on it. With archival on, a batch's rows are
//! written to durable archive files before the transaction that deletes them
//! commits; a failed archive write rolls the batch back. Deleted rows leave
//! tombstones that keep chains linked; leading tombstones are then folded into a
//! signed checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use super::PolicyHandle;
use crate::config::RetentionSettings;
use crate::event::access::AccessRecord;
use crate::event::{AuditEvent, Category, DEFAULT_TENANT};
use crate::integrity::checkpoint::{Keyring, Signer};
use crate::integrity::checkpoint::ChainHead;
use crate::tiers::postgres::partitions;
use crate::tiers::postgres::retention::{compact, delete_with_tombstones, enter_maintenance, lock_expired};
use crate::tiers::sqlite::retention as sqlite;
use crate::tiers::stored::StoredRow;
use crate::tiers::{Chain, Table};

/// Why a run stopped; batches committed before it stay deleted (and archived).
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("archive write failed, nothing of the batch was deleted: {0}")]
    Archive(#[source] std::io::Error),
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct RunReport {
    pub run_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: DateTime<Utc>,
    /// Rows deleted per table.
    pub deleted: BTreeMap<String, u64>,
    /// Rows deleted per tenant.
    pub deleted_by_tenant: BTreeMap<String, u64>,
    /// Archive manifests written.
    pub archive_manifests: Vec<String>,
    /// Tenants skipped because of a legal hold.
    pub held_tenants: Vec<String>,
    /// Checkpoints signed where leading tombstones were folded, or where a dropped
    /// partition cut a chain.
    pub checkpoints: usize,
    /// Time partitions dropped whole (archived first when archival is on).
    pub dropped_partitions: Vec<String>,
}

/// The database a job works on.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs retention against one database.
#[derive(Clone)]
pub struct RetentionJob {
    pub db: Db,
    pub signer: Arc<Signer>,
    pub keys: Keyring,
    pub policies: PolicyHandle,
    pub batch_size: u32,
    /// Where archives go, when archival is on.
    pub archive: Option<PathBuf>,
    /// Every expired row leaves row by row, at once (`retention.exact_expiry`).
    pub exact_expiry: bool,
}

impl RetentionJob {
    /// A job following `settings`.
    pub fn new(db: Db, signer: Arc<Signer>, keys: Keyring, policies: PolicyHandle, settings: &RetentionSettings) -> RetentionJob {
        RetentionJob {
            db,
            signer,
            keys,
            policies,
            batch_size: settings.batch_size,
            archive: settings.archive.then(|| settings.archive_path.clone()),
            exact_expiry: settings.exact_expiry,
        }
    }

    /// One run as of `now`.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<RunReport, RetentionError> {
        let run_id = Uuid::now_v7();
        let held = self.policies.snapshot().held_tenants();
        let mut report = RunReport { run_id, started_at: now, held_tenants: held.clone(), ..RunReport::default() };
        let mut touched: BTreeSet<Chain> = BTreeSet::new();
        let mut part = 0usize;
        for table in Table::ALL {
            // Whole expired partitions first; what is left takes the row-level path.
            // With exact expiry, every expired row goes row by row first, and the
            // expired partitions it empties are dropped after.
            let relations = match &self.db {
                Db::Postgres(_) if self.exact_expiry => vec![table.as_str().to_owned()],
                Db::Postgres(pool) => self.drop_partitions(pool, table, now, &held, run_id, &mut part, &mut report).await?,
                Db::Sqlite(_) => vec![table.as_str().to_owned()],
            };
            for relation in relations {
                loop {
                    let deleted_rows = self.expire_batch(table, &relation, now, &held, run_id, &mut part, &mut report).await?;
                    for row in &deleted_rows {
                        *report.deleted_by_tenant.entry(row.event.tenant_id.clone()).or_default() += 1;
                        touched.insert(Chain::holding(&row.event.tenant_id, table, row.seq));
                    }
                    if (deleted_rows.len() as u32) < self.batch_size {
                        break;
                    }
                }
            }
            if let (Db::Postgres(pool), true) = (&self.db, self.exact_expiry) {
                self.drop_partitions(pool, table, now, &held, run_id, &mut part, &mut report).await?;
            }
        }
        for chain in touched {
            let folded = match &self.db {
                Db::Postgres(pool) => compact(pool, &self.signer, &self.keys, &chain, now).await?,
                Db::Sqlite(pool) => sqlite::compact(pool, &self.signer, &self.keys, &chain, now).await?,
            };
            if folded.is_some() {
                report.checkpoints += 1;
            }
        }
        report.finished_at = Utc::now().max(now);
        Ok(report)
    }
}

impl RetentionJob {
    /// Writes the batch's archive (when archival is on) before anything is deleted.
    async fn archive(
        &self,
        table: Table,
        rows: Vec<StoredRow>,
        run_id: Uuid,
        part: &mut usize,
        now: DateTime<Utc>,
        report: &mut RunReport,
    ) -> Result<Vec<StoredRow>, RetentionError> {
        let Some(root) = &self.archive else { return Ok(rows) };
        *part += 1;
        let (root, signer, n) = (root.clone(), self.signer.clone(), *part);
        let (written, rows) = tokio::task::spawn_blocking(move || {
            let written = super::archive::write(&root, &signer, table, &rows, run_id, n, now);
            (written, rows)
        })
        .await
        .map_err(|e| RetentionError::Archive(std::io::Error::other(e.to_string())))?;
        let manifests = written.map_err(RetentionError::Archive)?;
        report.archive_manifests.extend(manifests.iter().map(|p| p.display().to_string()));
        Ok(rows)
    }

    /// Deletes one batch of expired rows of `relation`, a partition of `table` (or
    /// the table itself in the embedded store), archived first, and returns them.
    #[allow(clippy::too_many_arguments)]
    async fn expire_batch(
        &self,
        table: Table,
        relation: &str,
        now: DateTime<Utc>,
        held: &[String],
        run_id: Uuid,
        part: &mut usize,
        report: &mut RunReport,
    ) -> Result<Vec<StoredRow>, RetentionError> {
        let limit = i64::from(self.batch_size);
        // On an archive error the open transaction is dropped: rolled back.
        let (rows, deleted) = match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                enter_maintenance(&mut tx).await?;
                let rows = lock_expired(&mut tx, table, relation, now, held, limit).await?;
                if rows.is_empty() {
                    return Ok(rows);
                }
                let rows = self.archive(table, rows, run_id, part, now, report).await?;
                let deleted = delete_with_tombstones(&mut tx, table, &rows, now, run_id).await?;
                tx.commit().await?;
                (rows, deleted)
            }
            Db::Sqlite(pool) => {
                let (tx, rows) = sqlite::begin_expiry(pool, table, now, held, limit).await?;
                if rows.is_empty() {
                    return Ok(rows);
                }
                let rows = self.archive(table, rows, run_id, part, now, report).await?;
                let deleted = sqlite::finish_expiry(tx, table, &rows, now, run_id).await?;
                (rows, deleted)
            }
        };
        *report.deleted.entry(table.as_str().to_owned()).or_default() += deleted;
        Ok(rows)
    }
}

impl RetentionJob {
    /// Drops `table`'s partitions whose whole range has passed, each archived first
    /// when archival is on (see [`partitions::drop_partition`]). Returns the
    /// partitions whose expired rows leave row by row instead: the default
    /// partition, the one migrated from before partitions, and expired partitions
    /// holding rows of a tenant on legal hold.
    #[allow(clippy::too_many_arguments)]
    async fn drop_partitions(
        &self,
        pool: &PgPool,
        table: Table,
        now: DateTime<Utc>,
        held: &[String],
        run_id: Uuid,
        part: &mut usize,
        report: &mut RunReport,
    ) -> Result<Vec<String>, RetentionError> {
        let mut blocked = Vec::new();
        for partition in partitions::expired(pool, table, now).await? {
            let Some(plan) = partitions::plan_drop(pool, table, &partition, held).await? else {
                tracing::info!(partition = %partition.name, "an expired partition holds rows under legal hold; its other rows leave row by row");
                blocked.push(partition.name);
                continue;
            };
            if self.archive.is_some() {
                let mut after = (String::new(), i64::MIN);
                loop {
                    let rows = partitions::rows_after(pool, &plan, (&after.0, after.1), i64::from(self.batch_size.max(1))).await?;
                    let Some(last) = rows.last() else { break };
                    after = (last.event.tenant_id.clone(), last.seq);
                    self.archive(table, rows, run_id, part, now, report).await?;
                }
            }
            let checkpoints: Vec<_> = plan
                .cuts
                .iter()
                .filter_map(|cut| {
                    let (seq, hash) = cut.anchor?;
                    let head = ChainHead { tenant_id: cut.chain.tenant.clone(), table: table.as_str().to_owned(), seq, hash: hex::encode(hash) };
                    Some(self.signer.checkpoint(head, "retention", now))
                })
                .collect();
            let mut stranded = Vec::new();
            for cut in &plan.cuts {
                stranded.extend(partitions::stranded_rows(pool, &plan, cut).await?);
            }
            if !partitions::drop_partition(pool, &plan, &checkpoints, &stranded, now, run_id).await? {
                tracing::info!(partition = %partition.name, "an expired partition changed, or its table stayed busy, while being dropped; dropping it on the next run");
                continue;
            }
            *report.deleted.entry(table.as_str().to_owned()).or_default() += plan.rows() as u64;
            for cut in &plan.cuts {
                *report.deleted_by_tenant.entry(cut.chain.tenant.clone()).or_default() += cut.rows as u64;
            }
            report.checkpoints += checkpoints.len();
            tracing::info!(partition = %partition.name, rows = plan.rows(), stranded = stranded.len(), "expired partition dropped");
            report.dropped_partitions.push(partition.name);
        }
        let rest = partitions::list(pool, table).await?;
        Ok(rest.into_iter().filter(|p| p.default || p.from.is_none() || blocked.contains(&p.name)).map(|p| p.name).collect())
    }
}

impl RunReport {
    /// The `LogRetentionRun` events of this run: one summary (tenant `default`) and
    /// one for each tenant whose rows were deleted or held.
    pub fn events(&self) -> Vec<AuditEvent> {
        let mut tenants: BTreeSet<&str> = self.deleted_by_tenant.keys().map(String::as_str).collect();
        tenants.extend(self.held_tenants.iter().map(String::as_str));
        let mut events = vec![self.event(None)];
        events.extend(tenants.into_iter().filter(|t| *t != DEFAULT_TENANT).map(|t| self.event(Some(t))));
        events
    }

    fn event(&self, tenant: Option<&str>) -> AuditEvent {
        let mut details = Map::new();
        details.insert("run_id".into(), self.run_id.to_string().into());
        match tenant {
            Some(tenant) => {
                details.insert("deleted".into(), self.deleted_by_tenant.get(tenant).copied().unwrap_or(0).into());
                details.insert("legal_hold".into(), self.held_tenants.iter().any(|t| t == tenant).into());
            }
            None => {
                details.insert("deleted_by_table".into(), serde_json::to_value(&self.deleted).unwrap_or(Value::Null));
                details.insert("deleted".into(), self.deleted.values().sum::<u64>().into());
                details.insert("tenants".into(), self.deleted_by_tenant.len().into());
                details.insert("held_tenants".into(), self.held_tenants.len().into());
                details.insert("archive_manifests".into(), self.archive_manifests.len().into());
                details.insert("checkpoints".into(), self.checkpoints.into());
                details.insert("dropped_partitions".into(), self.dropped_partitions.len().into());
            }
        }
        details.insert("started_at".into(), crate::event::format_timestamp(&self.started_at).into());
        let record = AccessRecord {
            actor: "retention",
            action: "retention.run",
            tenant: tenant.or(Some(DEFAULT_TENANT)),
            endpoint: "retention job",
            request_id: None,
            details,
        };
        let mut event = record.to_event();
        // Not a use of the log but a change to it: kept in view with the admin actions.
        event.category = Category::Audit;
        event.event_type = Some("LogRetentionRun".into());
        event.user_id = None;
        event.message = Some(format!(
            "retention run {} deleted {} rows",
            self.run_id,
            tenant.map_or_else(|| self.deleted.values().sum::<u64>(), |t| self.deleted_by_tenant.get(t).copied().unwrap_or(0))
        ));
        event
    }
}
