//! Mixing backends: with no REDIS_URL the hot tier lives in the process, with the
//! same API behaviour as Redis.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{event, TestApp, KEY};

#[tokio::test]
async fn without_a_redis_url_the_hot_tier_lives_in_the_process() {
    let app = TestApp::spawn_with(|s| s.redis.url = String::new()).await;
    let batch = json!([event("auth", "acme"), event("api", "acme"), event("auth", "beta")]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
    assert_eq!(app.post_events(&batch).await.status(), 200, "a retry with the same ids");
    assert!(app.redis.keys().is_empty(), "nothing went to Redis");

    let (status, ready) = app.send_json(Method::GET, "/readyz", KEY, None).await;
    assert_eq!((status, ready["status"].clone(), ready["hot_tier"].clone()), (200, json!("ready"), json!("memory")), "{ready}");
    // Only the backends this node has, each under its own name.
    assert_eq!((ready["memory"]["status"].clone(), ready["postgres"]["status"].clone()), (json!("up"), json!("up")), "{ready}");
    assert!(ready.get("redis").is_none() && ready.get("sqlite").is_none(), "{ready}");

    let (status, hot) = app.send_json(Method::GET, "/audit/redis?tenant_id=acme", KEY, None).await;
    assert_eq!(status, 200, "{hot}");
    let items = hot["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "each event once: {hot}");
    assert!(items.iter().all(|i| i["tiers"] == json!(["memory"]) && i["tenant_id"] == "acme"));

    let (_, combined) = app.send_json(Method::GET, "/audit/combined?tenant_id=acme", KEY, None).await;
    let tiers: Vec<Value> = combined["items"].as_array().expect("items").iter().map(|i| i["tiers"].clone()).collect();
    assert!(tiers.contains(&json!(["memory", "postgres"])), "{combined}");
    assert!(tiers.contains(&json!(["memory"])), "the api event is in the hot tier only: {combined}");

    // Erasure reaches the in-process lists too.
    let (status, receipt) = app.send_json(Method::POST, "/audit/subjects/u-1/erase?tenant_id=acme", KEY, None).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["redis_entries"], 2, "{receipt}");
    let (_, after) = app.send_json(Method::GET, "/audit/redis?tenant_id=acme", KEY, None).await;
    for item in after["items"].as_array().expect("items") {
        assert!(item.get("username").is_none() && item["user_id"] != "u-1", "{item}");
    }
    app.stop().await;
}

#[tokio::test]
async fn redis_with_the_embedded_store_when_only_redis_url_is_set() {
    let app = TestApp::spawn_with(|s| {
        s.postgres.url = String::new();
        s.embedded.data_dir = s.files.path.with_file_name("data");
    })
    .await;
    let batch = json!([event("auth", "acme"), event("api", "acme")]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
    assert_eq!(app.redis.list("acme", tierlog::event::Category::Auth).len(), 1, "the hot tier is Redis");
    let (_, ready) = app.send_json(Method::GET, "/readyz", KEY, None).await;
    assert_eq!((ready["database"].clone(), ready["hot_tier"].clone()), (json!("sqlite"), json!("redis")), "{ready}");
    assert_eq!((ready["sqlite"]["status"].clone(), ready["redis"]["status"].clone()), (json!("up"), json!("up")), "{ready}");
    assert!(ready.get("postgres").is_none() && ready.get("memory").is_none(), "{ready}");
    let (_, combined) = app.send_json(Method::GET, "/audit/combined?tenant_id=acme", KEY, None).await;
    let tiers: Vec<Value> = combined["items"].as_array().expect("items").iter().map(|i| i["tiers"].clone()).collect();
    assert!(tiers.contains(&json!(["redis", "sqlite"])) && tiers.contains(&json!(["redis"])), "{combined}");
    assert_eq!(app.verify_all().await["ok"], true);
    app.stop().await;
}
