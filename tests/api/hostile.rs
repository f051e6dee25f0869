//! Hostile clients against the running service: injection through every string
//! field and header, invalid UTF-8, huge numbers, deep nesting, slow clients and
//! many connections. Whatever they send, the files, Redis and Postgres hold exactly
//! what was accepted, escaped, and nothing of what was refused.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tierlog::event::Category;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{event, TestApp, KEY};

/// Strings built to break line-oriented and JSON consumers.
const INJECTIONS: [&str; 6] = [
    "ok\n{\"id\":\"00000000-0000-0000-0000-000000000000\",\"category\":\"admin\",\"message\":\"forged\"}",
    "carriage\rreturn and a\u{2028}line separator\u{2029}",
    "\u{1b}[31mred\u{1b}[0m \u{7}bell \u{8}backspace \u{7f}delete",
    "bidi \u{202e}gnp.exe\u{202c} and \u{feff}bom",
    "quote \" backslash \\ slash / tab \t",
    "emoji \u{1F600} and astral \u{10FFFF}",
];

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Sends raw bytes and reads whatever comes back until the server closes or `wait`.
async fn raw_exchange(app: &TestApp, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(host(app)).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn control_characters_in_every_string_field_reach_files_and_redis_escaped_and_intact() {
    let app = TestApp::spawn().await;
    let mut sent = Vec::new();
    for (i, text) in INJECTIONS.iter().enumerate() {
        let mut item = event("auth", "acme");
        // Every free-text field (action is a dotted name, validated).
        for field in ["message", "username", "resource", "resource_id", "user_agent", "request_id", "session_id", "logger", "application"] {
            item[field] = json!(format!("{field} {text}"));
        }
        item["details"] = json!({ format!("key {text}"): text, "nested": {"list": [text, i]} });
        item["changes"] = json!({"before": {"role": text}, "after": {"role": "admin"}});
        sent.push(item);
    }
    let response = app.post_events(&json!(sent)).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());

    // The files: one line per event, no raw control byte, every value intact.
    let raw: Vec<u8> = std::fs::read_dir(app.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .flat_map(|p| std::fs::read(p).expect("read"))
        .collect();
    assert_eq!(raw.iter().filter(|b| **b == b'\n').count(), sent.len(), "one line per event, whatever the values");
    assert!(!raw.iter().any(|b| *b < 0x20 && *b != b'\n'), "no raw control byte reaches a file");
    let lines = app.file_lines();
    let redis = app.redis.list("acme", Category::Auth);
    for item in &sent {
        for held in [&lines, &redis] {
            let found = held.iter().find(|l| l["id"] == item["id"]).expect("the event is held");
            for field in ["message", "username", "resource", "resource_id", "user_agent", "request_id", "session_id", "details", "changes"] {
                assert_eq!(found[field], item[field], "{field} is stored exactly as sent");
            }
        }
    }
    // Postgres holds the same, and the chain over it verifies.
    let messages: Vec<String> = sqlx::query_scalar("SELECT message FROM audit_logs ORDER BY seq").fetch_all(&app.pool).await.expect("rows");
    let expected: Vec<String> = sent.iter().map(|i| i["message"].as_str().expect("message").to_owned()).collect();
    assert_eq!(messages, expected);
    assert_eq!(app.verify_all().await["ok"], true);
    app.stop().await;
}

#[tokio::test]
async fn invalid_utf8_nul_and_malformed_bodies_are_refused_and_write_nothing() {
    let app = TestApp::spawn().await;
    let mut bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{\"category\":\"auth\",\"tenant_id\":\"acme\",\"message\":\"bad \xff\xfe byte\"}".to_vec()),
        ("application/x-ndjson", b"{\"category\":\"auth\",\"tenant_id\":\"acme\"}\n{\"category\":\"auth\",\"message\":\"\xc3\x28\"}\n".to_vec()),
        ("application/json", b"{\"category\":\"auth\",\"tenant_id\":\"acme\",\"message\":\"nul \\u0000 inside\"}".to_vec()),
        ("application/json", b"{\"category\":\"auth\",\"tenant_id\":\"acme\",\"message\":\"lone \\ud800 surrogate\"}".to_vec()),
        ("application/json", b"{\"category\":\"auth\",\"tenant_id\":\"acme\"".to_vec()),
        ("application/json", b"[{\"category\":\"auth\",\"tenant_id\":\"acme\"},]".to_vec()),
    ];
    // 20,000 nested arrays (within the size limit): refused, not a stack overflow.
    let mut deep = vec![b'['; 20_000];
    deep.extend(vec![b']'; 20_000]);
    bodies.push(("application/json", deep));
    for (content_type, body) in bodies {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let response = app.post_raw(content_type, body, Some(KEY)).await;
        assert_eq!(response.status(), 400, "{shown}");
        let error: Value = response.json().await.expect("json error");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    }
    assert!(app.file_lines().is_empty(), "nothing refused reaches the files");
    assert_eq!(app.count_all_rows().await, 0, "nothing refused reaches Postgres");
    assert!(app.redis.keys().is_empty(), "nothing refused reaches Redis");
    app.stop().await;
}

