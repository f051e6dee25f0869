//! Reads from a streaming replica (`postgres.read_url`): a private primary and its
//! `pg_basebackup` standby on loopback ports, the replica's replay paused to tell
//! which server answered, then lagging past the bound and stopped.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{event, redis_url, PostgresProcess, TestApp, TestDb, TestRedis, KEY};
use crate::load::readiness;

/// The ids the read endpoint `path` returns.
async fn ids(app: &TestApp, path: &str) -> Vec<String> {
    let (status, body) = app.send_json(reqwest::Method::GET, path, KEY, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["items"].as_array().expect("items").iter().map(|item| item["id"].as_str().expect("id").to_owned()).collect()
}

/// Posts one persisted (auth) event for `tenant` and returns its id.
async fn post_login(app: &TestApp, tenant: &str) -> String {
    let mut login = event("auth", tenant);
    login["action"] = json!("auth.login");
    login["id"] = json!(uuid::Uuid::new_v4());
    let response = app.post_events(&login).await;
    assert!(response.status().is_success(), "{}", response.status());
    let body: Value = response.json().await.expect("json");
    body["ids"][0].as_str().expect("id").to_owned()
}

/// Waits until `/readyz` shows the replica in `status`.
async fn replica_becomes(app: &TestApp, status: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let ready = readiness(&app.client, &app.address).await;
        if ready["replica"]["status"] == status {
            return ready;
        }
        assert!(Instant::now() < deadline, "the replica never became {status}: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tierlog_replica_reads_total`.
async fn replica_reads(app: &TestApp) -> u64 {
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tierlog_replica_reads_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tierlog_replica_reads_total in {metrics}"))
}

async fn on_replica(standby: &PostgresProcess, database: &str, sql: &str) -> Vec<String> {
    let url = format!("postgres://postgres@127.0.0.1:{}/{database}", standby.port);
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("replica answers");
    sqlx::query_scalar::<_, String>(sql).fetch_all(&mut connection).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_back_to_the_primary_when_it_lags_or_stops() {
    let primary = tokio::task::spawn_blocking(PostgresProcess::start).await.expect("start primary");
    let db = TestDb::create_on(&primary.admin_url()).await;
    let standby = tokio::task::block_in_place(|| PostgresProcess::standby_of(&primary));
    let read_url = format!("postgres://postgres@127.0.0.1:{}/{}", standby.port, db.name);
    let database = db.name.clone();
    // Replay paused while tierlog migrates the primary: the replica has no table yet.
    on_replica(&standby, &database, "SELECT pg_wal_replay_pause()::text").await;
    let app = TestApp::spawn_on_database(db, TestRedis::new(redis_url()), |s| {
        s.postgres.read_url = read_url.clone();
        s.postgres.read_max_lag_ms = 4000;
        s.postgres.read_check_interval_ms = 100;
        s.postgres.connect_timeout_ms = 500;
    })
    .await;

    // Until it has replayed the migration, reads go to the primary.
    let ready = readiness(&app.client, &app.address).await;
    assert_eq!((&ready["replica"]["status"], &ready["replica"]["serving_reads"]), (&json!("starting"), &json!(false)), "{ready}");
    assert!(ids(&app, "/audit/logs?tenant_id=t-replica").await.is_empty());
    on_replica(&standby, &database, "SELECT pg_wal_replay_resume()::text").await;

    // Up and current: a persisted event is read back, and the reads came through the
    // replica's connections.
    let ready = replica_becomes(&app, "up", Duration::from_secs(10)).await;
    assert_eq!(ready["replica"]["serving_reads"], true, "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");
    let first = post_login(&app, "t-replica").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ids(&app, "/audit/logs?tenant_id=t-replica").await.contains(&first) {
        assert!(Instant::now() < deadline, "the first event never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let readers = on_replica(&standby, &database, "SELECT application_name FROM pg_stat_activity WHERE application_name = 'tierlog-read'").await;
    assert!(!readers.is_empty(), "tierlog's read connections are on the replica");
    let before = replica_reads(&app).await;
    let reads = [
        "/audit/stats?tenant_id=t-replica",
        "/audit/combined?tenant_id=t-replica",
        "/audit/export?tenant_id=t-replica",
        "/audit/subjects/u-1/export?tenant_id=t-replica",
    ];
    for path in reads {
        let response = app.client.get(format!("{}{path}", app.address)).bearer_auth(KEY).send().await.expect("read");
        assert_eq!(response.status(), 200, "{path}");
    }
    let after = replica_reads(&app).await;
    assert!(after >= before + 4, "stats, combined, export and subject export answered by the replica: {before} then {after}");

    // Replay paused: an event written now is on the primary only, so a read that
    // misses it was served by the replica (the bound of 4 s is not reached yet).
    on_replica(&standby, &database, "SELECT pg_wal_replay_pause()::text").await;
    let second = post_login(&app, "t-replica").await;
    assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_logs WHERE id = $1::uuid").bind(&second).fetch_one(&app.pool).await.expect("count"), 1);
    let read = ids(&app, "/audit/logs?tenant_id=t-replica").await;
    let ready = readiness(&app.client, &app.address).await;
    if ready["replica"]["serving_reads"] == true {
        assert!(!read.contains(&second) && read.contains(&first), "served by the paused replica: {read:?}");
    }

    // Past the bound: lagging, reads go to the primary and see the event.
    let ready = replica_becomes(&app, "lagging", Duration::from_secs(15)).await;
    assert_eq!(ready["replica"]["serving_reads"], false, "{ready}");
    assert!(ready["replica"]["lag_ms"].as_u64().expect("lag") > 4000, "{ready}");
    assert_eq!(ready["status"], "ready", "reads fall back; the service is ready: {ready}");
    let before = replica_reads(&app).await;
    assert!(ids(&app, "/audit/logs?tenant_id=t-replica").await.contains(&second), "read from the primary");
    assert_eq!(replica_reads(&app).await, before, "no read went to the lagging replica");
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.lines().any(|l| l == "tierlog_replica_serving_reads 0"), "{metrics}");

    // Replay resumed: the replica catches up and serves again.
    on_replica(&standby, &database, "SELECT pg_wal_replay_resume()::text").await;
    let ready = replica_becomes(&app, "up", Duration::from_secs(15)).await;
    assert_eq!(ready["replica"]["serving_reads"], true, "{ready}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ids(&app, "/audit/logs?tenant_id=t-replica").await.contains(&second) {
        assert!(Instant::now() < deadline, "the replica never showed the event written while paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stopped: reads fall back at once (the failed read runs again on the primary),
    // and /readyz says the replica is down.
    tokio::task::block_in_place(|| standby.halt("fast"));
    let read = ids(&app, "/audit/logs?tenant_id=t-replica").await;
    assert!(read.contains(&first) && read.contains(&second), "{read:?}");
    let (status, export) = app.send_json(reqwest::Method::GET, "/audit/stats?tenant_id=t-replica", KEY, None).await;
    assert_eq!(status, 200, "{export}");
    let ready = replica_becomes(&app, "down", Duration::from_secs(10)).await;
    assert_eq!(ready["replica"]["serving_reads"], false, "{ready}");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["postgres"]["status"], "up", "{ready}");
    drop(primary);
}

#[tokio::test]
async fn a_read_url_that_points_at_a_primary_fails_the_start() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = TestRedis::new(redis_url());
    let mut settings = crate::helpers::test_settings(&db, &redis, &dir);
    settings.postgres.read_url = db.url.clone();
    let error = match tierlog::app::Application::build(settings).await {
        Ok(_) => panic!("the start succeeded with a primary as read replica"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("DATABASE_READ_URL") && error.contains("primary"), "{error}");
}
