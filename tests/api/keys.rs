//! API keys: shown once, stored as a digest, bound to a tenant, permission-checked,
//! expiring and revocable; every key change is recorded.

use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{event, TestApp, KEY};

impl TestApp {
    /// Creates a key through the API with the bootstrap key; returns (id, secret).
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let response = self.request_with(reqwest::Method::POST, "/audit/keys", KEY).json(&body).send().await.expect("sent");
        assert_eq!(response.status(), 201, "key created");
        let created: Value = response.json().await.expect("json");
        (created["key"]["id"].as_str().expect("id").to_owned(), created["secret"].as_str().expect("secret").to_owned())
    }

    /// A request to `path` with `key`.
    pub fn request_with(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.address)).bearer_auth(key)
    }

    /// Posts events with `key`.
    pub async fn post_with(&self, key: &str, body: &Value) -> reqwest::Response {
        self.request_with(reqwest::Method::POST, "/audit/events", key).json(body).send().await.expect("sent")
    }
}

#[tokio::test]
async fn a_tenant_key_writes_only_its_tenant_and_needs_its_permission() {
    let app = TestApp::spawn().await;
    let (_, writer) = app.create_key(json!({"name": "acme writer", "tenant_id": "acme", "permissions": ["events.write"]})).await;
    let (_, reader) = app.create_key(json!({"name": "acme reader", "tenant_id": "acme", "permissions": ["logs.auth.view"]})).await;

    let mut own = event("auth", "acme");
    own.as_object_mut().expect("object").remove("tenant_id");
    assert_eq!(app.post_with(&writer, &own).await.status(), 200);
    assert_eq!(app.post_with(&writer, &event("auth", "acme")).await.status(), 200);

    let foreign = app.post_with(&writer, &json!([event("auth", "acme"), event("auth", "other")])).await;
    assert_eq!(foreign.status(), 400);
    let body: Value = foreign.json().await.expect("json");
    assert_eq!(body["error"]["fields"][0]["index"], 1);
    assert_eq!(body["error"]["fields"][0]["field"], "tenant_id");

    let refused = app.post_with(&reader, &event("auth", "acme")).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("events.write"));

    assert_eq!(app.count_rows("audit_logs", "acme").await - audit_records(&app, "acme").await, 2);
    assert_eq!(app.count_rows("audit_logs", "other").await, 0);
    app.stop().await;
}

async fn audit_records(app: &TestApp, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND logger = 'tierlog.access'")
        .bind(tenant)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn keys_are_stored_as_digests_and_listed_without_secrets() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.create_key(json!({"name": "ops", "permissions": ["keys.manage", "events.write"]})).await;
    assert!(secret.starts_with("tlk_") && secret.len() >= 40);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert_eq!(stored.len(), 32);
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM api_keys t").fetch_one(&app.pool).await.expect("dump");
    assert!(!dump.contains(&secret[4..]), "the secret is not stored");

    let listed: Value = app.request_with(reqwest::Method::GET, "/audit/keys", &secret).send().await.expect("sent").json().await.expect("json");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    assert!(!listed.to_string().contains(&secret[4..]), "listings never show the secret");
    app.stop().await;
}

