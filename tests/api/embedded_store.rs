//! The embedded SQLite store: chained writes, idempotent retries, verification that
//! catches tampering, append-only rules and full-text search, on a real file.

use serde_json::{json, Value};
use tierlog::config::Settings;
use tierlog::event::{EventParser, Limits};
use tierlog::ingest::route::Routing;
use tierlog::integrity::checkpoint::{Keyring, Signer};
use tierlog::tiers::sqlite::verify::verify_chain;
use tierlog::tiers::sqlite::SqliteStore;
use tierlog::tiers::{Chain, DurableStore, EncodedBatch, Table};
use uuid::Uuid;

fn batch(items: Vec<Value>) -> EncodedBatch {
    let parser = EventParser::new(Limits::default(), None, chrono::Utc::now());
    EncodedBatch::new(items.into_iter().enumerate().map(|(i, item)| parser.parse(i, item).expect("valid")).collect())
}

fn item(tenant: &str, message: &str) -> Value {
    json!({"id": Uuid::new_v4(), "category": "auth", "tenant_id": tenant, "action": "auth.login", "status": "success",
           "user_id": "u-1", "username": "ann", "ip_address": "2001:db8::7", "message": message,
           "details": {"phone": "+1 555 0100", "n": 1}})
}

async fn tamper(store: &SqliteStore, sql: &str) {
    let mut tx = store.pool().begin().await.expect("tx");
    sqlx::query("UPDATE tierlog_maintenance SET on_ = 1").execute(&mut *tx).await.expect("maintenance on");
    sqlx::query(sql).execute(&mut *tx).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    sqlx::query("UPDATE tierlog_maintenance SET on_ = 0").execute(&mut *tx).await.expect("maintenance off");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn the_embedded_store_chains_verifies_and_refuses_changes() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("data/tierlog.db");
    let settings = Settings::defaults().expect("defaults");
    let routing = Routing::new(&settings);
    let keys = Keyring::new(vec![Signer::generate().public().clone()]);
    let verdict = |store: SqliteStore, tenant: &'static str| {
        let keys = keys.clone();
        async move { verify_chain(store.pool(), &keys, &Chain::new(tenant, Table::AuditLogs, 0)).await.expect("verify") }
    };

    let store = SqliteStore::open(&path).await.expect("open");
    let first = batch((0..5).map(|i| item("acme", &format!("login number {i}"))).chain([item("beta", "other tenant")]).collect());
    assert_eq!(store.persist(&routing.persist_requests(&first)).await.expect("persist"), 6);
    assert_eq!(store.persist(&routing.persist_requests(&first)).await.expect("retry"), 0, "a retry adds nothing");
    let report = verdict(store.clone(), "acme").await;
    assert!(report.ok && report.rows_checked == 5 && report.head_seq == 5, "{report:?}");

    // Reopened from the file, the chain goes on from its head.
    store.pool().close().await;
    let store = SqliteStore::open(&path).await.expect("reopen");
    let second = batch(vec![item("acme", "after reopening")]);
    assert_eq!(store.persist(&routing.persist_requests(&second)).await.expect("persist"), 1);
    let rows = store.read_chain_after(&Chain::new("acme", Table::AuditLogs, 0), 0, 100).await.expect("read");
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(rows[5].event.message.as_deref(), Some("after reopening"));
    assert_eq!(rows[0].pii_paths, vec![vec!["details".to_owned(), "phone".to_owned()]]);
    assert_eq!(rows[0].event, first.events[0], "a row reads back as the event it was");
    assert!(verdict(store.clone(), "acme").await.ok);

    // Full-text search over message, action and details.
    let hits: Vec<i64> = sqlx::query_scalar(
        "SELECT a.seq FROM audit_logs a JOIN audit_logs_search s ON s.rowid = a.rowid
         WHERE audit_logs_search MATCH 'reopening' AND a.tenant_id = 'acme'",
    )
    .fetch_all(store.pool())
    .await
    .expect("search");
    assert_eq!(hits, [6]);

    // Append-only: without the maintenance flag, changes are refused.
    let refused = sqlx::query("UPDATE audit_logs SET message = 'x' WHERE seq = 1").execute(store.pool()).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("append-only")));
    assert!(sqlx::query("DELETE FROM audit_logs").execute(store.pool()).await.is_err());

    // Tampering is caught as on Postgres.
    tamper(&store, "UPDATE audit_logs SET message = 'nothing' WHERE tenant_id = 'acme' AND seq = 3").await;
    assert_eq!(
        serde_json::to_value(verdict(store.clone(), "acme").await.first_break).expect("json"),
        json!({"kind": "content_changed", "seq": 3})
    );
    tamper(&store, "UPDATE audit_logs SET username = 'mallory' WHERE tenant_id = 'beta'").await;
    assert_eq!(
        serde_json::to_value(verdict(store.clone(), "beta").await.first_break).expect("json"),
        json!({"kind": "personal_fields_changed", "seq": 1})
    );
    tamper(&store, "DELETE FROM audit_logs WHERE tenant_id = 'acme' AND seq = 6").await;
    assert_eq!(
        serde_json::to_value(verdict(store.clone(), "acme").await.first_break).expect("json"),
        json!({"kind": "content_changed", "seq": 3}),
        "the first break is still the first"
    );
    store.pool().close().await;
}

