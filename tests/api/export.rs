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
         FROM generate_series(1, 100000) g",
    )
    .execute(&pool)
    .await
    .expect("bulk rows");
    sqlx::query("INSERT INTO chain_heads (tenant_id, table_name, seq, head_hash) VALUES ('bulk', 'audit_logs', 100000, decode(repeat('00', 32), 'hex'))")
        .execute(&pool)
        .await
        .expect("chain head");
    let before = server.peak_rss_kib();
    let response = reqwest::Client::new()
        .get(format!("{}/audit/export?tenant_id=bulk", server.address))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let (mut bytes, mut lines) = (0usize, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let after = server.peak_rss_kib();
    assert_eq!(lines, 100_001, "the rows and the record of this export itself");
    assert!(bytes > 80 * 1024 * 1024, "the export is larger than the memory bound below ({bytes} bytes)");
    assert!(
        after.saturating_sub(before) < 40 * 1024,
        "peak RSS grew by {} KiB while streaming {} MiB",
        after.saturating_sub(before),
        bytes / (1024 * 1024)
    );
    pool.close().await;
}
