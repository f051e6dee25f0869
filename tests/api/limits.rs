//! Per-key rate limits: 429 with Retry-After once a key's burst is spent, other
//! keys unaffected, nothing written for a refused request.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{event, TestApp, KEY};

#[tokio::test]
async fn a_key_beyond_its_rate_gets_429_with_retry_after_and_nothing_is_written() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.requests_per_second = 0.1;
        s.rate_limit.burst = 4;
    })
    .await;
    // The bootstrap key creates one key (1 of its 4).
    let (_, writer) = app.create_key(json!({"name": "w", "tenant_id": "acme", "permissions": ["events.write"]})).await;
    for _ in 0..4 {
        assert_eq!(app.post_with(&writer, &event("auth", "acme")).await.status(), 200);
    }
    let refused_event = event("auth", "acme");
    let refused = app.post_with(&writer, &refused_event).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE tenant_id = 'acme' AND category = 'auth'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(written, 4, "the refused event was not written");
    assert!(app.file_lines().iter().all(|l| l["id"] != refused_event["id"]));
    // Another key still has its own budget.
    let (status, _) = app.send_json(Method::GET, "/audit/logs?tenant_id=acme", KEY, None).await;
    assert_eq!(status, 200);
    app.stop().await;
}
