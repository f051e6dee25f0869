//! Time partitions of the event tables: the migration from one heap per table, the
//! partitions tierlog makes ahead of the rows, the watched default partition, and
//! retries recognised across partitions, and reads by time that skip partitions.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;
use tierlog::event::{AuditEvent, Category, EventParser, Limits};
use tierlog::integrity::checkpoint::{Keyring, Signer};
use tierlog::query::Filters;
use tierlog::tiers::postgres::partitions::{default_rows, list, PartitionInterval};
use tierlog::tiers::postgres::verify::{chains, verify_chain};
use tierlog::tiers::postgres::{checkpoints, PgStore};
use tierlog::tiers::{DurableStore, PersistRequest, Table};

use crate::helpers::{event, TestApp, TestDb, KEY};

fn requests(events: &[AuditEvent], days: i64) -> Vec<PersistRequest<'_>> {
    events
        .iter()
        .map(|event| PersistRequest {
            table: if event.category.as_str() == "security" { Table::SecurityEvents } else { Table::AuditLogs },
            expires_at: event.received_at + Duration::days(days),
            pii_paths: Vec::new(),
            event,
        })
        .collect()
}

/// Which partition holds each row of `table`, with the row count.
async fn placement(pool: &PgPool, table: Table) -> BTreeMap<String, i64> {
    let sql = format!("SELECT tableoid::regclass::text AS p, count(*) AS n FROM {table} GROUP BY 1");
    sqlx::query_as::<_, (String, i64)>(&sql).fetch_all(pool).await.expect("placement").into_iter().collect()
}

fn lengths(table: Table, days: u32) -> BTreeMap<Table, BTreeSet<u32>> {
    [(table, [days].into())].into()
}

