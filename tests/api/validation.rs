//! Bad input of every kind gets its 4xx, a JSON error envelope, and writes nothing.

use serde_json::{json, Value};

use crate::helpers::{event, TestApp, KEY};

async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(app.count_all_rows().await, 0, "no row may be written");
    assert!(app.redis.keys().is_empty(), "no Redis key may be written");
    assert!(app.file_lines().is_empty(), "no file line may be written");
}

async fn error_body(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON error envelope")
}

#[tokio::test]
async fn a_batch_with_one_bad_item_is_refused_whole_naming_index_and_field() {
    let app = TestApp::spawn().await;
    let mut bad = event("auth", "acme");
    bad["ip_address"] = json!("300.1.2.3");
    bad["id"] = json!("nope");
    let response = app.post_events(&json!([event("auth", "acme"), event("api", "acme"), bad])).await;
    assert_eq!(response.status(), 400);
    let body = error_body(response).await;
    assert_eq!(body["error"]["code"], "validation_failed");
    let fields = body["error"]["fields"].as_array().expect("fields");
    let named: Vec<(u64, &str)> =
        fields.iter().map(|f| (f["index"].as_u64().unwrap_or(99), f["field"].as_str().unwrap_or(""))).collect();
    assert_eq!(named, vec![(2, "id"), (2, "ip_address")]);
    assert!(fields.iter().all(|f| f["reason"].as_str().is_some_and(|r| !r.is_empty())));
    assert_nothing_written(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn every_kind_of_bad_input_gets_its_status_and_writes_nothing() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_event_bytes = 2048;
        s.limits.max_request_bytes = 64 * 1024;
        s.limits.max_batch_events = 50;
        s.ingest.queue_capacity = 50;
    })
    .await;
    let valid = serde_json::to_vec(&event("auth", "acme")).expect("json");
    let mut huge_event = event("auth", "acme");
    huge_event["message"] = json!("x".repeat(3000));
    let too_many: Vec<Value> = (0..51).map(|_| event("api", "acme")).collect();
    let oversized_body = format!("[{}]", vec![String::from_utf8(valid.clone()).expect("utf8"); 200].join(","));
    let mut deep = json!("leaf");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    // (case, content type, body, key, expected status, expected error code)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no key", "application/json", valid.clone(), None, 401, "unauthorized"),
        ("wrong key", "application/json", valid.clone(), Some("not-the-key-at-all"), 401, "unauthorized"),
        ("text/plain", "text/plain", valid.clone(), Some(KEY), 415, "unsupported_media_type"),
        ("form", "application/x-www-form-urlencoded", valid.clone(), Some(KEY), 415, "unsupported_media_type"),
        ("not json", "application/json", b"{\"category\": ".to_vec(), Some(KEY), 400, "bad_request"),
        ("empty", "application/json", Vec::new(), Some(KEY), 400, "bad_request"),
        ("empty ndjson", "application/x-ndjson", b"\n\n".to_vec(), Some(KEY), 400, "bad_request"),
        ("a number", "application/json", b"42".to_vec(), Some(KEY), 400, "validation_failed"),
        ("bad ndjson line", "application/x-ndjson", [valid.clone(), b"\n{oops".to_vec()].concat(), Some(KEY), 400, "bad_request"),
        ("deep nesting", "application/json", serde_json::to_vec(&json!({"category": "api", "details": {"d": deep}})).expect("json"), Some(KEY), 400, "bad_request"),
        ("huge number", "application/json", br#"{"category":"api","details":{"n":1e999}}"#.to_vec(), Some(KEY), 400, "validation_failed"),
        ("unknown category", "application/json", br#"{"category":"weird"}"#.to_vec(), Some(KEY), 400, "validation_failed"),
        ("wrong type", "application/json", br#"{"category":"auth","user_id":12}"#.to_vec(), Some(KEY), 400, "validation_failed"),
        ("bad timestamp", "application/json", br#"{"category":"auth","timestamp":"2026-13-45"}"#.to_vec(), Some(KEY), 400, "validation_failed"),
        ("unknown field", "application/json", br#"{"category":"auth","pasword":"x"}"#.to_vec(), Some(KEY), 400, "validation_failed"),
        ("event too large", "application/json", serde_json::to_vec(&huge_event).expect("json"), Some(KEY), 413, "payload_too_large"),
        ("too many events", "application/json", serde_json::to_vec(&too_many).expect("json"), Some(KEY), 413, "payload_too_large"),
        ("body too large", "application/json", oversized_body.into_bytes(), Some(KEY), 413, "payload_too_large"),
    ];
    for (name, content_type, body, key, status, code) in cases {
        let response = app.post_raw(content_type, body, key).await;
        assert_eq!(response.status().as_u16(), status, "case {name}");
        let body = error_body(response).await;
        assert_eq!(body["error"]["code"], code, "case {name}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "case {name}");
    }
    assert_nothing_written(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_body_without_content_length_over_the_limit_is_refused_with_413() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_request_bytes = 4096;
    })
    .await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = app
        .client
        .post(format!("{}/audit/events", app.address))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 413);
    assert_nothing_written(&app).await;
    app.stop().await;
}
