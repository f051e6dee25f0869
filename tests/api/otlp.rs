//! `POST /v1/logs`: OpenTelemetry logs (OTLP/HTTP) from real OpenTelemetry SDKs —
//! Python's (protobuf, plain and gzip) and JavaScript's (JSON) — and from hand-built
//! requests for the refusals: every record lands in its tiers with its fields,
//! records that cannot be mapped are refused through partial success, and bad
//! payloads get the native endpoint's 4xx errors and write nothing.

use std::process::Command;

use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use serde_json::Value;
use tierlog::event::Category;

use crate::helpers::{TestApp, KEY};

fn tools() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools")
}

fn python() -> std::path::PathBuf {
    let path = std::env::var("TIERLOG_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test.sh (it installs the OpenTelemetry SDK into .tools/venv), or set TIERLOG_TEST_PYTHON",
        path.display()
    );
    path
}

/// Runs a tool against `app` and returns what it printed.
async fn run_tool(mut command: Command, app: &TestApp, run: &str) -> Value {
    command.env("TIERLOG_URL", &app.address).env("TIERLOG_KEY", KEY).env("RUN", run).current_dir(tools());
    let output = tokio::task::spawn_blocking(move || command.output().expect("the tool runs")).await.expect("tool task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the tool failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().expect("the tool printed a line")).expect("the tool printed JSON")
}

/// The events of the run `run` in the service's files.
fn filed(app: &TestApp, run: &str) -> Vec<Value> {
    app.file_lines().into_iter().filter(|e| e["details"]["run"] == run).collect()
}

fn find<'a>(events: &'a [Value], action: &str) -> &'a Value {
    events.iter().find(|e| e["action"] == action).unwrap_or_else(|| panic!("no {action} among {events:#?}"))
}

#[tokio::test]
async fn the_python_sdk_sends_audit_events_over_protobuf_plain_and_gzip() {
    let app = TestApp::spawn_with(|s| s.detection.enabled = false).await;
    for compression in ["none", "gzip"] {
        let run = format!("py-{compression}");
        let mut command = Command::new(python());
        command.arg("otlp_python.py").env("COMPRESSION", compression);
        let printed = run_tool(command, &app, &run).await;

        let events = filed(&app, &run);
        // Four records mapped; the one without a category was refused.
        assert_eq!(events.len(), 4, "{events:#?}");
        let login = find(&events, "auth.login_failed");
        assert_eq!(login["category"], "auth");
        assert_eq!(login["status"], "failure");
        assert_eq!(login["level"], "WARNING");
        assert_eq!(login["message"], "invalid password");
        assert_eq!(login["user_id"], "alice");
        assert_eq!(login["ip_address"], "203.0.113.7");
        assert_eq!(login["user_agent"], "python-requests/2.32");
        assert_eq!(login["tenant_id"], "otel-tenant");
        assert_eq!(login["application"], "billing-portal");
        assert_eq!(login["logger"], "app.audit");
        assert_eq!(login["details"]["attempt"], 3);
        assert_eq!(login["details"]["trace_id"], printed["trace_id"]);
        assert_eq!(login["details"]["span_id"], printed["span_id"]);
        let role = find(&events, "user.role_changed");
        assert_eq!(role["changes"]["before"]["role"], "member");
        assert_eq!(role["changes"]["after"]["role"], "admin");
        assert_eq!(role["level"], "INFO");
        assert_eq!(role["resource_id"], "bob");
        let transfer = find(&events, "payment.transfer");
        assert_eq!(transfer["financial"]["amount"], "1250.00");
        assert_eq!(transfer["financial"]["currency"], "EUR");
        let limited = find(&events, "security.rate_limited");
        assert_eq!(limited["level"], "ERROR");
        assert_eq!(limited["security"]["severity"], "high");

        // The database tiers hold the persisted categories...
        for (table, action) in [
            ("audit_logs", "auth.login_failed"),
            ("audit_logs", "user.role_changed"),
            ("security_events", "security.rate_limited"),
            ("financial_audit_logs", "payment.transfer"),
        ] {
            let id: uuid::Uuid = find(&events, action)["id"].as_str().unwrap().parse().unwrap();
            let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE id = $1"))
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .expect("count");
            assert_eq!(rows, 1, "{action} in {table}");
        }
        // ...and Redis the hot view, with the same event.
        let hot = app.redis.list("otel-tenant", Category::Auth);
        assert!(hot.iter().any(|e| e["id"] == login["id"] && e["ip_address"] == "203.0.113.7"), "{hot:#?}");
    }
    // Two runs of four mapped records each, nothing more.
    assert_eq!(app.file_lines().iter().filter(|e| e["tenant_id"] == "otel-tenant").count(), 8);
    app.stop().await;
}