/// A deployment from before partitions, with rows and signed checkpoints, migrates
/// in place: its table becomes the `_legacy` partition (no row copied, none
/// re-chained), every chain and checkpoint still verifies, and new rows go to the
/// time partitions made for them and extend the same chains.
#[tokio::test]
async fn tables_from_before_partitions_become_a_partition_and_their_chains_go_on() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    tierlog::tiers::postgres::migrate_through(&pool, 6).await.expect("the schema before partitions");
    // This version's writes also record ids in event_ids, which the schema before
    // partitions lacks: a stand-in while the old rows are written, gone after.
    sqlx::query("CREATE TABLE event_ids (tenant_id text, table_name text, id uuid, seen_at timestamptz DEFAULT now())")
        .execute(&pool)
        .await
        .expect("stand-in");
    sqlx::query("CREATE TABLE expiry_leads (table_name text PRIMARY KEY, lead_seconds bigint)").execute(&pool).await.expect("stand-in");
    sqlx::query("INSERT INTO expiry_leads VALUES ('audit_logs', NULL), ('security_events', NULL)").execute(&pool).await.expect("stand-in");
    let parser = EventParser::new(Limits::default(), None, Utc::now());
    let store = PgStore::from_pool(pool.clone());
    let before: Vec<AuditEvent> = (0..6)
        .map(|i| parser.parse(i, event(if i % 3 == 0 { "security" } else { "auth" }, "acme")).expect("valid"))
        .collect();
    // Kept 30 days then; 90 after the migration.
    assert_eq!(store.persist(&requests(&before, 30)).await.expect("persisted"), 6);
    let signer = Signer::generate();
    let signed = checkpoints::checkpoint_heads(&pool, &signer, None, "periodic", Utc::now()).await.expect("checkpoints");
    assert_eq!(signed.len(), 2, "one per chain");

    sqlx::query("DROP TABLE event_ids, expiry_leads").execute(&pool).await.expect("stand-ins gone");
    drop(store);
    tierlog::tiers::postgres::migrate(&pool).await.expect("migrates to partitions");
    let store = PgStore::from_pool(pool.clone());
    let lead: Option<i64> = sqlx::query_scalar("SELECT lead_seconds FROM expiry_leads WHERE table_name = 'audit_logs'")
        .fetch_one(&pool)
        .await
        .expect("lead");
    assert_eq!(lead, None, "no row in a time partition yet: nothing to skip by");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM event_ids").fetch_one(&pool).await.expect("ids");
    assert_eq!(recorded, 6, "the recent rows' ids are recorded, so their retries are still found");
    let audit = list(&pool, Table::AuditLogs).await.expect("partitions");
    let legacy = audit.iter().find(|p| p.name == "audit_logs_legacy").expect("the old table is a partition");
    assert!(legacy.from.is_none(), "it covers every expiry up to its last: {legacy:?}");
    assert!(legacy.to.expect("bound") > before[0].received_at + Duration::days(30), "{legacy:?}");
    assert!(audit.iter().any(|p| p.default), "and a default partition: {audit:?}");
    assert_eq!(placement(&pool, Table::AuditLogs).await, [("audit_logs_legacy".to_owned(), 4)].into());
    assert_eq!(placement(&pool, Table::SecurityEvents).await, [("security_events_legacy".to_owned(), 2)].into());
    let indexes: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'audit_logs_legacy'")
        .fetch_one(&pool)
        .await
        .expect("indexes");
    // Its ten lookup indexes and the new primary key (tenant_id, seq, expires_at); no
    // index on the id (event_ids recognises retries).
    assert_eq!(indexes, 11, "the old table keeps its indexes, attached to the new table's");

    let keys = Keyring::new(vec![signer.public().clone()]);
    for (chain, _) in chains(&pool, Some("acme"), None).await.expect("chains") {
        let report = verify_chain(&pool, &keys, &chain).await.expect("verify");
        assert!(report.ok && report.checkpoints == 1 && report.break_count == 0, "{report:?}");
    }

    // Partitions for the retention in force, then more rows of the same chains.
    let now = Utc::now();
    let made = store.upkeep_partitions(&lengths(Table::AuditLogs, 90), now, None).await.expect("upkeep");
    assert!(!made.is_empty());
    let parser = EventParser::new(Limits::default(), None, Utc::now());
    let after: Vec<AuditEvent> = (0..4).map(|i| parser.parse(i, event("auth", "acme")).expect("valid")).collect();
    assert_eq!(store.persist(&requests(&after, 90)).await.expect("persisted"), 4);
    let placed = placement(&pool, Table::AuditLogs).await;
    assert_eq!(placed.get("audit_logs_legacy"), Some(&4), "the legacy range ends at its last expiry: {placed:?}");
    assert_eq!(placed.iter().filter(|(p, _)| p.starts_with("audit_logs_p")).map(|(_, n)| n).sum::<i64>(), 4, "{placed:?}");
    let chain = tierlog::tiers::Chain::new("acme", Table::AuditLogs, 0);
    let rows = store.read_chain(&chain).await.expect("chain");
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<i64>>(), "one chain across partitions");
    let report = verify_chain(&pool, &keys, &chain).await.expect("verify");
    assert!(report.ok && report.rows_checked == 8, "{report:?}");

    // The new rows set the lead (90 days less the moments between event and
    // receipt); a read by time skips partitions by it, but not the legacy rows,
    // which expire sooner than it allows.
    let lead: i64 = sqlx::query_scalar("SELECT lead_seconds FROM expiry_leads WHERE table_name = 'audit_logs'")
        .fetch_one(&pool)
        .await
        .expect("lead");
    assert!((90 * 86400 - 60..=90 * 86400).contains(&lead), "{lead}");
    let since = since_an_hour_ago("acme");
    let page = tierlog::tiers::postgres::query::page(&pool, Table::AuditLogs, &since, &[Category::Auth]).await.expect("page");
    assert_eq!(page.items.len(), 8, "legacy rows and new rows alike");
    drop(store);
    pool.close().await;
}

