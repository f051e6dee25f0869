//! GDPR: a subject's export holds everything about them; erasure removes their
//! personal values from Postgres and Redis, returns and records a receipt, and leaves
//! every chain verifiable while other tampering is still caught.

use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};
use tierlog::event::Category;
use uuid::Uuid;

use crate::helpers::{TestApp, KEY};

fn subject_events(tenant: &str) -> Value {
    json!([
        {"id": Uuid::new_v4(), "category": "auth", "tenant_id": tenant, "action": "auth.login", "status": "success",
         "user_id": "u-42", "username": "dana", "email": "dana@example.com", "ip_address": "198.51.100.4",
         "user_agent": "Firefox", "message": "login", "details": {"phone": "+1 555 0100", "mfa": true}},
        {"id": Uuid::new_v4(), "category": "audit", "tenant_id": tenant, "action": "user.email_changed", "status": "success",
         "user_id": "admin-1", "username": "root", "resource": "user", "resource_id": "u-42",
         "changes": {"before": {"email": "dana@example.com", "plan": "free"}, "after": {"email": "d@example.org", "plan": "pro"}}},
        {"id": Uuid::new_v4(), "category": "api", "tenant_id": tenant, "action": "api.call", "level": "INFO",
         "user_id": "u-42", "username": "dana", "ip_address": "198.51.100.4"},
        {"id": Uuid::new_v4(), "category": "auth", "tenant_id": tenant, "action": "auth.login", "status": "success",
         "user_id": "u-7", "username": "erin", "email": "erin@example.com"}
    ])
}