/// The events of the parity test: every filter has something to select.
fn parity_events() -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..60 {
        let tenant = if i % 5 == 0 { "beta" } else { "acme" };
        let category = ["auth", "audit", "auth"][i % 3];
        let mut e = json!({
            "id": Uuid::new_v4(), "category": category, "tenant_id": tenant,
            "timestamp": format!("2026-11-{:02}T{:02}:00:00Z", 1 + i % 20, i % 24),
            "action": if i % 4 == 0 { "auth.login_failed" } else { "auth.login" },
            "status": if i % 4 == 0 { "failure" } else { "success" },
            "user_id": format!("u-{}", i % 7),
            "ip_address": if i % 2 == 0 { format!("10.{}.0.{}", i % 3, i) } else { format!("2001:db8::{:x}", i) },
            "request_id": format!("req-{}", i % 9),
            "resource": "user", "resource_id": format!("r-{}", i % 4),
            "message": if i % 6 == 0 { "invalid password for account" } else { "session started" },
        });
        if i % 10 == 0 {
            e["details"] = json!({"note": "password reset requested"});
        }
        events.push(e);
    }
    events
}

#[tokio::test]
async fn every_filter_reads_the_same_page_from_sqlite_and_postgres() {
    use tierlog::keys::Principal;
    use tierlog::query::Filters;

    let app = crate::helpers::TestApp::spawn().await;
    let events = parity_events();
    assert_eq!(app.post_events(&json!(events)).await.status(), 200);
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(&dir.path().join("tierlog.db")).await.expect("open");
    let settings = Settings::defaults().expect("defaults");
    let routing = Routing::new(&settings);
    let parsed = batch(events);
    store.persist(&routing.persist_requests(&parsed)).await.expect("persist");

    let categories = [tierlog::event::Category::Auth, tierlog::event::Category::Audit];
    let principal = Principal::bootstrap();
    for query in [
        "",
        "tenant_id=acme",
        "tenant_id=acme&user_id=u-3",
        "action=auth.login_failed",
        "status=failure&tenant_id=acme",
        "resource=user&resource_id=r-2",
        "request_id=req-4",
        "ip_address=10.1.0.0/16",
        "ip_address=10.0.0.0/8",
        "ip_address=2001:db8::/32",
        "ip_address=2001:db8::3",
        "ip_address=10.2.0.8",
        "from=2026-11-05T00:00:00Z&to=2026-11-12T00:00:00Z",
        "q=password",
        "q=invalid password&tenant_id=acme",
        "q=reset",
        "limit=7&include_total=true",
        "tenant_id=acme&limit=5&include_total=true&status=success",
    ] {
        let (mut filters, _) = Filters::parse(Some(query), &principal, &[]).expect("filters");
        loop {
            let pg = tierlog::tiers::postgres::query::page(&app.pool, Table::AuditLogs, &filters, &categories).await.expect("pg");
            let lite = tierlog::tiers::sqlite::query::page(store.pool(), Table::AuditLogs, &filters, &categories).await.expect("sqlite");
            let ids = |page: &tierlog::tiers::postgres::query::Page| {
                page.items.iter().map(|r| r.event.id).collect::<Vec<_>>()
            };
            assert_eq!(ids(&lite), ids(&pg), "{query}");
            assert_eq!(lite.total, pg.total, "{query}");
            assert_eq!(lite.next_cursor.is_some(), pg.next_cursor.is_some(), "{query}");
            match pg.next_cursor {
                Some(next) => filters.cursor = Some(next),
                None => break,
            }
        }
    }
    // Aggregates agree too.
    use tierlog::tiers::postgres::stats::{FailureQuery, GroupBy};
    for query in ["", "tenant_id=acme", "ip_address=10.0.0.0/8", "q=password"] {
        let (filters, _) = Filters::parse(Some(query), &principal, &[]).expect("filters");
        let sorted = |mut counts: Vec<tierlog::tiers::postgres::stats::Count>| {
            counts.sort_by(|a, b| (&a.category, &a.status, &a.action).cmp(&(&b.category, &b.status, &b.action)));
            counts
        };
        let pg = tierlog::tiers::postgres::stats::counts(&app.pool, Table::AuditLogs, &filters, &categories).await.expect("pg");
        let lite = tierlog::tiers::sqlite::stats::counts(store.pool(), Table::AuditLogs, &filters, &categories).await.expect("sqlite");
        assert_eq!(sorted(lite), sorted(pg), "counts {query}");
        for group_by in [GroupBy::Ip, GroupBy::User] {
            let how = FailureQuery { group_by, logins_only: true, min_failures: 1, limit: 100 };
            let pg = tierlog::tiers::postgres::stats::failures(&app.pool, Table::AuditLogs, &filters, &categories, how).await.expect("pg");
            let lite =
                tierlog::tiers::sqlite::stats::failures(store.pool(), Table::AuditLogs, &filters, &categories, how).await.expect("sqlite");
            assert!(!pg.is_empty() || query.contains("q="), "failures {query}: the fixture has some");
            assert_eq!(lite, pg, "failures {query} {group_by:?}");
        }
    }
    store.pool().close().await;
    app.stop().await;
}

