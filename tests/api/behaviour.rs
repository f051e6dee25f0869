//! The behaviour suite: what a client of the API can observe, written once and run
//! against every backend combination (Redis + Postgres, in-process hot tier +
//! Postgres, and the embedded mode: in-process hot tier + SQLite). Backend-specific
//! tests live in the other modules.

use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{event, TestApp, KEY};

/// The backend combinations every behaviour runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backends {
    RedisPostgres,
    MemoryPostgres,
    Embedded,
}

impl Backends {
    pub async fn spawn(self, configure: impl FnOnce(&mut tierlog::config::Settings)) -> TestApp {
        TestApp::spawn_with(|settings| {
            if let Backends::MemoryPostgres | Backends::Embedded = self {
                settings.redis.url = String::new();
            }
            if let Backends::Embedded = self {
                settings.postgres.url = String::new();
                settings.embedded.data_dir = settings.files.path.with_file_name("data");
            }
            configure(settings);
        })
        .await
    }

    /// The name reads give the durable tier.
    pub fn durable(self) -> &'static str {
        match self {
            Backends::RedisPostgres | Backends::MemoryPostgres => "postgres",
            Backends::Embedded => "sqlite",
        }
    }

    /// The name reads give the hot tier.
    pub fn hot(self) -> &'static str {
        match self {
            Backends::RedisPostgres => "redis",
            Backends::MemoryPostgres | Backends::Embedded => "memory",
        }
    }
}

/// Runs the behaviour `$name` (an `async fn(Backends)`) once per backend combination.
macro_rules! behaviour {
    ($name:ident) => {
        mod $name {
            use super::Backends;

            #[tokio::test]
            async fn redis_postgres() {
                super::$name(Backends::RedisPostgres).await
            }

            #[tokio::test]
            async fn memory_postgres() {
                super::$name(Backends::MemoryPostgres).await
            }

            #[tokio::test]
            async fn embedded() {
                super::$name(Backends::Embedded).await
            }
        }
    };
}

