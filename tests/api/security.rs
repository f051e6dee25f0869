//! Every endpoint against every kind of wrong key: none, garbage, revoked, expired,
//! another tenant's, and one lacking the permission. Each is refused and changes
//! nothing. Also: secrets never reach logs, error bodies or `/metrics`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{event, file_lines_in, redis_url, ServerProcess, TestApp, TestDb, TestRedis, KEY};

const EVERYTHING: [&str; 10] = [
    "events.write", "logs.auth.view", "logs.actions.view", "logs.security.view", "logs.financial.view",
    "logs.export", "logs.verify", "logs.delete", "logs.configure", "keys.manage",
];

/// One operation: method, path (targeting tenant `acme`), body, the permission it
/// needs, and how a key of tenant `beta` with every permission is answered (`None`:
/// the operation names no tenant, so there is nothing foreign to ask for).
struct Operation {
    method: Method,
    path: String,
    body: Option<Value>,
    needs: &'static str,
    foreign: Option<u16>,
}

fn operations(acme_key_id: &str) -> Vec<Operation> {
    let op = |method: Method, path: &str, body: Option<Value>, needs: &'static str, foreign: Option<u16>| Operation {
        method,
        path: path.to_owned(),
        body,
        needs,
        foreign,
    };
    vec![
        // A tenant key may write only its own tenant: a foreign tenant_id is a field error.
        op(Method::POST, "/audit/events", Some(json!([event("auth", "acme")])), "events.write", Some(400)),
        op(Method::POST, "/audit/keys", Some(json!({"name": "x", "tenant_id": "acme", "permissions": ["events.write"]})), "keys.manage", Some(403)),
        op(Method::GET, "/audit/keys", None, "keys.manage", None),
        // Another tenant's key id is not found (its existence is not revealed).
        op(Method::DELETE, &format!("/audit/keys/{acme_key_id}"), None, "keys.manage", Some(404)),
        op(Method::GET, "/audit/logs?tenant_id=acme", None, "logs.auth.view", Some(403)),
        op(Method::GET, "/audit/security-events?tenant_id=acme", None, "logs.security.view", Some(403)),
        op(Method::GET, "/audit/financial?tenant_id=acme", None, "logs.financial.view", Some(403)),
        op(Method::GET, "/audit/redis?tenant_id=acme", None, "logs.auth.view", Some(403)),
        op(Method::GET, "/audit/combined?tenant_id=acme", None, "logs.auth.view", Some(403)),
        op(Method::GET, "/audit/stats?tenant_id=acme", None, "logs.auth.view", Some(403)),
        op(Method::GET, "/audit/failed-logins?tenant_id=acme", None, "logs.auth.view", Some(403)),
        op(Method::GET, "/audit/users/u-1/activity?tenant_id=acme", None, "logs.auth.view", Some(403)),
        op(Method::GET, "/audit/export?tenant_id=acme", None, "logs.export", Some(403)),
        op(Method::GET, "/audit/verify?tenant_id=acme", None, "logs.verify", Some(403)),
        op(Method::GET, "/audit/checkpoints?tenant_id=acme", None, "logs.verify", Some(403)),
        op(Method::POST, "/audit/checkpoints?tenant_id=acme", None, "logs.verify", Some(403)),
        op(Method::GET, "/audit/retention", None, "logs.configure", None),
        op(Method::PUT, "/audit/retention", Some(json!({"tenants": {"acme": {"legal_hold": true}}})), "logs.configure", Some(403)),
        op(Method::POST, "/audit/retention/run", None, "logs.configure", None),
        op(Method::POST, "/audit/subjects/u-1/erase?tenant_id=acme", None, "logs.delete", Some(403)),
        op(Method::GET, "/audit/subjects/u-1/export?tenant_id=acme", None, "logs.export", Some(403)),
    ]
}

