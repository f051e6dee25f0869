//! The promises of an acknowledgement (PRODUCT.md section 4) when parts fail.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use sqlx::Connection;
use tierlog::event::Category;
use tierlog::telemetry::Counters;

use crate::helpers::{
    eventually, event, file_lines_in, redis_url, RedisProcess, ServerProcess, TestApp, TestDb, TestRedis, KEY,
};

#[tokio::test]
async fn redis_stopped_mid_test_does_not_fail_ingest_and_the_hot_tier_recovers() {
    let mut redis = RedisProcess::start();
    let app = TestApp::spawn_on(TestRedis::new(redis.url()), |s| {
        s.redis.timeout_ms = 200;
    })
    .await;
    assert_eq!(app.post_events(&json!([event("auth", "acme")])).await.status(), 200);
    assert_eq!(app.redis.list("acme", Category::Auth).len(), 1);

    redis.kill();
    let during: Vec<Value> = (0..5).map(|_| event("security", "acme")).collect();
    for item in &during {
        let response = app.post_events(item).await;
        assert_eq!(response.status(), 200, "ingest must not depend on Redis");
    }
    assert_eq!(app.count_rows("security_events", "acme").await, 5);
    assert_eq!(app.file_lines().len(), 6);
    assert!(Counters::get(&app.counters.redis_misses) >= 5, "every missed event is counted");
    let ready: Value = app.client.get(format!("{}/readyz", app.address)).send().await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["redis"]["status"], "down");
    assert_eq!(ready["postgres"]["status"], "up");
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("tierlog_redis_misses_total"));

    let _restarted = RedisProcess::start_on(redis.port);
    let after = event("security", "acme");
    let recovered = {
        let mut recovered = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let fresh = event("security", "acme");
            assert_eq!(app.post_events(&fresh).await.status(), 200);
            if !app.redis.list("acme", Category::Security).is_empty() {
                recovered = true;
                break;
            }
        }
        recovered
    };
    assert!(recovered, "the hot tier takes events again once Redis is back");
    assert_eq!(app.post_events(&after).await.status(), 200);
    let list = app.redis.list("acme", Category::Security);
    assert_eq!(list[0]["id"], after["id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_writes_nothing_of_that_request() {
    let app = TestApp::spawn_with(|s| {
        s.limits.max_batch_events = 10;
        s.ingest.queue_capacity = 10;
        s.ingest.retry_after_seconds = 2;
    })
    .await;
    // Hold the chain head of tenant "blocked" so the writer waits on it.
    sqlx::query("INSERT INTO chain_heads (tenant_id, table_name, seq, head_hash) VALUES ('blocked', 'audit_logs', 0, $1)")
        .bind(&[0u8; 32][..])
        .execute(&app.pool)
        .await
        .expect("head");
    let mut holder = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");
    let mut lock = holder.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM chain_heads WHERE tenant_id = 'blocked' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .expect("lock");

    let first_batch: Vec<Value> = (0..10).map(|_| event("auth", "blocked")).collect();
    let first = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/audit/events", app.address);
        let body = json!(first_batch);
        async move { client.post(url).bearer_auth(KEY).json(&body).send().await.expect("sent").status() }
    });
    let counters = app.counters.clone();
    assert!(eventually(Duration::from_secs(5), || Counters::get(&counters.queue_depth) == 10).await);

    let refused_event = event("auth", "other");
    let refused = app.post_events(&refused_event).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "2");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "queue_full");

    lock.commit().await.expect("release");
    assert_eq!(first.await.expect("task"), 200);
    assert_eq!(app.count_rows("audit_logs", "blocked").await, 10);
    assert_eq!(app.count_rows("audit_logs", "other").await, 0);
    assert!(app.file_lines().iter().all(|l| l["tenant_id"] == "blocked"));

    // The refused request succeeds when retried.
    assert_eq!(app.post_events(&refused_event).await.status(), 200);
    assert_eq!(app.count_rows("audit_logs", "other").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn postgres_unreachable_without_a_spool_refuses_persisted_events_with_503_and_acknowledges_nothing() {
    let port = crate::helpers::free_port();
    let app = TestApp::spawn_with(|s| {
        s.spool.enabled = false;
        s.postgres.migrate_on_start = false;
        s.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
        s.postgres.connect_timeout_ms = 300;
    })
    .await;
    let response = app.post_events(&json!([event("auth", "acme"), event("api", "acme")])).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    assert!(app.file_lines().is_empty(), "nothing of a refused batch reaches the files");
    assert!(app.redis.keys().is_empty(), "nothing of a refused batch reaches Redis");
    let ready = app.client.get(format!("{}/readyz", app.address)).send().await.expect("readyz");
    assert_eq!(ready.status(), 503);
    app.stop().await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_drains_the_queue_and_flushes_files() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let dir = tempfile::tempdir().expect("dir");
    // A long gathering delay keeps events queued when the signal arrives.
    let mut server = ServerProcess::start(
        &db,
        &redis,
        dir.path(),
        &[("TIERLOG__INGEST__BATCH_MAX_DELAY_MS", "400"), ("TIERLOG__INGEST__WRITERS", "1")],
    );
    let client = reqwest::Client::new();
    let url = format!("{}/audit/events", server.address);
    let batches: Vec<Vec<Value>> = (0..8).map(|_| (0..25).map(|i| event(if i % 2 == 0 { "auth" } else { "api" }, "acme")).collect()).collect();
    let requests = batches.iter().map(|batch| client.post(&url).bearer_auth(KEY).json(batch).send());
    let in_flight = tokio::spawn(join_all(requests.map(|r| async move { r.await.map(|r| r.status().as_u16()) }).collect::<Vec<_>>()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = i32::try_from(server.child.id()).expect("pid");
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    let statuses = in_flight.await.expect("requests");
    let status = server.child.wait().expect("tierlog exits");
    assert!(status.success(), "tierlog exits cleanly after SIGTERM: {status:?}");
    assert!(statuses.iter().all(|s| matches!(s, Ok(200))), "every in-flight request is acknowledged: {statuses:?}");

    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs").fetch_one(&pool).await.expect("count");
    assert_eq!(rows, 8 * 13, "every auth event is in Postgres");
    let lines = file_lines_in(dir.path());
    assert_eq!(lines.len(), 8 * 25, "every event is in the file");
    pool.close().await;
}

#[tokio::test]
async fn a_failing_file_tier_answers_503_and_the_retry_leaves_one_copy_everywhere() {
    let app = TestApp::spawn().await;
    // The service opened its directory; now replace it by a plain file so that
    // creating the first log file fails (root ignores permissions, not this).
    let dir = app.dir.path().to_owned();
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).expect("move dir away");
    std::fs::write(&dir, b"blocked").expect("block");
    let batch = json!([event("auth", "acme"), event("api", "acme")]);
    let refused = app.post_events(&batch).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    let ready = app.client.get(format!("{}/readyz", app.address)).send().await.expect("readyz");
    assert_eq!(ready.status(), 503, "readiness reports the file tier down");

    std::fs::remove_file(&dir).expect("unblock");
    std::fs::rename(&moved, &dir).expect("restore");
    assert_eq!(app.post_events(&batch).await.status(), 200);
    assert_eq!(app.count_rows("audit_logs", "acme").await, 1);
    assert_eq!(app.file_lines().len(), 2);
    assert_eq!(app.redis.list("acme", Category::Auth).len(), 1);
    assert_eq!(app.redis.list("acme", Category::Api).len(), 1);
    app.stop().await;
}
