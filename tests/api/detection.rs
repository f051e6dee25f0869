//! Detection rules on accepted events: each built-in kind at its edges, alerts as
//! `security.alert` events grouped per cool-down, rules managed through
//! `/audit/rules`, two nodes counting together through Redis, the embedded mode
//! counting in the process, and the Redis state answering as the process's does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestRedis, KEY};

/// The alerts of `rule` (and tenant), oldest first, through `GET /audit/alerts`.
pub async fn alerts(app: &TestApp, tenant: &str, rule: &str) -> Vec<Value> {
    let path = format!("/audit/alerts?tenant_id={tenant}&rule={rule}&limit=1000");
    let (status, body) = app.send_json(Method::GET, &path, KEY, None).await;
    assert_eq!(status, 200, "{body}");
    let mut items = body["items"].as_array().cloned().unwrap_or_default();
    items.reverse();
    items
}

/// Waits until `rule` has `n` alerts for `tenant`, then a little longer to see that
/// no more come; returns them.
pub async fn settled_alerts(app: &TestApp, tenant: &str, rule: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = alerts(app, tenant, rule).await;
        if found.len() >= n || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Detection runs after the acknowledgement: give a late alert time to appear.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let found = alerts(app, tenant, rule).await;
    assert_eq!(found.len(), n, "alerts of {rule}: {found:#?}");
    found
}

fn at(base: DateTime<Utc>, seconds: i64) -> String {
    (base + chrono::Duration::milliseconds(seconds * 1000)).to_rfc3339()
}

fn failed_login(tenant: &str, user: &str, ip: &str, timestamp: &str) -> Value {
    json!({"id": Uuid::new_v4(), "category": "auth", "tenant_id": tenant, "action": "auth.login_failed",
           "status": "failure", "user_id": user, "ip_address": ip, "timestamp": timestamp})
}

async fn post(app: &TestApp, events: Vec<Value>) {
    let response = app.post_events(&Value::Array(events)).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
}

fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn thresholds_and_distinct_counts_fire_inside_their_window_and_not_on_its_edge() {
    let app = TestApp::spawn().await;
    let base = Utc::now() - chrono::Duration::hours(1);
    // Five failures of one user spanning exactly the 15 minutes: the first is on the
    // window's edge, outside it. Sent one request each.
    for (i, s) in [0, 200, 400, 700, 900].into_iter().enumerate() {
        post(&app, vec![failed_login("t1", "edge-user", &format!("203.0.113.{i}"), &at(base, s))]).await;
    }
    // Five of another user within 899 seconds, in one request: one alert.
    let inside: Vec<Value> = [0, 100, 300, 600, 899].into_iter().enumerate()
        .map(|(i, s)| failed_login("t1", "brute-user", &format!("198.51.100.{i}"), &at(base, s))).collect();
    post(&app, inside.clone()).await;
    // A sixth within the cool-down: grouped into the same alert, not a new one.
    post(&app, vec![failed_login("t1", "brute-user", "198.51.100.9", &at(base, 901))]).await;

    let fired = settled_alerts(&app, "t1", "failed-logins-per-user", 1).await;
    let alert = &fired[0];
    assert_eq!(alert["category"], "security");
    assert_eq!(alert["action"], "security.alert");
    assert_eq!(alert["user_id"], "brute-user");
    assert_eq!(alert["security"]["severity"], "high");
    let details = &alert["details"];
    assert_eq!(details["rule"], "failed-logins-per-user");
    assert_eq!(details["group"], json!({"user_id": "brute-user"}));
    assert_eq!(details["count"], 5);
    assert_eq!(details["threshold"], 5);
    assert_eq!(details["window_seconds"], 900);
    let mut triggered: Vec<String> = details["event_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    triggered.sort();
    let mut expected = ids(&inside);
    expected.sort();
    assert_eq!(triggered, expected, "the alert names the events that made it");

    // Credential stuffing: one address against 10 users in 10 minutes fires; another
    // against 9 does not (both stay under 20 failures, the per-address threshold).
    let stuffing: Vec<Value> = (0..10).map(|u| failed_login("t1", &format!("victim-{u}"), "192.0.2.66", &at(base, 2000 + u * 30))).collect();
    let nine: Vec<Value> = (0..9).map(|u| failed_login("t1", &format!("other-{u}"), "192.0.2.77", &at(base, 2000 + u * 30))).collect();
    post(&app, stuffing).await;
    post(&app, nine).await;
    let fired = settled_alerts(&app, "t1", "credential-stuffing", 1).await;
    assert_eq!(fired[0]["details"]["group"], json!({"ip_address": "192.0.2.66"}));
    assert_eq!(fired[0]["details"]["count"], 10);
    assert_eq!(fired[0]["ip_address"], "192.0.2.66");
    assert_eq!(fired[0]["level"], "CRITICAL");

    // The alert is an event like any other: chained, and the chain verifies.
    let report = app.verify_all().await;
    assert_eq!(report["ok"], true, "{report}");
    app.stop().await;
}

#[tokio::test]
async fn single_matches_amounts_and_first_seen_values_fire() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    // Lockout and privilege change: one alert each; a change that leaves the role
    // as it was does not fire.
    post(&app, vec![
        json!({"category": "security", "tenant_id": "t2", "user_id": "locked-1", "security": {"event_type": "account_locked", "severity": "high"}}),
        json!({"category": "audit", "tenant_id": "t2", "action": "user.role_changed", "resource": "user", "resource_id": "u-9",
               "changes": {"before": {"role": "viewer"}, "after": {"role": "admin"}}}),
        json!({"category": "audit", "tenant_id": "t2", "action": "user.updated", "resource": "user", "resource_id": "u-8",
               "changes": {"before": {"role": "viewer", "name": "a"}, "after": {"role": "viewer", "name": "b"}}}),
        json!({"category": "security", "tenant_id": "t2", "level": "CRITICAL", "security": {"event_type": "ip_blocked"}}),
    ]).await;
    let locked = settled_alerts(&app, "t2", "account-locked", 1).await;
    assert_eq!(locked[0]["user_id"], "locked-1");
    let changed = settled_alerts(&app, "t2", "privilege-change", 1).await;
    assert_eq!(changed[0]["details"]["group"], json!({"resource": "user", "resource_id": "u-9"}));
    settled_alerts(&app, "t2", "critical-security-event", 1).await;

    // Amounts: a tenant limit set through the API; then the tenant's norm.
    let (status, body) = app.send_json(Method::PUT, "/audit/rules", KEY, Some(&json!({"tenant_id": "t2", "rules": [
        {"name": "large-amount", "kind": "amount", "when": {"categories": ["financial"]}, "group_by": ["financial.currency"],
         "limit": "1000.00", "factor": 10, "min_samples": 20, "cooldown_seconds": 0}
    ]}))).await;
    assert_eq!(status, 200, "{body}");
    let payment = |amount: &str, currency: &str| json!({"category": "financial", "tenant_id": "t2", "action": "payment.transfer",
        "financial": {"transaction_id": Uuid::new_v4().to_string(), "amount": amount, "currency": currency}});
    post(&app, vec![payment("999.99", "EUR")]).await;
    post(&app, vec![payment("1000.01", "EUR")]).await;
    let over = settled_alerts(&app, "t2", "large-amount", 1).await;
    assert_eq!(over[0]["details"]["amount"], 1000.01);
    assert_eq!(over[0]["details"]["limit"], 1000.0);
    // In another currency (another norm): nineteen ordinary amounts and one more
    // ten times their mean do not fire (the mean is trusted after twenty); after
    // twenty, one above ten times the mean does.
    post(&app, (0..19).map(|_| payment("50.00", "USD")).collect()).await;
    post(&app, vec![payment("600.00", "USD")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alerts(&app, "t2", "large-amount").await.len(), 1, "not before twenty amounts");
    post(&app, vec![payment("900.00", "USD")]).await;
    let fired = settled_alerts(&app, "t2", "large-amount", 2).await;
    assert_eq!(fired[1]["details"]["amount"], 900.0);
    assert!(fired[1]["details"]["recent_mean"].as_f64().unwrap() < 90.0, "{}", fired[1]);

    // First seen: a user's first login sets the baseline; a new address fires once.
    let login = |ip: &str, agent: &str| json!({"category": "auth", "tenant_id": "t2", "action": "auth.login", "status": "success",
        "user_id": "traveller", "ip_address": ip, "user_agent": agent, "timestamp": now.to_rfc3339()});
    post(&app, vec![login("203.0.113.10", "Firefox")]).await;
    post(&app, vec![login("203.0.113.10", "Firefox")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts(&app, "t2", "new-login-source").await.is_empty(), "a known source does not fire");
    post(&app, vec![login("198.51.100.20", "Firefox")]).await;
    let seen = settled_alerts(&app, "t2", "new-login-source", 1).await;
    assert_eq!(seen[0]["details"]["new_values"], json!(["ip_address=198.51.100.20"]));
    assert_eq!(seen[0]["level"], "WARNING");
    app.stop().await;
}

#[tokio::test]
async fn rules_are_managed_through_the_api_checked_scoped_and_audited() {
    let app = TestApp::spawn().await;
    let (status, body) = app.send_json(Method::GET, "/audit/rules", KEY, None).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["rules"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for builtin in ["failed-logins-per-user", "failed-logins-per-ip", "credential-stuffing", "account-locked", "privilege-change",
                    "critical-security-event", "large-amount", "new-login-source"] {
        assert!(names.contains(&builtin), "{builtin} in {names:?}");
    }

    // A bad rule: 400 naming the field; nothing saved.
    for (rule, field) in [
        (json!({"name": "r", "kind": "threshold", "threshold": 0, "window_seconds": 60}), "rules[0].threshold"),
        (json!({"name": "r", "kind": "threshold", "threshold": 3}), "rules[0].window_seconds"),
        (json!({"name": "r", "kind": "distinct", "threshold": 3, "window_seconds": 60, "group_by": ["nope"], "distinct": "user_id"}), "rules[0].group_by[0]"),
        (json!({"name": "r", "kind": "amount", "limit": "lots"}), "rules[0].limit"),
        (json!({"name": "r", "kind": "match", "severity": "apocalyptic"}), "rules[0].severity"),
        (json!({"name": "r", "kind": "sideways"}), "kind"),
    ] {
        let (status, body) = app.send_json(Method::PUT, "/audit/rules", KEY, Some(&json!({"rules": [rule]}))).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
    let (_, unchanged) = app.send_json(Method::GET, "/audit/rules", KEY, None).await;
    assert_eq!(unchanged["overrides"], json!([]));

    // A tenant key manages its own tenant's rules only.
    let (status, key) = app.send_json(Method::POST, "/audit/keys", KEY, Some(&json!({"name": "t3 admin", "tenant_id": "t3",
        "permissions": ["logs.configure", "events.write", "logs.security.view", "logs.actions.view"]}))).await;
    assert_eq!(status, 201, "{key}");
    let tenant_key = key["secret"].as_str().unwrap();
    let quiet = json!({"name": "failed-logins-per-user", "kind": "threshold", "enabled": false});
    let (status, _) = app.send_json(Method::PUT, "/audit/rules", tenant_key, Some(&json!({"tenant_id": "t4", "rules": [quiet]}))).await;
    assert_eq!(status, 403);
    let (status, body) = app.send_json(Method::PUT, "/audit/rules", tenant_key, Some(&json!({"rules": [quiet]}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant_id"], "t3");
    let rule = body["rules"].as_array().unwrap().iter().find(|r| r["name"] == "failed-logins-per-user").unwrap();
    assert_eq!(rule["enabled"], false);

    // Switched off for t3 only: five failures fire for t5, not for t3.
    let base = Utc::now();
    for tenant in ["t3", "t5"] {
        post(&app, (0..5).map(|i| failed_login(tenant, "same-user", "203.0.113.1", &at(base, i))).collect()).await;
    }
    settled_alerts(&app, "t5", "failed-logins-per-user", 1).await;
    assert!(alerts(&app, "t3", "failed-logins-per-user").await.is_empty());

    // The change is audited with before and after.
    let (status, body) = app.send_json(Method::GET, "/audit/logs?category=access&action=rules.changed&tenant_id=t3", KEY, None).await;
    assert_eq!(status, 200, "{body}");
    let record = &body["items"][0];
    assert_eq!(record["details"]["before"], json!([]));
    assert_eq!(record["details"]["after"][0]["name"], "failed-logins-per-user");
    assert_eq!(record["details"]["after"][0]["enabled"], false);

    // Alerts need logs.security.view, whatever the filters.
    let (_, writer) = app.send_json(Method::POST, "/audit/keys", KEY, Some(&json!({"name": "writer", "permissions": ["events.write", "logs.auth.view"]}))).await;
    let writer = writer["secret"].as_str().unwrap();
    for path in ["/audit/alerts", "/audit/alerts?category=auth"] {
        let (status, _) = app.send_json(Method::GET, path, writer, None).await;
        assert_eq!(status, 403, "{path}");
    }

    // Applications cannot write alerts of their own.
    let response = app.post_events(&json!({"category": "security", "action": "security.alert"})).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("security.alert"));
    app.stop().await;
}

#[tokio::test]
async fn two_nodes_sharing_redis_count_together() {
    // Each node has a database of its own: what they share is Redis.
    let redis = TestRedis::new(crate::helpers::redis_url());
    let prefix = redis.prefix.clone();
    let a = TestApp::spawn_on(redis, |_| {}).await;
    let b = TestApp::spawn_on(TestRedis { url: crate::helpers::redis_url(), prefix }, |_| {}).await;
    let base = Utc::now();
    // Three failures through one node and two through the other: five of one user.
    post(&a, (0..3).map(|i| failed_login("t6", "shared-user", "203.0.113.5", &at(base, i))).collect()).await;
    // Redis forgets its scripts (as on a restart): the rule calls load them again.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut a.redis.connection()).expect("script flush");
    post(&b, (3..5).map(|i| failed_login("t6", "shared-user", "203.0.113.5", &at(base, i))).collect()).await;
    // The node whose detection counted the fifth writes the alert, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut fired = Vec::new();
    while fired.is_empty() && tokio::time::Instant::now() < deadline {
        fired = [alerts(&a, "t6", "failed-logins-per-user").await, alerts(&b, "t6", "failed-logins-per-user").await].concat();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let fired = [alerts(&a, "t6", "failed-logins-per-user").await, alerts(&b, "t6", "failed-logins-per-user").await].concat();
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0]["details"]["count"], 5);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn the_embedded_mode_counts_in_the_process() {
    let app = TestApp::spawn_with(|s| {
        s.postgres.url = String::new();
        s.redis.url = String::new();
        s.embedded.data_dir = s.files.path.with_file_name("data");
    })
    .await;
    let base = Utc::now();
    post(&app, (0..4).map(|i| failed_login("default", "solo", "203.0.113.7", &at(base, i))).collect()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts(&app, "default", "failed-logins-per-user").await.is_empty(), "four are under the threshold");
    post(&app, vec![failed_login("default", "solo", "203.0.113.7", &at(base, 5))]).await;
    let fired = settled_alerts(&app, "default", "failed-logins-per-user", 1).await;
    assert_eq!(fired[0]["details"]["count"], 5);
    app.stop().await;
}

/// The rule state in Redis and the one in the process answer alike, over a long run
/// of batches whose times step across window edges and first-seen horizons: window
/// counts and first-seen values equal, threshold ids equal, a distinct count's ids
/// among its group's events inside the window. Redis trims only about one
/// observation in eight, so most answers here come from untrimmed sets.
#[tokio::test]
async fn the_redis_state_answers_as_the_process_state_across_window_edges() {
    use tierlog::detect::state::{Member, MemoryState, Observation, Outcome, RedisState, WindowState};

    let redis = TestRedis::new(crate::helpers::redis_url());
    let mut settings = tierlog::config::Settings::defaults().expect("defaults");
    settings.redis.url = redis.url.clone();
    let link = std::sync::Arc::new(tierlog::tiers::redis::RedisLink::new(&settings.redis).expect("redis link"));
    let (in_redis, in_process) = (RedisState::new(link), MemoryState::default());

    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let key = |kind: &str, group: u64| format!("{}:v1:rule:{{t|{kind}|{group}}}", redis.prefix);
    let (window_ms, horizon_ms) = (60_000i64, 300_000i64);
    let mut now = 1_700_000_000_000i64;
    let mut events: std::collections::HashMap<String, Vec<(i64, Uuid)>> = std::collections::HashMap::new();
    let (mut fired, mut new_values) = (0, 0);
    // The days of the amounts, stepping by 0 to 2 days a batch, now and then 8.
    let mut norm_day = 19_700i64;
    let (mut means_from_days, mut lapsed, mut seen_norm) = (0, 0, std::collections::HashSet::new());
    for _ in 0..400 {
        // Steps of up to 40 s, now and then exactly a window or a horizon.
        now += match next() % 20 {
            0 => window_ms,
            1 => horizon_ms,
            _ => (next() % 40_000) as i64,
        };
        // A batch observes each key once, as the engine's batches do.
        let mut batch = Vec::new();
        let groups: std::collections::BTreeSet<u64> = (0..1 + next() % 4).map(|_| next() % 3).collect();
        for group in groups {
            let distinct = next() % 2 == 0;
            let members: Vec<Member<'_>> = (0..1 + next() % 3)
                .map(|_| {
                    let id = Uuid::now_v7();
                    let value = distinct.then(|| format!("user-{}", next() % 6).into());
                    // Half at the batch's time exactly: a step of one window puts them on
                    // a later batch's edge.
                    let offset = if next() % 2 == 0 { 0 } else { (next() % 1000) as i64 };
                    Member { value, at: now - offset, id }
                })
                .collect();
            let k = key(if distinct { "distinct" } else { "threshold" }, group);
            events.entry(k.clone()).or_default().extend(members.iter().map(|m| (m.at, m.id)));
            batch.push(Observation::Window { key: k, distinct, window_ms, cap: 200, threshold: 3, members });
            let values: Vec<String> = (0..1 + next() % 2).map(|_| format!("ip={}", next() % 5)).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            batch.push(Observation::Seen { key: key("seen", group), horizon_ms, at_ms: now, values });
            // Amounts on days that the steps carry past the mean's seven.
            let amounts: Vec<f64> = (0..1 + next() % 3).map(|_| (next() % 100_000) as f64 / 100.0).collect();
            batch.push(Observation::Norm { key: key("norm", group), at_ms: norm_day * 86_400_000 + (next() % 86_400_000) as i64, amounts });
        }
        norm_day += match next() % 20 {
            0 => 8,
            step => (step % 3) as i64,
        };
        let (a, b) = (in_redis.observe(&batch).await.expect("redis state"), in_process.observe(&batch).await.expect("process state"));
        for ((observation, redis_answer), process_answer) in batch.iter().zip(&a).zip(&b) {
            match (observation, redis_answer, process_answer) {
                (Observation::Window { key, distinct, members, .. }, Outcome::Window { count, ids }, Outcome::Window { count: want, ids: want_ids }) => {
                    assert_eq!(count, want, "{key} at {now}");
                    if *distinct {
                        let newest = members.iter().map(|m| m.at).max().unwrap();
                        let inside: Vec<Uuid> = events[key].iter().filter(|(at, _)| *at > newest - window_ms).map(|(_, id)| *id).collect();
                        assert_eq!(ids.is_empty(), want_ids.is_empty(), "{key} at {now}");
                        assert!(ids.iter().all(|id| inside.contains(id)), "{key} at {now}: ids outside the window");
                    } else {
                        assert_eq!(ids, want_ids, "{key} at {now}");
                    }
                    fired += usize::from(!ids.is_empty());
                }
                (Observation::Seen { key, .. }, Outcome::Seen { new }, Outcome::Seen { new: want }) => {
                    assert_eq!(new, want, "{key} at {now}");
                    new_values += new.len();
                }
                (Observation::Norm { key, amounts, .. }, Outcome::Norm { before }, Outcome::Norm { before: want }) => {
                    assert_eq!(before.len(), amounts.len());
                    for ((mean, n), (want_mean, want_n)) in before.iter().zip(want) {
                        assert_eq!(n, want_n, "{key} on day {norm_day}");
                        assert!((mean - want_mean).abs() < 1e-6 * want_mean.max(1.0), "{key} on day {norm_day}: {mean} against {want_mean}");
                    }
                    means_from_days += usize::from(before.first().is_some_and(|(_, n)| *n > 0));
                    lapsed += usize::from(before.first().is_some_and(|(_, n)| *n == 0) && seen_norm.contains(key));
                    seen_norm.insert(key.clone());
                }
                other => panic!("answers of different kinds: {other:?}"),
            }
        }
    }
    // The run reached both kinds of answer, not only quiet ones.
    assert!(fired > 20 && new_values > 20, "{fired} windows at their threshold, {new_values} new values");
    assert!(means_from_days > 100 && lapsed > 0, "{means_from_days} means over earlier amounts, {lapsed} after every day lapsed");
}
