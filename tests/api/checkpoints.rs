//! Signed checkpoints: made on demand, exported with the public key, and used by
//! verification to catch what the database alone cannot: a truncated chain whose
//! head was rewound, and a forged or altered checkpoint.

use reqwest::Method;
use serde_json::{json, Value};
use tierlog::integrity::checkpoint::{ChainHead, Keyring, PublicKey, Signer};

use crate::helpers::{event, TestApp, KEY};

async fn chain(app: &TestApp, tenant: &str) -> Value {
    let (status, body) =
        app.send_json(Method::GET, &format!("/audit/verify?tenant_id={tenant}&table=audit_logs"), KEY, None).await;
    assert_eq!(status, 200, "{body}");
    body["chains"][0].clone()
}

#[tokio::test]
async fn checkpoints_are_signed_exported_and_catch_a_rewound_head_and_forgeries() {
    let app = TestApp::spawn().await;
    for tenant in ["rewound", "altered", "forged"] {
        let batch: Vec<Value> = (0..5).map(|_| event("auth", tenant)).collect();
        assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
    }
    let (status, made) = app.send_json(Method::POST, "/audit/checkpoints", KEY, None).await;
    assert_eq!(status, 200, "{made}");
    // Every chain that moved got one (the access records' chain in `default` too).
    let made_list = made["checkpoints"].as_array().expect("list");
    assert!(made_list.iter().any(|c| c["tenant_id"] == "rewound" && c["seq"] == 5 && c["table"] == "audit_logs"), "{made}");
    let (status, again) = app.send_json(Method::POST, "/audit/checkpoints?tenant_id=rewound", KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(again["checkpoints"], json!([]), "an unmoved chain is not signed twice");

    // The public key is served without a key and verifies the exported checkpoints.
    let public: Value = app
        .client
        .get(format!("{}/audit/checkpoints/public-key", app.address))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(public["public_key"], made["public_key"]);
    let key = PublicKey::parse(public["public_key"].as_str().expect("key")).expect("parses");
    let keys = Keyring::new(vec![key]);
    let (status, export) = app.send_json(Method::GET, "/audit/checkpoints?tenant_id=rewound", KEY, None).await;
    assert_eq!(status, 200);
    let exported: Vec<tierlog::integrity::checkpoint::Checkpoint> =
        serde_json::from_value(export["checkpoints"].clone()).expect("checkpoints");
    assert_eq!(exported.len(), 1);
    assert!(exported[0].verify(&keys).is_ok());
    let mut altered = exported[0].clone();
    altered.head.seq = 4;
    assert!(altered.verify(&keys).is_err(), "an altered checkpoint fails offline too");
    assert_eq!(chain(&app, "rewound").await["checkpoints"], 1);
    assert_eq!(chain(&app, "rewound").await["ok"], true);

    // Deleting the newest row and rewinding chain_heads fools the database, not the
    // signed checkpoint.
    // (Reads are recorded in the tenant's chain, so rows follow the checkpoint.)
    app.tamper("DELETE FROM audit_logs WHERE tenant_id = 'rewound' AND seq >= 5").await;
    app.tamper(
        "UPDATE chain_heads SET seq = 4, head_hash = (SELECT row_hash FROM audit_logs WHERE tenant_id = 'rewound' AND seq = 4)
         WHERE tenant_id = 'rewound' AND table_name = 'audit_logs' AND shard = 0",
    )
    .await;
    assert_eq!(chain(&app, "rewound").await["first_break"], json!({"kind": "missing_tail", "last_seq": 4, "head_seq": 5}));

    // Editing a stored checkpoint breaks its signature.
    app.tamper("UPDATE checkpoints SET seq = 4 WHERE tenant_id = 'altered'").await;
    assert_eq!(
        chain(&app, "altered").await["first_break"],
        json!({"kind": "bad_checkpoint", "seq": 4, "reason": "invalid"})
    );

    // A checkpoint signed with another key is not trusted.
    let forger = Signer::generate();
    let forged = forger.checkpoint(
        ChainHead { tenant_id: "forged".into(), table: "audit_logs".into(), seq: 5, hash: hex::encode([1u8; 32]) },
        "on_demand",
        chrono::Utc::now(),
    );
    tierlog::tiers::postgres::checkpoints::insert(&app.pool, &forged).await.expect("insert");
    assert_eq!(
        chain(&app, "forged").await["first_break"],
        json!({"kind": "bad_checkpoint", "seq": 5, "reason": "unknown_key"})
    );

    // Checkpoints are append-only like the events.
    let refused = sqlx::query("DELETE FROM checkpoints").execute(&app.pool).await;
    assert!(refused.is_err());
    app.stop().await;
}

#[tokio::test]
async fn checkpoint_endpoints_need_logs_verify_and_stay_in_the_tenant() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_events(&json!([event("auth", "acme"), event("auth", "beta")])).await.status(), 200);
    let (_, viewer) = app.create_key(json!({"name": "v", "tenant_id": "acme", "permissions": ["logs.auth.view"]})).await;
    let (_, verifier) = app.create_key(json!({"name": "x", "tenant_id": "acme", "permissions": ["logs.verify"]})).await;
    assert_eq!(app.send_json(Method::GET, "/audit/checkpoints", &viewer, None).await.0, 403);
    assert_eq!(app.send_json(Method::POST, "/audit/checkpoints", &viewer, None).await.0, 403);
    assert_eq!(app.send_json(Method::POST, "/audit/checkpoints?tenant_id=beta", &verifier, None).await.0, 403);
    let (status, made) = app.send_json(Method::POST, "/audit/checkpoints", &verifier, None).await;
    assert_eq!(status, 200);
    let list = made["checkpoints"].as_array().expect("list");
    assert!(!list.is_empty() && list.iter().all(|c| c["tenant_id"] == "acme"), "{made}");
    assert_eq!(app.send_json(Method::GET, "/audit/checkpoints?limit=0", &verifier, None).await.0, 400);
    assert_eq!(app.send_json(Method::GET, "/audit/checkpoints?since=yesterday", &verifier, None).await.0, 400);
    app.stop().await;
}