async fn get(app: &TestApp, key: &str, path: &str) -> Value {
    let (status, body) = app.send_json(Method::GET, path, key, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The items' ids, leaving out tierlog's own access records.
fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["logger"] != "tierlog.access")
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

behaviour!(retries_leave_one_copy_in_every_tier);
async fn retries_leave_one_copy_in_every_tier(backends: Backends) {
    let app = backends.spawn(|_| {}).await;
    let batch = json!([event("auth", "acme"), event("security", "acme"), event("api", "acme")]);
    for _ in 0..3 {
        assert_eq!(app.post_events(&batch).await.status(), 200);
    }
    let combined = get(&app, KEY, "/audit/combined?tenant_id=acme").await;
    let items: Vec<&Value> = combined["items"].as_array().expect("items").iter().filter(|i| i["logger"] != "tierlog.access").collect();
    assert_eq!(items.len(), 3, "{combined}");
    for item in items {
        let expected = if item["category"] == "api" { json!([backends.hot()]) } else { json!([backends.hot(), backends.durable()]) };
        assert_eq!(item["tiers"], expected, "{item}");
    }
    let logs = get(&app, KEY, "/audit/logs?tenant_id=acme&category=auth&include_total=true").await;
    assert_eq!(logs["total"], 1);
    assert_eq!(app.file_lines().iter().filter(|l| l["tenant_id"] == "acme" && l["logger"] != "tierlog.access").count(), 3);
    if let Backends::Embedded = backends {
        let untouched: bool = sqlx::query_scalar("SELECT to_regclass('audit_logs') IS NULL").fetch_one(&app.pool).await.expect("query");
        assert!(untouched, "Postgres is not even migrated in embedded mode");
        assert!(app.dir.path().join("data/tierlog.db").exists(), "the SQLite file is in the data directory");
    }
    app.stop().await;
}

behaviour!(filters_agree_across_the_hot_tier_postgres_and_the_merge);
async fn filters_agree_across_the_hot_tier_postgres_and_the_merge(backends: Backends) {
    let app = backends.spawn(|_| {}).await;
    let mut failed = event("auth", "acme");
    failed["action"] = json!("auth.login_failed");
    failed["status"] = json!("failure");
    failed["user_id"] = json!("u-7");
    failed["ip_address"] = json!("10.1.2.3");
    failed["request_id"] = json!("req-1");
    failed["message"] = json!("invalid password for account");
    failed["timestamp"] = json!("2026-11-20T10:00:00Z");
    let mut ok = event("auth", "acme");
    ok["ip_address"] = json!("2001:db8::5");
    ok["timestamp"] = json!("2026-11-21T10:00:00Z");
    assert_eq!(app.post_events(&json!([failed, ok, event("auth", "beta")])).await.status(), 200);
    let failed_id = failed["id"].as_str().expect("id").to_owned();
    let ok_id = ok["id"].as_str().expect("id").to_owned();
    for (filter, want) in [
        ("user_id=u-7", vec![failed_id.clone()]),
        ("action=auth.login_failed", vec![failed_id.clone()]),
        ("status=failure", vec![failed_id.clone()]),
        ("ip_address=10.1.0.0/16", vec![failed_id.clone()]),
        ("ip_address=2001:db8::/32", vec![ok_id.clone()]),
        ("request_id=req-1", vec![failed_id.clone()]),
        ("q=password", vec![failed_id.clone()]),
        ("from=2026-11-21T00:00:00Z&to=2026-11-22T00:00:00Z", vec![ok_id.clone()]),
        ("", vec![ok_id.clone(), failed_id.clone()]),
    ] {
        for endpoint in ["/audit/logs", "/audit/redis", "/audit/combined"] {
            let body = get(&app, KEY, &format!("{endpoint}?tenant_id=acme&category=auth&{filter}")).await;
            assert_eq!(ids(&body), want, "{endpoint} {filter}: {body}");
        }
    }
    app.stop().await;
}

behaviour!(pages_cover_every_event_once_newest_first);
async fn pages_cover_every_event_once_newest_first(backends: Backends) {
    let app = backends.spawn(|_| {}).await;
    let mut sent = Vec::new();
    for chunk in 0..5 {
        let batch: Vec<Value> = (0..50)
            .map(|i| {
                let mut e = event(if i % 2 == 0 { "auth" } else { "api" }, "acme");
                e["timestamp"] = json!(format!("2026-11-{:02}T{:02}:{:02}:00Z", 10 + chunk, i / 60, i % 60));
                e
            })
            .collect();
        sent.extend(batch.iter().map(|e| e["id"].as_str().expect("id").to_owned()));
        assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/audit/combined?tenant_id=acme&limit=40".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = get(&app, KEY, &path).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert_eq!(seen.len(), sent.len(), "every event once");
    sent.reverse();
    let newest_first: Vec<&String> = sent.iter().collect();
    assert_eq!(seen.iter().collect::<Vec<_>>(), newest_first, "newest first");
    app.stop().await;
}

behaviour!(a_tenant_key_sees_only_its_tenant_in_every_tier);
async fn a_tenant_key_sees_only_its_tenant_in_every_tier(backends: Backends) {
    let app = backends.spawn(|_| {}).await;
    assert_eq!(app.post_events(&json!([event("auth", "acme"), event("api", "acme"), event("auth", "beta"), event("api", "beta")])).await.status(), 200);
    let (_, viewer) = app
        .create_key(json!({"name": "v", "tenant_id": "acme", "permissions": ["logs.auth.view", "logs.actions.view"]}))
        .await;
    for path in ["/audit/logs", "/audit/redis", "/audit/combined", "/audit/users/u-1/activity"] {
        let body = get(&app, &viewer, path).await;
        let items = body["items"].as_array().expect("items");
        assert!(!items.is_empty(), "{path}: {body}");
        assert!(items.iter().all(|i| i["tenant_id"] == "acme"), "{path}: {body}");
        assert_eq!(app.send_json(Method::GET, &format!("{path}?tenant_id=beta"), &viewer, None).await.0, 403, "{path}");
    }
    app.stop().await;
}

behaviour!(erasure_and_retention_keep_chains_verifiable);
async fn erasure_and_retention_keep_chains_verifiable(backends: Backends) {
    let app = backends
        .spawn(|s| {
            if let Some(auth) = s.categories.get_mut(&tierlog::event::Category::Auth) {
                auth.retention_days = 1;
            }
        })
        .await;
    let mut subject = event("audit", "acme");
    subject["user_id"] = json!("u-42");
    subject["email"] = json!("dana@example.com");
    let batch = json!([subject, event("auth", "acme"), event("api", "acme"), {"id": Uuid::new_v4(), "category": "audit", "tenant_id": "acme"}]);
    assert_eq!(app.post_events(&batch).await.status(), 200);

    let (status, receipt) = app.send_json(Method::POST, "/audit/subjects/u-42/erase?tenant_id=acme", KEY, None).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["redis_entries"], 1, "{receipt}");
    let hot = get(&app, KEY, "/audit/redis?tenant_id=acme&category=audit").await;
    assert!(hot["items"].as_array().expect("items").iter().all(|i| i["email"].is_null() && i["user_id"] != "u-42"), "{hot}");

    app.clock.advance(Duration::days(2));
    let (status, run) = app.send_json(Method::POST, "/audit/retention/run", KEY, None).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["deleted_by_tenant"]["acme"], 1, "{run}");
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    app.stop().await;
}

