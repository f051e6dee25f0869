//! Events land in the tiers PRODUCT.md section 3 names, once each.

use futures_util::future::join_all;
use serde_json::{json, Value};
use tierlog::event::Category;

use crate::helpers::{event, TestApp, KEY};

#[tokio::test]
async fn every_category_lands_where_the_policy_says() {
    let app = TestApp::spawn_with(|s| s.detection.enabled = false).await; // counts rows: no alerts
    let tenant = "acme";
    let mut api_error = event("api", tenant);
    api_error["level"] = json!("ERROR");
    let mut error_critical = event("error", tenant);
    error_critical["level"] = json!("CRITICAL");
    let mut error_warning = event("error", tenant);
    error_warning["level"] = json!("WARNING");
    let mut financial = event("financial", tenant);
    financial["financial"] = json!({"transaction_id": "tx-1", "amount": "1250.50", "currency": "EUR"});
    let mut security = event("security", tenant);
    security["security"] = json!({"event_type": "account_locked", "severity": "high"});
    let batch = json!([
        event("auth", tenant), security, financial, event("audit", tenant),
        event("api", tenant), api_error, event("error", tenant), error_critical, error_warning,
    ]);

    let response = app.post_events(&batch).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["accepted"], 9);

    // auth, audit, api at ERROR, error at CRITICAL; not api/error below ERROR.
    assert_eq!(app.count_rows("audit_logs", tenant).await, 4);
    assert_eq!(app.count_rows("security_events", tenant).await, 1);
    assert_eq!(app.count_rows("financial_audit_logs", tenant).await, 1);
    let (severity, kind): (String, String) =
        sqlx::query_as("SELECT severity, security_event_type FROM security_events")
            .fetch_one(&app.pool)
            .await
            .expect("security row");
    assert_eq!((severity.as_str(), kind.as_str()), ("high", "account_locked"));
    let amount: String = sqlx::query_scalar("SELECT amount::text FROM financial_audit_logs")
        .fetch_one(&app.pool)
        .await
        .expect("financial row");
    assert_eq!(amount, "1250.50");

    // Every event is in its category's Redis list and in the file.
    let expected = [
        (Category::Auth, 1), (Category::Security, 1), (Category::Financial, 1),
        (Category::Audit, 1), (Category::Api, 2), (Category::Error, 3),
    ];
    for (category, count) in expected {
        assert_eq!(app.redis.list(tenant, category).len(), count, "redis list of {category}");
    }
    let lines = app.file_lines();
    assert_eq!(lines.len(), 9);
    let sent: Vec<&Value> = batch.as_array().expect("array").iter().map(|e| &e["id"]).collect();
    let written: Vec<&Value> = lines.iter().map(|l| &l["id"]).collect();
    assert_eq!(written, sent, "the file keeps request order");
    assert_eq!(lines[2]["financial"]["amount"], "1250.50");
    app.stop().await;
}

#[tokio::test]
async fn ndjson_and_single_objects_are_accepted_and_ids_are_assigned() {
    let app = TestApp::spawn().await;
    let ndjson = "{\"category\":\"auth\",\"action\":\"auth.login\"}\n\n{\"category\":\"api\"}\r\n";
    let response = app.post_raw("application/x-ndjson", ndjson.as_bytes().to_vec(), Some(KEY)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["accepted"], 2);
    let first_id = body["ids"][0].as_str().expect("assigned id").to_owned();

    let response = app.post_events(&json!({"category": "security", "security": {"event_type": "ip_blocked"}})).await;
    assert_eq!(response.status(), 200);

    let stored: String = sqlx::query_scalar("SELECT id::text FROM audit_logs")
        .fetch_one(&app.pool)
        .await
        .expect("auth row");
    assert_eq!(stored, first_id);
    assert_eq!(app.count_rows("security_events", "default").await, 1);
    assert_eq!(app.file_lines().len(), 3);

    // An empty array is an empty batch: accepted, and nothing is written.
    let response = app.post_events(&json!([])).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.expect("json"), json!({"accepted": 0, "ids": []}));
    assert_eq!(app.file_lines().len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn redis_lists_get_the_ttl_and_are_trimmed_to_the_max_length() {
    let app = TestApp::spawn_with(|s| {
        s.redis.max_len = 5;
        s.redis.ttl_seconds = 120;
        // Every key under the prefix is a list here (rule windows have TTLs of their own).
        s.detection.enabled = false;
    })
    .await;
    let events: Vec<Value> = (0..8).map(|_| event("auth", "acme")).collect();
    for chunk in events.chunks(3) {
        assert_eq!(app.post_events(&json!(chunk)).await.status(), 200);
    }
    let list = app.redis.list("acme", Category::Auth);
    let newest_first: Vec<&Value> = events.iter().rev().take(5).map(|e| &e["id"]).collect();
    assert_eq!(list.iter().map(|e| &e["id"]).collect::<Vec<_>>(), newest_first);

    let mut conn = app.redis.connection();
    for key in app.redis.keys() {
        let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut conn).expect("ttl");
        assert!((1..=120).contains(&ttl), "{key} has TTL {ttl}");
    }
    let ids_key = tierlog::tiers::redis::ids_key(&app.redis.prefix, "acme", Category::Auth);
    let tracked: i64 = redis::cmd("ZCARD").arg(&ids_key).query(&mut conn).expect("zcard");
    assert_eq!(tracked, 5, "the id set is trimmed with the list");
    // Postgres keeps all of them.
    assert_eq!(app.count_rows("audit_logs", "acme").await, 8);
    app.stop().await;
}

