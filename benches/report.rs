//! Report benchmark: one tenant, one month, every category. Starts the release
//! `tierlog` binary on a fresh database, sends it `--events` events over HTTP (so
//! that every chain is real and verifies), then times the compliance report of the
//! month as JSON, HTML and PDF (each one request: the figures, the verification of
//! every chain of the tenant, the signature), with the server's peak RSS while it
//! makes them.
//!
//! ```text
//! cargo bench --bench report -- [--events 1000000] [--database-url URL] [--redis-url URL] [--keep]
//! cargo bench --bench report -- --reuse DATABASE    # times the reports again on a kept database
//! ```
//!
//! `--keep` leaves the database (and its Redis keys) behind and prints its name;
//! `--reuse` starts tierlog on such a database without sending anything, for working
//! on the report's speed without ingesting the month again.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const KEY: &str = "bench-bootstrap-key-0123456789abcdef";
const TENANT: &str = "bench";

struct Options {
    events: usize,
    database_url: String,
    redis_url: String,
    keep: bool,
    reuse: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        events: 1_000_000,
        database_url: std::env::var("TIERLOG_BENCH_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        redis_url: std::env::var("TIERLOG_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        keep: false,
        reuse: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--events" => o.events = value.parse().expect("--events N"),
            "--database-url" => o.database_url = value,
            "--redis-url" => o.redis_url = value,
            "--reuse" => o.reuse = Some(value),
            "--keep" => {
                o.keep = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Event `n` of the month: logins, failures (a lockout and an unlock now and
/// then), changes (some of roles), security and financial events, API calls.
fn event(n: usize, r: u64, month_start: chrono::DateTime<chrono::Utc>, span_s: i64) -> Value {
    let at = month_start + chrono::Duration::seconds((r % span_s as u64) as i64);
    let user = format!("user-{}", (r >> 20) % 20_000);
    let ip = format!("198.51.{}.{}", (r >> 36) % 256, (r >> 44) % 256);
    let mut e = json!({
        "id": Uuid::new_v4(), "tenant_id": TENANT, "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "user_id": user, "ip_address": ip, "user_agent": "Mozilla/5.0", "application": "portal",
    });
    let pick = |options: &[&'static str]| options[(r % options.len() as u64) as usize];
    let extra = match n % 100 {
        0..=39 => json!({"category": "auth", "action": "auth.login", "status": "success"}),
        40..=48 => json!({"category": "auth", "action": "auth.login_failed", "status": "failure", "level": "WARNING"}),
        49 if r % 4 == 0 => json!({"category": "auth", "action": "auth.account_locked", "status": "failure", "level": "WARNING"}),
        49 => json!({"category": "auth", "action": "auth.account_unlocked", "status": "success"}),
        50..=68 => json!({"category": "audit", "action": "invoice.updated", "status": "success", "resource": "invoice",
            "resource_id": format!("inv-{}", r % 100_000), "changes": {"before": {"status": "draft"}, "after": {"status": "sent"}}}),
        69 => json!({"category": "audit", "action": "user.role_changed", "status": "success", "resource": "user",
            "resource_id": format!("user-{}", r % 20_000), "changes": {"before": {"role": "member"}, "after": {"role": "admin"}}}),
        70..=79 => json!({"category": "security", "action": "security.rate_limited", "status": "failure", "level": "WARNING",
            "security": {"event_type": pick(&["rate_limited", "brute_force", "suspicious_ip"]), "severity": pick(&["low", "medium", "high"])}}),
        80..=89 => json!({"category": "financial", "action": "payment.transfer", "status": if r % 10 == 0 { "failure" } else { "success" },
            "financial": {"transaction_id": format!("tx-{n}"), "amount": format!("{}.{:02}", r % 10_000, r % 100), "currency": pick(&["EUR", "USD", "GBP"])}}),
        _ => json!({"category": "api", "action": "api.request", "status": "success", "level": "ERROR"}),
    };
    if let (Some(target), Value::Object(extra)) = (e.as_object_mut(), extra) {
        target.extend(extra);
    }
    e
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options();
    if let Some(db_name) = &o.reuse {
        // A kept database: its Redis keys are named after it, its month is read from it.
        return run(&o, db_name, &format!("{db_name}-redis")).await;
    }
    let db_name = format!("tierlog_bench_{}", Uuid::new_v4().simple());
    let prefix = format!("{db_name}-redis");
    let mut admin = PgConnection::connect(&o.database_url).await?;
    sqlx::query(&format!("CREATE DATABASE {db_name}")).execute(&mut admin).await?;
    let outcome = run(&o, &db_name, &prefix).await;
    if o.keep {
        println!("kept database {db_name} (and Redis keys {prefix}:*): --reuse {db_name}");
        return outcome;
    }
    // Whatever happened, nothing of the run is left behind.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).execute(&mut admin).await?;
    let mut redis = redis::Client::open(o.redis_url.as_str())?.get_connection()?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut redis)?;
    for chunk in keys.chunks(500) {
        redis::cmd("DEL").arg(chunk).query::<()>(&mut redis)?;
    }
    outcome
}

async fn run(o: &Options, db_name: &str, prefix: &str) -> anyhow::Result<()> {
    let db_url = format!("{}/{db_name}", o.database_url.rsplit_once('/').map_or(o.database_url.as_str(), |(b, _)| b));
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_tierlog"))
            .arg("serve")
            .env("DATABASE_URL", &db_url)
            .env("REDIS_URL", &o.redis_url)
            .env("TIERLOG__REDIS__KEY_PREFIX", prefix)
            .env("TIERLOG__DETECTION__ENABLED", "false")
            .env("TIERLOG_LISTEN", format!("127.0.0.1:{port}"))
            .env("TIERLOG_BOOTSTRAP_KEY", KEY)
            .env("LOGGING_FILE", dir.path().join("audit.jsonl"))
            .env("LOGGING_MAX_SIZE_MB", "100")
            .env("LOGGING_BACKUP_COUNT", "100")
            .env("TIERLOG__SPOOL__PATH", dir.path().join("spool"))
            .env("LOGGING_LEVEL", "WARNING")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = server.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?;
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "tierlog did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (month_start, span_s) = match &o.reuse {
        // A kept database: its month is the span of its events.
        Some(_) => {
            let mut db = PgConnection::connect(&db_url).await?;
            let (first, last): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
                "SELECT min(occurred_at), max(occurred_at) FROM audit_logs WHERE action <> 'reports.generated'",
            )
            .fetch_one(&mut db)
            .await?;
            (first - chrono::Duration::seconds(1), (last - first).num_seconds() + 2)
        }
        None => {
            // One month, ending a day ago.
            let (month_start, span_s) = (chrono::Utc::now() - chrono::Duration::days(31), 30 * 86_400);
            ingest(o, &client, &base, month_start, span_s).await?;
            // A month's report is asked for when its rows are days old, long after
            // autovacuum has analysed and frozen them: the same done here at once, so
            // that the report is not timed against a vacuum of the million new rows.
            let began = Instant::now();
            let mut db = PgConnection::connect(&db_url).await?;
            sqlx::query("VACUUM (ANALYZE)").execute(&mut db).await?;
            println!("vacuumed and analysed in {:.1} s", began.elapsed().as_secs_f64());
            (month_start, span_s)
        }
    };
    match &o.reuse {
        Some(db_name) => println!("# cargo bench --bench report -- --reuse {db_name}"),
        None => println!("# cargo bench --bench report -- --events {}", o.events),
    }

    // The server's peak RSS from here on (writing 5 to clear_refs resets VmHWM).
    println!("server_rss_before_reports={}MiB", status_kib(pid, "VmRSS:") / 1024);
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let from = month_start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (month_start + chrono::Duration::seconds(span_s)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for format in ["json", "html", "pdf"] {
        let began = Instant::now();
        let response = client
            .get(format!("{base}/audit/reports"))
            .query(&[("tenant_id", TENANT), ("from", &from), ("to", &to), ("format", format)])
            .bearer_auth(KEY)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        let took = began.elapsed();
        anyhow::ensure!(status.is_success(), "the {format} report answered {status}: {}", String::from_utf8_lossy(&body));
        let summary = if format == "json" {
            let report: Value = serde_json::from_slice(&body)?;
            let t = &report["authentication"]["totals"];
            format!(
                " logins={} failed={} lockouts={} privileged_changes={} chains={} rows_checked={} integrity_ok={}",
                t["logins"], t["failed_logins"], t["lockouts"], report["privileged_changes"]["count"],
                report["integrity"]["chains_verified"], report["integrity"]["rows_checked"], report["integrity"]["ok"]
            )
        } else {
            String::new()
        };
        println!(
            "report format={format:<4} seconds={:>6.2} bytes={:>9} server_peak_rss={}MiB{summary}",
            took.as_secs_f64(),
            body.len(),
            status_kib(pid, "VmHWM:") / 1024
        );
    }
    drop(server);
    Ok(())
}

/// Sends the month's events, 1,000 a request over eight connections.
async fn ingest(o: &Options, client: &reqwest::Client, base: &str, month_start: chrono::DateTime<chrono::Utc>, span_s: i64) -> anyhow::Result<()> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let bodies: Vec<Vec<u8>> = (0..o.events)
        .map(|n| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            event(n, state.wrapping_mul(0x2545_F491_4F6C_DD1D), month_start, span_s)
        })
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|chunk| serde_json::to_vec(chunk).expect("JSON"))
        .collect();
    let sent = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bodies = std::sync::Arc::new(bodies);
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (client, next, bodies, url) = (client.clone(), next.clone(), bodies.clone(), format!("{base}/audit/events"));
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return Ok::<_, anyhow::Error>(()) };
                loop {
                    let response = client.post(&url).bearer_auth(KEY).header("content-type", "application/json").body(body.clone()).send().await?;
                    if response.status().is_success() {
                        break;
                    }
                    anyhow::ensure!(response.status() == 503, "ingest answered {}", response.status());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    println!("ingested {} events of one tenant over 30 days in {:.1} s", o.events, sent.elapsed().as_secs_f64());

    Ok(())
}
