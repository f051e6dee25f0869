//! Masking at ingest: secrets never reach any tier.

use serde_json::{json, Value};
use tierlog::event::Category;
use uuid::Uuid;

use crate::helpers::TestApp;

const SECRETS: [&str; 5] = ["hunter2", "4111 1111 1111 1111", "abc.def-ghi", "sk_live_abcdefghijklmnop", "s3cr3t"];

#[tokio::test]
async fn secrets_are_masked_before_redis_postgres_and_the_files_see_them() {
    let app = TestApp::spawn_with(|s| s.masking.drop_paths = vec!["details.raw_body".into()]).await;
    let id = Uuid::new_v4();
    let item = json!({
        "id": id, "category": "auth", "tenant_id": "acme", "action": "auth.login_failed", "status": "failure",
        "message": "card 4111 1111 1111 1111 declined; header Authorization: Bearer abc.def-ghi",
        "details": {"password": "hunter2", "headers": {"X-Api-Key": "sk_live_abcdefghijklmnop"},
                    "raw_body": "password=s3cr3t", "attempt": 3},
        "changes": {"before": {"note": "pwd: s3cr3t"}}
    });
    assert_eq!(app.post_events(&item).await.status(), 200);

    let row: Value = sqlx::query_scalar("SELECT to_jsonb(a) FROM audit_logs a WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("row");
    let hot = app.redis.list("acme", Category::Auth);
    let line = app.file_lines().into_iter().find(|l| l["id"] == id.to_string()).expect("file line");
    for (tier, value) in [("postgres", &row), ("redis", &hot[0]), ("file", &line)] {
        let text = value.to_string();
        for secret in SECRETS {
            assert!(!text.contains(secret), "{tier} holds {secret:?}: {text}");
        }
        assert_eq!(value["details"]["password"], "[MASKED]", "{tier}");
        assert_eq!(value["details"]["headers"]["X-Api-Key"], "[MASKED]", "{tier}");
        assert!(value["details"].get("raw_body").is_none(), "{tier}");
        assert_eq!(value["details"]["attempt"], 3, "{tier}: other values stay");
        assert!(value["message"].as_str().unwrap_or_default().contains("[MASKED-CARD ****1111]"), "{tier}");
    }
    app.stop().await;
}

#[tokio::test]
async fn masking_can_be_turned_off() {
    let app = TestApp::spawn_with(|s| s.masking.enabled = false).await;
    let id = Uuid::new_v4();
    let item = json!({"id": id, "category": "auth", "tenant_id": "acme", "details": {"password": "hunter2"}});
    assert_eq!(app.post_events(&item).await.status(), 200);
    assert_eq!(app.redis.list("acme", Category::Auth)[0]["details"]["password"], "hunter2");
    app.stop().await;
}

/// Secrets a careless client may send, each with the text that must never be stored.
const CARD: &str = "4111111111111111";
const CARD_SPACED: &str = "5500 0055 5555 5559";
const PASSWORD: &str = "Hunter2-Sup3rSecret";
const TOKEN: &str = "abcDEF123tokenValue";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
const STRIPE: &str = "sk_live_abcdefghijklmnop";
const AWS: &str = "AKIAIOSFODNN7EXAMPLE";

/// One event per placement: (where, the event's fields, the secret text).
fn placements() -> Vec<(String, Value, &'static str)> {
    let mut all: Vec<(String, Value, &'static str)> = Vec::new();
    // Every free-text field of the event, with a card, a bearer token, a JWT or a key.
    let fields = [
        "message", "logger", "event_type", "application", "user_id", "username", "resource", "resource_id",
        "user_agent", "request_id", "session_id",
    ];
    for field in fields {
        for (what, text, secret) in [
            ("card", format!("ref {CARD} end"), CARD),
            ("bearer", format!("Authorization: Bearer {TOKEN}"), TOKEN),
            ("jwt", format!("session {JWT}"), JWT),
        ] {
            all.push((format!("{field} ({what})"), json!({ field: text }), secret));
        }
    }
    all.push(("email (card)".into(), json!({"email": format!("{CARD}@example.com")}), CARD));
    all.push(("action (card)".into(), json!({"action": format!("pay.{CARD}")}), CARD));
    for field in ["transaction_id", "account_id", "counterparty"] {
        all.push((format!("financial.{field}"), json!({"category": "financial", "financial": { field: CARD_SPACED }}), CARD_SPACED));
    }
    all.push(("security.event_type".into(), json!({"category": "security", "security": {"event_type": format!("leak {STRIPE}")}}), STRIPE));
    // Secret-looking keys at any depth, in the usual spellings.
    for key in ["pass", "password", "Passwd", "credentials", "client_secret", "apiKey", "X-Api-Key", "access_key", "privateKey", "refresh_token", "passphrase"] {
        all.push((format!("details key {key}"), json!({"details": {"outer": [{ key: PASSWORD }]}}), PASSWORD));
        all.push((format!("changes key {key}"), json!({"changes": {"after": {"deep": { key: PASSWORD }}}}), PASSWORD));
    }
    // Secrets inside values.
    for (name, details, secret) in [
        ("a JSON document in a string", json!({"body": format!("{{\"user\":\"bob\",\"password\":\"{PASSWORD}\"}}")}), PASSWORD),
        ("a nested JSON document", json!({"config": format!("{{\"db\":{{\"credentials\":{{\"user\":\"a\",\"pass\":\"{PASSWORD}\"}}}}}}")}), PASSWORD),
        ("a JSON array in a string", json!({"list": format!("[{{\"pwd\":\"{PASSWORD}\"}}]")}), PASSWORD),
        ("JSON-like text", json!({"log": format!("sent {{\"password\": \"{PASSWORD}\"}} upstream")}), PASSWORD),
        ("a query string", json!({"url": format!("/login?user=bob&password={PASSWORD}")}), PASSWORD),
        ("a card as a JSON number", json!({"card": 4_111_111_111_111_111u64}), CARD),
        ("a card number in an array", json!({"cards": [1, 4_111_111_111_111_111u64]}), CARD),
        ("a spaced card in text", json!({"note": format!("pay with {CARD_SPACED} now")}), CARD_SPACED),
        ("an AWS key", json!({"env": format!("AWS_ACCESS_KEY_ID={AWS}")}), AWS),
        ("a Stripe key", json!({"k": STRIPE}), STRIPE),
    ] {
        all.push((name.to_owned(), json!({"details": details}), secret));
    }
    all
}

#[tokio::test]
async fn no_secret_in_any_field_reaches_postgres_redis_or_the_files() {
    let app = TestApp::spawn().await;
    let placements = placements();
    assert!(placements.len() >= 40, "{} placements", placements.len());
    let mut batch = Vec::new();
    for (_, fields, _) in &placements {
        let mut event = json!({"id": Uuid::new_v4(), "category": "audit", "tenant_id": "leaky"});
        for (key, value) in fields.as_object().expect("fields") {
            event[key] = value.clone();
        }
        batch.push(event);
    }
    let response = app.post_events(&json!(batch)).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());

    let mut stored: Vec<(String, String)> = Vec::new();
    for table in ["audit_logs", "security_events", "financial_audit_logs"] {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT to_jsonb(t)::text FROM {table} t WHERE tenant_id = 'leaky'"))
            .fetch_all(&app.pool)
            .await
            .expect("rows");
        stored.extend(rows.into_iter().map(|r| (format!("postgres {table}"), r)));
    }
    for category in [Category::Audit, Category::Security, Category::Financial] {
        stored.extend(app.redis.list("leaky", category).into_iter().map(|v| ("redis".to_owned(), v.to_string())));
    }
    stored.extend(app.file_lines().into_iter().map(|v| ("file".to_owned(), v.to_string())));
    assert!(stored.len() >= placements.len() * 3, "every event in every tier: {}", stored.len());
    for (place, _, secret) in &placements {
        for (tier, text) in &stored {
            // Serialized JSON escapes quotes; the secrets hold none.
            assert!(!text.contains(secret), "{place}: {tier} holds {secret:?}: {text}");
        }
    }
    app.stop().await;
}