/// Partitions are made two intervals ahead of every retention length, once however
/// many times the upkeep runs; a row no partition covers waits in the default
/// partition, is counted, and moves into its partition at the next upkeep.
#[tokio::test]
async fn upkeep_makes_partitions_ahead_and_drains_the_default_partition() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    tierlog::tiers::postgres::migrate(&pool).await.expect("migrate");
    let store = PgStore::from_pool(pool.clone());
    let parser = EventParser::new(Limits::default(), None, Utc::now());

    // Before any upkeep, rows land in the default partition.
    let early: Vec<AuditEvent> = (0..5).map(|i| parser.parse(i, event("auth", "acme")).expect("valid")).collect();
    assert_eq!(store.persist(&requests(&early, 30)).await.expect("persisted"), 5);
    assert_eq!(default_rows(&pool).await.expect("count")[&Table::AuditLogs], 5);

    let now = Utc::now();
    let made = store.upkeep_partitions(&lengths(Table::AuditLogs, 30), now, None).await.expect("upkeep");
    let week = PartitionInterval::Week;
    let start = week.floor(now + Duration::days(30));
    assert!(made.len() >= 3, "three intervals from the expiry of today's rows: {made:?}");
    assert!(made.contains(&format!("audit_logs_p{}", start.format("%Y%m%d"))), "{made:?}");
    assert_eq!(default_rows(&pool).await.expect("count")[&Table::AuditLogs], 0, "drained");
    let placed = placement(&pool, Table::AuditLogs).await;
    assert_eq!(placed.values().sum::<i64>(), 5);
    assert!(placed.keys().all(|p| p.starts_with("audit_logs_p")), "{placed:?}");
    let partitions = list(&pool, Table::AuditLogs).await.expect("partitions");
    let covering = partitions.iter().filter(|p| !p.default && p.from <= Some(now + Duration::days(30))).count();
    assert!(covering >= 1, "{partitions:?}");
    for pair in partitions.iter().filter(|p| !p.default).collect::<Vec<_>>().windows(2) {
        assert_eq!(pair[0].to, pair[1].from, "made ranges are contiguous: {partitions:?}");
    }

    assert!(store.upkeep_partitions(&lengths(Table::AuditLogs, 30), now, None).await.expect("again").is_empty(), "made once");
    // The chain is the same after the move.
    let chain = tierlog::tiers::Chain::new("acme", Table::AuditLogs, 0);
    let report = verify_chain(&pool, &Keyring::new(Vec::new()), &chain).await.expect("verify");
    assert!(report.ok && report.rows_checked == 5, "{report:?}");
    drop(store);
    pool.close().await;
}

/// A retry of the same event an hour after the first attempt has another expiry,
/// so it would land in another partition; it is still stored once.
#[tokio::test]
async fn a_retry_with_a_later_expiry_is_stored_once() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    tierlog::tiers::postgres::migrate(&pool).await.expect("migrate");
    let store = PgStore::from_pool(pool.clone());
    let mut body = event("auth", "acme");
    body["id"] = json!(uuid::Uuid::new_v4().to_string());
    let first = EventParser::new(Limits::default(), None, Utc::now()).parse(0, body.clone()).expect("valid");
    let retry = EventParser::new(Limits::default(), None, Utc::now() + Duration::hours(1)).parse(0, body).expect("valid");
    assert_ne!(first.received_at, retry.received_at);
    assert_eq!(store.persist(&requests(std::slice::from_ref(&first), 90)).await.expect("first"), 1);
    assert_eq!(store.persist(&requests(std::slice::from_ref(&retry), 90)).await.expect("retry"), 0);
    // With a new event beside it, the batch stores only the new one.
    let fresh = EventParser::new(Limits::default(), None, Utc::now()).parse(1, event("auth", "acme")).expect("valid");
    let batch = [retry.clone(), fresh];
    assert_eq!(store.persist(&requests(&batch, 90)).await.expect("mixed"), 1);
    assert_eq!(placement(&pool, Table::AuditLogs).await.values().sum::<i64>(), 2);
    drop(store);
    pool.close().await;
}

