//! `GET /audit/reports`: a compliance report over a seeded period, checked field by
//! field against what was sent; its signature verifies (in the library and with
//! `tierlog verify-report`) and fails after one byte is edited; the PDF's text
//! (pdftotext) holds the same figures; a tampered chain shows as a break; tenant
//! scope, permission and bad periods.

use serde_json::{json, Value};

use crate::helpers::{event, TestApp, KEY};

fn at(day: u32, hour: u32, minute: u32) -> Value {
    json!(format!("2026-11-{day:02}T{hour:02}:{minute:02}:00Z"))
}

fn auth(action: &str, status: &str, user: &str, ip: &str, when: Value) -> Value {
    let mut e = event("auth", "acme");
    e["action"] = json!(action);
    e["status"] = json!(status);
    e["user_id"] = json!(user);
    e["ip_address"] = json!(ip);
    e["timestamp"] = when;
    e
}

async fn seed(app: &TestApp) {
    let mut events = vec![
        auth("auth.login", "success", "u-1", "192.0.2.1", at(10, 9, 0)),
        auth("auth.login", "success", "u-1", "192.0.2.1", at(11, 9, 0)),
        auth("auth.login", "success", "u-4", "192.0.2.2", at(11, 10, 0)),
        auth("auth.login_failed", "failure", "u-2", "203.0.113.9", at(11, 12, 0)),
        auth("auth.login_failed", "failure", "u-2", "203.0.113.9", at(11, 12, 1)),
        auth("auth.login_failed", "failure", "u-2", "203.0.113.9", at(11, 12, 2)),
        auth("auth.login_failed", "failure", "u-3", "198.51.100.4", at(11, 13, 0)),
        auth("auth.account_locked", "failure", "u-2", "203.0.113.9", at(11, 12, 3)),
        auth("auth.account_unlocked", "success", "u-2", "192.0.2.50", at(11, 12, 33)),
        auth("auth.logout", "success", "u-1", "192.0.2.1", at(11, 18, 0)),
        // Outside the period.
        auth("auth.login_failed", "failure", "u-2", "203.0.113.9", json!("2026-10-20T00:00:00Z")),
    ];
    let mut role = event("audit", "acme");
    role["action"] = json!("user.role_changed");
    role["user_id"] = json!("admin-1");
    role["resource"] = json!("user");
    role["resource_id"] = json!("u-5");
    role["changes"] = json!({"before": {"role": "member"}, "after": {"role": "admin"}});
    role["timestamp"] = at(12, 8, 0);
    let mut invoice = event("audit", "acme");
    invoice["action"] = json!("invoice.updated");
    invoice["changes"] = json!({"before": {"status": "draft"}, "after": {"status": "sent"}});
    invoice["timestamp"] = at(12, 9, 0);
    events.extend([role, invoice]);
    for (kind, severity) in [("rate_limited", "medium"), ("rate_limited", "medium"), ("brute_force", "high")] {
        let mut e = event("security", "acme");
        e["security"] = json!({"event_type": kind, "severity": severity});
        e["timestamp"] = at(13, 8, 0);
        events.push(e);
    }
    for (amount, currency, status) in [("10.50", "EUR", "success"), ("20.25", "EUR", "success"), ("5", "USD", "failure")] {
        let mut e = event("financial", "acme");
        e["status"] = json!(status);
        e["financial"] = json!({"transaction_id": format!("tx-{amount}"), "amount": amount, "currency": currency});
        e["timestamp"] = at(14, 8, 0);
        events.push(e);
    }
    // Another tenant's stays out.
    let mut other = event("auth", "globex");
    other["action"] = json!("auth.login_failed");
    other["status"] = json!("failure");
    other["timestamp"] = at(11, 12, 0);
    events.push(other);
    assert_eq!(app.post_events(&Value::Array(events)).await.status(), 200);
}

