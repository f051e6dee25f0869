//! The direct push to Loki (`loki.push_url`), against a real HTTP receiver in the
//! test that holds each request to Loki's documented push format (JSON, gzip):
//! every event pushed once with the shippers' labels and structured metadata,
//! pushes retried while the receiver fails, and ingest never held up by it.

use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{eventually, event, TestApp, KEY};

/// A stand-in for Loki's push endpoint: it answers `fail_first` requests with 503,
/// then 204, or sleeps `hang` before answering, and keeps every request it took.
#[derive(Clone, Default)]
struct Receiver {
    taken: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
    fail_first: usize,
    hang: Option<Duration>,
}

impl Receiver {
    async fn start(self) -> (String, Receiver) {
        let state = self.clone();
        let app = axum::Router::new().route(
            "/loki/api/v1/push",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { state.take(headers, body).await }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/loki/api/v1/push", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, self)
    }

    async fn take(&self, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(hang) = self.hang {
            tokio::time::sleep(hang).await;
        }
        if n < self.fail_first {
            return (StatusCode::SERVICE_UNAVAILABLE, "ingester not ready".into());
        }
        // Loki's push API: JSON, here gzip-compressed.
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["content-encoding"], "gzip");
        let mut text = String::new();
        flate2::read::GzDecoder::new(body.as_ref()).read_to_string(&mut text).expect("a gzip body");
        let request: Value = serde_json::from_str(&text).expect("a JSON body");
        check_push_format(&request);
        self.taken.lock().unwrap().push(request);
        (StatusCode::NO_CONTENT, String::new())
    }

    /// Every pushed entry: its labels, time, line (as JSON) and metadata.
    fn entries(&self) -> Vec<(Value, String, Value, Value)> {
        let mut out = Vec::new();
        for request in self.taken.lock().unwrap().iter() {
            for stream in request["streams"].as_array().unwrap() {
                for value in stream["values"].as_array().unwrap() {
                    let line: Value = serde_json::from_str(value[1].as_str().unwrap()).expect("each line is an event");
                    out.push((stream["stream"].clone(), value[0].as_str().unwrap().to_owned(), line, value[2].clone()));
                }
            }
        }
        out
    }
}

/// Loki's documented push body: `{"streams": [{"stream": {label: value},
/// "values": [[ns, line, {metadata}?]]}]}`, every label and metadata value a
/// string and every time a string of nanoseconds.
fn check_push_format(request: &Value) {
    let object = request.as_object().expect("an object");
    assert_eq!(object.keys().collect::<Vec<_>>(), ["streams"]);
    for stream in request["streams"].as_array().expect("streams is an array") {
        assert_eq!(stream.as_object().unwrap().len(), 2, "{stream}");
        let labels = stream["stream"].as_object().expect("stream is an object");
        assert!(!labels.is_empty() && labels.values().all(Value::is_string), "{labels:?}");
        for value in stream["values"].as_array().expect("values is an array") {
            let entry = value.as_array().expect("an entry is an array");
            assert!(entry.len() == 2 || entry.len() == 3, "{value}");
            let ns = entry[0].as_str().expect("the time is a string");
            assert!(!ns.is_empty() && ns.bytes().all(|b| b.is_ascii_digit()), "{ns}");
            assert!(entry[1].is_string());
            if let Some(metadata) = entry.get(2) {
                assert!(metadata.as_object().expect("metadata is an object").values().all(Value::is_string), "{metadata}");
            }
        }
    }
}