#[tokio::test]
async fn huge_numbers_are_kept_exactly_and_nesting_beyond_the_limit_is_refused() {
    let app = TestApp::spawn().await;
    let mut item = event("financial", "acme");
    let numbers = r#"{"max_u64": 18446744073709551615, "min_i64": -9223372036854775808, "big": 1.7976931348623157e308,
        "awkward": -9.827569069976755e279, "tiny": 5e-324, "third": 0.30000000000000004}"#;
    item["details"] = serde_json::from_str(numbers).expect("numbers");
    let response = app.post_raw("application/json", serde_json::to_vec(&item).expect("json"), Some(KEY)).await;
    assert_eq!(response.status(), 200);
    let line = app.file_lines().pop().expect("line");
    assert_eq!(line["details"], item["details"], "the file keeps every number exactly");
    let stored: Value = sqlx::query_scalar("SELECT details FROM financial_audit_logs").fetch_one(&app.pool).await.expect("row");
    assert_eq!(stored, item["details"], "Postgres keeps every number exactly");
    assert_eq!(app.verify_all().await["ok"], true, "numbers read back from Postgres hash as written");

    // Beyond f64: refused with a reason, not rounded to infinity.
    let response = app
        .post_raw("application/json", br#"{"category":"auth","tenant_id":"acme","details":{"n":1e400}}"#.to_vec(), Some(KEY))
        .await;
    assert_eq!(response.status(), 400);

    let nest = |levels: usize| (0..levels).fold(json!("leaf"), |inner, _| json!({ "a": inner }));
    let mut shallow = event("auth", "acme");
    shallow["details"] = nest(15);
    assert_eq!(app.post_events(&shallow).await.status(), 200, "15 levels are within the limit of 16");
    let mut deep = event("auth", "acme");
    deep["details"] = nest(40);
    let response = app.post_events(&deep).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["fields"][0]["field"], "details", "{error}");
    let ids: Vec<Value> = app.file_lines().into_iter().map(|l| l["id"].clone()).collect();
    assert!(ids.contains(&shallow["id"]) && !ids.contains(&deep["id"]), "the refused event is nowhere");
    app.stop().await;
}

#[tokio::test]
async fn injected_headers_are_recorded_verbatim_and_cannot_split_a_response() {
    let app = TestApp::spawn().await;
    // A request id built to break out of a JSON string: it is a valid header value.
    let forged = r#"x"},"actor":"admin","forged":{"a":"\"#;
    let response = app
        .client
        .get(format!("{}/audit/logs", app.address))
        .bearer_auth(KEY)
        .header("x-request-id", forged)
        .header("user-agent", "agent\"}\\u000a{")
        .send()
        .await
        .expect("read");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], forged, "echoed as one header value");
    let access = app.file_lines().into_iter().find(|l| l["action"] == "logs.viewed").expect("the read is audited");
    assert_eq!(access["request_id"], forged);
    assert_eq!(access["user_agent"], "agent\"}\\u000a{");
    assert!(access.get("forged").is_none());

    // CR or LF inside a header value cannot be sent through a client library; sent
    // raw, the request is refused before any handler runs.
    let before = app.file_lines().len();
    let answer = raw_exchange(
        &app,
        format!("GET /audit/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nX-Request-Id: a\rInjected: yes\r\n\r\n").as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.contains("Injected"), "{answer}");
    assert_eq!(app.file_lines().len(), before, "a refused request is not processed");
    app.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_hold_the_service() {
    let app = TestApp::spawn_with(|s| {
        s.server.header_timeout_ms = 500;
        s.server.body_timeout_ms = 500;
    })
    .await;
    // Slowloris: a request head sent a byte at a time never completes.
    let started = Instant::now();
    let mut stream = TcpStream::connect(host(&app)).await.expect("connect");
    let head = b"GET /audit/logs HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut closed = false;
    for byte in head.iter().chain(std::iter::repeat(&b'a')).take(200) {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
            // A 408 answer or a plain close: either way the server gave up.
            closed = n == 0 || String::from_utf8_lossy(&probe[..n]).starts_with("HTTP/1.1 408");
            if closed {
                break;
            }
        }
    }
    let held = started.elapsed();
    assert!(closed, "the server closes a connection whose head never completes");
    assert!(held < Duration::from_secs(3), "cut off after the header timeout, not later: {held:?}");

    // A body dribbled slower than the body timeout: 408, and nothing written.
    let body = serde_json::to_vec(&json!([event("auth", "acme")])).expect("json");
    let mut stream = TcpStream::connect(host(&app)).await.expect("connect");
    let head = format!(
        "POST /audit/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let mut answer = Vec::new();
    for byte in &body {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut probe = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
            answer.extend_from_slice(&probe[..n]);
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(app.file_lines().is_empty(), "nothing of a timed-out body is written");

    // Meanwhile a normal client is served at once.
    let quick = Instant::now();
    assert_eq!(app.post_events(&json!([event("auth", "acme")])).await.status(), 200);
    assert!(quick.elapsed() < Duration::from_secs(1));
    app.stop().await;
}

#[tokio::test]
async fn a_thousand_idle_connections_neither_block_clients_nor_outlive_the_timeout() {
    let app = TestApp::spawn_with(|s| s.server.header_timeout_ms = 1000).await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(host(&app)).await.expect("connect"));
    }
    let started = Instant::now();
    let response = app.post_events(&json!([event("security", "acme")])).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2), "served beside 1000 idle connections: {:?}", started.elapsed());
    // Every idle connection is closed by the server after the header timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = 0;
    for stream in &mut idle {
        let mut buf = [0u8; 64];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, idle.len(), "idle connections are closed by the server");
    app.stop().await;
}

