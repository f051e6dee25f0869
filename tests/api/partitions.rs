//! Time partitions of the event tables: the migration from one heap per table, the
//! partitions tierlog makes ahead of the rows, the watched default partition, and
//! retries recognised across partitions.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;
use tierlog::event::{AuditEvent, EventParser, Limits};
use tierlog::integrity::checkpoint::{Keyring, Signer};
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
    let parser = EventParser::new(Limits::default(), None, Utc::now());
    let store = PgStore::from_pool(pool.clone());
    let before: Vec<AuditEvent> = (0..6)
        .map(|i| parser.parse(i, event(if i % 3 == 0 { "security" } else { "auth" }, "acme")).expect("valid"))
        .collect();
    assert_eq!(store.persist(&requests(&before, 90)).await.expect("persisted"), 6);
    let signer = Signer::generate();
    let signed = checkpoints::checkpoint_heads(&pool, &signer, None, "periodic", Utc::now()).await.expect("checkpoints");
    assert_eq!(signed.len(), 2, "one per chain");

    tierlog::tiers::postgres::migrate(&pool).await.expect("migrates to partitions");
    let audit = list(&pool, Table::AuditLogs).await.expect("partitions");
    let legacy = audit.iter().find(|p| p.name == "audit_logs_legacy").expect("the old table is a partition");
    assert!(legacy.from.is_none(), "it covers every expiry up to its last: {legacy:?}");
    assert!(legacy.to.expect("bound") > before[0].received_at + Duration::days(90), "{legacy:?}");
    assert!(audit.iter().any(|p| p.default), "and a default partition: {audit:?}");
    assert_eq!(placement(&pool, Table::AuditLogs).await, [("audit_logs_legacy".to_owned(), 4)].into());
    assert_eq!(placement(&pool, Table::SecurityEvents).await, [("security_events_legacy".to_owned(), 2)].into());
    let indexes: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'audit_logs_legacy'")
        .fetch_one(&pool)
        .await
        .expect("indexes");
    assert_eq!(indexes, 12, "the old table keeps its indexes, attached to the new table's");

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
