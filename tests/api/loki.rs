//! The direct push to Loki (`loki.push_url`), against a real HTTP receiver in the
//! test that holds each request to Loki's push format (protobuf `PushRequest` of
//! Loki's `push.proto`, snappy-compressed; the messages are written out here from
//! the .proto, apart from tierlog's own):
//! every event pushed once with the shippers' labels and structured metadata,
//! pushes retried while the receiver fails, and ingest never held up by it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use prost::Message;
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
        // Loki's push API: protobuf, snappy-compressed (block format).
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("a snappy body");
        let request = PushRequest::decode(raw.as_slice()).expect("a logproto.PushRequest");
        self.taken.lock().unwrap().push(check_push_format(&request));
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

/// `logproto.PushRequest`, `StreamAdapter`, `EntryAdapter`, `LabelPairAdapter` and
/// `google.protobuf.Timestamp`, from Loki's `pkg/push/push.proto`.
#[derive(Clone, PartialEq, prost::Message)]
struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    streams: Vec<Stream>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Stream {
    #[prost(string, tag = "1")]
    labels: String,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<Entry>,
    #[prost(uint64, tag = "3")]
    hash: u64,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Entry {
    #[prost(message, optional, tag = "1")]
    timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    line: String,
    #[prost(message, repeated, tag = "3")]
    structured_metadata: Vec<LabelPair>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Timestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}
#[derive(Clone, PartialEq, prost::Message)]
struct LabelPair {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// Checks a push against what Loki accepts (labels in Prometheus form with valid
/// names, a time on every entry, metadata names valid) and returns it as JSON:
/// `{"streams": [{"stream": {label: value}, "values": [[ns, line, {metadata}]]}]}`.
fn check_push_format(request: &PushRequest) -> Value {
    let valid_name = |name: &str| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut streams = Vec::new();
    for stream in &request.streams {
        let inner = stream.labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).expect("labels in braces");
        let mut labels = serde_json::Map::new();
        for pair in inner.split(", ") {
            let (name, value) = pair.split_once('=').expect("name=value");
            assert!(valid_name(name), "label name {name}");
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).expect("a quoted value");
            labels.insert(name.into(), Value::String(value.into()));
        }
        assert!(!stream.entries.is_empty());
        let values: Vec<Value> = stream
            .entries
            .iter()
            .map(|entry| {
                let time = entry.timestamp.as_ref().expect("every entry has a time");
                assert!((0..1_000_000_000).contains(&time.nanos));
                let metadata: serde_json::Map<String, Value> = entry
                    .structured_metadata
                    .iter()
                    .map(|pair| {
                        assert!(valid_name(&pair.name), "metadata name {}", pair.name);
                        (pair.name.clone(), Value::String(pair.value.clone()))
                    })
                    .collect();
                json!([(time.seconds as i128 * 1_000_000_000 + time.nanos as i128).to_string(), entry.line, metadata])
            })
            .collect();
        streams.push(json!({"stream": labels, "values": values}));
    }
    json!({"streams": streams})
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
