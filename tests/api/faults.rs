//! Faults under a steady load: Postgres, Redis or tierlog itself stopped mid-stream,
//! and the file system refusing writes. Every test ends by checking the promise of an
//! acknowledgement: each acknowledged event is in Postgres (persisted categories) and
//! in the files exactly once, and every chain verifies.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use tierlog::event::Category;
use tierlog::keys::{KeyStore, NewKey, Permission};
use tierlog::telemetry::Counters;
use uuid::Uuid;

use crate::helpers::{event, redis_url, PostgresProcess, RedisProcess, ServerProcess, TestApp, TestDb, TestRedis, KEY};
use crate::load::{assert_exactly_once, readiness, verify_ok, Load, CATEGORIES, TENANTS};

/// The service on a private PostgreSQL that the test may stop, failing fast and
/// replaying often while it is down.
async fn app_on_private_postgres() -> (PostgresProcess, TestApp) {
    let postgres = tokio::task::spawn_blocking(PostgresProcess::start).await.expect("start postgres");
    let db = TestDb::create_on(&postgres.admin_url()).await;
    let app = TestApp::spawn_on_database(db, TestRedis::new(redis_url()), |s| {
        s.postgres.connect_timeout_ms = 300;
        s.spool.retry_interval_ms = 50;
        s.spool.replay_batch_events = 200;
    })
    .await;
    (postgres, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_load_loses_nothing_acknowledged() {
    let (postgres, app) = app_on_private_postgres().await;
    let load = Load::start(&app.address, 4, 10);
    load.progress(300, Duration::from_secs(20)).await;

    // A crash of the database, then a clean stop after it came back once.
    for mode in ["immediate", "fast"] {
        let pg = &postgres;
        tokio::task::block_in_place(|| pg.halt(mode));
        load.progress(300, Duration::from_secs(20)).await;
        let ready = readiness(&app.client, &app.address).await;
        assert_eq!(ready["status"], "degraded", "Postgres down with room in the spool: {ready}");
        assert_eq!(ready["postgres"]["status"], "down");
        assert!(ready["spool"]["pending_events"].as_u64().unwrap_or(0) > 0, "{ready}");
        let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
        assert!(metrics.lines().any(|l| l.starts_with("tierlog_spool_events ") && !l.ends_with(" 0")), "fill level in /metrics");
        tokio::task::block_in_place(|| pg.resume());
        load.progress(300, Duration::from_secs(30)).await;
    }
    let outcome = load.finish().await;

    // Replay drains the spool.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = readiness(&app.client, &app.address).await;
        if ready["status"] == "ready" && ready["spool"]["pending_events"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the spool drains once Postgres is back: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(Counters::get(&app.counters.events_spooled) > 0, "the spool was used");
    assert_eq!(Counters::get(&app.counters.events_replayed), Counters::get(&app.counters.events_spooled));
    assert!(!app.dir.path().join("spool").read_dir().expect("spool dir").any(|e| {
        e.expect("entry").path().extension().is_some_and(|x| x == "spool")
    }), "a drained spool deletes its segments");
    assert_exactly_once(&app.pool, &[app.dir.path()], &outcome.acked).await;
    verify_ok(&app.client, &app.address).await;
    app.stop().await;
}

/// A key made straight in the database (no access record), bound to `tenant`.
async fn writer_key(pool: &PgPool, tenant: &str) -> (Uuid, String) {
    let store = KeyStore::new(pool.clone());
    let new = NewKey {
        name: format!("{tenant} writer"),
        tenant_id: Some(tenant.to_owned()),
        permissions: vec![Permission::EventsWrite],
        expires_at: None,
        created_by: "test".into(),
    };
    let (info, secret) = store.create(new).await.expect("key created");
    (info.id, secret.plaintext)
}

async fn post_as(client: &reqwest::Client, address: &str, key: &str, events: &Value) -> u16 {
    client.post(format!("{address}/audit/events")).bearer_auth(key).json(events).send().await.expect("sent").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_key_writes_through_a_postgres_outage_and_a_revoked_key_stays_refused() {
    let (postgres, app) = app_on_private_postgres().await;
    let (_, writer) = writer_key(&app.pool, "acme").await;
    let (revoked_id, revoked) = writer_key(&app.pool, "acme").await;
    let mut late = vec![event("auth", "acme")];
    assert_eq!(post_as(&app.client, &app.address, &revoked, &json!(late)).await, 200);
    // Revoked in the database behind this node's back: it learns within its cache time.
    KeyStore::new(app.pool.clone()).revoke(revoked_id, None).await.expect("revoke").expect("the key");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let probe = event("auth", "acme");
        let status = post_as(&app.client, &app.address, &revoked, &json!([probe])).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        late.push(probe);
        assert!(Instant::now() < deadline, "the node learns of the revocation");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let load = Load::start_as(&app.address, 2, 10, &writer, &["acme"]);
    load.progress(200, Duration::from_secs(20)).await;
    let pg = &postgres;
    tokio::task::block_in_place(|| pg.halt("fast"));
    // Twenty seconds without Postgres, long past the key cache's own freshness.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(20) {
        load.progress(100, Duration::from_secs(10)).await;
    }
    assert_eq!(post_as(&app.client, &app.address, &revoked, &json!([event("auth", "acme")])).await, 401, "a revoked key stays refused");
    assert_eq!(
        post_as(&app.client, &app.address, "tlk_never-issued-0123456789", &json!([event("auth", "acme")])).await,
        503,
        "an unknown key is refused while it cannot be checked"
    );
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.lines().any(|l| l.starts_with("tierlog_auth_remembered_total ") && !l.ends_with(" 0")), "{metrics}");
    // One client's events, one by one: replay must keep their order in the chain.
    let in_order: Vec<Value> = (0..20).map(|_| event("auth", "in-order")).collect();
    for one in &in_order {
        assert_eq!(app.post_events(&json!([one])).await.status(), 200);
    }
    late.extend(in_order.iter().cloned());
    tokio::task::block_in_place(|| pg.resume());
    load.progress(200, Duration::from_secs(30)).await;
    let mut outcome = load.finish().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while readiness(&app.client, &app.address).await["spool"]["pending_events"] != 0 {
        assert!(Instant::now() < deadline, "the spool drains");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(Counters::get(&app.counters.events_spooled) > 0, "the tenant key's events were spooled");
    let chain: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM audit_logs WHERE tenant_id = 'in-order' ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .expect("chain");
    let sent: Vec<Uuid> = in_order.iter().map(|e| Uuid::parse_str(e["id"].as_str().expect("id")).expect("uuid")).collect();
    assert_eq!(chain, sent, "the chain holds the spooled events in the order they were acknowledged");
    let mut acked = std::mem::take(&mut outcome.acked);
    acked.extend(late);
    assert_exactly_once(&app.pool, &[app.dir.path()], &acked).await;
    verify_ok(&app.client, &app.address).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_postgres_is_down_comes_up_degraded_spools_and_catches_up() {
    let postgres = tokio::task::spawn_blocking(PostgresProcess::start).await.expect("start postgres");
    let db = TestDb::create_on(&postgres.admin_url()).await;
    let redis = TestRedis::new(redis_url());
    let dir = tempfile::tempdir().expect("dir");
    let client = reqwest::Client::new();
    let pool = PgPool::connect(&db.url).await.expect("pool");
    tierlog::tiers::postgres::migrate(&pool).await.expect("migrated");
    let (_, writer) = writer_key(&pool, "acme").await;
    // A first run verifies the key while Postgres answers.
    let first_batch: Vec<Value> = (0..3).map(|_| event("auth", "acme")).collect();
    {
        let server = ServerProcess::start(&db, &redis, dir.path(), &[]);
        assert_eq!(post_as(&client, &server.address, &writer, &json!(first_batch)).await, 200);
    }
    pool.close().await;
    let pg = &postgres;
    tokio::task::block_in_place(|| pg.halt("fast"));

    let server = ServerProcess::start(&db, &redis, dir.path(), &[("TIERLOG__POSTGRES__CONNECT_TIMEOUT_MS", "300"), ("TIERLOG__SPOOL__RETRY_INTERVAL_MS", "100")]);
    let ready = readiness(&client, &server.address).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["postgres"]["status"], "down", "{ready}");
    let mut acked = first_batch;
    for round in 0..5 {
        let batch: Vec<Value> = (0..4).map(|i| event(CATEGORIES[(round + i) % CATEGORIES.len()], "acme")).collect();
        assert_eq!(post_as(&client, &server.address, &writer, &json!(batch)).await, 200, "the tenant key writes into the spool");
        acked.extend(batch);
    }
    let by_bootstrap = vec![event("security", "acme")];
    assert_eq!(post_as(&client, &server.address, KEY, &json!(by_bootstrap)).await, 200);
    acked.extend(by_bootstrap);
    assert_eq!(post_as(&client, &server.address, "tlk_never-issued-0123456789", &json!([event("auth", "acme")])).await, 503);

    tokio::task::block_in_place(|| pg.resume());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = readiness(&client, &server.address).await;
        if ready["status"] == "ready" && ready["spool"]["pending_events"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the node migrates and replays once Postgres answers: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = PgPool::connect(&db.url).await.expect("pool");
    assert_exactly_once(&pool, &[dir.path()], &acked).await;
    verify_ok(&client, &server.address).await;
}

#[tokio::test]
async fn redis_stopped_and_restarted_under_load_loses_nothing_and_the_hot_tier_recovers() {
    let mut redis = RedisProcess::start();
    let app = TestApp::spawn_on(TestRedis::new(redis.url()), |s| {
        s.redis.timeout_ms = 200;
    })
    .await;
    let load = Load::start(&app.address, 4, 10);
    load.progress(300, Duration::from_secs(20)).await;
    redis.kill();
    load.progress(300, Duration::from_secs(20)).await;
    assert_eq!(readiness(&app.client, &app.address).await["status"], "degraded");
    let _restarted = RedisProcess::start_on(redis.port);
    // The hot tier takes events again.
    let mut checks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let check = event("auth", "hot-check");
        assert_eq!(app.post_events(&json!([check])).await.status(), 200);
        checks.push(check);
        if !app.redis.list("hot-check", Category::Auth).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "Redis takes events again after its restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.progress(300, Duration::from_secs(20)).await;
    let mut outcome = load.finish().await;
    let probe = event("auth", "hot-check");
    assert_eq!(app.post_events(&json!([probe])).await.status(), 200);
    assert_eq!(app.redis.list("hot-check", Category::Auth)[0]["id"], probe["id"]);
    checks.push(probe);
    assert!(Counters::get(&app.counters.redis_misses) > 0, "the outage was seen");
    assert_eq!(readiness(&app.client, &app.address).await["status"], "ready");
    outcome.acked.extend(checks);
    assert_exactly_once(&app.pool, &[app.dir.path()], &outcome.acked).await;
    verify_ok(&app.client, &app.address).await;
    app.stop().await;
}

#[tokio::test]
async fn the_first_batch_after_a_redis_restart_nobody_saw_reaches_the_hot_tier() {
    let mut redis = RedisProcess::start();
    let app = TestApp::spawn_on(TestRedis::new(redis.url()), |s| {
        s.redis.timeout_ms = 1000;
    })
    .await;
    let before = event("auth", "idle");
    assert_eq!(app.post_events(&json!([before])).await.status(), 200);
    assert_eq!(app.redis.list("idle", Category::Auth).len(), 1);
    // Restarted while tierlog is idle: its open connection is dead and it does not know.
    redis.kill();
    let _restarted = RedisProcess::start_on(redis.port);
    let after = event("auth", "idle");
    assert_eq!(app.post_events(&json!([after])).await.status(), 200);
    let listed = app.redis.list("idle", Category::Auth);
    assert_eq!(listed.len(), 1, "the restarted Redis holds the new batch: {listed:?}");
    assert_eq!(listed[0]["id"], after["id"]);
    assert_eq!(Counters::get(&app.counters.redis_misses), 0, "no miss was counted");
    app.stop().await;
}

#[tokio::test]
async fn tierlog_killed_under_load_and_restarted_loses_nothing_acknowledged() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let dir = tempfile::tempdir().expect("dir");
    let mut server = ServerProcess::start(&db, &redis, dir.path(), &[]);
    let load = Load::start(&server.address, 4, 10);
    load.progress(500, Duration::from_secs(30)).await;
    let pid = i32::try_from(server.child.id()).expect("pid");
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let _ = server.child.wait();
    let mut outcome = load.abandon().await;

    let restarted = ServerProcess::start(&db, &redis, dir.path(), &[]);
    let client = reqwest::Client::new();
    // Clients retry what was never answered, with the same ids: the retry must not
    // duplicate whatever part of it reached a tier before the kill.
    for batch in std::mem::take(&mut outcome.unacked) {
        let answer = client.post(format!("{}/audit/events", restarted.address)).bearer_auth(KEY).json(&batch).send().await;
        assert_eq!(answer.expect("retry").status(), 200);
        outcome.acked.extend(batch);
    }
    let pool = PgPool::connect(&db.url).await.expect("pool");
    assert_exactly_once(&pool, &[dir.path()], &outcome.acked).await;
    verify_ok(&client, &restarted.address).await;
    // Redis holds no event twice, and takes new ones from the restarted process.
    let held: Vec<Value> = TENANTS
        .iter()
        .flat_map(|t| CATEGORIES.iter().map(move |c| (t, c)))
        .flat_map(|(t, c)| redis.list(t, Category::parse(c).expect("category")))
        .map(|line| line["id"].clone())
        .collect();
    let unique: std::collections::HashSet<String> = held.iter().map(Value::to_string).collect();
    assert_eq!(unique.len(), held.len(), "no event is twice in Redis");
    let fresh = event("security", "acme");
    let answer = client.post(format!("{}/audit/events", restarted.address)).bearer_auth(KEY).json(&json!([fresh])).send().await;
    assert_eq!(answer.expect("post").status(), 200);
    assert_eq!(redis.list("acme", Category::Security)[0]["id"], fresh["id"]);
    pool.close().await;
}

#[tokio::test]
async fn a_file_system_refusing_writes_answers_503_and_loses_nothing_acknowledged() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let dir = tempfile::tempdir().expect("dir");
    // The kernel refuses writes past 256 KiB per file (EFBIG), as a full disk would.
    let server = ServerProcess::start_limited(&db, &redis, dir.path(), &[], 256 << 10);
    let load = Load::start(&server.address, 2, 10);
    let client = reqwest::Client::new();
    let post = |body: Value| client.post(format!("{}/audit/events", server.address)).bearer_auth(KEY).json(&body).send();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut singles = Vec::new();
    let (refused, refused_event) = loop {
        let single = event("auth", "acme");
        let answer = post(json!([single])).await.expect("answer");
        if answer.status() != 200 {
            break (answer, single);
        }
        singles.push(single);
        assert!(Instant::now() < deadline, "the file tier hits its limit");
    };
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    // Readiness reports the last append: a small write that still fits under the
    // limit succeeds and reports `ready` until the next one fails, so poll.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        let ready = readiness(&client, &server.address).await;
        if ready["status"] == "down" || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(ready["status"], "down", "{ready}");
    let reason = ready["files"]["error"].as_str().unwrap_or_default();
    assert!(reason.contains("audit.") && reason.contains("too large"), "the error names the file and the cause: {reason}");

    // The operator makes room; the clients' retries go through.
    server.lift_file_size_limit();
    assert_eq!(post(json!([refused_event])).await.expect("retry").status(), 200, "the retry goes through");
    singles.push(refused_event);
    let outcome = load.finish().await;
    assert!(outcome.refusals > 0, "the clients were refused while writes failed");
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let mut acked = outcome.acked;
    acked.extend(singles);
    assert_exactly_once(&pool, &[dir.path()], &acked).await;
    verify_ok(&client, &server.address).await;
    pool.close().await;
}

#[tokio::test]
async fn a_full_spool_refuses_persisted_events_with_503_and_keeps_what_it_acknowledged() {
    let port = crate::helpers::free_port();
    let app = TestApp::spawn_with(|s| {
        s.postgres.migrate_on_start = false;
        s.postgres.url = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
        s.postgres.connect_timeout_ms = 200;
        s.spool.max_bytes = 2 * s.limits.max_event_bytes as u64;
    })
    .await;
    let mut acked = 0u64;
    let refused = loop {
        let answer = app.post_events(&json!([event("auth", "acme"), event("api", "acme")])).await;
        if answer.status() != 200 {
            break answer;
        }
        acked += 1;
        assert!(acked < 10_000, "the spool fills up");
    };
    assert!(acked > 0, "events were acknowledged into the spool while Postgres was down");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "spool_full", "{body}");
    let ready = readiness(&app.client, &app.address).await;
    assert_eq!(ready["status"], "down", "{ready}");
    assert_eq!(ready["spool"]["pending_events"], acked, "{ready}");
    // api events are not bound for Postgres: they still go through.
    assert_eq!(app.post_events(&json!([event("api", "acme")])).await.status(), 200);
    assert_eq!(app.file_lines().len() as u64, 2 * acked + 1, "nothing of the refused request reached the files");
    app.stop().await;
}