/// A spool replay of an event whose first write outlived the retry window (its id
/// no longer in `event_ids`) still finds it and adds nothing; a plain write of it,
/// a client's retry that late, is a new event.
#[tokio::test]
async fn a_replay_finds_events_written_before_the_retry_window() {
    let db = TestDb::create().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    tierlog::tiers::postgres::migrate(&pool).await.expect("migrate");
    let store = PgStore::from_pool(pool.clone());
    let first = EventParser::new(Limits::default(), None, Utc::now()).parse(0, event("auth", "acme")).expect("valid");
    let other = EventParser::new(Limits::default(), None, Utc::now()).parse(1, event("auth", "acme")).expect("valid");
    assert_eq!(store.persist(&requests(std::slice::from_ref(&first), 90)).await.expect("first"), 1);
    let forgotten = tierlog::tiers::postgres::partitions::forget_old_ids(&pool, std::time::Duration::ZERO).await.expect("forget");
    assert_eq!(forgotten, 1);
    // The replayed batch as the spool holds it: the first event as written, and one
    // that never reached Postgres.
    let batch = [first.clone(), other];
    assert_eq!(store.persist_replayed(&requests(&batch, 90)).await.expect("replay"), 1);
    assert_eq!(placement(&pool, Table::AuditLogs).await.values().sum::<i64>(), 2);
    assert_eq!(store.persist_replayed(&requests(&batch, 90)).await.expect("replay again"), 0);
    assert_eq!(placement(&pool, Table::AuditLogs).await.values().sum::<i64>(), 2);
    for (chain, _) in chains(&pool, None, None).await.expect("chains") {
        let report = verify_chain(&pool, &Keyring::new(Vec::new()), &chain).await.expect("verify");
        assert!(report.ok && report.rows_checked == 2, "{report:?}");
    }
    drop(store);
    pool.close().await;
}

/// A retention length set through the API gets its partitions before its rows
/// arrive, and `/metrics` reports each default partition's rows.
#[tokio::test]
async fn a_new_retention_length_gets_its_partitions_before_its_rows() {
    let app = TestApp::spawn().await;
    let far = PartitionInterval::Week.floor(Utc::now() + Duration::days(400));
    let name = format!("audit_logs_p{}", far.format("%Y%m%d"));
    let before = list(&app.pool, Table::AuditLogs).await.expect("partitions");
    assert!(!before.iter().any(|p| p.name == name), "not made before it is needed");
    let body = json!({"tenants": {"acme": {"days": {"auth": 400}}}});
    let (status, answer) = app.send_json(Method::PUT, "/audit/retention", KEY, Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    let after = list(&app.pool, Table::AuditLogs).await.expect("partitions");
    assert!(after.iter().any(|p| p.name == name), "made with the policy: {after:?}");

    assert_eq!(app.post_events(&json!([event("auth", "acme"), event("auth", "other")])).await.status(), 200);
    let placed = placement(&app.pool, Table::AuditLogs).await;
    assert!(placed.keys().all(|p| p.starts_with("audit_logs_p")), "no row in the default or legacy partition: {placed:?}");
    assert_eq!(placed.get(&name), Some(&1), "the 400-day row in its partition: {placed:?}");
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.lines().any(|l| l.starts_with("tierlog_partition_default_rows{table=\"audit_logs\"} 0")),
        "default partition watched in /metrics"
    );
    app.stop().await;
}

/// A read of `tenant`'s rows of the last hour.
fn since_an_hour_ago(tenant: &str) -> Filters {
    Filters { from: Some(Utc::now() - Duration::hours(1)), include_total: true, ..Filters::of_tenant(Some(tenant.to_owned())) }
}

