//! Retention benchmark: the partition path against the row path, in one run.
//!
//! For each path it creates a database, makes daily time partitions, loads `--rows`
//! expired rows spread over `--days` of them (100 tenants, each tenant's chain in
//! order of expiry) plus `--live` rows that have not expired, and purges the expired
//! rows with the retention job: the default (expired partitions dropped whole) or
//! `retention.exact_expiry` (every row deleted with a tombstone, as before
//! partitions). It prints the purge's time, the WAL it wrote
//! (`pg_current_wal_lsn` difference: nothing else writes meanwhile), and the tables'
//! and indexes' size afterwards. Then it loads `--rows / 5` more expired rows (of 100
//! other tenants) and measures ingest (two writers persisting batches of 100 events,
//! as a node does) for `--seconds` without a purge, then while the purge runs, then
//! without a purge again: the ratio compares the purge's window with the mean of the
//! two around it, so drift between windows (a growing table, a checkpoint) is not
//! counted as the purge's.
//!
//! Each load is followed by `VACUUM (ANALYZE)` and a `CHECKPOINT`: the partitions a
//! deployment drops expired weeks after they were written, and autovacuum has long
//! visited them; without this, the vacuum the load sets off would run inside the
//! measured windows.
//!
//! ```text
//! cargo bench --bench retention -- [--rows 5000000] [--live 500000] [--days 5] [--seconds 10]
//!     [--paths partition,row] [--database-url URL]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tierlog::config::Settings;
use tierlog::event::{EventParser, Limits};
use tierlog::integrity::checkpoint::{Keyring, Signer};
use tierlog::retention::job::{Db, RetentionJob};
use tierlog::retention::{Policies, PolicyHandle};
use tierlog::tiers::postgres::partitions::{ensure_ahead, PartitionInterval};
use tierlog::tiers::postgres::PgStore;
use tierlog::tiers::{DurableStore, PersistRequest, Table};
use uuid::Uuid;

const TENANTS: i64 = 100;

struct Options {
    rows: i64,
    live: i64,
    days: i64,
    seconds: u64,
    /// Which paths to run: `partition`, `row` or both.
    paths: Vec<String>,
    database_url: String,
}