async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.client.get(format!("{}/metrics", app.address)).bearer_auth(KEY).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn every_event_is_pushed_once_in_lokis_format_with_the_shippers_labels() {
    let (url, receiver) = Receiver::default().start().await;
    let app = TestApp::spawn_with(|s| {
        s.detection.enabled = false;
        s.loki.push_url = url;
        s.loki.batch_wait_ms = 50;
    })
    .await;
    let mut events = Vec::new();
    for (i, category) in ["auth", "security", "financial", "api", "error"].iter().enumerate() {
        let mut e = event(category, "acme");
        e["request_id"] = json!(format!("req-{i}"));
        if *category == "security" {
            e["security"] = json!({"event_type": "rate_limited"});
        }
        if *category == "financial" {
            e["financial"] = json!({"transaction_id": "tx-1", "amount": "10.00", "currency": "EUR"});
        }
        events.push(e);
    }
    assert_eq!(app.post_events(&Value::Array(events.clone())).await.status(), 200);
    assert!(eventually(Duration::from_secs(10), || receiver.entries().len() >= events.len()).await);
    let entries = receiver.entries();
    assert_eq!(entries.len(), events.len(), "each event once");
    let files = app.file_lines();
    for sent in &events {
        let (labels, ns, line, metadata) = entries.iter().find(|(_, _, line, _)| line["id"] == sent["id"]).expect("pushed");
        let filed = files.iter().find(|f| f["id"] == sent["id"]).expect("filed");
        // The same line as the files, at its received_at, with the shippers' labels.
        assert_eq!(line, filed);
        let received = chrono::DateTime::parse_from_rfc3339(filed["received_at"].as_str().unwrap()).unwrap();
        assert_eq!(ns, &received.timestamp_nanos_opt().unwrap().to_string());
        assert_eq!(labels, &json!({"service": "tierlog", "category": sent["category"], "level": filed["level"], "status": filed["status"]}));
        assert_eq!(metadata["id"], sent["id"]);
        assert_eq!(metadata["tenant_id"], "acme");
        assert_eq!(metadata["request_id"], sent["request_id"]);
        assert_eq!(metadata["event_time"], filed["timestamp"]);
    }
    assert_eq!(metric(&app, "tierlog_loki_pushed_lines_total").await, events.len() as u64);
    assert_eq!(metric(&app, "tierlog_loki_dropped_lines_total").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_failing_loki_is_retried_until_it_takes_the_lines() {
    let (url, receiver) = Receiver { fail_first: 3, ..Default::default() }.start().await;
    let app = TestApp::spawn_with(|s| {
        s.detection.enabled = false;
        s.loki.push_url = url;
        s.loki.batch_wait_ms = 20;
        s.loki.retry_base_ms = 20;
    })
    .await;
    let events: Vec<Value> = (0..20).map(|_| event("auth", "acme")).collect();
    assert_eq!(app.post_events(&Value::Array(events.clone())).await.status(), 200);
    assert!(eventually(Duration::from_secs(10), || receiver.entries().len() >= events.len()).await);
    assert!(receiver.requests.load(Ordering::SeqCst) >= 4);
    assert_eq!(receiver.entries().len(), events.len());
    assert!(metric(&app, "tierlog_loki_retries_total").await >= 3);
    assert_eq!(metric(&app, "tierlog_loki_pushed_lines_total").await, events.len() as u64);
    app.stop().await;
}

#[tokio::test]
async fn a_hanging_loki_never_holds_up_ingest_and_what_cannot_wait_is_counted() {
    let (url, _receiver) = Receiver { hang: Some(Duration::from_secs(30)), ..Default::default() }.start().await;
    let app = TestApp::spawn_with(|s| {
        s.detection.enabled = false;
        s.loki.push_url = url;
        s.loki.batch_wait_ms = 10;
        s.loki.batch_lines = 10;
        s.loki.queue_lines = 50;
        s.loki.timeout_ms = 60_000;
    })
    .await;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let batch: Vec<Value> = (0..10).map(|_| event("auth", "acme")).collect();
        assert_eq!(app.post_events(&Value::Array(batch)).await.status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "ingest waited for Loki: {:?}", started.elapsed());
    // 200 events: 50 lines wait (the first push among them, hanging), the other 150
    // are left out of the push and counted.
    assert_eq!(metric(&app, "tierlog_loki_dropped_lines_total").await, 150);
    assert_eq!(app.count_rows("audit_logs", "acme").await, 200);
    drop(app);
}