#[tokio::test]
async fn per_category_redis_settings_override_the_defaults() {
    let app = TestApp::spawn_with(|s| {
        if let Some(policy) = s.categories.get_mut(&Category::Api) {
            policy.redis_max_len = Some(2);
            policy.redis_ttl_seconds = Some(30);
        }
    })
    .await;
    let batch: Vec<Value> = (0..4).flat_map(|_| [event("api", "t1"), event("auth", "t1")]).collect();
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    assert_eq!(app.redis.list("t1", Category::Api).len(), 2);
    assert_eq!(app.redis.list("t1", Category::Auth).len(), 4);
    let key = tierlog::tiers::redis::events_key(&app.redis.prefix, "t1", Category::Api);
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut app.redis.connection()).expect("ttl");
    assert!((1..=30).contains(&ttl));
    app.stop().await;
}

#[tokio::test]
async fn retrying_the_same_ids_leaves_one_copy_in_every_tier() {
    let app = TestApp::spawn().await;
    let batch = json!([event("auth", "acme"), event("api", "acme"), event("financial", "acme")]);
    for _ in 0..2 {
        assert_eq!(app.post_events(&batch).await.status(), 200);
    }
    // Concurrent retries race each other through different writers.
    let retries = (0..6).map(|_| app.post_events(&batch));
    for response in join_all(retries).await {
        assert_eq!(response.status(), 200);
    }
    // The same ids again, inside one request.
    let doubled = json!([batch[0], batch[0], batch[1]]);
    assert_eq!(app.post_events(&doubled).await.status(), 200);
    // New ids, each twice in one request: the first push of an id keeps one copy.
    let fresh = [event("auth", "acme"), event("api", "acme")];
    let twice = json!([fresh[0], fresh[1], fresh[0], fresh[1]]);
    assert_eq!(app.post_events(&twice).await.status(), 200);

    assert_eq!(app.count_rows("audit_logs", "acme").await, 2);
    assert_eq!(app.count_rows("financial_audit_logs", "acme").await, 1);
    assert_eq!(app.redis.list("acme", Category::Auth).len(), 2);
    assert_eq!(app.redis.list("acme", Category::Api).len(), 2);
    assert_eq!(app.redis.list("acme", Category::Financial).len(), 1);
    assert_eq!(app.file_lines().len(), 5);
    app.stop().await;
}

#[tokio::test]
async fn a_thousand_events_of_one_list_are_pushed_once_each_in_order_even_when_resent() {
    // More events for one list than the push script handles in one step (500).
    let app = TestApp::spawn().await;
    let batch: Vec<Value> = (0..1000).map(|_| event("api", "bulk")).collect();
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    let mixed: Vec<Value> = batch[400..700].iter().cloned().chain((0..300).map(|_| event("api", "bulk"))).collect();
    assert_eq!(app.post_events(&json!(mixed)).await.status(), 200);
    let held: Vec<Value> = app.redis.list("bulk", Category::Api).into_iter().map(|l| l["id"].clone()).collect();
    let expected: Vec<Value> = batch.iter().chain(&mixed[300..]).rev().map(|e| e["id"].clone()).collect();
    assert_eq!(held, expected, "every event once, newest first");
    app.stop().await;
}

#[tokio::test]
async fn the_same_id_in_two_tenants_is_two_events() {
    let app = TestApp::spawn().await;
    let mut first = event("auth", "tenant-a");
    let mut second = first.clone();
    second["tenant_id"] = json!("tenant-b");
    first["message"] = json!("a");
    assert_eq!(app.post_events(&json!([first, second])).await.status(), 200);
    assert_eq!(app.count_rows("audit_logs", "tenant-a").await, 1);
    assert_eq!(app.count_rows("audit_logs", "tenant-b").await, 1);
    assert_eq!(app.file_lines().len(), 2);
    app.stop().await;
}