fn options() -> Options {
    let mut o = Options {
        rows: 5_000_000,
        live: 500_000,
        days: 5,
        seconds: 10,
        paths: vec!["partition".into(), "row".into()],
        database_url: std::env::var("TIERLOG_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rows" => o.rows = value.parse().expect("--rows N"),
            "--live" => o.live = value.parse().expect("--live N"),
            "--days" => o.days = value.parse::<i64>().expect("--days N").max(1),
            "--seconds" => o.seconds = value.parse().expect("--seconds N"),
            "--paths" => o.paths = value.split(',').map(str::to_owned).collect(),
            "--database-url" => o.database_url = value,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// A fresh database, migrated, with daily partitions from `days + 1` days ago to
/// three days ahead.
async fn database(o: &Options, admin: &mut PgConnection, now: DateTime<Utc>) -> anyhow::Result<(String, PgPool)> {
    let name = format!("tierlog_rbench_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut *admin).await?;
    let url = format!("{}/{name}", o.database_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&o.database_url));
    let pool = PgPool::connect(&url).await?;
    tierlog::tiers::postgres::migrate(&pool).await?;
    partitions(o, &pool, now).await?;
    Ok((name, pool))
}

/// Daily partitions from `days + 1` days ago to three days ahead (again after a purge
/// dropped the expired ones, so the second load of expired rows has partitions).
async fn partitions(o: &Options, pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<()> {
    let days: BTreeMap<Table, BTreeSet<u32>> = [(Table::AuditLogs, [0].into())].into();
    let mut at = now - chrono::Duration::days(o.days + 1);
    while at <= now + chrono::Duration::days(1) {
        ensure_ahead(pool, PartitionInterval::Day, &days, at).await?;
        at += chrono::Duration::days(1);
    }
    Ok(())
}

/// Loads `rows` rows after `first` (a running number over all loads) for the 100
/// tenants from number `tenants`, each tenant's in chain order; expiring evenly from
/// `from` over `days`. Returns the next number.
async fn load(pool: &PgPool, first: i64, rows: i64, tenants: i64, from: DateTime<Utc>, days: i64) -> anyhow::Result<i64> {
    let chunk = 250_000;
    let mut start = first;
    let end_all = first + rows - 1;
    let t0 = Instant::now();
    while start <= end_all {
        let end = (start + chunk - 1).min(end_all);
        sqlx::query(
            "INSERT INTO audit_logs (tenant_id, seq, id, occurred_at, received_at, expires_at, category, level, action,
                 status, user_id, ip_address, message, details, prev_hash, row_hash, pii_hash)
             SELECT 'tenant-' || lpad((g % 100 + $7)::text, 3, '0'), g / 100 + 1, gen_random_uuid(), e - interval '30 days',
                 e - interval '30 days', e, 'auth', 'INFO', 'auth.login', 'success', 'user-' || ((g / 100) % 5000),
                 ('10.' || ((g / 7) % 40) || '.' || ((g / 13) % 250) || '.' || (g % 10 + 1))::inet,
                 'login from office network', jsonb_build_object('n', g), z.h, z.h, z.h
             FROM generate_series($1::bigint, $2::bigint) g, (SELECT decode(repeat('00', 32), 'hex') AS h) z,
                  LATERAL (SELECT $3::timestamptz + (g - $6) * ($4::float8 * 86400 / $5) * interval '1 second' AS e) x",
        )
        .bind(start)
        .bind(end)
        .bind(from)
        .bind(days as f64)
        .bind(rows as f64)
        .bind(first)
        .bind(tenants)
        .execute(pool)
        .await?;
        start = end + 1;
    }
    sqlx::query(
        "INSERT INTO chain_heads (tenant_id, table_name, seq, head_hash)
         SELECT tenant_id, 'audit_logs', max(seq), decode(repeat('00', 32), 'hex') FROM audit_logs GROUP BY tenant_id
         ON CONFLICT (tenant_id, table_name, shard) DO UPDATE SET seq = EXCLUDED.seq",
    )
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE audit_logs").execute(pool).await?;
    eprintln!("# loaded {rows} rows in {:.0}s", t0.elapsed().as_secs_f64());
    Ok(end_all + 1)
}

async fn default_rows(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM audit_logs_default").fetch_one(pool).await?)
}

async fn wal_lsn(pool: &PgPool) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text").fetch_one(pool).await?)
}

async fn wal_since(pool: &PgPool, lsn: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::int8").bind(lsn).fetch_one(pool).await?)
}

/// Bytes of the event table's partitions, and of their indexes.
async fn sizes(pool: &PgPool) -> anyhow::Result<(i64, i64, i64)> {
    let (total, indexes): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::int8, coalesce(sum(pg_indexes_size(relid)), 0)::int8
         FROM pg_partition_tree('audit_logs') WHERE isleaf",
    )
    .fetch_one(pool)
    .await?;
    let tombstones: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('chain_tombstones')").fetch_one(pool).await?;
    Ok((total, indexes, tombstones))
}

fn job(pool: &PgPool, exact: bool) -> anyhow::Result<RetentionJob> {
    let settings = Settings::defaults()?;
    Ok(RetentionJob {
        db: Db::Postgres(pool.clone()),
        signer: Arc::new(Signer::generate()),
        keys: Keyring::new(Vec::new()),
        policies: PolicyHandle::new(Policies::from_settings(&settings)),
        batch_size: settings.retention.batch_size,
        archive: None,
        exact_expiry: exact,
    })
}

/// Lets the background work a load sets off finish before anything is measured.
async fn settle(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("VACUUM (ANALYZE)").execute(pool).await?;
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}

/// Persists batches of 100 events from two writers until `stop`; counts rows.
fn ingest(pool: &PgPool, stop: Arc<AtomicBool>, rows: Arc<AtomicU64>) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let store = Arc::new(PgStore::from_pool(pool.clone()));
    (0..2)
        .map(|writer| {
            let (store, stop, rows) = (store.clone(), stop.clone(), rows.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let parser = EventParser::new(Limits::default(), None, Utc::now());
                    let events: Vec<_> = (0..100)
                        .map(|i| {
                            n += 1;
                            let tenant = format!("tenant-{:03}", (n * 2 + writer) % TENANTS as u64);
                            parser.parse(i, json!({"category": "auth", "tenant_id": tenant, "action": "auth.login", "user_id": "u-1", "message": "ingest during purge"}))
                        })
                        .collect::<Result<_, _>>()
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    let requests: Vec<PersistRequest<'_>> = events
                        .iter()
                        .map(|event| PersistRequest {
                            table: Table::AuditLogs,
                            expires_at: Utc::now() + chrono::Duration::hours(30),
                            pii_paths: Vec::new(),
                            event,
                        })
                        .collect();
                    let written = store.persist(&requests).await?;
                    rows.fetch_add(written as u64, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect()
}

/// Ingest rate (rows/s) over `window`, while `during` runs (the window is stretched
/// to cover it).
async fn ingest_rate<F: std::future::Future<Output = anyhow::Result<()>>>(
    pool: &PgPool,
    window: Duration,
    during: Option<F>,
) -> anyhow::Result<f64> {
    let (stop, rows) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let tasks = ingest(pool, stop.clone(), rows.clone());
    // Let the writers warm up (connections, plans) before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (start_rows, started) = (rows.load(Ordering::Relaxed), Instant::now());
    if let Some(during) = during {
        during.await?;
    }
    let left = window.saturating_sub(started.elapsed());
    tokio::time::sleep(left).await;
    let rate = (rows.load(Ordering::Relaxed) - start_rows) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options();
    println!(
        "# cargo bench --bench retention -- --rows {} --live {} --days {} --seconds {}",
        o.rows, o.live, o.days, o.seconds
    );
    let mut admin = PgConnection::connect(&o.database_url).await?;
    let mut purge_times = BTreeMap::new();
    let mut wal = BTreeMap::new();
    let mut rates = BTreeMap::new();
    for (path, exact) in [("partition", false), ("row", true)] {
        if !o.paths.iter().any(|p| p == path) {
            continue;
        }
        let now = Utc::now();
        let (name, pool) = database(&o, &mut admin, now).await?;
        // Expired: from `days + 1` to 1 day ago; live: expiring within the day after.
        let next = load(&pool, 1, o.rows, 0, now - chrono::Duration::days(o.days + 1), o.days).await?;
        let next = load(&pool, next, o.live, 0, now + chrono::Duration::hours(25), 1).await?;
        anyhow::ensure!(default_rows(&pool).await? == 0, "{path}: rows in the default partition");
        let (before_total, before_indexes, _) = sizes(&pool).await?;
        settle(&pool).await?;

        let job = job(&pool, exact)?;
        let lsn = wal_lsn(&pool).await?;
        let t0 = Instant::now();
        let report = job.run_once(Utc::now()).await?;
        let took = t0.elapsed().as_secs_f64();
        let written = wal_since(&pool, &lsn).await?;
        let deleted: u64 = report.deleted.values().sum();
        let (total, indexes, tombstones) = sizes(&pool).await?;
        println!(
            "path={path:<9} rows={} deleted={deleted} purge_s={took:.2} wal_bytes={written} partitions_dropped={} \
             table_bytes_before={before_total} index_bytes_before={before_indexes} table_bytes_after={total} \
             index_bytes_after={indexes} tombstone_bytes_after={tombstones}",
            o.rows,
            report.dropped_partitions.len()
        );
        anyhow::ensure!(deleted == o.rows as u64, "{path}: deleted {deleted} of {} expired rows", o.rows);
        purge_times.insert(path, took);
        wal.insert(path, written);

        // Ingest without and with a purge: a second load of expired rows to purge.
        partitions(&o, &pool, now).await?;
        // Other tenants' chains: a chain's later rows expire later (one retention
        // class per chain), and the first tenants' chains go on with live rows.
        load(&pool, next, o.rows / 5, TENANTS, now - chrono::Duration::days(o.days + 1), o.days).await?;
        anyhow::ensure!(default_rows(&pool).await? == 0, "{path}: rows in the default partition");
        settle(&pool).await?;
        let window = Duration::from_secs(o.seconds);
        let before = ingest_rate::<std::future::Ready<anyhow::Result<()>>>(&pool, window, None).await?;
        let job = job.clone();
        let purging = ingest_rate(&pool, window, Some(async move {
            let t0 = Instant::now();
            let report = job.run_once(Utc::now()).await?;
            eprintln!("# {path}: purged {} rows under ingest in {:.2}s", report.deleted.values().sum::<u64>(), t0.elapsed().as_secs_f64());
            Ok(())
        }))
        .await?;
        let after = ingest_rate::<std::future::Ready<anyhow::Result<()>>>(&pool, window, None).await?;
        let alone = (before + after) / 2.0;
        println!(
            "path={path:<9} ingest_rows_per_s_before={before:.0} ingest_rows_per_s_while_purging={purging:.0} \
             ingest_rows_per_s_after={after:.0} ratio={:.2}",
            purging / alone
        );
        rates.insert(path, purging / alone);
        pool.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await?;
    }
    if purge_times.len() < 2 {
        return Ok(());
    }
    println!(
        "summary  partition path vs row path: {:.0}x faster, {:.0}x less WAL; ingest kept {:.2} of its rate during the partition purge, {:.2} during the row purge",
        purge_times["row"] / purge_times["partition"].max(1e-6),
        wal["row"] as f64 / (wal["partition"].max(1)) as f64,
        rates["partition"],
        rates["row"]
    );
    Ok(())
}
