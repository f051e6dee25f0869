//! The search indexes' pending lists are merged in the background, so no writer's
//! batch has to merge them (see `src/tiers/postgres/search.rs`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{event, TestApp, KEY};

const INDEXES: [&str; 3] = ["audit_logs_search", "security_events_search", "financial_audit_logs_search"];

/// Entries waiting in each search index's pending list, as `pgstattuple` reads them.
async fn pending(pool: &PgPool) -> Vec<i64> {
    let mut counts = Vec::new();
    for index in INDEXES {
        // One index per time partition.
        let n: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum((pgstatginindex(relid)).pending_tuples), 0)::bigint FROM pg_partition_tree($1::regclass) WHERE isleaf",
        )
            .bind(index)
            .fetch_one(pool)
            .await
            .expect("pgstatginindex");
        counts.push(n);
    }
    counts
}

/// Writes a batch for every table, each event searchable by a word of its own.
async fn write_searchable(app: &TestApp) -> Vec<Value> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pgstattuple").execute(&app.pool).await.expect("pgstattuple");
    let events: Vec<Value> = ["auth", "security", "financial", "audit"]
        .iter()
        .enumerate()
        .map(|(i, category)| {
            let mut e = event(category, "acme");
            e["message"] = json!(format!("searchable{i} word"));
            e
        })
        .collect();
    assert_eq!(app.post_events(&json!(events)).await.status(), 200);
    events
}

#[tokio::test]
async fn without_the_merge_task_new_entries_wait_in_the_pending_lists() {
    let app = TestApp::spawn_with(|s| s.postgres.search_merge_interval_ms = 0).await;
    write_searchable(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = pending(&app.pool).await;
    assert!(counts.iter().all(|&n| n > 0), "every index holds its new entries in the pending list: {counts:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_merge_task_empties_the_pending_lists_and_search_still_finds_every_event() {
    let app = TestApp::spawn_with(|s| s.postgres.search_merge_interval_ms = 50).await;
    let events = write_searchable(&app).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut counts = pending(&app.pool).await;
    while counts.iter().any(|&n| n > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        counts = pending(&app.pool).await;
    }
    assert_eq!(counts, vec![0, 0, 0], "the pending lists were merged");
    let endpoints = ["/audit/logs", "/audit/security-events", "/audit/financial", "/audit/logs"];
    for (i, (sent, endpoint)) in events.iter().zip(endpoints).enumerate() {
        let path = format!("{endpoint}?tenant_id=acme&q=searchable{i}");
        let (status, body) = app.send_json(reqwest::Method::GET, &path, KEY, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let found: Vec<&Value> = body["items"].as_array().expect("items").iter().map(|item| &item["id"]).collect();
        assert_eq!(found, vec![&sent["id"]], "{endpoint}?q=searchable{i}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_database_user_that_does_not_own_the_indexes_gets_an_error_and_the_task_stops() {
    let app = TestApp::spawn_with(|s| s.postgres.search_merge_interval_ms = 0).await;
    let role = format!("tierlog_not_owner_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE {role}")).execute(&app.pool).await.expect("create role");
    let options: sqlx::postgres::PgConnectOptions = app.db.url.parse().expect("url");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.options([("role", role.as_str())]))
        .await
        .expect("connect as the role");
    let store = tierlog::tiers::postgres::PgStore::from_pool(pool.clone());
    let refused = store.merge_search_pending().await;
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        tierlog::tiers::postgres::search::run_merges(
            store,
            Duration::from_millis(10),
            tierlog::cluster::lease::Lease::new("background", "test".into(), Duration::from_secs(15), None),
        ),
    )
    .await;
    // The role is the cluster's, not the test database's: drop it before asserting.
    pool.close().await;
    sqlx::query(&format!("DROP ROLE {role}")).execute(&app.pool).await.expect("drop role");
    match refused {
        Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("42501"), "{e}"),
        other => panic!("expected a refusal for lack of ownership, got {other:?}"),
    }
    assert!(stopped.is_ok(), "the merge task gives up instead of retrying for ever");
    app.stop().await;
}
