//! Verification benchmark: writes one chain of N rows through the real Postgres
//! writer (hashes, seals, UNNEST inserts), then times verifying it three ways: the
//! library call behind `GET /audit/verify`, the `tierlog verify` command, and an
//! export of the chain (`tierlog export-chain`) verified offline with only the
//! public key (`tierlog verify --archive`).
//!
//! ```text
//! cargo bench --bench verify -- [--rows 1000000] [--database-url URL] [--keep]
//! ```

use std::process::Command;
use std::time::Instant;

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tierlog::config::Settings;
use tierlog::event::{EventParser, Limits};
use tierlog::ingest::route::Routing;
use tierlog::integrity::checkpoint::{Keyring, Signer};
use tierlog::tiers::postgres::verify::verify_chain;
use tierlog::tiers::postgres::PgStore;
use tierlog::tiers::{Chain, DurableStore, EncodedBatch, Table};
use uuid::Uuid;

fn options() -> (i64, String) {
    let mut rows = 1_000_000;
    let mut url = std::env::var("TIERLOG_BENCH_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--rows" => rows = pair[1].parse().expect("--rows N"),
            "--database-url" => url = pair[1].clone(),
            _ => {}
        }
    }
    (rows, url)
}

fn timed(what: &str, command: &mut Command) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let output = command.output()?;
    let seconds = t0.elapsed().as_secs_f64();
    anyhow::ensure!(output.status.success(), "{what} failed: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{what}: {seconds:.2} s  ({})", stdout.lines().last().unwrap_or_default());
    Ok(seconds)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (rows, url) = options();
    println!("# cargo bench --bench verify -- --rows {rows}");
    let db_name = format!("tierlog_vbench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&url).await?;
    sqlx::query(&format!("CREATE DATABASE {db_name}")).execute(&mut admin).await?;
    let db_url = format!("{}/{db_name}", url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url));

    let mut settings = Settings::defaults()?;
    settings.postgres.url = db_url.clone();
    let store = PgStore::connect_lazy(&settings.postgres)?;
    tierlog::tiers::postgres::migrate(store.pool()).await?;
    let routing = Routing::new(&settings);
    let t0 = Instant::now();
    let mut written = 0i64;
    while written < rows {
        let n = (rows - written).min(5000);
        let parser = EventParser::new(Limits::default(), None, chrono::Utc::now());
        let events = (0..n)
            .map(|i| {
                let k = written + i;
                parser.parse(
                    0,
                    json!({"category": "auth", "tenant_id": "bench", "action": if k % 10 == 3 {"auth.login_failed"} else {"auth.login"},
                           "status": if k % 10 == 3 {"failure"} else {"success"}, "user_id": format!("user-{}", k % 5000),
                           "username": format!("name-{}", k % 5000), "email": format!("u{}@example.com", k % 5000),
                           "ip_address": format!("10.{}.{}.{}", k % 40, k % 250, k % 10 + 1), "user_agent": "Mozilla/5.0",
                           "message": "login from office network", "details": {"n": k, "method": "password", "phone": "+1 555 0100"}}),
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let batch = EncodedBatch::new(events);
        store.persist(&routing.persist_requests(&batch)).await?;
        written += n;
    }
    println!("# wrote {rows} chained rows through the writer in {:.0} s", t0.elapsed().as_secs_f64());
    sqlx::query("VACUUM ANALYZE audit_logs").execute(store.pool()).await?;

    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("signing.key");
    let signer_settings = tierlog::config::IntegritySettings {
        signing_key: String::new(),
        signing_key_file: key_file.clone(),
        trusted_public_keys: Vec::new(),
        checkpoint_interval_seconds: 0,
    };
    let (signer, _) = Signer::load_or_create(&signer_settings).map_err(anyhow::Error::msg)?;
    let public = signer.public().to_base64();
    tierlog::tiers::postgres::checkpoints::checkpoint_heads(store.pool(), &signer, None, "on_demand", chrono::Utc::now()).await?;

    let keys = Keyring::new(vec![signer.public().clone()]);
    let t0 = Instant::now();
    let report = verify_chain(store.pool(), &keys, &Chain::new("bench", Table::AuditLogs, store.writer_shard().unwrap_or(0))).await?;
    let seconds = t0.elapsed().as_secs_f64();
    anyhow::ensure!(report.ok && report.rows_checked == rows as u64, "chain did not verify: {report:?}");
    println!("library verify_chain (GET /audit/verify): {seconds:.2} s, {:.0} rows/s", rows as f64 / seconds);

    let bin = env!("CARGO_BIN_EXE_tierlog");
    let env = |command: &mut Command| {
        command
            .env("DATABASE_URL", &db_url)
            .env("REDIS_LOG_ENABLED", "false")
            .env("LOGGING_LEVEL", "ERROR")
            .env("TIERLOG__INTEGRITY__SIGNING_KEY_FILE", &key_file);
    };
    let mut cli = Command::new(bin);
    cli.args(["verify", "--tenant", "bench"]);
    env(&mut cli);
    let cli_seconds = timed("tierlog verify (database)", &mut cli)?;

    let out = dir.path().join("export");
    let mut export = Command::new(bin);
    export.args(["export-chain", "--tenant", "bench", "--out"]).arg(&out);
    env(&mut export);
    let export_seconds = timed("tierlog export-chain", &mut export)?;
    let mut offline = Command::new(bin);
    offline.args(["verify", "--archive"]).arg(&out).args(["--public-key", &public]).env_clear();
    let offline_seconds = timed("tierlog verify --archive (offline)", &mut offline)?;

    println!(
        "| {rows} rows | {seconds:.1} s ({:.0} rows/s) | {cli_seconds:.1} s | {export_seconds:.1} s | {offline_seconds:.1} s |",
        rows as f64 / seconds
    );
    store.pool().close().await;
    if std::env::args().any(|a| a == "--keep") {
        println!("# kept {db_url} (signing key {})", key_file.display());
        std::mem::forget(dir);
    } else {
        sqlx::query(&format!("DROP DATABASE {db_name} WITH (FORCE)")).execute(&mut admin).await?;
    }
    Ok(())
}