async fn send(app: &TestApp, operation: &Operation, key: Option<&str>) -> (u16, Value) {
    let mut request = app.client.request(operation.method.clone(), format!("{}{}", app.address, operation.path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = &operation.body {
        request = request.json(body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// What a refused request must not have changed.
async fn state(app: &TestApp) -> Value {
    let keys = app.request_with(Method::GET, "/audit/keys", KEY).send().await.expect("keys").json::<Value>().await.expect("json");
    let retention = app.request_with(Method::GET, "/audit/retention", KEY).send().await.expect("retention").json::<Value>().await.expect("json");
    let personal: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE tenant_id = 'acme' AND username IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE tenant_id = 'acme' AND action <> 'keys.created'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM checkpoints").fetch_one(&app.pool).await.expect("count");
    json!({"keys": keys["keys"].as_array().map(Vec::len), "retention": retention["tenants"], "personal": personal,
           "events": events, "checkpoints": checkpoints, "lines": app.file_lines().iter().filter(|l| l["category"] != "access").count()})
}

#[tokio::test]
async fn every_endpoint_refuses_missing_garbage_revoked_expired_foreign_and_unpermitted_keys() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_events(&json!([event("auth", "acme"), event("auth", "beta")])).await.status(), 200);
    let all = json!(EVERYTHING);
    let (acme_id, _) = app.create_key(json!({"name": "acme target", "tenant_id": "acme", "permissions": ["events.write"]})).await;
    let (revoked_id, revoked) = app.create_key(json!({"name": "revoked", "tenant_id": "acme", "permissions": all})).await;
    assert_eq!(app.request_with(Method::DELETE, &format!("/audit/keys/{revoked_id}"), KEY).send().await.expect("revoke").status(), 200);
    let (expired_id, expired) = app.create_key(json!({"name": "expired", "tenant_id": "acme", "permissions": all, "expires_at": "2999-01-01T00:00:00Z"})).await;
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&expired_id)
        .execute(&app.pool)
        .await
        .expect("expire");
    let (_, foreign) = app.create_key(json!({"name": "beta admin", "tenant_id": "beta", "permissions": all})).await;
    let (_, writer_only) = app.create_key(json!({"name": "writer", "tenant_id": "acme", "permissions": ["events.write"]})).await;
    let (_, verifier_only) = app.create_key(json!({"name": "verifier", "tenant_id": "acme", "permissions": ["logs.verify"]})).await;

    let before = state(&app).await;
    for operation in operations(&acme_id) {
        let what = format!("{} {}", operation.method, operation.path);
        for (kind, key) in [("no key", None), ("a garbage key", Some("tlk_garbage")), ("a revoked key", Some(revoked.as_str())), ("an expired key", Some(expired.as_str()))] {
            let (status, body) = send(&app, &operation, key).await;
            assert_eq!(status, 401, "{what} with {kind}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{what} with {kind}");
        }
        let lacking = if operation.needs == "events.write" { &verifier_only } else { &writer_only };
        let (status, body) = send(&app, &operation, Some(lacking)).await;
        assert_eq!(status, 403, "{what} without {}: {body}", operation.needs);
        assert!(body["error"]["message"].as_str().unwrap_or("").contains(operation.needs), "{what}: {body}");
        if let Some(expected) = operation.foreign {
            let (status, body) = send(&app, &operation, Some(&foreign)).await;
            assert_eq!(status, expected, "{what} with another tenant's key: {body}");
        }
    }
    assert_eq!(state(&app).await, before, "no refused request changed anything");
    app.stop().await;
}

#[tokio::test]
async fn secrets_never_reach_logs_error_bodies_or_metrics() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let dir = tempfile::tempdir().expect("dir");
    // The database password must not leak either (the test server trusts any).
    let password = "db-pass-Zq8Xw3";
    let url_with_password = db.url.replacen("postgres@", &format!("postgres:{password}@"), 1);
    let server = ServerProcess::start(
        &db,
        &redis,
        dir.path(),
        &[("DATABASE_URL", url_with_password.as_str()), ("RUST_LOG", "tierlog=debug,info"), ("TIERLOG__INGEST__WRITERS", "1")],
    );
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.address);
    let created: Value = client
        .post(url("/audit/keys"))
        .bearer_auth(KEY)
        .json(&json!({"name": "leak check", "permissions": ["events.write", "logs.auth.view"]}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let wrong = "tlk_wrong-key-Pq7Rt2Vx9";
    let mut bodies = Vec::new();
    for key in [secret.as_str(), wrong, KEY] {
        for (method, path) in [(Method::GET, "/audit/logs"), (Method::GET, "/audit/keys"), (Method::POST, "/audit/events")] {
            let response = client
                .request(method, url(path))
                .bearer_auth(key)
                .header("x-api-key", key)
                .json(&json!([event("auth", "acme")]))
                .send()
                .await
                .expect("sent");
            bodies.push(response.text().await.expect("body"));
        }
    }
    // An event carrying a password in free text: masked before any tier.
    let mut leaky = event("auth", "acme");
    leaky["message"] = json!("login with password=Hunter2-secret");
    assert_eq!(client.post(url("/audit/events")).bearer_auth(KEY).json(&leaky).send().await.expect("post").status(), 200);
    let metrics = client.get(url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let ready = client.get(url("/readyz")).send().await.expect("readyz").text().await.expect("text");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.output();
    assert!(logs.lines().count() > 5, "the server logged (debug): {logs}");
    let files: String = file_lines_in(dir.path()).iter().map(Value::to_string).collect();
    for (place, text) in [("logs", &logs), ("/metrics", &metrics), ("/readyz", &ready), ("the files", &files)]
        .into_iter()
        .chain(bodies.iter().map(|b| ("a response body", b)))
    {
        for leaked in [secret.as_str(), wrong, KEY, password, "Hunter2-secret"] {
            assert!(!text.contains(leaked), "{leaked} appears in {place}");
        }
    }
}
