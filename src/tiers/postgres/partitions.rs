//! Time partitions of the event tables (migration `0007_time_partitions.sql`).
//!
//! Each event table is range-partitioned by `expires_at`, in ranges of one
//! [`PartitionInterval`] aligned on UTC days, Mondays or months. A row's expiry is
//! fixed at ingest (arrival + the tenant's days for its category), so the rows a
//! deployment writes today land a few known distances ahead: one per retention
//! length in force. [`ensure_ahead`] creates, for every table and every such length,
//! the partitions covering the next two intervals from there, so rows find their
//! partition before they arrive; a row no partition covers lands in the table's
//! default partition, which [`default_rows`] watches.
//!
//! A partition is created as a table of its own and then attached, which takes only
//! a `SHARE UPDATE EXCLUSIVE` lock on the parent: ingest and reads go on meanwhile.
//! Nodes serialise their upkeep on an advisory lock, so each partition is made once.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use sqlx::{PgPool, Row};

use super::rows::{stored_row, ROW_SELECT};
use super::StoredRow;
use crate::integrity::checkpoint::Checkpoint;
use crate::tiers::{Chain, Table};

/// How wide each time partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionInterval {
    Day,
    Week,
    Month,
}

impl FromStr for PartitionInterval {
    type Err = String;

    fn from_str(value: &str) -> Result<PartitionInterval, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "day" | "1 day" | "daily" => Ok(PartitionInterval::Day),
            "week" | "1 week" | "weekly" => Ok(PartitionInterval::Week),
            "month" | "1 month" | "monthly" => Ok(PartitionInterval::Month),
            _ => Err(format!("{value:?} is not a partition interval: use day, week or month")),
        }
    }
}

impl PartitionInterval {
    /// The start of the range holding `at`.
    pub fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        let start = match self {
            PartitionInterval::Day => day,
            PartitionInterval::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            PartitionInterval::Month => NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day),
        };
        Utc.from_utc_datetime(&start.and_hms_opt(0, 0, 0).unwrap_or_default())
    }

    /// The start of the range after the one starting at `start`.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            PartitionInterval::Day => start + Duration::days(1),
            PartitionInterval::Week => start + Duration::weeks(1),
            PartitionInterval::Month => {
                let day = start.date_naive();
                let (year, month) = if day.month() == 12 { (day.year() + 1, 1) } else { (day.year(), day.month() + 1) };
                let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(day);
                Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).unwrap_or_default())
            }
        }
    }
}

/// One partition of an event table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    /// Lower bound (inclusive); `None`: no lower bound (`MINVALUE`).
    pub from: Option<DateTime<Utc>>,
    /// Upper bound (exclusive); `None` for the default partition.
    pub to: Option<DateTime<Utc>>,
    /// The default partition: rows no other partition covers.
    pub default: bool,
}

/// SQL for one end (`FROM` or `TO`) of the range of the partition whose
/// `pg_get_expr(relpartbound, oid)` text is `bound`: NULL for an open end
/// (`MINVALUE`) or the default partition. The bounds are printed and read back by the
/// same session, so the time zone they are printed in does not matter.
pub(super) fn range_end(end: &str, bound: &str) -> String {
    format!("(regexp_match({bound}, '{end} \\(''([^'']+)''\\)'))[1]::timestamptz")
}

