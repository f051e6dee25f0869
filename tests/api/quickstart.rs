//! The quick start, as a new user runs it: `tierlog serve` with no DATABASE_URL and
//! no REDIS_URL starts in embedded mode, prints where its data lives, its URL and an
//! admin key; an event sent with that key shows in /audit/combined; the command line
//! works on the same data.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::free_port;

fn tierlog(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tierlog"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOGGING_LEVEL", "ERROR");
    command
}

#[tokio::test]
async fn serve_with_no_urls_runs_embedded_and_prints_what_a_user_needs() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut child = tierlog(dir.path())
        .arg("serve")
        .env("TIERLOG_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tierlog starts");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let key = loop {
        let line = lines_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("tierlog prints its admin key");
        printed.push(line.clone());
        if let Some(key) = line.split("): ").nth(1).filter(|_| line.contains("admin key")) {
            break key.trim().to_owned();
        }
    };
    let printed = printed.join("\n");
    assert!(printed.contains("embedded mode") && printed.contains("data"), "{printed}");
    assert!(printed.contains(&format!("http://127.0.0.1:{port}")), "{printed}");
    assert!(key.starts_with("tlk_"), "{printed}");

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "tierlog answers /readyz");
    let event = json!({"category": "auth", "action": "auth.login_failed", "status": "failure", "tenant_id": "acme",
                       "user_id": "u-42", "ip_address": "203.0.113.9", "message": "invalid password"});
    let sent = client.post(format!("{base}/audit/events")).bearer_auth(&key).json(&event).send().await.expect("sent");
    assert_eq!(sent.status(), 200);
    let combined: Value = client
        .get(format!("{base}/audit/combined?tenant_id=acme"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let item = combined["items"].as_array().and_then(|items| items.iter().find(|i| i["action"] == "auth.login_failed")).cloned();
    assert_eq!(item.map(|i| i["tiers"].clone()), Some(json!(["memory", "sqlite"])), "{combined}");
    let ready: Value = client.get(format!("{base}/readyz")).send().await.expect("sent").json().await.expect("json");
    assert_eq!((ready["hot_tier"].clone(), ready["database"].clone()), (json!("memory"), json!("sqlite")), "{ready}");
    // Embedded mode names what it runs on, not backends that are not there.
    assert_eq!((ready["memory"]["status"].clone(), ready["sqlite"]["status"].clone()), (json!("up"), json!("up")), "{ready}");
    assert!(ready.get("postgres").is_none() && ready.get("redis").is_none(), "{ready}");

    // Stopped and started again: the same key, the same data, no new key printed.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().expect("exit").success());
    let keys = tierlog(dir.path()).args(["keys", "list"]).output().expect("keys list");
    assert!(keys.status.success(), "{}", String::from_utf8_lossy(&keys.stderr));
    let verify = tierlog(dir.path()).args(["verify", "--tenant", "acme"]).output().expect("verify");
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && out.contains("ok      acme audit_logs"), "{out}{}", String::from_utf8_lossy(&verify.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("data/bootstrap.key")).expect("key file").trim(), key);
}

#[test]
fn a_command_without_a_database_url_does_not_create_a_store_silently() {
    let dir = tempfile::tempdir().expect("dir");
    let refused = tierlog(dir.path()).args(["keys", "list"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("DATABASE_URL is not set") && stderr.contains("--embedded"), "{stderr}");
    assert!(refused.stdout.is_empty());
    assert!(!dir.path().join("data").exists(), "nothing was created");

    let created = tierlog(dir.path())
        .args(["--embedded", "keys", "create", "--name", "ops", "--permissions", "logs.auth.view"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(created.status.success(), "{stderr}");
    assert!(stderr.contains("tierlog: store: embedded SQLite data/tierlog.db; hot tier: in-process lists"), "{stderr}");
    // Standard output holds the command's output alone: the key's line and the key.
    let stdout = String::from_utf8_lossy(&created.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("ops") && lines[1].starts_with("tlk_"), "{stdout}");
    // Once the store exists, commands use it without the flag.
    let listed = tierlog(dir.path()).args(["keys", "list"]).output().expect("runs");
    assert!(listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains("ops"), "{}", String::from_utf8_lossy(&listed.stderr));
}

#[tokio::test]
async fn commands_on_postgres_print_results_alone_and_name_the_store() {
    let db = crate::helpers::TestDb::create().await;
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| {
        tierlog(dir.path())
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", "redis://user:secret@127.0.0.1:6379")
            .env("LOGGING_LEVEL", "INFO")
            .output()
            .expect("runs")
    };
    for _ in 0..2 {
        let migrated = run(&["migrate"]);
        let stderr = String::from_utf8_lossy(&migrated.stderr);
        assert!(migrated.status.success(), "{stderr}");
        assert!(!stderr.contains("already exists"), "no migration notices: {stderr}");
        assert!(stderr.contains("tierlog: store: Postgres postgres://") && stderr.contains("hot tier: Redis redis://127.0.0.1:6379"), "{stderr}");
        assert!(!stderr.contains("secret"), "no password is printed: {stderr}");
        assert_eq!(String::from_utf8_lossy(&migrated.stdout), "migrations applied\n");
    }
    let retention = run(&["retention"]);
    assert!(retention.status.success(), "{}", String::from_utf8_lossy(&retention.stderr));
    let report: Value = serde_json::from_slice(&retention.stdout).expect("standard output is the report alone, as JSON");
    assert!(report["run_id"].is_string(), "{report}");
    assert!(!String::from_utf8_lossy(&retention.stderr).is_empty(), "the logs went to standard error");
}

#[test]
fn every_commands_help_names_its_settings_and_serve_takes_a_port() {
    for command in [&["serve"][..], &["keys", "create"], &["retention"], &["verify"], &["export-chain"]] {
        let help = tierlog(std::path::Path::new("/")).args(command).arg("--help").output().expect("runs");
        let text = String::from_utf8_lossy(&help.stdout);
        for name in ["DATABASE_URL", "REDIS_URL", "TIERLOG_CONFIG"] {
            assert!(text.contains(name), "{command:?} --help names {name}: {text}");
        }
    }
    let serve = tierlog(std::path::Path::new("/")).args(["serve", "--help"]).output().expect("runs");
    let text = String::from_utf8_lossy(&serve.stdout);
    assert!(text.contains("--port") && text.contains("--listen") && text.contains("TIERLOG_LISTEN"), "{text}");
}

#[tokio::test]
async fn serve_listens_on_the_port_given() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut child = tierlog(dir.path()).args(["serve", "--port", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starts");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answered = false;
    while Instant::now() < deadline && !answered {
        answered = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_ok_and(|r| r.status().is_success());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(answered, "serve --port {port} listens there");
}