#[tokio::test]
async fn keys_live_in_the_embedded_store_too() {
    use tierlog::keys::{KeyStore, NewKey};
    use tierlog::keys::{digest, Permission};

    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(&dir.path().join("tierlog.db")).await.expect("open");
    let keys = KeyStore::sqlite(store.pool().clone());
    let new = |name: &str, tenant: Option<&str>, expires_at| NewKey {
        name: name.into(),
        tenant_id: tenant.map(str::to_owned),
        permissions: vec![Permission::EventsWrite, Permission::LogsAuthView],
        expires_at,
        created_by: "test".into(),
    };
    let (acme, acme_secret) = keys.create(new("acme ingest", Some("acme"), None)).await.expect("create");
    let (_, beta_secret) = keys.create(new("beta", Some("beta"), None)).await.expect("create");
    let (_, old_secret) =
        keys.create(new("old", None, Some(chrono::Utc::now() - chrono::Duration::hours(1)))).await.expect("create");
    assert_eq!(acme.tenant_id.as_deref(), Some("acme"));
    assert_eq!(acme.permissions, vec![Permission::EventsWrite, Permission::LogsAuthView]);

    let principal = keys.authenticate(&digest(&acme_secret.plaintext)).await.expect("auth").expect("known");
    assert_eq!((principal.tenant.as_deref(), principal.key_id.clone()), (Some("acme"), acme.id.to_string()));
    assert!(keys.authenticate(&digest(&beta_secret.plaintext)).await.expect("auth").is_some());
    assert!(keys.authenticate(&digest(&old_secret.plaintext)).await.expect("auth").is_none(), "expired");
    assert!(keys.authenticate(&digest("tlk_unknown")).await.expect("auth").is_none());

    assert_eq!(keys.list(Some("acme")).await.expect("list").len(), 1);
    assert_eq!(keys.list(None).await.expect("list").len(), 3);
    assert!(keys.get(acme.id, Some("beta")).await.expect("get").is_none(), "another tenant's key is not found");
    assert!(keys.revoke(acme.id, Some("beta")).await.expect("revoke").is_none());
    let revoked = keys.revoke(acme.id, Some("acme")).await.expect("revoke").expect("found");
    assert!(revoked.revoked_at.is_some());
    assert!(keys.authenticate(&digest(&acme_secret.plaintext)).await.expect("auth").is_none(), "revoked at once");
    let listed = keys.get(acme.id, None).await.expect("get").expect("found");
    assert_eq!(listed.revoked_at, revoked.revoked_at, "revoking twice keeps the first time");
    store.pool().close().await;
}

