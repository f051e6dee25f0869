//! Query benchmark: fills `audit_logs` with millions of rows across 100 tenants, starts
//! the release `tierlog` binary on that database, and times the read paths admins use
//! most, over HTTP: a tenant's newest page, a user's timeline, failed logins by address
//! over 24 hours, and a full-text search. Prints p50/p99 per query and the `EXPLAIN
//! (ANALYZE, BUFFERS)` plan of the SQL behind each.
//!
//! ```text
//! cargo bench --bench query -- [--rows 5000000] [--requests 200] [--database-url URL] [--redis-url URL]
//! ```

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

const KEY: &str = "bench-bootstrap-key-0123456789abcdef";

struct Options {
    rows: i64,
    requests: usize,
    database_url: String,
    redis_url: String,
}

fn options() -> Options {
    let mut o = Options {
        rows: 5_000_000,
        requests: 200,
        database_url: std::env::var("TIERLOG_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        redis_url: std::env::var("TIERLOG_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rows" => o.rows = value.parse().expect("--rows N"),
            "--requests" => o.requests = value.parse().expect("--requests N"),
            "--database-url" => o.database_url = value,
            "--redis-url" => o.redis_url = value,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// Inserts `rows` rows in chunks: 100 tenants, 5,000 users per tenant, 10,000
/// addresses, 90 days of history received as it happened and kept 90 days (so their
/// expiries spread over the next 90 days' weekly partitions), 10% failed logins and a
/// small message vocabulary, spread evenly over the tenants.
async fn fill(pool: &PgPool, rows: i64) -> anyhow::Result<()> {
    let chunk = 250_000;
    let mut start = 1;
    while start <= rows {
        let end = (start + chunk - 1).min(rows);
        let t0 = Instant::now();
        sqlx::query(
            "INSERT INTO audit_logs (tenant_id, seq, id, occurred_at, received_at, expires_at, category, level, action,
                 status, user_id, ip_address, message, details, prev_hash, row_hash, pii_hash)
             SELECT 'tenant-' || lpad((g % 100)::text, 3, '0'), g / 100 + 1, gen_random_uuid(),
                 o, o, o + interval '90 days',
                 CASE WHEN (g / 100) % 4 = 0 THEN 'audit' ELSE 'auth' END, 'INFO',
                 CASE WHEN (g / 100) % 10 = 3 THEN 'auth.login_failed' WHEN (g / 100) % 4 = 0 THEN 'user.role_changed' ELSE 'auth.login' END,
                 CASE WHEN (g / 100) % 10 = 3 THEN 'failure' ELSE 'success' END,
                 'user-' || ((g / 100) % 5000),
                 ('10.' || ((g / 7) % 40) || '.' || ((g / 13) % 250) || '.' || (g % 10 + 1))::inet,
                 (ARRAY['login from office network', 'login from mobile app', 'password reset requested',
                        'session refreshed by gateway', 'role granted by administrator', 'invoice export started',
                        'token expired for client', 'suspicious geolocation detected'])[((g / 100) % 8) + 1],
                 jsonb_build_object('n', g, 'method', (ARRAY['password', 'sso', 'token'])[(g % 3) + 1]),
                 '\\x00', '\\x00', '\\x00'
             FROM generate_series($1::bigint, $2::bigint) g,
                  LATERAL (SELECT now() - ((g * 7919) % (90 * 86400)) * interval '1 second' AS o) x",
        )
        .bind(start)
        .bind(end)
        .execute(pool)
        .await?;
        eprintln!("# loaded rows {start}..{end} in {:.1}s", t0.elapsed().as_secs_f64());
        start = end + 1;
    }
    sqlx::query(
        "INSERT INTO chain_heads (tenant_id, table_name, seq, head_hash)
         SELECT tenant_id, 'audit_logs', max(seq), decode(repeat('00', 32), 'hex') FROM audit_logs GROUP BY tenant_id",
    )
    .execute(pool)
    .await?;
    // As tierlog's writes do before their rows (see src/tiers/postgres/leads.rs): the
    // least gap from event to expiry, which lets reads by time skip partitions.
    sqlx::query(
        "UPDATE expiry_leads SET lead_seconds = (SELECT floor(extract(epoch FROM min(expires_at - occurred_at)))::int8 FROM audit_logs)
         WHERE table_name = 'audit_logs'",
    )
    .execute(pool)
    .await?;
    // Rows written over 90 days have long been vacuumed and their pages written out:
    // neither the vacuum nor the checkpoint this load sets off belongs in the timings.
    sqlx::query("VACUUM ANALYZE audit_logs").execute(pool).await?;
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

async fn explain(pool: &PgPool, sql: &str) -> anyhow::Result<String> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}")).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(line,)| format!("    {line}")).collect::<Vec<_>>().join("\n"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options();
    println!("# cargo bench --bench query -- --rows {} --requests {}", o.rows, o.requests);
    let db_name = format!("tierlog_qbench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&o.database_url).await?;
    sqlx::query(&format!("CREATE DATABASE {db_name}")).execute(&mut admin).await?;
    let db_url = format!("{}/{db_name}", o.database_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&o.database_url));
    let pool = PgPool::connect(&db_url).await?;
    tierlog::tiers::postgres::migrate(&pool).await?;
    // The time partitions the rows below (expiring over the next 90 days) go to.
    // tierlog makes them as time goes by: as it would have every day of the last 90.
    let lengths = [(tierlog::tiers::Table::AuditLogs, [90].into())].into();
    let store = tierlog::tiers::postgres::PgStore::from_pool(pool.clone());
    for days_ago in (0..=91).rev() {
        store.upkeep_partitions(&lengths, chrono::Utc::now() - chrono::Duration::days(days_ago), None).await?;
    }
    let t0 = Instant::now();
    fill(&pool, o.rows).await?;
    let (partitions, in_default): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_logs'::regclass), (SELECT count(*) FROM audit_logs_default)",
    )
    .fetch_one(&pool)
    .await?;
    anyhow::ensure!(in_default == 0, "{in_default} rows in the default partition");
    println!(
        "# {} rows across 100 tenants and {partitions} partitions loaded in {:.0}s",
        o.rows,
        t0.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let prefix = format!("tierlog-qbench-{}", Uuid::new_v4().simple());
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .arg("serve")
        .env("DATABASE_URL", &db_url)
        .env("REDIS_URL", &o.redis_url)
        .env("TIERLOG__REDIS__KEY_PREFIX", &prefix)
        .env("TIERLOG_LISTEN", format!("127.0.0.1:{port}"))
        .env("TIERLOG_BOOTSTRAP_KEY", KEY)
        .env("LOGGING_FILE", dir.path().join("audit.jsonl"))
        .env("TIERLOG__INTEGRITY__SIGNING_KEY_FILE", dir.path().join("signing.key"))
        .env("TIERLOG__SPOOL__PATH", dir.path().join("spool"))
        .env("LOGGING_LEVEL", "WARNING")
        .stdout(Stdio::null())
        .spawn()?;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "tierlog did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The SQL tierlog runs: pages first read the last day (`occurred_at >= now() - 1
    // day`), and reads by time add the partitions they may skip (`expires_at >= ...`).
    let lead: i64 = sqlx::query_scalar("SELECT lead_seconds FROM expiry_leads WHERE table_name = 'audit_logs'").fetch_one(&pool).await?;
    let day = format!("occurred_at >= now() - interval '1 day' AND expires_at >= now() - interval '1 day' + {lead} * interval '1 second'");
    let hours = format!("occurred_at >= now() - interval '24 hours' AND expires_at >= now() - interval '24 hours' + {lead} * interval '1 second'");
    let newest = format!("SELECT * FROM audit_logs WHERE category = ANY('{{auth,audit,api,error}}') AND tenant_id = 'tenant-042' AND {day} ORDER BY occurred_at DESC, id DESC LIMIT 101");
    let timeline = format!("SELECT * FROM audit_logs WHERE category = ANY('{{auth,audit,api,error}}') AND tenant_id = 'tenant-042' AND user_id = 'user-1234' AND {day} ORDER BY occurred_at DESC, id DESC LIMIT 101");
    let timeline_all = "SELECT * FROM audit_logs WHERE category = ANY('{auth,audit,api,error}') AND tenant_id = 'tenant-042' AND user_id = 'user-1234' ORDER BY occurred_at DESC, id DESC LIMIT 101".to_owned();
    let failed = format!("SELECT host(ip_address) AS k, count(*) AS n, count(DISTINCT user_id) AS d, min(occurred_at), max(occurred_at) FROM audit_logs WHERE category = ANY('{{auth}}') AND tenant_id = 'tenant-042' AND category = 'auth' AND {hours} AND status = 'failure' AND host(ip_address) IS NOT NULL AND action LIKE '%login%' GROUP BY 1 HAVING count(*) >= 1 ORDER BY n DESC, k LIMIT 100");
    let cases: [(&str, &str, &[String]); 5] = [
        (
            "tenant's newest page",
            "/audit/logs?tenant_id={t}&limit=100",
            std::slice::from_ref(&newest),
        ),
        (
            "user's timeline",
            "/audit/logs?tenant_id={t}&user_id={u}&limit=100",
            // A user's day rarely fills a page: the second read, all partitions.
            &[timeline.clone(), timeline_all.clone()],
        ),
        (
            "failed logins by IP, 24 h",
            "/audit/failed-logins?tenant_id={t}&hours=24",
            std::slice::from_ref(&failed),
        ),
        (
            "full-text search",
            "/audit/logs?tenant_id={t}&q=geolocation&limit=100",
            &[format!("SELECT * FROM audit_logs WHERE category = ANY('{{auth,audit,api,error}}') AND tenant_id = 'tenant-042' AND search @@ websearch_to_tsquery('simple', 'geolocation') AND {day} ORDER BY occurred_at DESC, id DESC LIMIT 101")],
        ),
        (
            "full-text search, rare term",
            "/audit/logs?tenant_id={t}&q=user-{u}&limit=100",
            // Nothing in the last day: the second read, all partitions.
            &[
                format!("SELECT * FROM audit_logs WHERE category = ANY('{{auth,audit,api,error}}') AND tenant_id = 'tenant-042' AND search @@ websearch_to_tsquery('simple', 'nosuchterm') AND {day} ORDER BY occurred_at DESC, id DESC LIMIT 101"),
                "SELECT * FROM audit_logs WHERE category = ANY('{auth,audit,api,error}') AND tenant_id = 'tenant-042' AND search @@ websearch_to_tsquery('simple', 'nosuchterm') ORDER BY occurred_at DESC, id DESC LIMIT 101".to_owned(),
            ],
        ),
    ];
    // The figures are of a running service: before each case is timed, its first
    // `WARM_UP` requests (of other users than the timed ones) open the pool's
    // connections and load each new backend's catalog entries for the partitions.
    const WARM_UP: usize = 20;
    for (name, template, statements) in cases {
        let mut latencies = Vec::with_capacity(o.requests);
        for i in 0..WARM_UP + o.requests {
            let path = template
                .replace("{t}", &format!("tenant-{:03}", (i * 37) % 100))
                .replace("{u}", &format!("user-{}", (i * 131) % 5000));
            let sent = Instant::now();
            let response = client.get(format!("{base}{path}")).bearer_auth(KEY).send().await?;
            anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
            let _ = response.bytes().await?;
            if i >= WARM_UP {
                latencies.push(sent.elapsed());
            }
        }
        latencies.sort();
        println!(
            "query={name:<28} requests={:<4} p50={:>7.2}ms p99={:>7.2}ms max={:>7.2}ms (HTTP, auth, query, and the durable access record)",
            o.requests,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
        );
        for sql in statements {
            println!("  EXPLAIN (ANALYZE, BUFFERS) {sql}\n{}", explain(&pool, sql).await?);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    pool.close().await;
    if let Ok(mut redis) = redis::Client::open(o.redis_url.as_str()).and_then(|c| c.get_connection()) {
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut redis).unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut redis);
        }
    }
    sqlx::query(&format!("DROP DATABASE {db_name} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}