#[tokio::test]
async fn tenant_ids_that_name_directories_are_refused_at_ingest_and_by_the_chain_export() {
    let app = TestApp::spawn().await;
    for tenant in [".", ".."] {
        let response = app.post_events(&json!({"category": "auth", "tenant_id": tenant})).await;
        assert_eq!(response.status(), 400, "{tenant}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["fields"][0]["field"], "tenant_id", "{body}");
    }
    assert_eq!(app.count_all_rows().await, 0);
    assert!(app.file_lines().is_empty());

    let out = app.dir.path().join("exports").join("inner");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(["export-chain", "--tenant", "..", "--out"])
        .arg(&out)
        .env("DATABASE_URL", &app.db.url)
        .env("TIERLOG__INTEGRITY__SIGNING_KEY_FILE", app.dir.path().join("signing.key"))
        .env("REDIS_LOG_ENABLED", "false")
        .output()
        .expect("tierlog runs");
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--tenant"), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!app.dir.path().join("exports").exists(), "nothing was written");
    app.stop().await;
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

async fn post_encoded(app: &TestApp, encoding: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/audit/events", app.address))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn gzip_bodies_are_read_and_other_encodings_or_false_labels_are_refused() {
    let app = TestApp::spawn().await;
    let events = json!([event("auth", "zip"), event("api", "zip")]);
    let plain = serde_json::to_vec(&events).expect("json");
    let (status, body) = post_encoded(&app, "gzip", gzip(&plain)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.count_rows("audit_logs", "zip").await, 1);
    assert_eq!(app.file_lines().len(), 2);

    let (status, body) = post_encoded(&app, "gzip", plain.clone()).await;
    assert_eq!(status, 400, "a plain body labelled gzip: {body}");
    let (status, body) = post_encoded(&app, "br", plain).await;
    assert_eq!(status, 415, "{body}");
    // Eleven megabytes of one event's padding, a few kilobytes compressed.
    let bomb = format!("[{{\"category\":\"api\",\"message\":\"{}\"}}]", "a".repeat(11 * 1024 * 1024));
    let (status, body) = post_encoded(&app, "gzip", gzip(bomb.as_bytes())).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(app.file_lines().len(), 2, "nothing refused was written");
    app.stop().await;
}

#[tokio::test]
async fn smaller_edges_are_refused_with_a_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4();
    let repeated = format!(r#"{{"id":"{id}","category":"auth","tenant_id":"a","tenant_id":"b","id":"{}"}}"#, uuid::Uuid::new_v4());
    let response = app.post_raw("application/json", repeated.into_bytes(), Some(KEY)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    let fields: Vec<&str> = body["error"]["fields"].as_array().expect("fields").iter().filter_map(|f| f["field"].as_str()).collect();
    assert_eq!(fields, ["tenant_id", "id"], "{body}");
    for (item, field) in [
        (json!({"category": "financial", "financial": {"amount": "1.00", "currency": "ZZZ"}}), "financial.currency"),
        (json!({"category": "auth", "timestamp": "9999-12-31T23:59:59Z"}), "timestamp"),
    ] {
        let response = app.post_events(&item).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["fields"][0]["field"], field, "{body}");
    }
    assert_eq!(app.count_all_rows().await, 0);

    // A cursor no page issued is refused alike by every reader.
    let forged = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"t\":{},\"id\":\"{id}\"}}", i64::MAX))
    };
    for path in ["/audit/logs", "/audit/combined", "/audit/redis"] {
        let (status, body) = app.send_json(reqwest::Method::GET, &format!("{path}?cursor={forged}"), KEY, None).await;
        assert_eq!(status, 400, "{path}: {body}");
    }

    // A request id is echoed only when it is 1-128 visible ASCII characters.
    let request_id = |value: String| {
        let app = &app;
        async move {
            let response = app.client.get(format!("{}/healthz", app.address)).header("x-request-id", value).send().await.expect("sent");
            response.headers().get("x-request-id").expect("a request id").to_str().expect("ascii").to_owned()
        }
    };
    assert_eq!(request_id("req-42.a:b".into()).await, "req-42.a:b");
    let huge = request_id("r".repeat(60 * 1024)).await;
    assert!(huge.len() <= 128 && uuid::Uuid::parse_str(&huge).is_ok(), "{}", &huge[..huge.len().min(80)]);
    let spaced = request_id("two words".into()).await;
    assert!(uuid::Uuid::parse_str(&spaced).is_ok(), "{spaced}");
    app.stop().await;
}
