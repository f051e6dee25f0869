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

/// `/audit/users/{id}/lockouts`: each lockout with the failed attempts inside the
/// failed-login window before it and the unlock that ended it, tenant-scoped and
/// behind `logs.auth.view`.
#[tokio::test]
async fn lockout_diagnostics_show_what_led_to_each_lockout_and_what_ended_it() {
    let app = TestApp::spawn_with(|s| s.detection.enabled = true).await;
    let at = |minute: u32| json!(format!("2026-11-20T08:{minute:02}:00Z"));
    let mut events = Vec::new();
    let attempt = |minute: u32, ip: &str, agent: &str| {
        let mut e = failed_login("acme", "u-7", ip);
        e["timestamp"] = at(minute);
        e["user_agent"] = json!(agent);
        e
    };
    let early = attempt(0, "203.0.113.1", "curl/8"); // more than 15 minutes before
    let a1 = attempt(20, "203.0.113.1", "curl/8");
    let a2 = attempt(21, "198.51.100.2", "python-requests/2.32");
    let a3 = attempt(22, "198.51.100.2", "python-requests/2.32");
    let mut locked = event("auth", "acme");
    locked["action"] = json!("auth.account_locked");
    locked["status"] = json!("failure");
    locked["user_id"] = json!("u-7");
    locked["timestamp"] = at(23);
    let mut unlocked = event("auth", "acme");
    unlocked["action"] = json!("auth.account_unlocked");
    unlocked["user_id"] = json!("u-7");
    unlocked["timestamp"] = at(53);
    // Another user's, and another tenant's, attempts stay out.
    let mut other_user = failed_login("acme", "u-8", "192.0.2.1");
    other_user["timestamp"] = at(22);
    let mut other_tenant = failed_login("globex", "u-7", "192.0.2.1");
    other_tenant["timestamp"] = at(22);
    events.extend([early, a1.clone(), a2.clone(), a3.clone(), locked.clone(), unlocked.clone(), other_user, other_tenant]);
    assert_eq!(app.post_events(&Value::Array(events)).await.status(), 200);

    let (status, body) = get_json(&app, KEY, "/audit/users/u-7/lockouts?tenant_id=acme").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["window_seconds"], 900);
    let lockouts = body["lockouts"].as_array().expect("lockouts");
    assert_eq!(lockouts.len(), 1, "{body}");
    let lockout = &lockouts[0];
    assert_eq!(lockout["lockout"]["id"], locked["id"]);
    let attempts: Vec<&Value> = lockout["attempts"].as_array().unwrap().iter().collect();
    assert_eq!(attempts.iter().map(|a| &a["id"]).collect::<Vec<_>>(), vec![&a1["id"], &a2["id"], &a3["id"]]);
    assert_eq!(attempts[1]["ip_address"], "198.51.100.2");
    assert_eq!(attempts[1]["user_agent"], "python-requests/2.32");
    assert_eq!(attempts[1]["outcome"], "failure");
    assert_eq!(attempts[1]["timestamp"], "2026-11-20T08:21:00.000000Z");
    assert_eq!((lockout["distinct_ips"].clone(), lockout["distinct_user_agents"].clone()), (json!(2), json!(2)));
    assert_eq!(lockout["reset"]["id"], unlocked["id"]);
    assert_eq!(lockout["locked_seconds"], 30 * 60);

    // A tenant's own window (its failed-login rule) is the one used.
    let rule = json!({"tenant_id": "acme", "rules": [{"name": "failed-logins-per-user", "kind": "threshold",
        "when": {"categories": ["auth"], "status": "failure"}, "group_by": ["user_id"], "threshold": 5, "window_seconds": 120}]});
    let (status, answer) = app.send_json(reqwest::Method::PUT, "/audit/rules", KEY, Some(&rule)).await;
    assert_eq!(status, 200, "{answer}");
    let (_, narrow) = get_json(&app, KEY, "/audit/users/u-7/lockouts?tenant_id=acme").await;
    assert_eq!(narrow["window_seconds"], 120);
    assert_eq!(narrow["lockouts"][0]["attempts"].as_array().map(Vec::len), Some(2), "{narrow}");

    // Scope and permission: another tenant's key sees nothing of acme; a key without
    // logs.auth.view is refused.
    let (_, globex) = app.create_key(json!({"name": "globex", "tenant_id": "globex", "permissions": ["logs.auth.view"]})).await;
    let (status, theirs) = get_json(&app, &globex, "/audit/users/u-7/lockouts").await;
    assert_eq!((status, theirs["lockouts"].clone(), theirs["tenant_id"].clone()), (200, json!([]), json!("globex")));
    let (status, _) = get_json(&app, &globex, "/audit/users/u-7/lockouts?tenant_id=acme").await;
    assert_eq!(status, 403);
    let (_, finance) = app.create_key(json!({"name": "finance", "permissions": ["logs.financial.view"]})).await;
    let (status, _) = get_json(&app, &finance, "/audit/users/u-7/lockouts?tenant_id=acme").await;
    assert_eq!(status, 403);
    let (status, bad) = get_json(&app, KEY, "/audit/users/u-7/lockouts?tenant_id=acme&from=yesterday").await;
    assert_eq!(status, 400, "{bad}");
    app.stop().await;
}
