//! Every persisted row extends its (tenant, table, writer shard) hash chain without
//! gaps, even when batches are written concurrently, by one process or several.

use futures_util::future::join_all;
use serde_json::{json, Value};
use tierlog::integrity::verify::Verifier;
use tierlog::tiers::postgres::PgStore;
use tierlog::tiers::{Chain, Table};

use crate::helpers::{event, TestApp};

/// Walks a whole chain with the verifier tierlog ships.
fn recompute(chain: &Chain, rows: &[tierlog::tiers::postgres::StoredRow]) -> Result<(), String> {
    let (mut verifier, _) = Verifier::starting_at(chain.base() + 1, Vec::new());
    for row in rows {
        verifier.check(row).map_err(|broken| format!("{broken:?}"))?;
    }
    verifier.finish(chain.base() + rows.len() as i64).map_err(|broken| format!("{broken:?}"))
}

/// Shard 0's chain of `tenant` in `table` (the one a single process writes).
fn first(tenant: &str, table: Table) -> Chain {
    Chain::new(tenant, table, 0)
}

#[tokio::test]
async fn concurrent_batches_keep_every_chain_gap_free_and_recomputable() {
    let app = TestApp::spawn_with(|s| {
        s.ingest.writers = 3;
        s.postgres.max_connections = 6;
        s.ingest.batch_max_events = 7;
    })
    .await;
    let tenants = ["t1", "t2"];
    let batches: Vec<Value> = (0..24)
        .map(|i| {
            let tenant = tenants[i % 2];
            let mut items = vec![event("auth", tenant), event("audit", tenant), event("security", tenant)];
            let mut wide = event("financial", tenant);
            wide["ip_address"] = json!("2001:db8::1");
            wide["email"] = json!("bob@example.com");
            wide["user_agent"] = json!("curl/8 \u{1b}[31m\nnext");
            wide["timestamp"] = json!("2026-11-23T10:00:00.123456789Z");
            wide["changes"] = json!({"before": {"role": "user"}, "after": {"role": "admin", "limits": [1, 2.5, -3e-7]}});
            wide["financial"] = json!({"amount": "-0.10", "currency": "USD", "counterparty": "ÄÖ 🚀"});
            wide["details"] = json!({"z": null, "a": {"b": [true, "x"]}, "big": 18446744073709551615u64});
            items.push(wide);
            json!(items)
        })
        .collect();
    let responses = join_all(batches.iter().map(|b| app.post_events(b))).await;
    assert!(responses.iter().all(|r| r.status() == 200));

    let store = PgStore::from_pool(app.pool.clone());
    // auth and audit events share audit_logs but not a chain: each retention class
    // has its own.
    let audit = Table::AuditLogs.class_of(tierlog::event::Category::Audit);
    assert_ne!(audit, 0);
    for tenant in tenants {
        for (table, shard, expected) in
            [(Table::AuditLogs, 0, 12), (Table::AuditLogs, audit, 12), (Table::SecurityEvents, 0, 12), (Table::FinancialAuditLogs, 0, 12)]
        {
            let chain = Chain::new(tenant, table, shard);
            let rows = store.read_chain(&chain).await.expect("chain");
            assert_eq!(rows.len(), expected, "{chain}");
            assert!(rows.iter().all(|r| table.class_of(r.event.category) == shard), "{chain}: one class");
            recompute(&chain, &rows).unwrap_or_else(|e| panic!("{chain}: {e}"));
        }
    }
    let heads: Vec<(String, String, i32, i64)> =
        sqlx::query_as("SELECT tenant_id, table_name, shard, seq FROM chain_heads ORDER BY 1, 2, 3")
            .fetch_all(&app.pool)
            .await
            .expect("heads");
    assert_eq!(heads.len(), 8, "{heads:?}");
    assert!(heads.iter().all(|(_, _, shard, seq)| *seq == Chain::new("", Table::AuditLogs, *shard).base() + 12), "{heads:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_changed_column_no_longer_matches_its_hash() {
    let app = TestApp::spawn().await;
    let batch = json!([event("auth", "acme"), event("auth", "acme"), event("auth", "acme")]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
    let store = PgStore::from_pool(app.pool.clone());
    let acme = first("acme", Table::AuditLogs);
    recompute(&acme, &store.read_chain(&acme).await.expect("chain")).expect("untouched chain verifies");

    // Rows are append-only: the database itself refuses an update...
    let refused = sqlx::query("UPDATE audit_logs SET message = 'edited' WHERE seq = 2").execute(&app.pool).await;
    assert!(refused.is_err(), "updates must be refused by the append-only trigger");
    // ...and a superuser who forces one is caught by the hash.
    let mut tx = app.pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL tierlog.maintenance = 'on'").execute(&mut *tx).await.expect("set");
    sqlx::query("UPDATE audit_logs SET message = 'edited' WHERE seq = 2").execute(&mut *tx).await.expect("update");
    tx.commit().await.expect("commit");
    let error = recompute(&acme, &store.read_chain(&acme).await.expect("chain")).expect_err("tamper found");
    assert_eq!(error, "ContentChanged { seq: 2 }");
    app.stop().await;
}

/// What a writer hands the store for `events`: security events to their table, the
/// rest to `audit_logs`.
fn requests(events: &[tierlog::event::AuditEvent]) -> Vec<tierlog::tiers::PersistRequest<'_>> {
    events
        .iter()
        .map(|event| tierlog::tiers::PersistRequest {
            table: if event.category.as_str() == "security" { Table::SecurityEvents } else { Table::AuditLogs },
            expires_at: chrono::Utc::now() + chrono::Duration::days(30),
            pii_paths: Vec::new(),
            event,
        })
        .collect()
}

/// Two stores stand for two tierlog processes on one database writing one shard (a
/// claim lost and taken by another node): each remembers the heads it committed, and
/// each must notice when the other has moved them.
#[tokio::test]
async fn two_processes_extending_one_chain_in_turn_and_at_once_keep_it_whole() {
    use tierlog::event::{AuditEvent, EventParser, Limits};
    use tierlog::tiers::DurableStore;

    let app = TestApp::spawn().await;
    let stores = [PgStore::from_pool(app.pool.clone()).with_shard(0), PgStore::from_pool(app.pool.clone()).with_shard(0)];
    let parser = EventParser::new(Limits::default(), None, chrono::Utc::now());
    let make = |n: usize, category: &str| -> Vec<AuditEvent> {
        (0..n).map(|i| parser.parse(i, event(category, "acme")).expect("valid")).collect()
    };

    // In turn: after the first rounds each store holds a head the other has moved.
    let mut audit = 0;
    let mut security = 0;
    for round in 0..8 {
        let mut events = make(3, "auth");
        events.extend(make(2, "security"));
        let written = stores[round % 2].persist(&requests(&events)).await.expect("persisted");
        assert_eq!(written, 5, "round {round}");
        audit += 3;
        security += 2;
    }
    // From the third round on, each store's remembered heads had been moved by the
    // other: the guarded statement must notice and change nothing (not fail on a
    // taken sequence number), and the batch take the locking path. Having noticed
    // once, each store then locks at once (contention is expected to go on).
    assert_eq!(stores[0].moved_heads() + stores[1].moved_heads(), 2, "stale heads noticed, not collided with");
    // At once, and a store repeating batches of its own (its cache is then right).
    for round in 0..10 {
        let (first, second) = (make(4, "auth"), make(3, "auth"));
        let (first, second) = (requests(&first), requests(&second));
        let (a, b) = tokio::join!(stores[0].persist(&first), stores[1].persist(&second));
        assert_eq!((a.expect("first"), b.expect("second")), (4, 3), "round {round}");
        let again = make(2, "auth");
        assert_eq!(stores[round % 2].persist(&requests(&again)).await.expect("again"), 2);
        audit += 9;
    }
    // A retry, through a store whose cache is current, leaves one copy.
    let retried = make(3, "auth");
    assert_eq!(stores[0].persist(&requests(&retried)).await.expect("first try"), 3);
    assert_eq!(stores[0].persist(&requests(&retried)).await.expect("retry"), 0);
    audit += 3;

    for (table, expected) in [(Table::AuditLogs, audit), (Table::SecurityEvents, security)] {
        let rows = stores[0].read_chain(&first("acme", table)).await.expect("chain");
        assert_eq!(rows.len(), expected, "{table}");
        recompute(&first("acme", table), &rows).unwrap_or_else(|e| panic!("{table}: {e}"));
        let head: i64 = sqlx::query_scalar("SELECT seq FROM chain_heads WHERE tenant_id = 'acme' AND table_name = $1")
            .bind(table.as_str())
            .fetch_one(&app.pool)
            .await
            .expect("head");
        assert_eq!(head, expected as i64, "{table}");
    }
    app.stop().await;
}

/// Three stores stand for three nodes writing the same 12 tenants at once, each
/// batch spanning several of them: each claims its own writer shard, so none ever
/// finds a head moved by another; every event is stored once, every chain is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_writers_on_the_same_tenants_extend_a_chain_each_and_keep_every_chain_whole() {
    use tierlog::event::{AuditEvent, EventParser, Limits};
    use tierlog::tiers::DurableStore;

    let app = TestApp::spawn().await;
    let stores: Vec<PgStore> = (0..3).map(|_| PgStore::from_pool(app.pool.clone())).collect();
    let parser = EventParser::new(Limits::default(), None, chrono::Utc::now());
    let tenants: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    let batches: Vec<Vec<AuditEvent>> = (0..60)
        .map(|b| {
            (0..48)
                .map(|i| {
                    // Every batch gives each tenant both tables (its events are i, i + 12, ...).
                    let category = if (b + i / 12) % 3 == 0 { "security" } else { "auth" };
                    parser.parse(i, event(category, &tenants[(b * 5 + i) % tenants.len()])).expect("valid")
                })
                .collect()
        })
        .collect();
    let writers = stores.iter().enumerate().map(|(w, store)| {
        let mine: Vec<&Vec<AuditEvent>> = batches.iter().skip(w).step_by(stores.len()).collect();
        async move {
            let mut written = 0;
            for events in mine {
                written += store.persist(&requests(events)).await.expect("persisted");
            }
            written
        }
    });
    let written: usize = join_all(writers).await.into_iter().sum();
    assert_eq!(written, 60 * 48);
    let mut shards: Vec<i32> = stores.iter().map(|s| s.writer_shard().expect("claimed")).collect();
    shards.sort();
    assert_eq!(shards, [0, 1, 2], "each store claims the lowest free shard");
    assert_eq!(stores.iter().map(PgStore::moved_heads).sum::<u64>(), 0, "no store waited on another's heads");
    let mut rows_seen = 0;
    for tenant in &tenants {
        for table in [Table::AuditLogs, Table::SecurityEvents] {
            let chains = tierlog::tiers::postgres::verify::chains(&app.pool, Some(tenant), Some(table)).await.expect("chains");
            assert_eq!(chains.len(), 3, "{tenant} {table}: one chain per writer");
            for (chain, head) in chains {
                let rows = stores[0].read_chain(&chain).await.expect("chain");
                assert_eq!(head, chain.base() + rows.len() as i64, "{chain}");
                recompute(&chain, &rows).unwrap_or_else(|e| panic!("{chain}: {e}"));
                rows_seen += rows.len();
            }
        }
    }
    assert_eq!(rows_seen, 60 * 48, "every event once");
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");

    // A writer gone frees its shard for the next one: a tenant has as many chains as
    // writers at once, not as many as ever started.
    let gone = stores.iter().position(|s| s.writer_shard() == Some(1)).expect("shard 1");
    let mut stores = stores;
    drop(stores.remove(gone));
    let released = std::time::Instant::now();
    loop {
        // pg_locks spans the server: only this test's database counts.
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 1 AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
            .fetch_one(&app.pool)
            .await
            .expect("locks");
        if held == 0 {
            break;
        }
        assert!(released.elapsed() < std::time::Duration::from_secs(5), "the dropped store's claim is released at once");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let next = PgStore::from_pool(app.pool.clone());
    let fresh: Vec<AuditEvent> = (0..5).map(|i| parser.parse(i, event("auth", "t0")).expect("valid")).collect();
    assert_eq!(next.persist(&requests(&fresh)).await.expect("persisted"), 5);
    assert_eq!(next.writer_shard(), Some(1), "the freed shard is claimed again");
    let verdict = app.verify_all().await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    app.stop().await;
}

/// At start the writers' connections are opened and warmed, so the first batches do
/// not wait for a connection (or for Postgres to load the tables' descriptions).
#[tokio::test]
async fn the_writer_connections_are_opened_before_the_first_batch() {
    use sqlx::Connection;

    let db = crate::helpers::TestDb::create().await;
    let mut settings = tierlog::config::Settings::defaults().expect("defaults").postgres;
    settings.url = db.url.clone();
    let store = PgStore::connect_lazy(&settings).expect("store");
    tierlog::tiers::postgres::migrate(store.pool()).await.expect("migrate");
    let mut admin = sqlx::PgConnection::connect(&crate::helpers::admin_database_url()).await.expect("admin");
    let mut open = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tierlog'")
            .bind(&db.name)
            .fetch_one(&mut admin)
            .await
            .expect("count")
    };
    let before = open().await;
    store.warm_up(3).await;
    assert_eq!(open().await - before, 3, "three writer connections were opened");
}