#[tokio::test]
async fn embedded_checkpoints_catch_a_rewound_head_and_forgeries() {
    use tierlog::integrity::checkpoint::ChainHead;
    use tierlog::tiers::sqlite::checkpoints;

    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(&dir.path().join("tierlog.db")).await.expect("open");
    let routing = Routing::new(&Settings::defaults().expect("defaults"));
    let signer = Signer::generate();
    let keys = Keyring::new(vec![signer.public().clone()]);
    for tenant in ["rewound", "forged"] {
        let events = batch((0..5).map(|i| item(tenant, &format!("event {i}"))).collect());
        store.persist(&routing.persist_requests(&events)).await.expect("persist");
    }
    let made = checkpoints::checkpoint_heads(store.pool(), &signer, None, "on_demand", chrono::Utc::now()).await.expect("sign");
    assert_eq!(made.len(), 2);
    assert!(checkpoints::checkpoint_heads(store.pool(), &signer, None, "on_demand", chrono::Utc::now()).await.expect("sign").is_empty());
    assert_eq!(checkpoints::list(store.pool(), Some("rewound"), None, 10).await.expect("list"), vec![made[1].clone()]);
    let report = verify_chain(store.pool(), &keys, &Chain::new("rewound", Table::AuditLogs, 0)).await.expect("verify");
    assert!(report.ok && report.checkpoints == 1, "{report:?}");

    tamper(&store, "DELETE FROM audit_logs WHERE tenant_id = 'rewound' AND seq = 5").await;
    tamper(
        &store,
        "UPDATE chain_heads SET seq = 4, head_hash = (SELECT row_hash FROM audit_logs WHERE tenant_id = 'rewound' AND seq = 4)
         WHERE tenant_id = 'rewound'",
    )
    .await;
    let report = verify_chain(store.pool(), &keys, &Chain::new("rewound", Table::AuditLogs, 0)).await.expect("verify");
    assert_eq!(serde_json::to_value(report.first_break).expect("json"), json!({"kind": "missing_tail", "last_seq": 4, "head_seq": 5}));

    let forged = Signer::generate().checkpoint(
        ChainHead { tenant_id: "forged".into(), table: "audit_logs".into(), seq: 3, hash: hex::encode([1u8; 32]) },
        "on_demand",
        chrono::Utc::now(),
    );
    checkpoints::insert(store.pool(), &forged).await.expect("insert");
    let report = verify_chain(store.pool(), &keys, &Chain::new("forged", Table::AuditLogs, 0)).await.expect("verify");
    assert_eq!(
        serde_json::to_value(report.first_break).expect("json"),
        json!({"kind": "bad_checkpoint", "seq": 3, "reason": "unknown_key"})
    );
    assert!(sqlx::query("DELETE FROM checkpoints").execute(store.pool()).await.is_err(), "append-only");
    store.pool().close().await;
}

#[tokio::test]
async fn embedded_erasure_removes_the_subject_and_keeps_chains_valid() {
    use tierlog::tiers::sqlite::erasure::{erase_subject, subject_rows};

    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(&dir.path().join("tierlog.db")).await.expect("open");
    let routing = Routing::new(&Settings::defaults().expect("defaults"));
    let keys = Keyring::new(vec![Signer::generate().public().clone()]);
    let events = batch(vec![
        json!({"category": "auth", "tenant_id": "acme", "user_id": "u-42", "username": "dana", "email": "d@example.com",
               "ip_address": "198.51.100.4", "user_agent": "Firefox", "details": {"phone": "+1 555 0100", "mfa": true}}),
        json!({"category": "audit", "tenant_id": "acme", "user_id": "admin", "username": "root", "resource": "user",
               "resource_id": "u-42", "changes": {"before": {"email": "d@example.com", "plan": "free"}}}),
        json!({"category": "auth", "tenant_id": "beta", "user_id": "u-42", "username": "dana"}),
    ]);
    store.persist(&routing.persist_requests(&events)).await.expect("persist");
    assert_eq!(subject_rows(store.pool(), Some("acme"), "u-42", 100).await.expect("rows").len(), 2);

    let changed = erase_subject(store.pool(), Some("acme"), "u-42", "erased-abc").await.expect("erase");
    assert_eq!(changed.get("audit_logs"), Some(&2));
    let rows = store.read_chain_after(&Chain::new("acme", Table::AuditLogs, 0), 0, 10).await.expect("read");
    let own = &rows[0].event;
    assert_eq!(own.user_id.as_deref(), Some("erased-abc"));
    assert!(own.username.is_none() && own.email.is_none() && own.ip_address.is_none() && own.user_agent.is_none());
    assert_eq!(own.details.as_ref().map(|d| d["phone"].clone()), Some(json!("[erased]")));
    assert!(rows[0].pii_salt.is_none());
    let about = &rows[1].event;
    assert_eq!((about.user_id.as_deref(), about.username.as_deref()), (Some("admin"), Some("root")));
    assert_eq!(about.changes.as_ref().and_then(|c| c.before.as_ref()).map(|b| b["email"].clone()), Some(json!("[erased]")));
    let ip_key: Option<String> = sqlx::query_scalar("SELECT ip_key FROM audit_logs WHERE tenant_id = 'acme' AND seq = 1")
        .fetch_one(store.pool())
        .await
        .expect("ip_key");
    assert!(ip_key.is_none(), "the address key goes with the address");
    for tenant in ["acme", "beta"] {
        let report = verify_chain(store.pool(), &keys, &Chain::new(tenant, Table::AuditLogs, 0)).await.expect("verify");
        assert!(report.ok, "{tenant}: {report:?}");
    }
    let beta = store.read_chain_after(&Chain::new("beta", Table::AuditLogs, 0), 0, 10).await.expect("read");
    assert_eq!(beta[0].event.username.as_deref(), Some("dana"), "another tenant's subject stays");
    assert_eq!(subject_rows(store.pool(), Some("acme"), "u-42", 100).await.expect("rows").len(), 1, "only the row about them");
    store.pool().close().await;
}