/// The partitions of `table`, in range order (the default last).
pub async fn list(pool: &PgPool, table: Table) -> Result<Vec<Partition>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT c.relname AS name, b.bound = 'DEFAULT' AS is_default, {} AS lo, {} AS hi
         FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
         WHERE i.inhparent = $1::regclass",
        range_end("FROM", "b.bound"),
        range_end("TO", "b.bound"),
    ))
    .bind(table.as_str())
    .fetch_all(pool)
    .await?;
    let mut partitions = rows
        .into_iter()
        .map(|row| {
            Ok(Partition {
                name: row.try_get("name")?,
                default: row.try_get("is_default")?,
                from: row.try_get("lo")?,
                to: row.try_get("hi")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    partitions.sort_by_key(|p| (p.default, p.from));
    Ok(partitions)
}

/// The pieces of `[from, to)` that no partition in `existing` covers.
fn uncovered(existing: &[Partition], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut pieces = vec![(from, to)];
    for partition in existing.iter().filter(|p| !p.default) {
        let Some(hi) = partition.to else { continue };
        pieces = pieces
            .into_iter()
            .flat_map(|(a, b)| {
                let lo = partition.from.unwrap_or(DateTime::<Utc>::MIN_UTC);
                if hi <= a || lo >= b {
                    return vec![(a, b)];
                }
                let mut left = Vec::new();
                if a < lo {
                    left.push((a, lo));
                }
                if hi < b {
                    left.push((hi, b));
                }
                left
            })
            .collect();
    }
    pieces
}

/// Key of the advisory lock nodes take around partition upkeep ("tlpt").
const UPKEEP_LOCK: i64 = 0x746c_7074;

/// Makes sure that, for every table and every retention length in `days`, the
/// partitions holding expiries from `now + days` to two intervals later exist.
/// Returns the partitions it created. A partition that cannot be made (its range
/// has rows in the default partition, or a lock was not granted in time) is logged
/// and left for the next turn; the others are made all the same.
pub async fn ensure_ahead(
    pool: &PgPool,
    interval: PartitionInterval,
    days: &BTreeMap<Table, BTreeSet<u32>>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    let mut created = Vec::new();
    for (table, lengths) in days {
        let mut existing = list(pool, *table).await?;
        let mut wanted: BTreeSet<DateTime<Utc>> = BTreeSet::new();
        for days in lengths {
            let start = interval.floor(now + Duration::days(i64::from(*days)));
            let (second, third) = (interval.next(start), interval.next(interval.next(start)));
            wanted.extend([start, second, third]);
        }
        // Rows that landed in the default partition (written before their partition
        // was made) are moved into the partitions made for them below.
        let mut after: Option<DateTime<Utc>> = None;
        loop {
            let sql = format!("SELECT min(expires_at) AS m FROM {table}_default WHERE $1::timestamptz IS NULL OR expires_at >= $1");
            let least: Option<DateTime<Utc>> = sqlx::query(&sql).bind(after).fetch_one(pool).await?.try_get("m")?;
            let Some(least) = least else { break };
            let start = interval.floor(least);
            wanted.insert(start);
            after = Some(interval.next(start));
        }
        for start in wanted {
            for (from, to) in uncovered(&existing, start, interval.next(start)) {
                let name = format!("{table}_p{}", from.format("%Y%m%d"));
                match create(pool, *table, &name, from, to).await {
                    Ok(true) => created.push(name.clone()),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, partition = %name, "cannot create a time partition yet; trying again on the next upkeep");
                        continue;
                    }
                }
                existing.push(Partition { name, from: Some(from), to: Some(to), default: false });
            }
        }
    }
    Ok(created)
}

/// Creates and attaches one partition, unless another node just did.
async fn create(pool: &PgPool, table: Table, name: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(UPKEEP_LOCK).execute(&mut *tx).await?;
    // A long read holding the default partition must not stall the upkeep (nor the
    // reads queued behind it) for long; what is not made now is made on the next turn.
    sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
    let exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL AS e").bind(name).fetch_one(&mut *tx).await?.try_get("e")?;
    if exists {
        return Ok(false);
    }
    sqlx::query(&format!("CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING STORAGE)"))
        .execute(&mut *tx)
        .await?;
    // Rows of the range in the default partition move over first (attaching would
    // fail on them): the same rows, so no chain changes.
    let columns: String = sqlx::query(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) AS c FROM pg_attribute
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''",
    )
    .bind(table.as_str())
    .fetch_one(&mut *tx)
    .await?
    .try_get("c")?;
    super::retention::enter_maintenance(&mut tx).await?;
    let moved = sqlx::query(&format!(
        "WITH moved AS (DELETE FROM {table}_default WHERE expires_at >= $1 AND expires_at < $2 RETURNING {columns})
         INSERT INTO {name} ({columns}) SELECT {columns} FROM moved"
    ))
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved > 0 {
        tracing::info!(partition = %name, rows = moved, "rows moved from the default partition into their time partition");
    }
    sqlx::query(&format!(
        "ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{}') TO ('{}')",
        from.to_rfc3339(),
        to.to_rfc3339()
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Deletes the ids in `event_ids` older than `window` (in batches, so no long
/// transaction), past which a retry is no longer expected; returns how many.
pub async fn forget_old_ids(pool: &PgPool, window: std::time::Duration) -> Result<u64, sqlx::Error> {
    let mut forgotten = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM event_ids WHERE ctid IN (
                 SELECT ctid FROM event_ids WHERE seen_at < now() - $1 * interval '1 second' LIMIT 10000)",
        )
        .bind(window.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
        forgotten += deleted;
        if deleted < 10_000 {
            return Ok(forgotten);
        }
    }
}

/// How many rows each table's default partition holds (counted up to a million).
pub async fn default_rows(pool: &PgPool) -> Result<BTreeMap<Table, i64>, sqlx::Error> {
    let mut counts = BTreeMap::new();
    for table in Table::ALL {
        let sql = format!("SELECT count(*) AS n FROM (SELECT 1 FROM {table}_default LIMIT 1000000) r");
        let n: i64 = sqlx::query(&sql).fetch_one(pool).await?.try_get("n")?;
        counts.insert(table, n);
    }
    Ok(counts)
}

/// One chain's part in an expired partition, and what dropping the partition
/// does to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCut {
    pub chain: Chain,
    /// The chain's rows in the partition, and the last of them.
    pub rows: i64,
    pub last: i64,
    /// The end of the leading run of the chain the drop removes, with that row's
    /// hash: a signed checkpoint there becomes the chain's start. `None` when the
    /// chain keeps an older row elsewhere (every row of it here is stranded).
    pub anchor: Option<(i64, [u8; 32])>,
    /// The chain's first row kept in another partition, when the partition's rows
    /// are not all before it: rows here after it are stranded between kept rows,
    /// and leave tombstones so the chain still links across them.
    pub first_kept: Option<i64>,
}

/// Dropping one expired partition: the chains it cuts.
#[derive(Debug, Clone)]
pub struct DropPlan {
    pub table: Table,
    pub partition: Partition,
    pub cuts: Vec<ChainCut>,
}

impl DropPlan {
    /// Rows the drop removes.
    pub fn rows(&self) -> i64 {
        self.cuts.iter().map(|c| c.rows).sum()
    }
}

/// The partitions of `table` whose whole range has passed by `now`.
pub async fn expired(pool: &PgPool, table: Table, now: DateTime<Utc>) -> Result<Vec<Partition>, sqlx::Error> {
    Ok(list(pool, table).await?.into_iter().filter(|p| !p.default && p.to.is_some_and(|to| to <= now)).collect())
}

/// Each chain of `table` with rows in `{partition}`: their count, the last one and
/// its hash, and the chain's first row kept in another partition (outside the
/// partition's expiry range, so Postgres plans and reads no other partition for it
/// than those). One statement per partition, planned once.
const CHAINS_IN: &str = "SELECT h.tenant_id, h.shard, m.n, m.last,
            (SELECT r.row_hash FROM {partition} r WHERE r.tenant_id = h.tenant_id AND r.seq = m.last) AS last_hash,
            (SELECT min(o.seq) FROM {table} o
             WHERE o.tenant_id = h.tenant_id AND o.seq > (h.shard::int8 << $2) AND o.seq < ((h.shard::int8 + 1) << $2)
               AND (($3::timestamptz IS NOT NULL AND o.expires_at < $3) OR o.expires_at >= $4)) AS first_kept
     FROM chain_heads h
     CROSS JOIN LATERAL (
         SELECT count(*) AS n, max(r.seq) AS last FROM {partition} r
         WHERE r.tenant_id = h.tenant_id AND r.seq > (h.shard::int8 << $2) AND r.seq < ((h.shard::int8 + 1) << $2)
     ) m
     WHERE h.table_name = $1 AND m.n > 0
     ORDER BY 1, 2";

/// A row of [`CHAINS_IN`]: tenant, shard, rows, last, last row's hash, first kept.
type ChainInPartition = (String, i32, i64, i64, Vec<u8>, Option<i64>);

/// What dropping `partition` takes, or `None` when a tenant in `held` has rows in it
/// (its other tenants' rows then leave by the row-level path).
pub async fn plan_drop(
    pool: &PgPool,
    table: Table,
    partition: &Partition,
    held: &[String],
) -> Result<Option<DropPlan>, sqlx::Error> {
    let name = &partition.name;
    let on_hold: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {name} WHERE tenant_id = ANY($1))"))
        .bind(held)
        .fetch_one(pool)
        .await?;
    if on_hold {
        return Ok(None);
    }
    let chains: Vec<ChainInPartition> =
        sqlx::query_as(&CHAINS_IN.replace("{partition}", name).replace("{table}", table.as_str()))
            .bind(table.as_str())
            .bind(crate::integrity::chain::SHARD_BITS as i32)
            .bind(partition.from)
            .bind(partition.to)
            .fetch_all(pool)
            .await?;
    let mut cuts = Vec::new();
    for (tenant, shard, rows, last, last_hash, first_kept) in chains {
        let chain = Chain::new(&tenant, table, shard);
        let first_kept = first_kept.filter(|kept| *kept < last);
        // Usually the chain's rows here all come before its kept ones: the last is
        // the anchor. Otherwise (a policy shortened) the anchor is the last row
        // before the first kept one, if any.
        let anchor_seq: Option<i64> = match first_kept {
            None => Some(last),
            Some(kept) => sqlx::query_scalar(&format!("SELECT max(seq) FROM {name} WHERE tenant_id = $1 AND seq > $2 AND seq < $3"))
                .bind(&tenant)
                .bind(chain.base())
                .bind(kept)
                .fetch_one(pool)
                .await?,
        };
        let hash_of = |hash: Vec<u8>| -> Result<[u8; 32], sqlx::Error> {
            hash.as_slice().try_into().map_err(|_| sqlx::Error::Decode("row_hash is not 32 bytes".into()))
        };
        let anchor = match anchor_seq {
            Some(seq) if seq == last => Some((seq, hash_of(last_hash)?)),
            Some(seq) => {
                let hash: Vec<u8> = sqlx::query_scalar(&format!("SELECT row_hash FROM {name} WHERE tenant_id = $1 AND seq = $2"))
                    .bind(&tenant)
                    .bind(seq)
                    .fetch_one(pool)
                    .await?;
                Some((seq, hash_of(hash)?))
            }
            None => None,
        };
        cuts.push(ChainCut { chain, rows, last, anchor, first_kept });
    }
    Ok(Some(DropPlan { table, partition: partition.clone(), cuts }))
}

/// The rows of `cut`'s chain in the partition that sit after a kept row.
pub async fn stranded_rows(pool: &PgPool, plan: &DropPlan, cut: &ChainCut) -> Result<Vec<StoredRow>, sqlx::Error> {
    let Some(kept) = cut.first_kept else { return Ok(Vec::new()) };
    let sql = format!(
        "SELECT {ROW_SELECT} FROM {} WHERE tenant_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq",
        plan.partition.name
    );
    let rows = sqlx::query(&sql).bind(&cut.chain.tenant).bind(kept).bind(cut.chain.end()).fetch_all(pool).await?;
    rows.iter().map(|row| stored_row(plan.table, row)).collect()
}

/// Up to `limit` rows of the partition after `(tenant, seq)`, in chain order: for
/// archiving it before the drop.
pub async fn rows_after(pool: &PgPool, plan: &DropPlan, after: (&str, i64), limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ROW_SELECT} FROM {} WHERE (tenant_id, seq) > ($1, $2) ORDER BY tenant_id, seq LIMIT $3",
        plan.partition.name
    );
    let rows = sqlx::query(&sql).bind(after.0).bind(after.1).bind(limit).fetch_all(pool).await?;
    rows.iter().map(|row| stored_row(plan.table, row)).collect()
}

