//! Retention with a clock the test controls: expiry fixed at ingest from category,
//! plan and tenant policies; legal hold; `LogRetentionRun` records; chains that still
//! verify after old rows go; archives written (and verifiable offline) before rows
//! are deleted.

use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use tierlog::tiers::{Chain, Table};
use crate::helpers::{event, TestApp, KEY};

async fn run(app: &TestApp) -> (u16, Value) {
    app.send_json(Method::POST, "/audit/retention/run", KEY, None).await
}

async fn put(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.send_json(Method::PUT, "/audit/retention", key, Some(&body)).await
}

async fn count_category(app: &TestApp, tenant: &str, category: &str) -> i64 {
    // tierlog's own records (policy changes, retention runs) are left out.
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND category = $2 AND logger IS DISTINCT FROM 'tierlog.access'",
    )
        .bind(tenant)
        .bind(category)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn expired_rows_go_in_batches_held_tenants_stay_and_chains_still_verify() {
    let app = TestApp::spawn_with(|s| s.retention.batch_size = 7).await;
    let (status, policies) = put(
        &app,
        KEY,
        json!({"plans": {"free": {"auth": 10}},
               "tenants": {"acme": {"plan": "free"}, "held": {"plan": "free", "legal_hold": true, "hold_reason": "case 42"},
                           "own": {"plan": "free", "days": {"auth": 20}}}}),
    )
    .await;
    assert_eq!(status, 200, "{policies}");
    assert_eq!(policies["plans"]["free"]["auth"], 10);
    assert_eq!(policies["defaults"]["auth"], 90);

    // Interleave auth (10 days on the free plan) and audit (365 days): one chain each
    // (a retention class each), so each expires from its start.
    for tenant in ["acme", "held", "own", "other"] {
        let batch: Vec<Value> = (0..20).map(|i| event(if i % 2 == 0 { "auth" } else { "audit" }, tenant)).collect();
        assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    }
    let (received, expires): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT received_at, expires_at FROM audit_logs WHERE tenant_id = 'acme' AND category = 'auth' LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!(expires - received, Duration::days(10), "expires_at is fixed at ingest from the plan");
    let own: (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT received_at, expires_at FROM audit_logs WHERE tenant_id = 'own' AND category = 'auth' LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!(own.1 - own.0, Duration::days(20), "the tenant's own days beat its plan");

    // Nothing has expired yet.
    let (status, report) = run(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deleted"], json!({}));

    app.clock.advance(Duration::days(11));
    let (status, report) = run(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deleted_by_tenant"], json!({"acme": 10}), "{report}");
    assert_eq!(report["deleted"]["audit_logs"], 10, "{report}");
    assert_eq!(report["held_tenants"], json!(["held"]));
    assert_eq!(count_category(&app, "acme", "auth").await, 0);
    assert_eq!(count_category(&app, "acme", "audit").await, 10);
    assert_eq!(count_category(&app, "held", "auth").await, 10, "legal hold stops deletion");
    assert_eq!(count_category(&app, "own", "auth").await, 10);
    assert_eq!(count_category(&app, "other", "auth").await, 10, "the 90-day default still holds");

    // The run is recorded, in the summary chain and in the tenant's own.
    let runs: Vec<(String, Value)> = sqlx::query_as(
        "SELECT tenant_id, details FROM audit_logs WHERE event_type = 'LogRetentionRun' ORDER BY tenant_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("runs");
    let run_id = report["run_id"].as_str().expect("run id");
    let this_run: Vec<&(String, Value)> = runs.iter().filter(|(_, d)| d["run_id"] == run_id).collect();
    let tenants: Vec<&str> = this_run.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tenants, ["acme", "default", "held"], "{runs:?}");
    assert_eq!(this_run[0].1["deleted"], 10);
    assert_eq!(this_run[1].1["deleted"], 10);
    assert_eq!(this_run[2].1["legal_hold"], true);

    // acme's auth chain is gone, folded into a signed checkpoint; no tombstone is
    // left between live rows.
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");

    // Much later everything of the non-held tenants has gone; the chains start after
    // a signed checkpoint and still verify.
    app.clock.advance(Duration::days(400));
    let (status, report) = run(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(count_category(&app, "acme", "audit").await, 0);
    assert_eq!(count_category(&app, "held", "audit").await, 10);
    assert!(report["checkpoints"].as_u64().unwrap_or(0) >= 3, "{report}");
    let tombs: i64 = sqlx::query_scalar("SELECT count(*) FROM chain_tombstones WHERE tenant_id = 'acme'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(tombs, 0, "leading tombstones are folded into a checkpoint");
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    let acme: Vec<&Value> = verdict["chains"].as_array().expect("chains").iter().filter(|c| c["tenant_id"] == "acme").collect();
    let audit = Table::AuditLogs.class_of(tierlog::event::Category::Audit);
    let at = |shard: i32, n: i64| json!(Chain::new("acme", Table::AuditLogs, shard).base() + n);
    // The auth chain (shard 0): its 10 rows gone, nothing left after them.
    assert_eq!((acme[0]["shard"].clone(), acme[0]["first_seq"].clone(), acme[0]["head_seq"].clone()), (json!(0), at(0, 11), at(0, 10)), "{verdict}");
    // The audit chain: only the record of the last run is left (its 12th: 10 events and
    // the first run's record came before it; the policy change is an access record).
    assert_eq!((acme[1]["shard"].clone(), acme[1]["first_seq"].clone()), (json!(audit), at(audit, 12)), "{verdict}");

    // Deleting a retained row by hand is still caught.
    app.tamper("DELETE FROM audit_logs WHERE tenant_id = 'held' AND seq = 3").await;
    let verdict = app.verify_all().await;
    let held = verdict["chains"].as_array().expect("chains").iter().find(|c| c["tenant_id"] == "held").cloned();
    assert_eq!(held.map(|c| c["first_break"]["kind"].clone()), Some(json!("sequence_gap")));
    app.stop().await;
}

async fn acme_chain(app: &TestApp) -> Value {
    app.send_json(Method::GET, "/audit/verify?tenant_id=acme&table=audit_logs", KEY, None).await.1["chains"][0].clone()
}

#[tokio::test]
async fn tombstones_and_retention_checkpoints_cannot_be_removed_unnoticed() {
    let app = TestApp::spawn_with(|s| {
        if let Some(auth) = s.categories.get_mut(&tierlog::event::Category::Auth) {
            auth.retention_days = 1;
        }
    })
    .await;
    // Chain: auth 1-4 kept 1 day, 5 kept 30 days (the tenant's policy changed), 6-7
    // kept 1 day again.
    let batch: Vec<Value> = (0..4).map(|_| event("auth", "acme")).collect();
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    assert_eq!(put(&app, KEY, json!({"tenants": {"acme": {"days": {"auth": 30}}}})).await.0, 200);
    assert_eq!(app.post_events(&json!([event("auth", "acme")])).await.status(), 200);
    assert_eq!(put(&app, KEY, json!({"tenants": {"acme": {"days": {"auth": 1}}}})).await.0, 200);
    assert_eq!(app.post_events(&json!([event("auth", "acme"), event("auth", "acme")])).await.status(), 200);
    app.clock.advance(Duration::days(2));
    let (status, report) = run(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deleted"]["audit_logs"], 6);
    let chain = acme_chain(&app).await;
    assert_eq!((chain["ok"].clone(), chain["first_seq"].clone()), (json!(true), json!(5)), "{chain}");

    // Rows 6 and 7 left tombstones (a live row precedes them); removing one shows.
    app.tamper("DELETE FROM chain_tombstones WHERE tenant_id = 'acme' AND seq = 6").await;
    assert_eq!(acme_chain(&app).await["first_break"], json!({"kind": "sequence_gap", "expected": 6, "found": 7}));
    // Rows 1-4 were folded into a signed checkpoint at 4; without it the chain's
    // start is unanchored.
    app.tamper("DELETE FROM checkpoints WHERE tenant_id = 'acme' AND reason = 'retention'").await;
    assert_eq!(acme_chain(&app).await["first_break"], json!({"kind": "unanchored_start", "first_seq": 5}));
    app.stop().await;
}

#[tokio::test]
async fn policies_are_validated_scoped_and_their_changes_audited() {
    let app = TestApp::spawn().await;
    let (_, tenant_admin) = app.create_key(json!({"name": "t", "tenant_id": "acme", "permissions": ["logs.configure"]})).await;
    let (_, viewer) = app.create_key(json!({"name": "v", "tenant_id": "acme", "permissions": ["logs.auth.view"]})).await;
    assert_eq!(put(&app, KEY, json!({"plans": {"pro": {"auth": 180}}})).await.0, 200);

    assert_eq!(app.send_json(Method::GET, "/audit/retention", &viewer, None).await.0, 403);
    assert_eq!(put(&app, &tenant_admin, json!({"plans": {"cheap": {"auth": 1}}})).await.0, 403);
    assert_eq!(put(&app, &tenant_admin, json!({"tenants": {"beta": {"legal_hold": true}}})).await.0, 403);
    assert_eq!(run_as(&app, &tenant_admin).await, 403);
    for bad in [
        json!({"tenants": {"acme": {"days": {"auth": 0}}}}),
        json!({"tenants": {"acme": {"days": {"nonsense": 5}}}}),
        json!({"tenants": {"acme": {"legal_hold": "yes"}}}),
        json!({"tenants": {"bad tenant": {}}}),
        json!({"surprise": 1}),
    ] {
        let (status, body) = put(&app, &tenant_admin, bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {body}");
    }
    // A plan that does not exist is a missing resource, not a malformed request.
    let (status, body) = put(&app, &tenant_admin, json!({"tenants": {"acme": {"plan": "missing"}}})).await;
    assert_eq!(status, 404, "{body}");
    let (status, mine) =
        put(&app, &tenant_admin, json!({"tenants": {"acme": {"plan": "pro", "legal_hold": true, "hold_reason": "audit"}}})).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(put(&app, KEY, json!({"tenants": {"beta": {"plan": "pro"}}})).await.0, 200);
    let (status, seen) = app.send_json(Method::GET, "/audit/retention", &tenant_admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(seen["tenants"].as_object().map(|t| t.keys().cloned().collect::<Vec<_>>()), Some(vec!["acme".to_owned()]));
    assert_eq!(seen["tenants"]["acme"]["legal_hold"], true);

    let changes: Vec<Value> = sqlx::query_scalar(
        "SELECT details FROM audit_logs WHERE tenant_id = 'acme' AND action = 'retention.changed' ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["before"], Value::Null);
    assert_eq!(changes[0]["after"]["plan"], "pro");
    assert_eq!(changes[0]["after"]["legal_hold"], true);
    // Days are whole numbers however JSON writes them.
    assert_eq!(put(&app, &tenant_admin, json!({"tenants": {"acme": {"days": {"auth": 30.0}}}})).await.0, 200);
    assert_eq!(put(&app, &tenant_admin, json!({"tenants": {"acme": {"days": {"auth": 30.5}}}})).await.0, 400);
    app.stop().await;
}

async fn run_as(app: &TestApp, key: &str) -> u16 {
    app.send_json(Method::POST, "/audit/retention/run", key, None).await.0
}

fn archive_verify(app: &TestApp, public_key: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(["verify", "--archive"])
        .arg(app.dir.path().join("archive"))
        .args(["--public-key", public_key])
        .env_clear()
        .output()
        .expect("tierlog runs")
}

#[tokio::test]
async fn rows_are_archived_durably_before_they_are_deleted_and_archives_verify_offline() {
    let app = TestApp::spawn_with(|s| s.retention.archive = true).await;
    assert_eq!(put(&app, KEY, json!({"tenants": {"acme": {"days": {"auth": 1}}}})).await.0, 200);
    let mut batch: Vec<Value> = (0..6).map(|_| event("auth", "acme")).collect();
    batch.push(event("audit", "acme"));
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    app.clock.advance(Duration::days(2));

    // The archive cannot be written (a file stands where its directory should be):
    // the run fails and nothing is deleted.
    let archive = app.dir.path().join("archive");
    std::fs::write(&archive, b"in the way").expect("block");
    let (status, body) = run(&app).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(count_category(&app, "acme", "auth").await, 6, "no row goes before its archive is durable");

    std::fs::remove_file(&archive).expect("unblock");
    let (status, report) = run(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deleted"]["audit_logs"], 6);
    assert_eq!(count_category(&app, "acme", "auth").await, 0);
    let manifests = report["archive_manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{report}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(manifests[0].as_str().expect("path")).expect("manifest")).expect("json");
    assert_eq!(manifest["rows"], 6);
    assert_eq!(manifest["tenant_id"], "acme");

    // Offline: no configuration, no database, only the public key.
    let (_, key) = app.send_json(Method::GET, "/audit/checkpoints/public-key", KEY, None).await;
    let public_key = key["public_key"].as_str().expect("key").to_owned();
    let ok = archive_verify(&app, &public_key);
    assert!(ok.status.success(), "{}{}", String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("6 rows"));

    // Another key does not verify the manifest.
    let stranger = tierlog::integrity::checkpoint::Signer::generate().public().to_base64();
    assert_eq!(archive_verify(&app, &stranger).status.code(), Some(1));

    // An archived row changed after the fact is caught (the manifest's SHA-256 is
    // re-signed by nobody).
    let data = std::path::Path::new(manifests[0].as_str().expect("path"))
        .with_file_name(manifest["file"].as_str().expect("file"));
    let mut text = String::new();
    use std::io::{Read, Write};
    flate2::read::GzDecoder::new(std::fs::File::open(&data).expect("open")).read_to_string(&mut text).expect("gunzip");
    let changed = text.replacen("test event", "nothing to see", 1);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(changed.as_bytes()).expect("gzip");
    std::fs::write(&data, encoder.finish().expect("gzip")).expect("write");
    let broken = archive_verify(&app, &public_key);
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stdout).contains("SHA-256"), "{}", String::from_utf8_lossy(&broken.stdout));
    app.stop().await;
}

#[tokio::test]
async fn ingest_retention_and_verification_run_side_by_side() {
    let app = std::sync::Arc::new(
        TestApp::spawn_with(|s| {
            s.retention.batch_size = 25;
            if let Some(auth) = s.categories.get_mut(&tierlog::event::Category::Auth) {
                auth.retention_days = 1;
            }
        })
        .await,
    );
    // The writer posts until told to stop; each retention run and verification waits
    // for a fresh batch, so all three really overlap.
    let posted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (app, posted, stop) = (app.clone(), posted.clone(), stop.clone());
        tokio::spawn(async move {
            let mut round = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let batch: Vec<Value> = (0..10).map(|i| event(if (round + i) % 3 == 0 { "audit" } else { "auth" }, "acme")).collect();
                assert_eq!(app.post_events(&json!(batch)).await.status(), 200, "ingest is never blocked");
                round += 1;
                posted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    for run_number in 0..4 {
        let before = posted.load(std::sync::atomic::Ordering::SeqCst);
        while posted.load(std::sync::atomic::Ordering::SeqCst) == before {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        app.clock.advance(Duration::days(2));
        let (status, report) = run(&app).await;
        assert_eq!(status, 200, "{report}");
        let verdict = app.verify_all().await;
        assert_eq!(verdict["ok"], true, "run {run_number}: {verdict}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.expect("writer");
    app.clock.advance(Duration::days(2));
    assert_eq!(run(&app).await.0, 200);
    assert_eq!(count_category(&app, "acme", "auth").await, 0);
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("the app is still shared"),
    }
}

#[tokio::test]
async fn the_background_loops_checkpoint_and_expire_on_their_own() {
    let app = TestApp::spawn_with(|s| {
        s.retention.interval_seconds = 1;
        s.integrity.checkpoint_interval_seconds = 1;
        if let Some(auth) = s.categories.get_mut(&tierlog::event::Category::Auth) {
            auth.retention_days = 1;
        }
    })
    .await;
    let batch: Vec<Value> = (0..5).map(|_| event("auth", "acme")).collect();
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    app.clock.advance(Duration::days(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (mut periodic, mut left) = (0i64, 5i64);
    while std::time::Instant::now() < deadline && (periodic == 0 || left > 0) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        periodic = sqlx::query_scalar("SELECT count(*) FROM checkpoints WHERE reason = 'periodic'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
        left = count_category(&app, "acme", "auth").await;
    }
    assert!(periodic > 0, "a periodic checkpoint was signed");
    assert_eq!(left, 0, "the retention loop deleted the expired rows");
    assert_eq!(app.verify_all().await["ok"], true);
    app.stop().await;
}

/// Two nodes write one tenant, each its own writer shard's chain: retention deletes
/// and archives expired rows of both, folds the leading ones of each chain into a
/// signed checkpoint of that chain only, erasure rewrites rows of both, and every
/// chain, the archives offline included, still verifies; a row deleted by hand is
/// named on its own shard's chain.
#[tokio::test]
async fn retention_erasure_and_archives_keep_each_writer_shards_chain_verifiable() {
    use tierlog::event::{EventParser, Limits};
    use tierlog::tiers::postgres::PgStore;
    use tierlog::tiers::{DurableStore, PersistRequest, Table};

    let app = TestApp::spawn_with(|s| s.retention.archive = true).await;
    assert_eq!(put(&app, KEY, json!({"tenants": {"acme": {"days": {"auth": 1}}}})).await.0, 200);
    let mut batch: Vec<Value> = (0..4).map(|_| event("auth", "acme")).collect();
    batch.push(event("audit", "acme"));
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);

    // A second node: its first write claims the next free shard.
    let other = PgStore::from_pool(app.pool.clone());
    let parser = EventParser::new(Limits::default(), None, app.clock.now());
    let events: Vec<_> = (0..5).map(|i| parser.parse(i, event(if i < 4 { "auth" } else { "audit" }, "acme")).expect("valid")).collect();
    let requests: Vec<PersistRequest<'_>> = events
        .iter()
        .enumerate()
        .map(|(i, event)| PersistRequest {
            table: Table::AuditLogs,
            expires_at: app.clock.now() + Duration::days(if i < 4 { 1 } else { 365 }),
            pii_paths: Vec::new(),
            event,
        })
        .collect();
    assert_eq!(other.persist(&requests).await.expect("persisted"), 5);
    assert_eq!(other.writer_shard(), Some(1), "the server holds writer shard 0");
    // Each writer keeps an auth chain and an audit chain of the tenant.
    let audit = Table::AuditLogs.class_of(tierlog::event::Category::Audit);
    let chain_shard = tierlog::integrity::chain::chain_shard;
    let (auth1, audit1) = (chain_shard(1, 0), chain_shard(1, audit));
    let base = |shard: i32| tierlog::integrity::chain::shard_base(shard);

    app.clock.advance(Duration::days(2));
    let (status, report) = run(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deleted"]["audit_logs"], 8, "{report}");
    assert_eq!(report["checkpoints"], 2, "each writer's auth chain expired from its start: {report}");
    let folded: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM checkpoints WHERE reason = 'retention' AND tenant_id = 'acme' ORDER BY seq")
            .fetch_all(&app.pool)
            .await
            .expect("checkpoints");
    assert_eq!(folded, [4, base(auth1) + 4], "each auth chain is anchored after its 4 expired rows, and no other chain");

    let (status, receipt) = app.send_json(Method::POST, "/audit/subjects/u-1/erase?tenant_id=acme", KEY, None).await;
    assert_eq!(status, 200, "{receipt}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE tenant_id = 'acme' AND user_id = 'u-1'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "erased on both shards");

    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    let acme: Vec<&Value> = verdict["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .filter(|c| c["tenant_id"] == "acme" && c["table"] == "audit_logs")
        .collect();
    // The server's writer also keeps the tenant's access records (reads, the erasure's
    // receipt) in a chain of their own.
    let access = Table::AuditLogs.class_of(tierlog::event::Category::Access);
    let shards: Vec<&Value> = acme.iter().map(|c| &c["shard"]).collect();
    assert_eq!(shards, [&json!(0), &json!(audit), &json!(access), &json!(auth1), &json!(audit1)], "{verdict}");
    assert_eq!((&acme[3]["first_seq"], &acme[3]["head_seq"]), (&json!(base(auth1) + 5), &json!(base(auth1) + 4)), "{verdict}");
    assert_eq!(acme[4]["head_seq"], base(audit1) + 1, "{verdict}");

    let (_, key) = app.send_json(Method::GET, "/audit/checkpoints/public-key", KEY, None).await;
    let offline = archive_verify(&app, key["public_key"].as_str().expect("key"));
    let printed = String::from_utf8_lossy(&offline.stdout);
    assert!(offline.status.success(), "{printed}{}", String::from_utf8_lossy(&offline.stderr));
    assert!(printed.contains(&format!("shard {auth1} seq {}..{}", base(auth1) + 1, base(auth1) + 4)), "each shard's archived range: {printed}");

    app.tamper(&format!("DELETE FROM audit_logs WHERE tenant_id = 'acme' AND seq = {}", base(audit1) + 1)).await;
    let verdict = app.verify_all().await;
    let broken: Vec<&Value> = verdict["chains"].as_array().expect("chains").iter().filter(|c| c["ok"] == false).collect();
    assert_eq!(broken.len(), 1, "{verdict}");
    assert_eq!((&broken[0]["tenant_id"], &broken[0]["shard"]), (&json!("acme"), &json!(audit1)), "{verdict}");
    app.stop().await;
}