#[tokio::test]
async fn embedded_retention_deletes_archives_and_keeps_chains_verifiable() {
    use std::sync::Arc;
    use tierlog::retention::job::{Db, RetentionJob};
    use tierlog::retention::{Policies, PolicyHandle, TenantPolicy};
    use tierlog::tiers::sqlite::retention::{load_policies, save_policies};

    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(&dir.path().join("tierlog.db")).await.expect("open");
    let mut settings = Settings::defaults().expect("defaults");
    settings.retention.batch_size = 3;
    settings.retention.archive = true;
    settings.retention.archive_path = dir.path().join("archive");
    let defaults = Policies::from_settings(&settings);
    let tenants = [("held".to_owned(), TenantPolicy { legal_hold: true, ..TenantPolicy::default() })].into();
    save_policies(store.pool(), &[("short".to_owned(), [(tierlog::event::Category::Auth, 1)].into())].into(), &tenants)
        .await
        .expect("save");
    save_policies(
        store.pool(),
        &Default::default(),
        &[("acme".to_owned(), TenantPolicy { plan: Some("short".into()), ..TenantPolicy::default() })].into(),
    )
    .await
    .expect("save");
    let policies = PolicyHandle::new(load_policies(store.pool(), &defaults).await.expect("load"));
    assert_eq!(policies.snapshot().days("acme", tierlog::event::Category::Auth), 1);
    let routing = Routing::with_policies(&settings, policies.clone());

    // acme: auth 1-4 (1 day), audit 5 (365 days), auth 6-7 (1 day); held: auth 1-3.
    let mut items: Vec<Value> = (0..4).map(|i| item("acme", &format!("a{i}"))).collect();
    items.push(json!({"category": "audit", "tenant_id": "acme", "message": "kept"}));
    items.extend((0..2).map(|i| item("acme", &format!("b{i}"))));
    items.extend((0..3).map(|i| item("held", &format!("h{i}"))));
    store.persist(&routing.persist_requests(&batch(items))).await.expect("persist");

    let signer = Arc::new(Signer::generate());
    let keys = Keyring::new(vec![signer.public().clone()]);
    let job = RetentionJob::new(Db::Sqlite(store.pool().clone()), signer.clone(), keys.clone(), policies, &settings.retention);
    let nothing = job.run_once(chrono::Utc::now()).await.expect("run");
    assert!(nothing.deleted.is_empty());
    let report = job.run_once(chrono::Utc::now() + chrono::Duration::days(2)).await.expect("run");
    assert_eq!(report.deleted.get("audit_logs"), Some(&6));
    assert_eq!(report.deleted_by_tenant.get("acme"), Some(&6));
    assert_eq!(report.held_tenants, vec!["held".to_owned()]);
    assert_eq!(report.checkpoints, 1, "rows 1-4 folded into a checkpoint at 4");
    assert!(!report.archive_manifests.is_empty());

    let left = store.read_chain_after(&Chain::new("acme", Table::AuditLogs, 0), 0, 100).await.expect("read");
    assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), [5]);
    assert_eq!(store.read_chain_after(&Chain::new("held", Table::AuditLogs, 0), 0, 100).await.expect("read").len(), 3);
    let tombs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM chain_tombstones WHERE tenant_id = 'acme' ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .expect("tombs");
    assert_eq!(tombs, [6, 7], "the trailing deletions keep their tombstones");
    let report = verify_chain(store.pool(), &keys, &Chain::new("acme", Table::AuditLogs, 0)).await.expect("verify");
    assert!(report.ok && report.first_seq == 5 && report.checkpoints == 1, "{report:?}");

    // The archive verifies offline and holds exactly the deleted rows.
    let archived = tierlog::retention::archive::verify(&dir.path().join("archive"), &keys, &[]).expect("archive");
    assert_eq!(archived.iter().map(|r| r.rows).sum::<usize>(), 6);
    assert!(archived.iter().all(|r| r.ok), "{archived:?}");
    store.pool().close().await;
}