/// Drops the partition of `plan` in one short transaction: locks the partition and
/// the default partition (which ingest does not write, so waiting on them stalls no
/// writer), checks that no row arrived in the partition since the plan, signs each
/// cut chain's new start (`checkpoints`, made from [`ChainCut::anchor`]) and folds the
/// tombstones it covers, leaves tombstones for `stranded` rows, and only then locks
/// the table itself, to detach and drop the partition and commit: ingest waits on
/// the table for no more than that. Returns `false`, changing nothing, when a row
/// arrived (the next run plans again) or a lock was not granted within half a second
/// a few times running (a long read holds the table; ingest waits behind the lock
/// request no longer than that).
pub async fn drop_partition(
    pool: &PgPool,
    plan: &DropPlan,
    checkpoints: &[Checkpoint],
    stranded: &[StoredRow],
    now: DateTime<Utc>,
    run_id: uuid::Uuid,
) -> Result<bool, sqlx::Error> {
    let (table, name) = (plan.table, &plan.partition.name);
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let mut tx = pool.begin().await?;
        super::retention::enter_maintenance(&mut tx).await?;
        sqlx::query("SET LOCAL lock_timeout = '500ms'").execute(&mut *tx).await?;
        let locked = sqlx::query(&format!("LOCK TABLE {name}, {table}_default IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await;
        if lock_refused(locked)? {
            continue;
        }
        // Every chain's last row here, as planned: a row added since would be one.
        let now_in: Vec<(String, i32, i64)> = sqlx::query_as(&format!(
            "SELECT h.tenant_id, h.shard, m.last FROM chain_heads h
             CROSS JOIN LATERAL (
                 SELECT max(r.seq) AS last FROM {name} r
                 WHERE r.tenant_id = h.tenant_id AND r.seq > (h.shard::int8 << $2) AND r.seq < ((h.shard::int8 + 1) << $2)
             ) m
             WHERE h.table_name = $1 AND m.last IS NOT NULL ORDER BY 1, 2"
        ))
        .bind(table.as_str())
        .bind(crate::integrity::chain::SHARD_BITS as i32)
        .fetch_all(&mut *tx)
        .await?;
        let planned: Vec<(String, i32, i64)> = plan.cuts.iter().map(|c| (c.chain.tenant.clone(), c.chain.shard, c.last)).collect();
        if now_in != planned {
            return Ok(false);
        }
        for checkpoint in checkpoints {
            super::checkpoints::insert(&mut *tx, checkpoint).await?;
        }
        // The tombstones before each new start are covered by its checkpoint.
        let anchored: Vec<&ChainCut> = plan.cuts.iter().filter(|c| c.anchor.is_some()).collect();
        let tenants: Vec<&str> = anchored.iter().map(|c| c.chain.tenant.as_str()).collect();
        let bases: Vec<i64> = anchored.iter().map(|c| c.chain.base()).collect();
        let anchors: Vec<i64> = anchored.iter().filter_map(|c| c.anchor.map(|(seq, _)| seq)).collect();
        sqlx::query(
            "DELETE FROM chain_tombstones t USING unnest($1::text[], $2::int8[], $3::int8[]) AS k(tenant, base, anchor)
             WHERE t.tenant_id = k.tenant AND t.table_name = $4 AND t.seq > k.base AND t.seq <= k.anchor",
        )
        .bind(&tenants)
        .bind(&bases)
        .bind(&anchors)
        .bind(table.as_str())
        .execute(&mut *tx)
        .await?;
        super::retention::insert_tombstones(&mut tx, table, stranded, now, run_id).await?;
        // The table last (ONLY: not the partitions being written), for the detach.
        let locked = sqlx::query(&format!("LOCK TABLE ONLY {table} IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await;
        if lock_refused(locked)? {
            continue;
        }
        sqlx::query(&format!("ALTER TABLE {table} DETACH PARTITION {name}")).execute(&mut *tx).await?;
        sqlx::query(&format!("DROP TABLE {name}")).execute(&mut *tx).await?;
        tx.commit().await?;
        return Ok(true);
    }
    Ok(false)
}

/// Whether a `LOCK TABLE` timed out (`lock_timeout`, SQLSTATE 55P03); other errors
/// are returned.
fn lock_refused(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> Result<bool, sqlx::Error> {
    match result {
        Ok(_) => Ok(false),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn ranges_align_on_days_mondays_and_months() {
        let t = at("2026-12-03T13:14:15Z"); // a Thursday
        assert_eq!(PartitionInterval::Day.floor(t), at("2026-12-03T00:00:00Z"));
        assert_eq!(PartitionInterval::Week.floor(t), at("2026-11-30T00:00:00Z"));
        assert_eq!(PartitionInterval::Month.floor(t), at("2026-12-01T00:00:00Z"));
        assert_eq!(PartitionInterval::Month.next(at("2026-12-01T00:00:00Z")), at("2027-01-01T00:00:00Z"));
        assert_eq!(PartitionInterval::Week.next(at("2026-11-30T00:00:00Z")), at("2026-12-07T00:00:00Z"));
        assert_eq!("Week".parse::<PartitionInterval>(), Ok(PartitionInterval::Week));
        assert!("fortnight".parse::<PartitionInterval>().is_err());
    }

    #[test]
    fn only_the_uncovered_pieces_of_a_range_are_made() {
        let legacy = Partition { name: "l".into(), from: None, to: Some(at("2026-12-03T00:00:00Z")), default: false };
        let default = Partition { name: "d".into(), from: None, to: None, default: true };
        let week = (at("2026-11-30T00:00:00Z"), at("2026-12-07T00:00:00Z"));
        assert_eq!(uncovered(&[legacy.clone(), default], week.0, week.1), vec![(at("2026-12-03T00:00:00Z"), week.1)]);
        let made = Partition { name: "p".into(), from: Some(at("2026-12-03T00:00:00Z")), to: Some(week.1), default: false };
        assert!(uncovered(&[legacy, made], week.0, week.1).is_empty());
    }
}