behaviour!(aggregates_exports_and_checkpoints_answer_alike);
async fn aggregates_exports_and_checkpoints_answer_alike(backends: Backends) {
    let app = backends.spawn(|_| {}).await;
    let mut batch = Vec::new();
    for i in 0..12 {
        let mut e = event("auth", "acme");
        e["action"] = json!(if i < 8 { "auth.login_failed" } else { "auth.login" });
        e["status"] = json!(if i < 8 { "failure" } else { "success" });
        e["user_id"] = json!(format!("u-{}", i % 3));
        e["ip_address"] = json!(if i < 6 { "203.0.113.9" } else { "198.51.100.7" });
        batch.push(e);
    }
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);

    let stats = get(&app, KEY, "/audit/stats?tenant_id=acme&hours=24").await;
    assert_eq!(stats["by_status"]["failure"], 8, "{stats}");
    assert_eq!(stats["top_failing_ips"][0]["key"], "203.0.113.9", "{stats}");
    let by_ip = get(&app, KEY, "/audit/failed-logins?tenant_id=acme&hours=24").await;
    let groups = by_ip["items"].as_array().expect("items");
    assert_eq!((groups[0]["key"].clone(), groups[0]["failures"].clone(), groups[0]["distinct"].clone()), (json!("203.0.113.9"), json!(6), json!(3)), "{by_ip}");
    assert_eq!((groups[1]["failures"].clone(), groups[1]["distinct"].clone()), (json!(2), json!(2)), "{by_ip}");

    let export = app
        .client
        .get(format!("{}/audit/export?tenant_id=acme&action=auth.login_failed", app.address))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(export.status(), 200);
    let text = export.text().await.expect("body");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("ndjson")).collect();
    assert_eq!(lines.len(), 8);
    assert!(lines.iter().all(|l| l["action"] == "auth.login_failed" && l["tenant_id"] == "acme"));

    let activity = get(&app, KEY, "/audit/users/u-1/activity?tenant_id=acme").await;
    assert_eq!(ids(&activity).len(), 4, "{activity}");

    let (status, made) = app.send_json(Method::POST, "/audit/checkpoints?tenant_id=acme", KEY, None).await;
    assert_eq!(status, 200, "{made}");
    assert!(!made["checkpoints"].as_array().expect("checkpoints").is_empty());
    let listed = get(&app, KEY, "/audit/checkpoints?tenant_id=acme").await;
    // Listed newest first; made together, so in the reverse order of signing.
    let mut listed = listed["checkpoints"].as_array().expect("listed").clone();
    listed.reverse();
    assert_eq!(json!(listed), made["checkpoints"]);
    let verdict = get(&app, KEY, "/audit/verify?tenant_id=acme").await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert!(verdict["chains"].as_array().expect("chains").iter().all(|c| c["checkpoints"].as_u64() >= Some(1)), "{verdict}");
    app.stop().await;
}
