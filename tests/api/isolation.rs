//! Every read endpoint, tried with a key of another tenant and with keys lacking the
//! permission it needs.

use serde_json::{json, Value};

use crate::helpers::{event, TestApp};

/// Every read endpoint, with the permission it needs.
const ENDPOINTS: [(&str, &str); 10] = [
    ("/audit/logs", "logs.auth.view"),
    ("/audit/security-events", "logs.security.view"),
    ("/audit/financial", "logs.financial.view"),
    ("/audit/redis", "logs.auth.view"),
    ("/audit/combined", "logs.auth.view"),
    ("/audit/stats", "logs.auth.view"),
    ("/audit/failed-logins", "logs.auth.view"),
    ("/audit/users/u-shared/activity", "logs.auth.view"),
    ("/audit/export", "logs.export"),
    ("/audit/keys", "keys.manage"),
];

const EVERYTHING: [&str; 10] = [
    "events.write", "logs.auth.view", "logs.actions.view", "logs.security.view", "logs.financial.view",
    "logs.export", "logs.verify", "logs.delete", "logs.configure", "keys.manage",
];

async fn seed(app: &TestApp, tenant: &str) {
    let mut failed = event("auth", tenant);
    failed["action"] = json!("auth.login_failed");
    failed["status"] = json!("failure");
    failed["user_id"] = json!("u-shared");
    let mut security = event("security", tenant);
    security["security"] = json!({"event_type": "account_locked"});
    security["user_id"] = json!("u-shared");
    let mut money = event("financial", tenant);
    money["financial"] = json!({"amount": "1.00", "currency": "EUR"});
    money["user_id"] = json!("u-shared");
    let mut api = event("api", tenant);
    api["user_id"] = json!("u-shared");
    let batch = json!([failed, security, money, api, event("audit", tenant)]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
}

#[tokio::test]
async fn a_tenant_key_sees_nothing_of_another_tenant_through_any_endpoint() {
    let app = TestApp::spawn().await;
    seed(&app, "acme").await;
    seed(&app, "beta").await;
    let (_, beta_key) = app.create_key(json!({"name": "beta", "tenant_id": "beta", "permissions": ["events.write"]})).await;
    let (_, acme) = app.create_key(json!({"name": "acme all", "tenant_id": "acme", "permissions": EVERYTHING})).await;
    for (path, _) in ENDPOINTS {
        let response = app.request_with(reqwest::Method::GET, path, &acme).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("beta"), "{path} shows something of tenant beta: {body}");
        assert!(!body.contains(&beta_key[4..]), "{path} leaks a secret");
        if path != "/audit/keys" && path != "/audit/stats" && path != "/audit/failed-logins" {
            assert!(body.contains("acme"), "{path} shows the key's own tenant");
        }
        let separator = if path.contains('?') { '&' } else { '?' };
        let foreign = app.request_with(reqwest::Method::GET, &format!("{path}{separator}tenant_id=beta"), &acme).send().await.expect("sent");
        let status = foreign.status().as_u16();
        assert!(status == 403 || (path == "/audit/keys" && status == 200), "{path}?tenant_id=beta answered {status}");
    }
    app.stop().await;
}

#[tokio::test]
async fn every_endpoint_refuses_a_key_without_its_permission() {
    let app = TestApp::spawn().await;
    seed(&app, "acme").await;
    for (path, needed) in ENDPOINTS {
        let others: Vec<&str> = EVERYTHING
            .iter()
            .copied()
            .filter(|p| *p != needed && !(needed == "logs.auth.view" && p.starts_with("logs.") && p.ends_with(".view")))
            .filter(|p| !(needed == "logs.export" && p.ends_with(".view")))
            .collect();
        let (_, key) = app.create_key(json!({"name": "lacking", "permissions": others})).await;
        let response = app.request_with(reqwest::Method::GET, path, &key).send().await.expect("sent");
        assert_eq!(response.status(), 403, "{path} without {needed}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "forbidden", "{path}");
        let anonymous = app.client.get(format!("{}{path}", app.address)).send().await.expect("sent");
        assert_eq!(anonymous.status(), 401, "{path} without a key");
    }
    app.stop().await;
}
