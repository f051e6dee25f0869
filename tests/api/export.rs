//! `GET /audit/export`: streamed NDJSON and CSV with flat memory.

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{event, redis_url, ServerProcess, TestApp, TestDb, TestRedis, KEY};

#[tokio::test]
async fn export_streams_ndjson_and_csv_of_the_visible_rows_only() {
    let app = TestApp::spawn().await;
    let mut tricky = event("auth", "acme");
    tricky["message"] = json!("=cmd|' /C calc'!A0, \"quoted\"\nsecond line");
    let batch = json!([tricky, event("audit", "acme"), event("auth", "beta")]);
    assert_eq!(app.post_events(&batch).await.status(), 200);

    let response = app.request_with(reqwest::Method::GET, "/audit/export?tenant_id=acme&category=auth", KEY).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.expect("body");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], batch[0]["id"]);
    assert_eq!(lines[0]["message"], batch[0]["message"]);

    let csv = app
        .request_with(reqwest::Method::GET, "/audit/export?format=csv&tenant_id=acme&table=audit_logs", KEY)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    assert!(csv.starts_with("table,seq,hash,id,timestamp"));
    assert!(csv.contains("\"'=cmd|' /C calc'!A0, \"\"quoted\"\"\nsecond line\""), "{csv}");
    assert!(!csv.contains("beta"));

    let (_, no_export) = app.create_key(json!({"name": "v", "permissions": ["logs.auth.view"]})).await;
    assert_eq!(app.request_with(reqwest::Method::GET, "/audit/export", &no_export).send().await.expect("sent").status(), 403);
    for bad in ["format=xml", "table=users", "limit=5", "cursor=abc"] {
        let status = app.request_with(reqwest::Method::GET, &format!("/audit/export?{bad}"), KEY).send().await.expect("sent").status();
        assert_eq!(status, 400, "{bad}");
    }
    app.stop().await;
}

#[tokio::test]
async fn exporting_100k_rows_streams_with_flat_memory() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let dir = tempfile::tempdir().expect("dir");
    let server = ServerProcess::start(&db, &redis, dir.path(), &[]);
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    // Rows written straight into the table: the export reads, it does not verify.
    sqlx::query(
        "INSERT INTO audit_logs (tenant_id, seq, id, occurred_at, received_at, expires_at, category, level, action,
             status, user_id, message, details, prev_hash, row_hash, pii_hash)
         SELECT 'bulk', g, gen_random_uuid(), now() - g * interval '1 second', now(), now() + interval '90 days',
             'auth', 'INFO', 'auth.login', 'success', 'u-' || (g % 1000), 'bulk event ' || g,
             jsonb_build_object('n', g, 'pad', repeat('x', 600)), '\\x00', '\\x00', '\\x00'
         FROM generate_series(1, 100001) g",
    )
    .execute(&pool)
    .await
    .expect("bulk rows");
    sqlx::query("INSERT INTO chain_heads (tenant_id, table_name, seq, head_hash) VALUES ('bulk', 'audit_logs', 100001, decode(repeat('00', 32), 'hex'))")
        .execute(&pool)
        .await
        .expect("chain head");
    let before = server.peak_rss_kib();
    let (bytes, lines) = stream_export(&server.address, "tenant_id=bulk").await;
    let after = server.peak_rss_kib();
    assert_eq!(lines, 100_001, "every row (the export's own access record is in category access, left out)");
    assert!(bytes > 80 * 1024 * 1024, "the export is larger than the memory bound below ({bytes} bytes)");
    assert!(
        after.saturating_sub(before) < 40 * 1024,
        "peak RSS grew by {} KiB while streaming {} MiB",
        after.saturating_sub(before),
        bytes / (1024 * 1024)
    );
    // The same rows as CSV: a header and a line per row (no field here holds a line break).
    let (_, csv_lines) = stream_export(&server.address, "tenant_id=bulk&format=csv").await;
    assert_eq!(csv_lines, 100_002, "the header and every row");
    pool.close().await;
}

/// Streams `/audit/export?{query}` to its end; returns its bytes and line breaks.
async fn stream_export(address: &str, query: &str) -> (usize, usize) {
    let response = reqwest::Client::new().get(format!("{address}/audit/export?{query}")).bearer_auth(KEY).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let (mut bytes, mut lines) = (0usize, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    (bytes, lines)
}

/// Splits CSV text into records of fields (RFC 4180: quoted fields may hold commas,
/// doubled quotes and line breaks; records end with CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    records
}

#[tokio::test]
async fn csv_carries_every_field_of_every_category() {
    let app = TestApp::spawn_with(|s| s.detection.enabled = false).await; // counts rows: no alerts
    let mut batch = Vec::new();
    for category in ["auth", "security", "financial", "audit", "api", "error"] {
        batch.push(json!({
            "id": uuid::Uuid::new_v4(), "timestamp": "2026-11-30T10:00:00.123456Z", "category": category,
            "level": "ERROR", "logger": "app.audit", "message": format!("a {category} event, with \"quotes\",\nand a second line"),
            "event_type": "thing_happened", "action": format!("{category}.changed"), "status": "failure",
            "application": "shop", "tenant_id": "full", "user_id": "u-7", "username": "alice",
            "email": "alice@example.com", "resource": "user", "resource_id": "u-8", "ip_address": "2001:db8::7",
            "user_agent": "curl/8.5", "request_id": "req-9", "session_id": "sess-10",
            "details": {"reason": "=SUM(A1)", "n": 3, "nested": {"list": [1, "two"]}},
            "changes": {"before": {"role": "viewer"}, "after": {"role": "admin"}},
            "security": {"event_type": "privilege_escalation", "severity": "high"},
            "financial": {"transaction_id": "tx-1", "amount": "1250.00", "currency": "EUR", "account_id": "acc-1", "counterparty": "acme-bank"},
        }));
    }
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);

    let get = |format: &'static str| {
        let request = app.request_with(reqwest::Method::GET, &format!("/audit/export?tenant_id=full&format={format}"), KEY);
        async move { request.send().await.expect("sent").text().await.expect("body") }
    };
    let items: Vec<Value> = get("ndjson").await.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(items.len(), 6, "every category is persisted at ERROR");
    let records = parse_csv(&get("csv").await);
    let (header, rows) = records.split_first().expect("a header");
    assert_eq!(rows.len(), items.len(), "a CSV row per exported event");
    for (item, row) in items.iter().zip(rows) {
        assert_eq!(row.len(), header.len(), "{row:?}");
        let object = item.as_object().expect("an object");
        for field in ["session_id", "changes", "security", "financial"] {
            assert!(object.contains_key(field), "the NDJSON export carries {field}: {item}");
        }
        // Every field the NDJSON export has is a CSV column holding the same value.
        for (field, value) in object {
            let column = header.iter().position(|h| h == field).unwrap_or_else(|| panic!("CSV lacks the column {field}"));
            let cell = &row[column];
            let expected = match value {
                Value::String(s) if s.starts_with(['=', '+', '-', '@']) => format!("'{s}"),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match value {
                Value::Object(_) => assert_eq!(&serde_json::from_str::<Value>(cell).expect("a JSON cell"), value, "{field}"),
                _ => assert_eq!(cell, &expected, "{field}"),
            }
        }
    }
    app.stop().await;
}
