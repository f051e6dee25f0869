//! Aggregates and timelines: `/audit/stats`, `/audit/failed-logins`,
//! `/audit/users/{id}/activity`.

use serde_json::{json, Value};

use crate::helpers::{event, TestApp, KEY};

async fn get_json(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let response = app.request_with(reqwest::Method::GET, path, key).send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn failed_login(tenant: &str, user: &str, ip: &str) -> Value {
    let mut e = event("auth", tenant);
    e["action"] = json!("auth.login_failed");
    e["status"] = json!("failure");
    e["user_id"] = json!(user);
    e["ip_address"] = json!(ip);
    e
}

#[tokio::test]
async fn failed_logins_group_by_address_and_user_to_expose_stuffing_and_brute_force() {
    let app = TestApp::spawn().await;
    let mut batch = Vec::new();
    // Credential stuffing: one address, many users.
    for user in ["a", "b", "c", "d"] {
        batch.push(failed_login("acme", user, "198.51.100.9"));
    }
    // Brute force: one user, three attempts from one address.
    for _ in 0..3 {
        batch.push(failed_login("acme", "victim", "203.0.113.5"));
    }
    // Noise that must not count: a success, an old failure, another tenant.
    batch.push(event("auth", "acme"));
    let mut old = failed_login("acme", "old", "192.0.2.1");
    old["timestamp"] = json!("2020-01-01T00:00:00Z");
    batch.push(old);
    batch.push(failed_login("beta", "x", "198.51.100.9"));
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);

    let (status, by_ip) = get_json(&app, KEY, "/audit/failed-logins?tenant_id=acme&hours=24").await;
    assert_eq!(status, 200, "{by_ip}");
    assert_eq!(by_ip["group_by"], "ip");
    let items = by_ip["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!((items[0]["key"].as_str(), items[0]["failures"].as_i64(), items[0]["distinct"].as_i64()), (Some("198.51.100.9"), Some(4), Some(4)));
    assert_eq!((items[1]["key"].as_str(), items[1]["failures"].as_i64(), items[1]["distinct"].as_i64()), (Some("203.0.113.5"), Some(3), Some(1)));

    let (_, by_user) = get_json(&app, KEY, "/audit/failed-logins?tenant_id=acme&group_by=user&min_failures=2").await;
    let items = by_user["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["key"], "victim");
    assert_eq!(items[0]["failures"], 3);

    for bad in ["hours=0", "hours=9000", "group_by=country", "min_failures=0"] {
        assert_eq!(get_json(&app, KEY, &format!("/audit/failed-logins?{bad}")).await.0, 400, "{bad}");
    }
    // Failed logins are auth events: another category matches none.
    let (status, none) = get_json(&app, KEY, "/audit/failed-logins?tenant_id=acme&category=api").await;
    assert_eq!((status, none["items"].clone()), (200, json!([])), "{none}");
    let (_, actions_only) = app.create_key(json!({"name": "n", "permissions": ["logs.actions.view"]})).await;
    assert_eq!(get_json(&app, &actions_only, "/audit/failed-logins").await.0, 403);
    app.stop().await;
}

#[tokio::test]
async fn stats_count_by_category_status_and_action_within_the_window() {
    let app = TestApp::spawn().await;
    let mut security = event("security", "acme");
    security["security"] = json!({"event_type": "rate_limited"});
    security["status"] = json!("failure");
    let batch = json!([
        failed_login("acme", "u1", "198.51.100.1"), failed_login("acme", "u1", "198.51.100.1"),
        event("auth", "acme"), event("audit", "acme"), security, event("auth", "beta"),
    ]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
    let (status, stats) = get_json(&app, KEY, "/audit/stats?tenant_id=acme").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["by_category"]["auth"], 3);
    assert_eq!(stats["by_category"]["security"], 1);
    assert_eq!(stats["by_category"]["audit"], 1);
    assert_eq!(stats["by_status"]["failure"], 3);
    assert_eq!(stats["total"], 5);
    assert_eq!(stats["by_action"][0], json!({"action": "auth.login_failed", "count": 2}));
    assert_eq!(stats["top_failing_ips"][0]["key"], "198.51.100.1");
    assert_eq!(stats["top_failing_users"][0]["key"], "u1");
    assert_eq!(stats["top_failing_users"][0]["failures"], 2);
    let (_, old_window) = get_json(&app, KEY, "/audit/stats?tenant_id=acme&to=2021-01-01T00:00:00Z").await;
    assert_eq!(old_window["total"], 0);
    let (_, acme) = app.create_key(json!({"name": "a", "tenant_id": "acme", "permissions": ["logs.auth.view"]})).await;
    let (_, scoped) = get_json(&app, &acme, "/audit/stats").await;
    assert_eq!(scoped["by_category"], json!({"auth": 3}), "only the key's tenant and categories");
    app.stop().await;
}

#[tokio::test]
async fn a_users_activity_spans_categories_and_tiers_newest_first() {
    let app = TestApp::spawn().await;
    let mut first = event("auth", "acme");
    first["user_id"] = json!("u-42");
    first["timestamp"] = json!("2026-11-20T08:00:00Z");
    let mut second = event("api", "acme");
    second["user_id"] = json!("u-42");
    second["timestamp"] = json!("2026-11-20T09:00:00Z");
    let mut third = event("audit", "acme");
    third["user_id"] = json!("u-42");
    third["timestamp"] = json!("2026-11-20T10:00:00Z");
    let other = event("auth", "acme");
    assert_eq!(app.post_events(&json!([first, second, third, other])).await.status(), 200);
    let (status, body) = get_json(&app, KEY, "/audit/users/u-42/activity?tenant_id=acme").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&Value> = body["items"].as_array().expect("items").iter().map(|i| &i["id"]).collect();
    assert_eq!(ids, vec![&third["id"], &second["id"], &first["id"]]);
    assert_eq!(body["items"][1]["tiers"], json!(["redis"]));
    // A user_id filter naming another user matches nothing; naming this one changes nothing.
    let (status, none) = get_json(&app, KEY, "/audit/users/u-42/activity?tenant_id=acme&user_id=u-1").await;
    assert_eq!((status, none["items"].clone()), (200, json!([])), "{none}");
    let (_, same) = get_json(&app, KEY, "/audit/users/u-42/activity?tenant_id=acme&user_id=u-42").await;
    assert_eq!(same["items"].as_array().map(Vec::len), Some(3));
    app.stop().await;
}
