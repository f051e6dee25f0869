//! Partition pruning for reads by event time.
//!
//! The event tables are partitioned by `expires_at`, and reads filter by event time
//! (`occurred_at`), so on its own Postgres must look into every partition, and plan
//! every one, for "the failed logins of the last 24 hours". The link between the two
//! times is kept in `expiry_leads`: for each table, a `lead_seconds` such that every
//! row in its time partitions has `expires_at - occurred_at >= lead_seconds`. A read
//! of the events since T then adds `expires_at >= T + lead`, a range of the
//! partition key, and Postgres skips the partitions that expire earlier.
//!
//! The bound holds by construction, whatever the policies, clocks or replays: a
//! writer about to write a row with a smaller gap first lowers the lead, committed
//! ([`LeadFloor::cover`]); the lead never rises. A reader takes the lead and runs its
//! query in one repeatable-read snapshot ([`snapshot`]): if the snapshot holds a row,
//! it holds the lowered lead committed before it. Rows of `<table>_legacy` (written
//! before partitions, under policies no one recorded) are always read: its range is
//! kept out of the bound.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Transaction};

use crate::tiers::{PersistRequest, Table};

/// What a read since a time may skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryBound {
    /// Every partitioned row has at least this many seconds from event to expiry.
    pub lead_seconds: i64,
    /// The end of `<table>_legacy`'s range, when it exists.
    pub legacy_to: Option<DateTime<Utc>>,
}

impl ExpiryBound {
    /// Appends ` AND (expires_at >= from + lead OR expires_at < legacy end)`.
    pub fn push(&self, qb: &mut QueryBuilder<'_, Postgres>, from: DateTime<Utc>) {
        let earliest = from.checked_add_signed(Duration::seconds(self.lead_seconds)).unwrap_or(from);
        qb.push(" AND (expires_at >= ").push_bind(earliest);
        if let Some(legacy_to) = self.legacy_to {
            qb.push(" OR expires_at < ").push_bind(legacy_to);
        }
        qb.push(")");
    }
}

/// Opens a read-only repeatable-read transaction and reads `table`'s bound in it
/// (`None` while no partitioned row exists). Run the read in the same transaction.
pub async fn snapshot(pool: &PgPool, table: Table) -> Result<(Transaction<'static, Postgres>, Option<ExpiryBound>), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
    let bound = bound(&mut tx, table).await?;
    Ok((tx, bound))
}

async fn bound(connection: &mut PgConnection, table: Table) -> Result<Option<ExpiryBound>, sqlx::Error> {
    let row: Option<(Option<i64>, Option<DateTime<Utc>>)> = sqlx::query_as(&format!(
        "SELECT e.lead_seconds,
                (SELECT {} FROM pg_class c WHERE c.oid = to_regclass($1 || '_legacy') AND c.relispartition)
         FROM expiry_leads e WHERE e.table_name = $1",
        super::partitions::range_end("TO", "pg_get_expr(c.relpartbound, c.oid)")
    ))
    .bind(table.as_str())
    .fetch_optional(&mut *connection)
    .await?;
    Ok(row.and_then(|(lead, legacy_to)| lead.map(|lead_seconds| ExpiryBound { lead_seconds, legacy_to })))
}

/// The writer's side: the leads this process knows are recorded (the database's
/// can only be lower, as leads never rise).
#[derive(Debug, Default)]
pub struct LeadFloor {
    /// `None` until read; per table, `None` for a lead not set yet.
    known: Mutex<Option<BTreeMap<Table, Option<i64>>>>,
}

impl LeadFloor {
    /// Makes sure every row of `batch` keeps the bound: lowers (and commits) a
    /// table's lead first when a row's gap from event to expiry is smaller. Almost
    /// always a comparison in memory; a query when a policy shorter than any before
    /// (or an event from further ahead) arrives.
    pub async fn cover(&self, pool: &PgPool, batch: &[PersistRequest<'_>]) -> Result<(), sqlx::Error> {
        let mut needed: BTreeMap<Table, i64> = BTreeMap::new();
        for request in batch {
            let gap = (request.expires_at - request.event.timestamp).num_milliseconds().div_euclid(1000);
            needed.entry(request.table).and_modify(|least| *least = (*least).min(gap)).or_insert(gap);
        }
        if self.lock().is_none() {
            let rows: Vec<(String, Option<i64>)> = sqlx::query_as("SELECT table_name, lead_seconds FROM expiry_leads").fetch_all(pool).await?;
            let known = rows.into_iter().filter_map(|(name, lead)| Table::parse(&name).map(|table| (table, lead))).collect();
            *self.lock() = Some(known);
        }
        for (table, gap) in needed {
            let recorded = self.lock().as_ref().and_then(|known| known.get(&table).copied().flatten());
            if recorded.is_some_and(|lead| lead <= gap) {
                continue;
            }
            let lead: Option<i64> = sqlx::query_scalar(
                "UPDATE expiry_leads SET lead_seconds = LEAST(coalesce(lead_seconds, $2), $2) WHERE table_name = $1 RETURNING lead_seconds",
            )
            .bind(table.as_str())
            .bind(gap)
            .fetch_optional(pool)
            .await?
            .flatten();
            let lead = lead.ok_or_else(|| sqlx::Error::Protocol(format!("expiry_leads has no row for {table}")))?;
            tracing::debug!(%table, lead, "lowered the expiry lead of a table");
            if let Some(known) = self.lock().as_mut() {
                known.insert(table, Some(lead));
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<BTreeMap<Table, Option<i64>>>> {
        self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