/// Reads by time skip the partitions that expire too early to hold a row of the
/// period, by the lead recorded in `expiry_leads`; a shorter policy lowers the lead
/// before its first row is written, so its rows are still read.
#[tokio::test]
async fn a_shorter_policy_lowers_the_expiry_lead_before_its_rows_so_reads_by_time_find_them() {
    let app = TestApp::spawn().await;
    let lead = || count(&app.pool, "SELECT lead_seconds FROM expiry_leads WHERE table_name = 'audit_logs'");
    let body = json!({"tenants": {"acme": {"days": {"auth": 400}}}});
    assert_eq!(app.send_json(Method::PUT, "/audit/retention", KEY, Some(&body)).await.0, 200);
    assert_eq!(app.post_events(&event("auth", "acme")).await.status(), 200);
    let long = lead().await;
    assert!(long > 300 * 86400, "the 400-day rows' gap, or a shorter one already written: {long}");

    let body = json!({"tenants": {"acme": {"days": {"auth": 2}}}});
    assert_eq!(app.send_json(Method::PUT, "/audit/retention", KEY, Some(&body)).await.0, 200);
    assert_eq!(app.post_events(&event("auth", "acme")).await.status(), 200);
    let short = lead().await;
    assert!((2 * 86400 - 3600..=2 * 86400).contains(&short), "lowered to the 2-day gap: {short}");

    // An event that happened three days ago: outside the day a page reads first.
    let mut late = event("auth", "acme");
    late["timestamp"] = json!((Utc::now() - Duration::days(3)).to_rfc3339());
    assert_eq!(app.post_events(&late).await.status(), 200);
    assert_eq!(lead().await, short, "arriving late widens its gap: the lead stays");

    // All three, by time (the 2-day rows lie in partitions a 400-day lead would
    // skip), by page without a time (the last day first, then everything, as the day
    // holds only two), and counted.
    let paths = [
        "/audit/logs?tenant_id=acme&category=auth&from=2000-01-01T00:00:00Z",
        "/audit/logs?tenant_id=acme&category=auth",
        "/audit/logs?tenant_id=acme&category=auth&limit=1",
    ];
    for path in paths {
        let (status, body) = app.send_json(Method::GET, path, KEY, None).await;
        assert_eq!(status, 200, "{body}");
        let expected = if path.ends_with("limit=1") { 1 } else { 3 };
        assert_eq!(body["items"].as_array().map(Vec::len), Some(expected), "{path}: {body}");
    }
    let (_, body) = app.send_json(Method::GET, "/audit/logs?tenant_id=acme&category=auth&limit=1", KEY, None).await;
    let cursor = body["next_cursor"].as_str().expect("a second page").to_owned();
    let (_, body) = app.send_json(Method::GET, &format!("/audit/logs?tenant_id=acme&category=auth&limit=1&cursor={cursor}"), KEY, None).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    let page = tierlog::tiers::postgres::query::page(&app.pool, Table::AuditLogs, &since_an_hour_ago("acme"), &[Category::Auth])
        .await
        .expect("page");
    assert_eq!((page.items.len(), page.total), (2, Some(2)), "the two of the last hour");
    app.stop().await;
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// With the default retention, an expired time partition leaves whole: archived,
/// then dropped, each chain it cut anchored by a signed checkpoint; a partition
/// holding a tenant on legal hold stays (its other rows leave row by row); rows a
/// policy change left between kept rows leave tombstones. Verification, erasure and
/// the offline archive check work across the dropped ranges.
#[tokio::test]
async fn expired_partitions_are_archived_and_dropped_whole_and_chains_still_verify() {
    let app = TestApp::spawn_with(|s| {
        s.retention.exact_expiry = false;
        s.retention.archive = true;
        s.postgres.partition_interval = "day".into();
    })
    .await;
    let body = json!({"tenants": {
        "acme": {"days": {"auth": 1}},
        "held": {"days": {"auth": 2}, "legal_hold": true, "hold_reason": "case 7"},
        "shift": {"days": {"auth": 3}},
    }});
    assert_eq!(app.send_json(Method::PUT, "/audit/retention", KEY, Some(&body)).await.0, 200);
    let mut batch: Vec<_> = (0..5).map(|_| event("auth", "acme")).collect();
    batch.extend([event("audit", "acme"), event("audit", "acme")]);
    batch.extend((0..3).map(|_| event("auth", "held")));
    batch.extend((0..2).map(|_| event("auth", "shift")));
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    // shift's next rows expire before its first two: its policy shrank.
    let shrink = json!({"tenants": {"shift": {"days": {"auth": 1}}}});
    assert_eq!(app.send_json(Method::PUT, "/audit/retention", KEY, Some(&shrink)).await.0, 200);
    assert_eq!(app.post_events(&json!([event("auth", "shift"), event("auth", "shift")])).await.status(), 200);
    assert_eq!(default_rows(&app.pool).await.expect("count").values().sum::<i64>(), 0, "every row found its partition");
    let day = |days: i64| format!("audit_logs_p{}", PartitionInterval::Day.floor(app.clock.now() + Duration::days(days)).format("%Y%m%d"));
    let (one, two, three) = (day(1), day(2), day(3));
    let tombstones_before = count(&app.pool, "SELECT count(*) FROM chain_tombstones").await;

    // Three days on: the 1-day partition has passed whole, the 2-day one holds a
    // tenant on hold, the 3-day one has not passed.
    app.clock.advance(Duration::days(3));
    let (status, report) = app.send_json(Method::POST, "/audit/retention/run", KEY, None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dropped_partitions"], json!([one]), "{report}");
    assert_eq!(report["deleted_by_tenant"], json!({"acme": 5, "shift": 2}), "{report}");
    let names: Vec<String> = list(&app.pool, Table::AuditLogs).await.expect("partitions").into_iter().map(|p| p.name).collect();
    assert!(!names.contains(&one) && names.contains(&two) && names.contains(&three), "{names:?}");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM audit_logs WHERE tenant_id = 'acme' AND category = 'auth'").await, 0);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM audit_logs WHERE tenant_id = 'acme' AND action = 'audit.test'").await, 2);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM audit_logs WHERE tenant_id = 'held' AND category = 'auth'").await, 3, "legal hold");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM audit_logs WHERE tenant_id = 'shift' AND category = 'auth'").await, 2);
    // acme's auth rows were its chain's start: one signed checkpoint, no tombstone.
    // shift's two stranded rows (after its kept first two) left a tombstone each.
    let new_tombstones = count(&app.pool, "SELECT count(*) FROM chain_tombstones").await - tombstones_before;
    let all: Vec<(String, i64)> = sqlx::query_as("SELECT tenant_id, seq FROM chain_tombstones").fetch_all(&app.pool).await.expect("t");
    assert_eq!(new_tombstones, 2, "{all:?}");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM chain_tombstones WHERE tenant_id = 'shift' AND seq IN (3, 4)").await, 2);
    let anchors: Vec<i64> = sqlx::query_scalar("SELECT seq FROM checkpoints WHERE reason = 'retention' AND tenant_id = 'acme'")
        .fetch_all(&app.pool)
        .await
        .expect("checkpoints");
    assert_eq!(anchors, [5], "acme's auth chain starts after its dropped rows");
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");

    // Two more days: shift's first rows leave with their partition; its chain now
    // starts with the tombstones of the rows dropped before.
    app.clock.advance(Duration::days(2));
    let (_, report) = app.send_json(Method::POST, "/audit/retention/run", KEY, None).await;
    // (with the empty partitions made ahead whose range has passed too)
    assert_eq!(report["dropped_partitions"][0], json!(three), "{report}");
    assert_eq!(report["deleted_by_tenant"], json!({"shift": 2}), "{report}");
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    let shift = verdict["chains"].as_array().expect("chains").iter().find(|c| c["tenant_id"] == "shift").cloned().expect("shift");
    assert_eq!((shift["first_seq"].clone(), shift["checkpoints"].clone()), (json!(3), json!(1)), "{shift}");

    // Erasure after drops, then every chain still verifies, and so do the archives
    // of the dropped partitions offline.
    let (status, receipt) = app.send_json(Method::POST, "/audit/subjects/u-1/erase?tenant_id=acme", KEY, None).await;
    assert_eq!(status, 200, "{receipt}");
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    let (_, key) = app.send_json(Method::GET, "/audit/checkpoints/public-key", KEY, None).await;
    let (_, checkpoints) = app.send_json(Method::GET, "/audit/checkpoints?limit=1000", KEY, None).await;
    let checkpoints_file = app.dir.path().join("checkpoints.json");
    std::fs::write(&checkpoints_file, checkpoints.to_string()).expect("write");
    let offline = std::process::Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(["verify", "--archive"])
        .arg(app.dir.path().join("archive"))
        .args(["--public-key", key["public_key"].as_str().expect("key"), "--checkpoints"])
        .arg(&checkpoints_file)
        .env_clear()
        .output()
        .expect("tierlog runs");
    let printed = String::from_utf8_lossy(&offline.stdout);
    assert!(offline.status.success(), "{printed}{}", String::from_utf8_lossy(&offline.stderr));
    assert!(printed.contains("ok      acme audit_logs: 5 rows") && printed.contains("1 checkpoint(s) matched"), "{printed}");

    // Removing the checkpoint that anchors a dropped range shows.
    app.tamper("DELETE FROM checkpoints WHERE tenant_id = 'acme' AND reason = 'retention'").await;
    let verdict = app.verify_all().await;
    let acme = verdict["chains"].as_array().expect("chains").iter().find(|c| c["tenant_id"] == "acme").cloned().expect("acme");
    assert_eq!(acme["first_break"]["kind"], "unanchored_start", "{verdict}");
    app.stop().await;
}