#[tokio::test]
async fn revoked_and_expired_keys_are_refused_with_401() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.create_key(json!({"name": "short-lived", "permissions": ["events.write"]})).await;
    assert_eq!(app.post_with(&secret, &event("api", "t")).await.status(), 200);
    let revoked = app.request_with(reqwest::Method::DELETE, &format!("/audit/keys/{id}"), KEY).send().await.expect("sent");
    assert_eq!(revoked.status(), 200);
    let refused = app.post_with(&secret, &event("api", "t")).await;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthorized");

    let (id, secret) = app.create_key(json!({"name": "expiring", "permissions": ["events.write"], "expires_at": "2999-01-01T00:00:00Z"})).await;
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .expect("expire");
    assert_eq!(app.post_with(&secret, &event("api", "t")).await.status(), 401);
    assert_eq!(app.post_with("tlk_not-a-key", &event("api", "t")).await.status(), 401);
    let missing = app.request_with(reqwest::Method::DELETE, "/audit/keys/0192f0c4-7a4e-7c3a-9c55-3f1f2a7d9b10", KEY).send().await.expect("sent");
    assert_eq!(missing.status(), 404);
    let malformed = app.request_with(reqwest::Method::DELETE, "/audit/keys/not-a-uuid", KEY).send().await.expect("sent");
    assert_eq!(malformed.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_manager_cannot_escalate_or_reach_another_tenant() {
    let app = TestApp::spawn().await;
    let (_, manager) = app.create_key(json!({"name": "acme admin", "tenant_id": "acme", "permissions": ["keys.manage", "events.write"]})).await;
    let (other_id, _) = app.create_key(json!({"name": "beta", "tenant_id": "beta", "permissions": ["events.write"]})).await;
    let attempts = [
        (json!({"name": "x", "permissions": ["logs.export"]}), 403),
        (json!({"name": "x", "tenant_id": "beta", "permissions": ["events.write"]}), 403),
        (json!({"name": "x", "permissions": ["no.such.permission"]}), 400),
        (json!({"name": "", "permissions": ["events.write"]}), 400),
        (json!({"name": "a\u{0}b", "permissions": ["events.write"]}), 400),
        (json!({"name": "x", "permissions": []}), 400),
        (json!({"name": "x", "permissions": ["events.write"], "expires_at": "2000-01-01T00:00:00Z"}), 400),
        (json!({"name": "x", "permissions": ["events.write"], "surprise": 1}), 400),
    ];
    for (body, status) in attempts {
        let response = app.request_with(reqwest::Method::POST, "/audit/keys", &manager).json(&body).send().await.expect("sent");
        assert_eq!(response.status().as_u16(), status, "{body}");
        let envelope: Value = response.json().await.expect("json envelope");
        assert!(envelope["error"]["code"].is_string());
    }
    // A key it may create is bound to its tenant even when none is named.
    let created: Value = app
        .request_with(reqwest::Method::POST, "/audit/keys", &manager)
        .json(&json!({"name": "acme ingest", "permissions": ["events.write"]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(created["key"]["tenant_id"], "acme");
    // It sees only its tenant's keys and cannot revoke another tenant's.
    let listed: Value = app.request_with(reqwest::Method::GET, "/audit/keys", &manager).send().await.expect("sent").json().await.expect("json");
    assert!(listed["items"].as_array().expect("items").iter().all(|k| k["tenant_id"] == "acme"));
    let revoke = app.request_with(reqwest::Method::DELETE, &format!("/audit/keys/{other_id}"), &manager).send().await.expect("sent");
    assert_eq!(revoke.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn key_changes_are_recorded_as_audit_events_in_the_chain() {
    let app = TestApp::spawn().await;
    let (id, _) = app.create_key(json!({"name": "recorded", "tenant_id": "acme", "permissions": ["events.write"]})).await;
    let response = app.request_with(reqwest::Method::DELETE, &format!("/audit/keys/{id}"), KEY).header("x-request-id", "req-revoke-1").send().await.expect("sent");
    assert_eq!(response.headers()["x-request-id"], "req-revoke-1");
    let rows: Vec<(String, Option<String>, Value, i64)> = sqlx::query_as(
        "SELECT action, request_id, details, seq FROM audit_logs WHERE tenant_id = 'acme' ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .expect("rows");
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(actions, vec!["keys.created", "keys.revoked"]);
    assert_eq!(rows[1].1.as_deref(), Some("req-revoke-1"));
    assert_eq!(rows[0].2["target_key_id"], id.as_str());
    assert_eq!(rows[0].2["key_id"], "bootstrap");
    app.stop().await;
}

#[tokio::test]
async fn the_cli_creates_a_key_printed_alone_on_its_last_line_and_revokes_it() {
    let app = TestApp::spawn().await;
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_tierlog"))
            .args(args)
            .env("DATABASE_URL", &app.db.url)
            .env("REDIS_LOG_ENABLED", "false")
            .env("LOGGING_LEVEL", "ERROR")
            .output()
            .expect("tierlog runs");
        assert!(output.status.success(), "tierlog {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("utf8")
    };
    let created = run(&["keys", "create", "--name", "cli key", "--tenant", "acme", "--permissions", "events.write,logs.auth.view"]);
    let secret = created.lines().last().expect("last line").trim().to_owned();
    assert!(secret.starts_with("tlk_"), "{created}");
    assert_eq!(app.post_with(&secret, &event("auth", "acme")).await.status(), 200);

    let listed = run(&["keys", "list"]);
    assert!(listed.contains("cli key") && listed.contains("tenant=acme") && !listed.contains(&secret[4..]));
    let id = listed.split_whitespace().next().expect("id").to_owned();
    let revoked = run(&["keys", "revoke", &id]);
    assert!(revoked.contains("revoked"));
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE action IN ('keys.created', 'keys.revoked') AND details->>'key_id' = 'cli'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(recorded, 2);
    app.stop().await;
}

#[tokio::test]
async fn access_records_take_the_client_address_from_a_trusted_proxy_only() {
    let app = TestApp::spawn_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    let response = app
        .request_with(reqwest::Method::GET, "/audit/keys", KEY)
        .header("x-forwarded-for", "198.51.100.23, 127.0.0.1")
        .header("user-agent", "audit-console/1.0")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let (ip, agent): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT host(ip_address), user_agent FROM audit_logs WHERE action = 'keys.listed'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("record");
    assert_eq!(ip.as_deref(), Some("198.51.100.23"));
    assert_eq!(agent.as_deref(), Some("audit-console/1.0"));
    app.stop().await;

    let untrusting = TestApp::spawn().await;
    let response = untrusting
        .request_with(reqwest::Method::GET, "/audit/keys", KEY)
        .header("x-forwarded-for", "198.51.100.23")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let ip: Option<String> = sqlx::query_scalar("SELECT host(ip_address) FROM audit_logs WHERE action = 'keys.listed'")
        .fetch_one(&untrusting.pool)
        .await
        .expect("record");
    assert_eq!(ip.as_deref(), Some("127.0.0.1"), "a forged header from an untrusted peer is ignored");
    untrusting.stop().await;
}

async fn auth_queries(app: &TestApp) -> u64 {
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tierlog_auth_queries_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("tierlog_auth_queries_total")
}

#[tokio::test]
async fn a_flood_of_made_up_keys_costs_a_few_queries_a_second_and_a_key_made_elsewhere_still_works() {
    let app = TestApp::spawn().await;
    let before = auth_queries(&app).await;
    let started = std::time::Instant::now();
    let made_up: Vec<String> = (0..400).map(|i| format!("tlk_made-up-{i}-{}", uuid::Uuid::new_v4().simple())).collect();
    let answers = futures_util::future::join_all(made_up.iter().map(|key| {
        app.request_with(reqwest::Method::POST, "/audit/events", key).json(&json!({"category": "auth"})).send()
    }))
    .await;
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|r| r.status() == 401)), "every made-up key is refused");
    let seconds = started.elapsed().as_secs() + 1;
    let spent = auth_queries(&app).await - before;
    // Per second: one read of the digest index and ten lookups of unindexed digests.
    assert!(spent <= seconds * 11 + 2, "{spent} queries for 400 made-up keys in about {seconds} s");

    // A key made behind this node's back (as another node would) works once the
    // flood's second is over.
    let store = tierlog::keys::KeyStore::new(app.pool.clone());
    let new = tierlog::keys::NewKey {
        name: "elsewhere".into(),
        tenant_id: Some("acme".into()),
        permissions: vec![tierlog::keys::Permission::EventsWrite],
        expires_at: None,
        created_by: "test".into(),
    };
    let (_, secret) = store.create(new).await.expect("created");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.post_with(&secret.plaintext, &json!({"category": "auth", "tenant_id": "acme"})).await.status(), 200);
    app.stop().await;
}
