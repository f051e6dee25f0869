//! The API describes itself: OpenAPI 3.1 generated from the code, and a Swagger UI
//! served from the binary (no network needed).

use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test]
async fn openapi_31_describes_every_route_and_the_docs_page_works_offline() {
    let app = TestApp::spawn().await;
    let spec: Value = app.client.get(format!("{}/openapi.json", app.address)).send().await.expect("sent").json().await.expect("json");
    assert!(spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", spec["openapi"]);
    let paths = spec["paths"].as_object().expect("paths");
    for path in [
        "/audit/events", "/audit/logs", "/audit/security-events", "/audit/financial", "/audit/redis",
        "/audit/combined", "/audit/stats", "/audit/failed-logins", "/audit/users/{id}/activity",
        "/audit/export", "/audit/keys", "/audit/keys/{id}", "/healthz", "/readyz", "/metrics",
        "/audit/verify", "/audit/checkpoints", "/audit/checkpoints/public-key", "/audit/retention",
        "/audit/retention/run", "/audit/subjects/{id}/erase", "/audit/subjects/{id}/export", "/audit/whoami",
    ] {
        assert!(paths.contains_key(path), "{path} is described");
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    // /docs/ shows the groups in the spec's tag order: sending events first.
    let tags: Vec<&str> = spec["tags"].as_array().expect("tags").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(tags.first(), Some(&"ingest"), "{tags:?}");
    assert_eq!(tags.last(), Some(&"operations"), "{tags:?}");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("item") {
            let summary = operation["summary"].as_str().unwrap_or("");
            assert!(!summary.contains('`'), "{method} {path}: the summary is plain text: {summary:?}");
            if let Some(tag) = operation["tags"][0].as_str() {
                assert!(tags.contains(&tag), "{method} {path}: its tag {tag} is declared");
            }
        }
    }
    let params: Vec<&str> = spec["paths"]["/audit/logs"]["get"]["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in ["tenant_id", "ip_address", "q", "cursor", "limit", "include_total"] {
        assert!(params.contains(&name), "/audit/logs documents {name}");
    }

    let page = app.client.get(format!("{}/docs/", app.address)).send().await.expect("sent");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    let css = app.client.get(format!("{}/docs/swagger-ui.css", app.address)).send().await.expect("sent");
    assert_eq!(css.status(), 200, "the UI's assets are served by tierlog itself");
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_in_the_error_envelope() {
    let app = TestApp::spawn().await;
    let missing = app.client.get(format!("{}/audit/nothing-here", app.address)).send().await.expect("sent");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("/audit/nothing-here")), "{body}");

    let wrong = app.request_with(reqwest::Method::GET, "/audit/events", crate::helpers::KEY).send().await.expect("sent");
    assert_eq!(wrong.status(), 405);
    let allow = wrong.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(allow.contains("POST"), "the Allow header names POST: {allow:?}");
    let body: Value = wrong.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("GET")), "{body}");
    app.stop().await;
}
