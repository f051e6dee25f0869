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
use crate::event::{AuditEvent, DEFAULT_TENANT};
use crate::integrity::checkpoint::{Keyring, Signer};
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
    /// Checkpoints signed where leading tombstones were folded.
    pub checkpoints: usize,
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
            loop {
                let deleted_rows = self.expire_batch(table, now, &held, run_id, &mut part, &mut report).await?;
                for row in &deleted_rows {
                    *report.deleted_by_tenant.entry(row.event.tenant_id.clone()).or_default() += 1;
                    touched.insert(Chain::holding(&row.event.tenant_id, table, row.seq));
                }
                if (deleted_rows.len() as u32) < self.batch_size {
                    break;
                }
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

    /// Deletes one batch of expired rows of `table` (archived first) and returns them.
    async fn expire_batch(
        &self,
        table: Table,
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
                let rows = lock_expired(&mut tx, table, now, held, limit).await?;
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
