//! `GET /audit/verify` and `tierlog verify` find every kind of tampering done
//! directly in Postgres, and name the first broken link.

use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{event, TestApp, KEY};

async fn verdict(app: &TestApp, tenant: &str) -> Value {
    let response = app
        .request_with(reqwest::Method::GET, &format!("/audit/verify?tenant_id={tenant}&table=audit_logs"), KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["chains"][0].clone()
}

#[tokio::test]
async fn verification_names_the_first_broken_link_for_each_kind_of_tampering() {
    let app = TestApp::spawn().await;
    let tenants = ["clean", "changed", "deleted", "tail", "inserted", "reordered", "pii"];
    for tenant in tenants {
        let batch: Vec<Value> = (0..5).map(|_| event("auth", tenant)).collect();
        assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    }
    app.tamper("UPDATE audit_logs SET message = 'nothing happened' WHERE tenant_id = 'changed' AND seq = 3").await;
    // A second edit further on must not hide behind the first.
    app.tamper("UPDATE audit_logs SET username = 'mallory' WHERE tenant_id = 'changed' AND seq = 5").await;
    app.tamper("DELETE FROM audit_logs WHERE tenant_id = 'deleted' AND seq = 2").await;
    app.tamper("DELETE FROM audit_logs WHERE tenant_id = 'tail' AND seq = 5").await;
    // A row slipped in at 3: the later rows move up and the last one is dropped, so the
    // chain keeps its length and its head.
    app.tamper("DELETE FROM audit_logs WHERE tenant_id = 'inserted' AND seq = 5").await;
    app.tamper("UPDATE audit_logs SET seq = -(seq + 1) WHERE tenant_id = 'inserted' AND seq >= 3").await;
    app.tamper("UPDATE audit_logs SET seq = -seq WHERE tenant_id = 'inserted' AND seq < 0").await;
    app.tamper(
        "INSERT INTO audit_logs SELECT tenant_id, 3, gen_random_uuid(), occurred_at, received_at, expires_at, category, level,
             logger, 'forged', event_type, action, status, application, user_id, username, email, resource, resource_id,
             ip_address, user_agent, request_id, session_id, details, changes, security, financial, prev_hash, row_hash,
             pii_salt, pii_hash FROM audit_logs WHERE tenant_id = 'inserted' AND seq = 2",
    )
    .await;
    app.tamper("UPDATE audit_logs SET seq = -seq WHERE tenant_id = 'reordered' AND seq IN (2, 3)").await;
    app.tamper("UPDATE audit_logs SET seq = 3 WHERE tenant_id = 'reordered' AND seq = -2").await;
    app.tamper("UPDATE audit_logs SET seq = 2 WHERE tenant_id = 'reordered' AND seq = -3").await;
    app.tamper("UPDATE audit_logs SET username = 'mallory' WHERE tenant_id = 'pii' AND seq = 4").await;

    let expected = [
        ("clean", Value::Null),
        ("changed", json!({"kind": "content_changed", "seq": 3})),
        ("deleted", json!({"kind": "sequence_gap", "expected": 2, "found": 3})),
        ("tail", json!({"kind": "missing_tail", "last_seq": 4, "head_seq": 5})),
        ("inserted", json!({"kind": "broken_link", "seq": 3})),
        ("reordered", json!({"kind": "broken_link", "seq": 2})),
        ("pii", json!({"kind": "personal_fields_changed", "seq": 4})),
    ];
    for (tenant, first_break) in expected {
        let report = verdict(&app, tenant).await;
        assert_eq!(report["first_break"], first_break, "{tenant}: {report}");
        assert_eq!(report["ok"], first_break.is_null(), "{tenant}");
    }
    let changed = verdict(&app, "changed").await;
    assert_eq!(
        changed["breaks"],
        json!([{"kind": "content_changed", "seq": 3}, {"kind": "personal_fields_changed", "seq": 5}]),
        "{changed}"
    );
    assert_eq!(changed["break_count"], 2);
    // The walk resumes after a gap: the rows after it still verify.
    assert_eq!(verdict(&app, "deleted").await["break_count"], 1);

    // The command line reaches the same verdict, with exit status 1 on a broken chain.
    let run = |tenant: &str| {
        Command::new(env!("CARGO_BIN_EXE_tierlog"))
            .args(["verify", "--tenant", tenant, "--table", "audit_logs"])
            .env("DATABASE_URL", &app.db.url)
            .env("TIERLOG__INTEGRITY__SIGNING_KEY_FILE", app.dir.path().join("signing.key"))
            .env("REDIS_LOG_ENABLED", "false")
            .env("LOGGING_LEVEL", "ERROR")
            .output()
            .expect("tierlog runs")
    };
    let clean = run("clean");
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stdout));
    let broken = run("deleted");
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stdout).contains("sequence_gap"));
    let both = String::from_utf8_lossy(&run("changed").stdout).into_owned();
    assert!(both.contains("2 break(s)") && both.contains("content_changed") && both.contains("personal_fields_changed"), "{both}");
    app.stop().await;
}

#[tokio::test]
async fn verification_needs_its_permission_and_stays_within_the_tenant() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_events(&json!([event("auth", "acme"), event("auth", "beta")])).await.status(), 200);
    let (_, viewer) = app.create_key(json!({"name": "v", "tenant_id": "acme", "permissions": ["logs.auth.view"]})).await;
    let (_, verifier) = app.create_key(json!({"name": "x", "tenant_id": "acme", "permissions": ["logs.verify"]})).await;
    let status = |key: String, path: &'static str| {
        let request = app.request_with(reqwest::Method::GET, path, &key);
        async move { request.send().await.expect("sent").status().as_u16() }
    };
    assert_eq!(status(viewer, "/audit/verify").await, 403);
    assert_eq!(status(verifier.clone(), "/audit/verify?tenant_id=beta").await, 403);
    let body: Value = app.request_with(reqwest::Method::GET, "/audit/verify", &verifier).send().await.expect("sent").json().await.expect("json");
    assert_eq!(body["ok"], true);
    let chains = body["chains"].as_array().expect("chains");
    assert!(!chains.is_empty() && chains.iter().all(|c| c["tenant_id"] == "acme"), "{body}");
    app.stop().await;
}
