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