#[tokio::test]
async fn erasure_removes_the_subject_everywhere_and_chains_still_verify() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_events(&subject_events("acme")).await.status(), 200);
    assert_eq!(app.post_events(&subject_events("beta")).await.status(), 200);

    let (status, export) = app.send_json(Method::GET, "/audit/subjects/u-42/export?tenant_id=acme", KEY, None).await;
    assert_eq!(status, 200, "{export}");
    let persisted = export["persisted"].as_array().expect("persisted");
    assert_eq!(persisted.len(), 2, "{export}");
    assert!(persisted.iter().all(|e| e["tenant_id"] == "acme"));
    assert_eq!(export["hot_only"].as_array().map(Vec::len), Some(1), "the api event lives in Redis only");
    assert_eq!(export["hot_only"][0]["action"], "api.call");

    let (status, receipt) = app.send_json(Method::POST, "/audit/subjects/u-42/erase?tenant_id=acme", KEY, None).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["postgres_rows"]["audit_logs"], 2, "{receipt}");
    assert!(receipt["redis_entries"].as_u64().unwrap_or(0) >= 3, "{receipt}");
    let pseudonym = receipt["subject_pseudonym"].as_str().expect("pseudonym").to_owned();
    assert!(pseudonym.starts_with("erased-"));

    // Postgres: the subject's own row lost every personal value; the admin's row
    // about them lost the subject's email but keeps its actor.
    type Erased = (Option<String>, Option<String>, Option<String>, Option<String>, Value, Option<Vec<u8>>);
    let own: Erased = sqlx::query_as(
        "SELECT user_id, username, email, host(ip_address), details, pii_salt FROM audit_logs
         WHERE tenant_id = 'acme' AND category = 'auth' AND action = 'auth.login' AND username IS DISTINCT FROM 'erin'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!(own.0.as_deref(), Some(pseudonym.as_str()));
    assert_eq!((own.1, own.2, own.3), (None, None, None));
    assert_eq!(own.4, json!({"phone": "[erased]", "mfa": true}));
    assert!(own.5.is_none(), "the salt goes, so old values cannot be confirmed");
    let about: (String, Option<String>, Value) = sqlx::query_as(
        "SELECT user_id, username, changes FROM audit_logs WHERE tenant_id = 'acme' AND action = 'user.email_changed'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!((about.0.as_str(), about.1.as_deref()), ("admin-1", Some("root")));
    assert_eq!(about.2["before"], json!({"email": "[erased]", "plan": "free"}));
    assert_eq!(about.2["after"]["plan"], "pro");

    // Redis: the same edits, the other subject and tenant untouched.
    let auth = app.redis.list("acme", Category::Auth);
    let dana = auth.iter().find(|e| e["user_id"] == pseudonym.as_str()).expect("erased entry");
    assert!(dana.get("username").is_none() && dana.get("email").is_none() && dana.get("ip_address").is_none(), "{dana}");
    assert_eq!(dana["details"]["phone"], "[erased]");
    assert!(auth.iter().any(|e| e["username"] == "erin"));
    let api = app.redis.list("acme", Category::Api);
    assert_eq!(api[0]["user_id"], pseudonym.as_str());
    assert!(app.redis.list("beta", Category::Auth).iter().any(|e| e["username"] == "dana"), "another tenant's subject stays");
    assert_eq!(app.redis.list("acme", Category::Audit).iter().filter(|e| e["changes"]["before"]["email"] == "[erased]").count(), 1);

    // The subject is gone from their export; the receipt is in the chain without them.
    // What is left names the subject only as the resource of the admin's change
    // (an application identifier, kept); its personal values are gone.
    let (_, after) = app.send_json(Method::GET, "/audit/subjects/u-42/export?tenant_id=acme", KEY, None).await;
    let left = after["persisted"].as_array().expect("persisted");
    assert_eq!(left.len(), 1, "{after}");
    assert_eq!(left[0]["action"], "user.email_changed");
    assert_eq!(left[0]["changes"]["before"]["email"], "[erased]");
    assert_eq!(after["hot_only"], json!([]));
    let recorded: Value = sqlx::query_scalar(
        "SELECT to_jsonb(a) FROM audit_logs a WHERE tenant_id = 'acme' AND action = 'subject.erased'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("receipt recorded");
    assert_eq!(recorded["details"]["subject_pseudonym"], pseudonym.as_str());
    assert!(!recorded.to_string().contains("u-42"), "{recorded}");

    // Every chain still verifies; changing anything but personal values still shows.
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    app.tamper(&format!(
        "UPDATE audit_logs SET details = '{{\"phone\": \"[erased]\", \"mfa\": false}}' WHERE user_id = '{pseudonym}'"
    ))
    .await;
    let (_, body) = app.send_json(Method::GET, "/audit/verify?tenant_id=acme&table=audit_logs", KEY, None).await;
    assert_eq!(body["chains"][0]["first_break"]["kind"], "content_changed", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn an_erased_chain_exports_and_verifies_offline() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_events(&subject_events("acme")).await.status(), 200);
    assert_eq!(app.send_json(Method::POST, "/audit/subjects/u-42/erase?tenant_id=acme", KEY, None).await.0, 200);
    let out = app.dir.path().join("export");
    let export = Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(["export-chain", "--tenant", "acme", "--out"])
        .arg(&out)
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_LOG_ENABLED", "false")
        .env("LOGGING_LEVEL", "ERROR")
        .env("TIERLOG__INTEGRITY__SIGNING_KEY_FILE", app.dir.path().join("signing.key"))
        .output()
        .expect("tierlog runs");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let (_, key) = app.send_json(Method::GET, "/audit/checkpoints/public-key", KEY, None).await;
    let (_, checkpoints) = app.send_json(Method::POST, "/audit/checkpoints?tenant_id=acme", KEY, None).await;
    let checkpoints_file = app.dir.path().join("checkpoints.json");
    std::fs::write(&checkpoints_file, checkpoints.to_string()).expect("write");
    let verify = Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(["verify", "--archive"])
        .arg(&out)
        .args(["--public-key", key["public_key"].as_str().expect("key"), "--checkpoints"])
        .arg(&checkpoints_file)
        .env_clear()
        .output()
        .expect("tierlog runs");
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{stdout}{}", String::from_utf8_lossy(&verify.stderr));
    // One checkpoint per chain: the auth, audit and access chains (a retention class
    // each; the erasure's receipt is an access record).
    assert!(stdout.contains("acme audit_logs") && stdout.contains("3 checkpoint(s) matched"), "{stdout}");
    app.stop().await;
}

#[tokio::test]
async fn subject_endpoints_need_their_permissions_and_stay_in_the_tenant() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_events(&subject_events("acme")).await.status(), 200);
    assert_eq!(app.post_events(&subject_events("beta")).await.status(), 200);
    let (_, exporter) = app.create_key(json!({"name": "e", "tenant_id": "acme", "permissions": ["logs.export"]})).await;
    let (_, eraser) = app.create_key(json!({"name": "d", "tenant_id": "acme", "permissions": ["logs.delete"]})).await;
    assert_eq!(app.send_json(Method::POST, "/audit/subjects/u-42/erase", &exporter, None).await.0, 403);
    assert_eq!(app.send_json(Method::GET, "/audit/subjects/u-42/export", &eraser, None).await.0, 403);
    assert_eq!(app.send_json(Method::POST, "/audit/subjects/u-42/erase?tenant_id=beta", &eraser, None).await.0, 403);
    assert_eq!(app.send_json(Method::POST, "/audit/subjects/u-42/erase?x=1", &eraser, None).await.0, 400);
    assert_eq!(app.send_json(Method::POST, "/audit/subjects/u-42/erase", &eraser, None).await.0, 200);
    let (status, beta) = app.send_json(Method::GET, "/audit/subjects/u-42/export?tenant_id=beta", KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(beta["persisted"].as_array().map(Vec::len), Some(2), "the tenant-bound erasure left beta alone");
    let (_, acme) = app.send_json(Method::GET, "/audit/subjects/u-42/export", &exporter, None).await;
    let left = acme["persisted"].as_array().expect("persisted");
    assert!(left.iter().all(|e| e["user_id"] != "u-42" && e["tenant_id"] == "acme"), "{acme}");
    app.stop().await;
}
