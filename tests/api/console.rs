//! The web console at `/console`, driven end to end in Debian's Chromium (headless,
//! through `playwright-core`, see `tests/tools/console-check.mjs`): sign-in, a
//! filtered search, paging over a tenant with 100,000 events, an event's detail with
//! its chain position and before/after diff, the live tail showing an event as it is
//! accepted, stats, lockout diagnostics, a verification, a key created and
//! revoked, an export, and a tenant-bound key that sees its own tenant only.
//! Screenshots of each page land in `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{event, TestApp, KEY};

fn chromium() -> PathBuf {
    let path = std::env::var("TIERLOG_TEST_CHROMIUM").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    assert!(path.exists(), "{} is missing: run scripts/test.sh (it installs Debian's chromium), or set TIERLOG_TEST_CHROMIUM", path.display());
    path
}

#[tokio::test]
async fn the_console_signs_in_searches_pages_shows_verifies_and_manages_keys_in_a_real_browser() {
    let app = TestApp::spawn().await;
    // acme: five failed logins from one address, a role change, a payment; beta: its own.
    let mut batch = Vec::new();
    for i in 0..5 {
        let mut failed = event("auth", "acme");
        failed["action"] = json!("auth.login_failed");
        failed["status"] = json!("failure");
        failed["user_id"] = json!(format!("u-{i}"));
        failed["ip_address"] = json!("203.0.113.9");
        failed["message"] = json!("invalid password");
        batch.push(failed);
    }
    // u-4's account is locked after its failure (a second later, so that it follows).
    let mut locked = event("auth", "acme");
    locked["action"] = json!("auth.account_locked");
    locked["status"] = json!("failure");
    locked["user_id"] = json!("u-4");
    locked["timestamp"] = json!((chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339());
    batch.push(locked);
    let mut change = event("audit", "acme");
    change["action"] = json!("user.role_changed");
    change["changes"] = json!({"before": {"role": "viewer", "team": "ops"}, "after": {"role": "admin", "team": "ops"}});
    batch.push(change);
    let mut payment = event("financial", "acme");
    payment["financial"] = json!({"transaction_id": "tx-1", "amount": "99.90", "currency": "EUR"});
    batch.push(payment);
    batch.extend([event("auth", "beta"), event("audit", "beta")]);
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);

    // bulk: 100,000 events written straight into the table (the console reads them).
    sqlx::query(
        "INSERT INTO audit_logs (tenant_id, seq, id, occurred_at, received_at, expires_at, category, level, action,
             status, user_id, ip_address, message, details, prev_hash, row_hash, pii_hash)
         SELECT 'bulk', g, gen_random_uuid(), now() - g * interval '1 second', now(), now() + interval '90 days',
             'auth', 'INFO', 'auth.login', 'success', 'u-' || (g % 1000), ('198.51.100.' || (g % 250))::inet,
             'bulk event ' || g, jsonb_build_object('n', g), '\\x00', '\\x00', '\\x00'
         FROM generate_series(1, 100000) g",
    )
    .execute(&app.pool)
    .await
    .expect("bulk rows");
    sqlx::query("ANALYZE audit_logs").execute(&app.pool).await.expect("analyze");

    let (_, tenant_key) = app.create_key(json!({"name": "beta viewer", "tenant_id": "beta", "permissions": ["logs.auth.view", "logs.actions.view"]})).await;
    let screenshots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot directory");
    let input = json!({
        "base": app.address, "admin_key": KEY, "tenant_key": tenant_key, "tenant": "acme", "other_tenant": "beta",
        "bulk_tenant": "bulk", "screenshots": screenshots, "chromium": chromium(),
    });
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("console-check.mjs")
            .arg(input.to_string())
            .current_dir(tools)
            .output()
            .expect("node runs (run scripts/test.sh, which installs tests/tools)")
    })
    .await
    .expect("joined");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser run failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("the run's report");
    let steps: Vec<&str> = report["steps"].as_array().expect("steps").iter().filter_map(Value::as_str).collect();
    assert_eq!(
        steps,
        ["sign-in", "paging", "filtered search", "event detail", "live tail", "stats", "lockouts", "verification", "key created and revoked", "export", "tenant isolation"]
    );
    assert_eq!(report["screenshots"].as_array().map(Vec::len), Some(12), "{report}");
    for shot in report["screenshots"].as_array().expect("screenshots") {
        let size = std::fs::metadata(shot.as_str().expect("path")).expect("the screenshot exists").len();
        assert!(size > 10_000, "{shot} holds a page ({size} bytes)");
    }
    // What the browser did happened on the server: the key it created is revoked.
    let secret = report["created_key"].as_str().expect("the created key");
    let refused = app.request_with(reqwest::Method::GET, "/audit/logs", secret).send().await.expect("sent");
    assert_eq!(refused.status(), 401, "the key revoked in the console no longer works");
    eprintln!("console: first page of a tenant with 100,000 events in {} ms (debug build); screenshots in {}", report["first_page_ms"], screenshots.display());
    app.stop().await;
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_content_policy() {
    let app = TestApp::spawn().await;
    for (path, kind) in [("/console", "text/html"), ("/console/console.js", "text/javascript"), ("/console/console.css", "text/css")] {
        let response = app.client.get(format!("{}{path}", app.address)).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().expect("type").starts_with(kind), "{path}");
        let policy = headers["content-security-policy"].to_str().expect("policy");
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("http://") && !body.contains("https://"), "{path} loads nothing from elsewhere");
    }
    let root = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let response = root.get(format!("{}/", app.address)).send().await.expect("sent");
    assert_eq!((response.status().as_u16(), response.headers()["location"].to_str().expect("location")), (303, "/console"));
    app.stop().await;
}