async fn report(app: &TestApp, key: &str, query: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = app.request_with(reqwest::Method::GET, &format!("/audit/reports?{query}"), key).send().await.expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

#[tokio::test]
async fn a_report_holds_what_was_sent_is_signed_and_shows_a_tampered_chain() {
    let app = TestApp::spawn_with(|s| s.detection.enabled = false).await;
    seed(&app).await;
    // Access to the logs, which the report lists.
    let export = app.request_with(reqwest::Method::GET, "/audit/export?tenant_id=acme&category=auth", KEY).send().await.unwrap();
    assert_eq!(export.status(), 200);
    let _ = export.bytes().await;

    let (status, headers, body) = report(&app, KEY, "tenant_id=acme&from=2026-11-01T00:00:00Z").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let r: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(r["format"], "tierlog.compliance-report.v1");
    assert_eq!(r["tenant_id"], "acme");
    let totals = &r["authentication"]["totals"];
    assert_eq!(
        [&totals["logins"], &totals["failed_logins"], &totals["lockouts"], &totals["resets"], &totals["logouts"]],
        [&json!(3), &json!(4), &json!(1), &json!(1), &json!(1)],
        "{totals}"
    );
    let day = r["authentication"]["by_day"].as_array().unwrap().iter().find(|d| d["day"] == "2026-11-11").expect("the 11th").clone();
    assert_eq!((day["logins"].clone(), day["failed_logins"].clone()), (json!(2), json!(4)));
    assert_eq!(r["authentication"]["top_failing_users"][0], json!({"user_id": "u-2", "failures": 3}));
    assert_eq!(r["authentication"]["top_failing_ips"][0], json!({"ip_address": "203.0.113.9", "failures": 3}));
    let lockout = &r["authentication"]["lockouts"][0];
    assert_eq!((lockout["user_id"].clone(), lockout["ended_by"].clone(), lockout["locked_seconds"].clone()), (json!("u-2"), json!("auth.account_unlocked"), json!(1800)));

    assert_eq!(r["privileged_changes"]["count"], 1, "{}", r["privileged_changes"]);
    let change = &r["privileged_changes"]["items"][0];
    assert_eq!((change["user_id"].clone(), change["resource_id"].clone()), (json!("admin-1"), json!("u-5")));
    assert_eq!((change["before"].clone(), change["after"].clone()), (json!({"role": "member"}), json!({"role": "admin"})));

    assert!(r["log_access"]["by_action"]["logs.exported"].as_i64().unwrap() >= 1, "{}", r["log_access"]);
    assert!(r["log_access"]["exports_verifications_erasures"].as_array().unwrap().iter().any(|a| a["action"] == "logs.exported" && a["endpoint"] == "GET /audit/export"));

    let security: Vec<(Value, Value, Value)> =
        r["security"].as_array().unwrap().iter().map(|s| (s["event_type"].clone(), s["severity"].clone(), s["count"].clone())).collect();
    assert_eq!(security, [(json!("brute_force"), json!("high"), json!(1)), (json!("rate_limited"), json!("medium"), json!(2))]);
    let financial: Vec<(Value, Value, Value, Value)> = r["financial"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["currency"].clone(), f["status"].clone(), f["count"].clone(), f["amount"].clone()))
        .collect();
    assert_eq!(financial, [(json!("EUR"), json!("success"), json!(2), json!("30.75")), (json!("USD"), json!("failure"), json!(1), json!("5"))]);
    assert_eq!(r["lifecycle"]["retention_days_in_force"]["financial"], 2557);
    assert_eq!(r["integrity"]["ok"], true);
    assert!(r["integrity"]["chains_verified"].as_u64().unwrap() >= 3);

    // The signature holds with the deployment's public key, and not after one byte.
    let public: Value = app.client.get(format!("{}/audit/checkpoints/public-key", app.address)).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    let key = public["public_key"].as_str().expect("public key").to_owned();
    assert_eq!(tierlog::report::verify(&r, &key), Ok(()));
    let edited = body.replacen("\"failed_logins\": 4", "\"failed_logins\": 3", 1);
    assert_ne!(edited, body);
    let edited: Value = serde_json::from_str(&edited).unwrap();
    assert!(tierlog::report::verify(&edited, &key).is_err());
    // The same, with the command, offline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    std::fs::write(&file, &body).unwrap();
    let cli = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tierlog")).arg("verify-report").arg(path).args(["--public-key", &key]).output().unwrap()
    };
    assert!(cli(&file).status.success(), "{}", String::from_utf8_lossy(&cli(&file).stderr));
    let bad = dir.path().join("edited.json");
    std::fs::write(&bad, body.replacen("203.0.113.9", "203.0.113.8", 1)).unwrap();
    assert!(!cli(&bad).status.success());

    // The printable form.
    let (status, headers, html) = report(&app, KEY, "tenant_id=acme&from=2026-11-01T00:00:00Z&format=html").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(html.contains("Compliance report — tenant acme") && html.contains("every chain holds") && html.contains("<svg"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no outside asset");
    // Kept for a look (target/report-example/).
    let kept = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/report-example");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("report.json"), &body).unwrap();
    std::fs::write(kept.join("report.html"), &html).unwrap();

    // The PDF: its text (poppler's pdftotext) holds the same figures, and its first
    // page the signature's fingerprint; a PNG of that page is kept.
    let response = app.request_with(reqwest::Method::GET, "/audit/reports?tenant_id=acme&from=2026-11-01T00:00:00Z&format=pdf", KEY).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    let signature = response.headers()["x-report-signature"].to_str().unwrap().to_owned();
    let pdf = response.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    std::fs::write(kept.join("report.pdf"), &pdf).unwrap();
    let pdftotext = |first_page_only: bool| {
        let mut command = std::process::Command::new("pdftotext");
        command.args(["-layout"]);
        if first_page_only {
            command.args(["-f", "1", "-l", "1"]);
        }
        let output = command.arg(kept.join("report.pdf")).arg("-").output().expect("pdftotext runs (scripts/test.sh installs poppler-utils)");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let first_page = pdftotext(true);
    assert!(first_page.contains("Compliance report - tenant acme"), "{first_page}");
    let fingerprint = tierlog::report::html::fingerprint_of(&signature);
    assert_eq!(tierlog::report::html::fingerprint(r.as_object().unwrap()), tierlog::report::html::fingerprint_of(r["signature"].as_str().unwrap()));
    assert!(first_page.contains(&fingerprint), "the fingerprint {fingerprint} on the first page:\n{first_page}");
    let text = pdftotext(false);
    let words = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let lines: Vec<Vec<String>> = text.lines().map(words).collect();
    // The same figures as the JSON: the totals row, the top failing user and
    // address, the lockout, the change, the money and the verdict.
    for row in [
        vec!["3", "4", "1", "1", "1"],
        vec!["u-2", "3"],
        vec!["203.0.113.9", "3"],
        vec!["EUR", "success", "2", "30.75"],
        vec!["USD", "failure", "1", "5"],
        vec!["brute_force", "high", "1"],
        vec!["rate_limited", "medium", "2"],
    ] {
        assert!(lines.iter().any(|l| l == &row), "a line {row:?} in:\n{text}");
    }
    assert!(text.contains("admin-1") && text.contains("user.role_changed") && text.contains("every chain holds"), "{text}");
    let png = std::process::Command::new("pdftoppm")
        .args(["-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile"])
        .arg(kept.join("report.pdf"))
        .arg(kept.join("report-page-1"))
        .status()
        .expect("pdftoppm runs");
    assert!(png.success());
    assert!(std::fs::metadata(kept.join("report-page-1.png")).unwrap().len() > 5_000);

    // A tampered row shows as a break.
    app.tamper("UPDATE audit_logs SET message = 'nothing happened' WHERE tenant_id = 'acme' AND category = 'auth' AND user_id = 'u-3'").await;
    let (_, _, body) = report(&app, KEY, "tenant_id=acme&from=2026-11-01T00:00:00Z").await;
    let tampered: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tampered["integrity"]["ok"], false);
    assert_eq!(tampered["integrity"]["breaks"].as_array().map(Vec::len), Some(1), "{}", tampered["integrity"]);
    let (_, _, html) = report(&app, KEY, "tenant_id=acme&from=2026-11-01T00:00:00Z&format=html").await;
    assert!(html.contains("BREAKS FOUND"));
    app.stop().await;
}

#[tokio::test]
async fn reports_are_scoped_need_logs_export_and_refuse_bad_periods() {
    let app = TestApp::spawn_with(|s| s.detection.enabled = false).await;
    seed(&app).await;
    let (_, globex) = app.create_key(json!({"name": "globex", "tenant_id": "globex", "permissions": ["logs.export"]})).await;
    let (status, _, body) = report(&app, &globex, "").await;
    assert_eq!(status, 200, "{body}");
    let theirs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((theirs["tenant_id"].clone(), theirs["authentication"]["totals"]["failed_logins"].clone()), (json!("globex"), json!(1)));
    assert_eq!(report(&app, &globex, "tenant_id=acme").await.0, 403);
    let (_, viewer) = app.create_key(json!({"name": "viewer", "permissions": ["logs.auth.view"]})).await;
    assert_eq!(report(&app, &viewer, "tenant_id=acme").await.0, 403);
    for (query, names) in [
        ("tenant_id=acme&from=2026-11-20T00:00:00Z&to=2026-11-10T00:00:00Z", "from:"),
        ("tenant_id=acme&to=yesterday", "to:"),
        ("tenant_id=acme&from=1990-01-01T00:00:00Z", "from:"),
        ("tenant_id=acme&format=docx", "format:"),
        ("", "tenant_id:"),
    ] {
        let (status, _, body) = report(&app, KEY, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(names), "{query}: {answer}");
    }
    app.stop().await;
}
