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