/// A database written before writer shards existed (one head per tenant and table)
/// migrates in place: its chains become shard 0's, verify as they are, and a node
/// writing after the migration extends them from where they stopped.
#[tokio::test]
async fn chains_written_before_writer_shards_migrate_in_place_and_go_on() {
    use tierlog::event::{EventParser, Limits};
    use tierlog::tiers::postgres::verify::{chains, verify_chain};
    use tierlog::tiers::DurableStore;

    let db = crate::helpers::TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    tierlog::tiers::postgres::migrate(&pool).await.expect("migrate");
    let parser = EventParser::new(Limits::default(), None, chrono::Utc::now());
    // One process before and after: it keeps its claim on shard 0 throughout.
    let store = PgStore::from_pool(pool.clone());
    let before: Vec<_> = (0..6).map(|i| parser.parse(i, event("auth", "acme")).expect("valid")).collect();
    assert_eq!(store.persist(&requests(&before)).await.expect("persisted"), 6);
    // Back to the schema before writer shards, rows and heads kept.
    sqlx::raw_sql(
        "ALTER TABLE chain_heads DROP CONSTRAINT chain_heads_seq_in_shard;
         ALTER TABLE chain_heads DROP CONSTRAINT chain_heads_pkey;
         ALTER TABLE chain_heads DROP COLUMN shard;
         ALTER TABLE chain_heads ADD PRIMARY KEY (tenant_id, table_name);
         ALTER TABLE chain_heads RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
         DELETE FROM _sqlx_migrations WHERE version = 6;",
    )
    .execute(&pool)
    .await
    .expect("schema before shards");

    tierlog::tiers::postgres::migrate(&pool).await.expect("migrates again");
    let keys = tierlog::integrity::checkpoint::Keyring::new(Vec::new());
    let found = chains(&pool, Some("acme"), None).await.expect("chains");
    assert_eq!(found, [(Chain::new("acme", Table::AuditLogs, 0), 6)], "the old chain is shard 0's");
    let report = verify_chain(&pool, &keys, &found[0].0).await.expect("verify");
    assert!(report.ok && report.rows_checked == 6, "{report:?}");

    let after: Vec<_> = (0..4).map(|i| parser.parse(i, event("auth", "acme")).expect("valid")).collect();
    assert_eq!(store.persist(&requests(&after)).await.expect("persisted"), 4);
    assert_eq!(store.writer_shard(), Some(0));
    let acme = first("acme", Table::AuditLogs);
    let rows = store.read_chain(&acme).await.expect("chain");
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=10).collect::<Vec<i64>>(), "extended where it stopped");
    recompute(&acme, &rows).expect("whole");
    drop(store);
    pool.close().await;
}
