//! The table endpoints: filters, pagination, tenant isolation and permissions.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{event, TestApp, KEY};

async fn get_json(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let response = app.request_with(reqwest::Method::GET, path, key).send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Ids of the items, leaving out tierlog's own records of earlier reads.
fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|i| i["logger"] != "tierlog.access")
                .map(|i| i["id"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Events of tenant `acme` with distinct values for every filter.
fn fixture() -> Vec<Value> {
    let mut login = event("auth", "acme");
    login["action"] = json!("auth.login_failed");
    login["status"] = json!("failure");
    login["user_id"] = json!("u-7");
    login["ip_address"] = json!("10.1.2.3");
    login["timestamp"] = json!("2026-11-20T10:00:00Z");
    login["request_id"] = json!("req-login");
    login["message"] = json!("invalid password for account");
    let mut change = event("audit", "acme");
    change["action"] = json!("user.role_changed");
    change["resource"] = json!("user");
    change["resource_id"] = json!("u-9");
    change["ip_address"] = json!("2001:db8::5");
    change["timestamp"] = json!("2026-11-21T10:00:00Z");
    change["details"] = json!({"reason": "quarterly review"});
    let mut api_error = event("api", "acme");
    api_error["level"] = json!("ERROR");
    api_error["status"] = json!("error");
    api_error["timestamp"] = json!("2026-11-22T10:00:00Z");
    api_error["ip_address"] = json!("192.168.0.1");
    vec![login, change, api_error]
}

#[tokio::test]
async fn every_filter_selects_the_same_events_from_postgres_redis_and_the_merge() {
    let app = TestApp::spawn().await;
    let events = fixture();
    assert_eq!(app.post_events(&json!(events)).await.status(), 200);
    assert_eq!(app.post_events(&event("auth", "beta")).await.status(), 200);
    let id = |i: usize| events[i]["id"].as_str().expect("id").to_owned();

    let cases: Vec<(&str, Vec<String>)> = vec![
        ("tenant_id=acme", vec![id(2), id(1), id(0)]),
        ("tenant_id=acme&category=auth", vec![id(0)]),
        ("tenant_id=acme&user_id=u-7", vec![id(0)]),
        ("tenant_id=acme&action=user.role_changed", vec![id(1)]),
        ("tenant_id=acme&status=failure", vec![id(0)]),
        ("tenant_id=acme&resource=user&resource_id=u-9", vec![id(1)]),
        ("tenant_id=acme&ip_address=10.0.0.0/8", vec![id(0)]),
        ("tenant_id=acme&ip_address=2001:db8::/32", vec![id(1)]),
        ("tenant_id=acme&ip_address=192.168.0.1", vec![id(2)]),
        ("tenant_id=acme&request_id=req-login", vec![id(0)]),
        ("tenant_id=acme&from=2026-11-21T00:00:00Z", vec![id(2), id(1)]),
        ("tenant_id=acme&to=2026-11-21T00:00:00Z", vec![id(0)]),
        ("tenant_id=acme&q=password", vec![id(0)]),
        ("tenant_id=acme&q=quarterly", vec![id(1)]),
        ("tenant_id=acme&q=role_changed", vec![id(1)]),
        ("tenant_id=acme&category=security", vec![]),
        ("tenant_id=acme&user_id=%27%3B%20DROP%20TABLE%20audit_logs%3B--", vec![]),
    ];
    // The hot tier is filtered in memory, Postgres in SQL: both must agree.
    for endpoint in ["/audit/logs", "/audit/redis", "/audit/combined"] {
        for (query, expected) in &cases {
            let (status, body) = get_json(&app, KEY, &format!("{endpoint}?{query}")).await;
            assert_eq!(status, 200, "{endpoint}?{query}: {body}");
            assert_eq!(&ids(&body), expected, "{endpoint}?{query}");
        }
    }
    let (_, body) = get_json(&app, KEY, "/audit/logs?tenant_id=acme&include_total=true&limit=1&to=2026-11-23T00:00:00Z").await;
    assert_eq!(body["total"], 3);
    assert_eq!(body["items"][0]["table"], "audit_logs");
    assert_eq!(body["items"][0]["id"], events[2]["id"]);
    // The first row of the tenant's chain of api events (their retention class).
    let api = tierlog::tiers::Table::AuditLogs.class_of(tierlog::event::Category::Api);
    assert_eq!(body["items"][0]["seq"], tierlog::integrity::chain::shard_base(api) + 1);
    assert_eq!(body["items"][0]["hash"].as_str().map(str::len), Some(64));
    assert!(body["next_cursor"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn pages_have_no_gaps_or_repeats_while_writes_continue() {
    let app = TestApp::spawn().await;
    let initial: Vec<Value> = (0..3000).map(|_| event("auth", "acme")).collect();
    for chunk in initial.chunks(500) {
        assert_eq!(app.post_events(&json!(chunk)).await.status(), 200);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        // A write lands between every two pages, in the past and in the future.
        let mut late = event("auth", "acme");
        let ahead = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
        late["timestamp"] = json!(if pages % 2 == 0 { "2020-01-01T00:00:00Z".to_owned() } else { ahead });
        let writes = join_all((0..3).map(|_| app.post_events(&late))).await;
        assert!(writes.iter().all(|w| w.status() == 200));
        let path = match &cursor {
            Some(c) => format!("/audit/logs?limit=250&category=auth&cursor={c}"),
            None => "/audit/logs?limit=250&category=auth".to_owned(),
        };
        let (status, body) = get_json(&app, KEY, &path).await;
        assert_eq!(status, 200);
        seen.extend(ids(&body));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 100, "paging must end");
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no item is returned twice");
    for event in &initial {
        assert!(unique.contains(&event["id"].as_str().expect("id").to_owned()), "no initial item is skipped");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_key_reads_nothing_of_another_tenant_through_any_table_endpoint() {
    let app = TestApp::spawn().await;
    let mut batch = Vec::new();
    for tenant in ["acme", "beta"] {
        let mut security = event("security", tenant);
        security["security"] = json!({"event_type": "ip_blocked", "severity": "high"});
        let mut financial = event("financial", tenant);
        financial["financial"] = json!({"amount": "5.00", "currency": "EUR"});
        batch.extend([event("auth", tenant), event("audit", tenant), security, financial]);
    }
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    let all_views = "logs.auth.view,logs.actions.view,logs.security.view,logs.financial.view";
    let permissions: Vec<&str> = all_views.split(',').collect();
    let (_, acme) = app.create_key(json!({"name": "acme", "tenant_id": "acme", "permissions": permissions})).await;
    for path in ["/audit/logs", "/audit/security-events", "/audit/financial", "/audit/redis", "/audit/combined"] {
        let (status, body) = get_json(&app, &acme, path).await;
        assert_eq!(status, 200, "{path}");
        let items = body["items"].as_array().expect("items");
        assert!(!items.is_empty(), "{path} shows acme's own events");
        assert!(items.iter().all(|i| i["tenant_id"] == "acme"), "{path} leaks another tenant: {body}");
        let (status, _) = get_json(&app, &acme, &format!("{path}?tenant_id=beta")).await;
        assert_eq!(status, 403, "{path}?tenant_id=beta");
    }
    app.stop().await;
}

#[tokio::test]
async fn each_view_permission_opens_only_its_categories() {
    let app = TestApp::spawn().await;
    let mut security = event("security", "acme");
    security["security"] = json!({"event_type": "account_locked"});
    assert_eq!(app.post_events(&json!([event("auth", "acme"), event("audit", "acme"), security])).await.status(), 200);
    let (_, auth_only) = app.create_key(json!({"name": "auth", "permissions": ["logs.auth.view"]})).await;
    let (status, body) = get_json(&app, &auth_only, "/audit/logs").await;
    assert_eq!(status, 200);
    assert!(body["items"].as_array().expect("items").iter().all(|i| i["category"] == "auth"));
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(get_json(&app, &auth_only, "/audit/logs?category=audit").await.0, 403);
    assert_eq!(get_json(&app, &auth_only, "/audit/security-events").await.0, 403);
    assert_eq!(get_json(&app, &auth_only, "/audit/financial").await.0, 403);
    let (_, writer) = app.create_key(json!({"name": "w", "permissions": ["events.write"]})).await;
    assert_eq!(get_json(&app, &writer, "/audit/logs").await.0, 403);
    assert_eq!(get_json(&app, "no-such-key", "/audit/logs").await.0, 401);
    app.stop().await;
}

#[tokio::test]
async fn malformed_filters_get_400_and_never_500() {
    let app = TestApp::spawn().await;
    let queries = [
        "limit=0", "limit=100000", "limit=-1", "from=not-a-date", "to=2026-13-01T00:00:00Z",
        "ip_address=10.0.0.0/99", "ip_address=abc", "cursor=%00%01", "cursor=eyJ0IjoxfQ",
        "category=all", "status=maybe", "unknown=1", "sort=id%20desc", "tenant_id=%27%20OR%201%3D1",
        "q=", "limit=1&limit=2",
    ];
    for query in queries {
        for path in ["/audit/logs", "/audit/security-events", "/audit/financial"] {
            let (status, body) = get_json(&app, KEY, &format!("{path}?{query}")).await;
            assert_eq!(status, 400, "{path}?{query}: {body}");
            assert_eq!(body["error"]["code"], "bad_request");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn every_read_is_recorded_with_its_filters_and_count() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_events(&json!([event("auth", "acme"), event("auth", "acme")])).await.status(), 200);
    let response = app
        .request_with(reqwest::Method::GET, "/audit/logs?tenant_id=acme&category=auth", KEY)
        .header("x-request-id", "req-read-1")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let (action, request_id, details): (String, Option<String>, Value) = sqlx::query_as(
        "SELECT action, request_id, details FROM audit_logs WHERE logger = 'tierlog.access' AND tenant_id = 'acme'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("one access record");
    assert_eq!(action, "logs.viewed");
    assert_eq!(request_id.as_deref(), Some("req-read-1"));
    assert_eq!(details["query"], "tenant_id=acme&category=auth");
    assert_eq!(details["result_count"], 2);
    assert_eq!(details["endpoint"], "GET /audit/logs");
    app.stop().await;
}

#[tokio::test]
async fn reading_an_empty_hot_tier_leaves_it_up_for_the_next_events() {
    let app = TestApp::spawn().await;
    // Nothing in Redis yet under this prefix: the all-tenant views read no list.
    for path in ["/audit/redis", "/audit/combined"] {
        let (status, body) = get_json(&app, KEY, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.get("partial").is_none_or(|p| p == false), "{path} read the hot tier: {body}");
    }
    let batch = json!([event("auth", "acme")]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
    assert_eq!(app.redis.list("acme", tierlog::event::Category::Auth).len(), 1, "the next event reached Redis");
    let (_, ready) = get_json(&app, KEY, "/readyz").await;
    assert_eq!((ready["redis"]["status"].clone(), ready["redis_misses"].clone()), (json!("up"), json!(0)), "{ready}");
    app.stop().await;
}

#[tokio::test]
async fn access_records_stay_out_of_views_and_stats_unless_asked_for() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_events(&json!([event("auth", "acme"), event("audit", "acme")])).await.status(), 200);
    for _ in 0..5 {
        let (status, body) = get_json(&app, KEY, "/audit/combined?tenant_id=acme&limit=2").await;
        assert_eq!(status, 200, "{body}");
        let categories: Vec<&str> = body["items"].as_array().expect("items").iter().map(|i| i["category"].as_str().expect("category")).collect();
        // Reads before this one wrote access records; the view still shows the events.
        assert_eq!(categories.len(), 2, "{body}");
        assert!(categories.iter().all(|c| *c != "access"), "{body}");
    }
    let (_, logs) = get_json(&app, KEY, "/audit/logs?tenant_id=acme").await;
    assert_eq!(logs["items"].as_array().expect("items").len(), 2, "{logs}");

    // Asked for, they are there: one per read, in the Redis and Postgres views alike.
    let (status, access) = get_json(&app, KEY, "/audit/combined?tenant_id=acme&category=access&limit=100").await;
    assert_eq!(status, 200, "{access}");
    let items = access["items"].as_array().expect("items");
    assert_eq!(items.len(), 6, "five combined reads and one logs read: {access}");
    assert!(items.iter().all(|i| i["category"] == "access" && i["logger"] == "tierlog.access"), "{access}");
    assert!(items.iter().all(|i| i["tiers"].as_array().is_some_and(|t| t.len() == 2)), "in both tiers: {access}");

    // Stats count them apart.
    let (_, stats) = get_json(&app, KEY, "/audit/stats?tenant_id=acme").await;
    assert_eq!(stats["total"], 2, "{stats}");
    assert!(stats["by_category"].get("access").is_none(), "{stats}");
    assert_eq!(stats["access_records"], 7, "the reads above and the category=access one: {stats}");
    let (_, only) = get_json(&app, KEY, "/audit/stats?tenant_id=acme&category=access").await;
    assert_eq!((only["total"].clone(), only["by_category"]["access"].clone()), (json!(8), json!(8)), "{only}");

    // Applications cannot write into tierlog's own category.
    let response = app.post_events(&json!([{"category": "access", "tenant_id": "acme", "action": "logs.viewed"}])).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(body.to_string().contains("access is tierlog's own"), "{body}");
    assert_eq!(app.verify_all().await["ok"], true);
    app.stop().await;
}

#[tokio::test]
async fn combined_merges_the_tiers_once_per_event_and_says_which_hold_it() {
    let app = TestApp::spawn_with(|s| {
        s.redis.max_len = 3;
    })
    .await;
    // Five persisted auth events (only the newest three stay in Redis), two api events
    // below ERROR (Redis and files only).
    let mut auth: Vec<Value> = Vec::new();
    for minute in 0..5 {
        let mut e = event("auth", "acme");
        e["timestamp"] = json!(format!("2026-11-20T10:0{minute}:00Z"));
        auth.push(e);
    }
    let mut api: Vec<Value> = Vec::new();
    for minute in 0..2 {
        let mut e = event("api", "acme");
        e["timestamp"] = json!(format!("2026-11-20T10:0{minute}:30Z"));
        api.push(e);
    }
    assert_eq!(app.post_events(&json!(auth)).await.status(), 200);
    assert_eq!(app.post_events(&json!(api)).await.status(), 200);

    let window = "tenant_id=acme&to=2026-11-21T00:00:00Z";
    let (status, body) = get_json(&app, KEY, &format!("/audit/combined?{window}&include_total=true")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], false);
    assert_eq!(body["total"], 7);
    let items = body["items"].as_array().expect("items");
    let tiers: Vec<(String, Value)> =
        items.iter().map(|i| (i["id"].as_str().unwrap_or("").to_owned(), i["tiers"].clone())).collect();
    let expect = |e: &Value, t: Value| (e["id"].as_str().unwrap_or("").to_owned(), t);
    assert_eq!(
        tiers,
        vec![
            expect(&auth[4], json!(["redis", "postgres"])),
            expect(&auth[3], json!(["redis", "postgres"])),
            expect(&auth[2], json!(["redis", "postgres"])),
            expect(&api[1], json!(["redis"])),
            expect(&auth[1], json!(["postgres"])),
            expect(&api[0], json!(["redis"])),
            expect(&auth[0], json!(["postgres"])),
        ]
    );
    // The same list, two at a time.
    let mut paged: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/audit/combined?{window}&limit=2{cursor}");
        let (_, page) = get_json(&app, KEY, &path).await;
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, tiers.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());

    let (_, hot) = get_json(&app, KEY, &format!("/audit/redis?{window}&category=api")).await;
    assert_eq!(ids(&hot), vec![api[1]["id"].as_str().unwrap_or("").to_owned(), api[0]["id"].as_str().unwrap_or("").to_owned()]);
    app.stop().await;
}

#[tokio::test]
async fn combined_answers_from_postgres_flagged_partial_when_redis_is_down() {
    let mut redis = crate::helpers::RedisProcess::start();
    let app = TestApp::spawn_on(crate::helpers::TestRedis::new(redis.url()), |s| {
        s.redis.timeout_ms = 200;
    })
    .await;
    let persisted = event("auth", "acme");
    assert_eq!(app.post_events(&json!([persisted, event("api", "acme")])).await.status(), 200);
    redis.kill();
    let (status, body) = get_json(&app, KEY, "/audit/combined?tenant_id=acme&category=auth").await;
    assert_eq!(status, 200);
    assert_eq!(body["partial"], true);
    assert_eq!(ids(&body), vec![persisted["id"].as_str().unwrap_or("").to_owned()]);
    assert_eq!(body["items"][0]["tiers"], json!(["postgres"]));
    let (status, body) = get_json(&app, KEY, "/audit/redis?tenant_id=acme").await;
    assert_eq!(status, 503, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn combined_never_shows_categories_the_key_may_not_view() {
    let app = TestApp::spawn().await;
    let mut security = event("security", "acme");
    security["security"] = json!({"event_type": "rate_limited"});
    let batch = json!([event("auth", "acme"), event("api", "acme"), security, event("audit", "acme")]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
    let (_, auth_only) = app.create_key(json!({"name": "a", "tenant_id": "acme", "permissions": ["logs.auth.view"]})).await;
    for path in ["/audit/combined", "/audit/redis"] {
        let (status, body) = get_json(&app, &auth_only, path).await;
        assert_eq!(status, 200);
        let items = body["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "{path}: {body}");
        assert!(items.iter().all(|i| i["category"] == "auth"), "{path}");
        assert_eq!(get_json(&app, &auth_only, &format!("{path}?category=security")).await.0, 403);
    }
    app.stop().await;
}
