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

use crate::tiers::Table;

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

/// The partitions of `table`, in range order (the default last).
pub async fn list(pool: &PgPool, table: Table) -> Result<Vec<Partition>, sqlx::Error> {
    // The bounds are printed and read back by the same session, so the time zone
    // they are printed in does not matter.
    let rows = sqlx::query(
        "SELECT c.relname AS name, b.bound = 'DEFAULT' AS is_default,
                (regexp_match(b.bound, 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz AS lo,
                (regexp_match(b.bound, 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS hi
         FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
         WHERE i.inhparent = $1::regclass",
    )
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