#[tokio::test]
async fn the_javascript_sdk_sends_audit_events_as_otlp_json() {
    let app = TestApp::spawn_with(|s| s.detection.enabled = false).await;
    let mut command = Command::new("node");
    command.arg("otlp-js.mjs");
    run_tool(command, &app, "js").await;
    let events = filed(&app, "js");
    assert_eq!(events.len(), 2, "{events:#?}");
    let locked = find(&events, "auth.account_locked");
    assert_eq!(locked["user_id"], "carol");
    assert_eq!(locked["ip_address"], "192.0.2.44");
    assert_eq!(locked["tenant_id"], "otel-js");
    assert_eq!(locked["application"], "web-shop");
    assert_eq!(locked["logger"], "shop.audit");
    assert_eq!(locked["level"], "WARNING");
    assert_eq!(locked["details"]["failures"], 5);
    let deleted = find(&events, "invoice.deleted");
    assert_eq!(deleted["message"], "invoice deleted");
    assert_eq!(deleted["resource_id"], "inv-7");
    assert_eq!(deleted["changes"]["before"]["status"], "draft");
    assert_eq!(app.count_rows("audit_logs", "otel-js").await, 2);
    app.stop().await;
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

fn record(category: &str, user: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64,
        severity_number: 9,
        body: Some(AnyValue { value: Some(any_value::Value::StringValue("signed in".into())) }),
        attributes: vec![text("category", category), text("action", "auth.login"), text("tenant_id", "acme"), text("user_id", user)],
        ..Default::default()
    }
}

fn export(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs { scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }], ..Default::default() }],
    }
}

async fn post(app: &TestApp, content_type: &str, body: Vec<u8>, key: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/logs", app.address))
        .header("content-type", content_type)
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn unmappable_records_are_refused_through_partial_success_and_the_rest_is_durable() {
    let app = TestApp::spawn_with(|s| s.detection.enabled = false).await;
    let request = export(vec![record("auth", "u-1"), record("nonsense", "u-2"), record("auth", "u-3")]);
    let response = post(&app, "application/x-protobuf", request.encode_to_vec(), KEY).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let answer = ExportLogsServiceResponse::decode(response.bytes().await.unwrap()).expect("an OTLP response");
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(partial.error_message.contains("log record 1: category"), "{}", partial.error_message);
    assert_eq!(app.count_rows("audit_logs", "acme").await, 2);
    // An exporter sending the same request again (its ack lost) stores nothing twice:
    // a record without an id gets one made from its content.
    let again = post(&app, "application/x-protobuf", request.encode_to_vec(), KEY).await;
    assert_eq!(again.status(), 200);
    assert_eq!(app.count_rows("audit_logs", "acme").await, 2);

    // All accepted: no partial success, in JSON too.
    let json = serde_json::to_vec(&export(vec![record("auth", "u-4")])).unwrap();
    let response = post(&app, "application/json", json, KEY).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(answer.get("partialSuccess").is_none_or(Value::is_null), "{answer}");
    assert_eq!(app.count_rows("audit_logs", "acme").await, 3);
    app.stop().await;
}

#[tokio::test]
async fn bad_otlp_payloads_get_4xx_and_write_nothing() {
    let app = TestApp::spawn_with(|s| {
        s.detection.enabled = false;
        s.limits.max_batch_events = 3;
    })
    .await;
    // Making a key is itself audited: rows are counted from here.
    let (_, reader) = app.create_key(serde_json::json!({"name": "reader", "permissions": ["logs.auth.view"]})).await;
    let rows = app.count_all_rows().await;
    let good = export(vec![record("auth", "u-1")]);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("application/x-protobuf", b"{\"resourceLogs\":[]}".to_vec(), 400, "not an OTLP ExportLogsServiceRequest in protobuf"),
        ("application/json", b"\x0a\x02\x0a\x00".to_vec(), 400, "not an OTLP ExportLogsServiceRequest in JSON"),
        // An audit event is not an export request.
        ("application/json", br#"{"category":"auth","action":"auth.login"}"#.to_vec(), 400, "unknown field `category`"),
        ("text/plain", good.encode_to_vec(), 415, "application/x-protobuf"),
        (
            "application/x-protobuf",
            export((0..4).map(|i| record("auth", &format!("u-{i}"))).collect()).encode_to_vec(),
            413,
            "4 log records",
        ),
    ];
    for (content_type, body, status, says) in cases {
        let response = post(&app, content_type, body, KEY).await;
        assert_eq!(response.status(), status, "{content_type}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"]["message"].as_str().unwrap().contains(says), "{answer}");
    }
    // Not gzip although it says so; no key; a key without events.write.
    let response = app
        .client
        .post(format!("{}/v1/logs", app.address))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .bearer_auth(KEY)
        .body(good.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = app.client.post(format!("{}/v1/logs", app.address)).header("content-type", "application/x-protobuf").body(good.encode_to_vec()).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(post(&app, "application/x-protobuf", good.encode_to_vec(), &reader).await.status(), 403);
    assert_eq!(app.count_all_rows().await, rows);
    assert!(app.file_lines().iter().all(|e| e["tenant_id"] != "acme"));
    app.stop().await;
}
