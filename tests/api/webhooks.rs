//! Webhooks: alerts delivered to a real HTTP receiver inside the test, signed per
//! the Standard Webhooks specification, retried with growing delays, dead-lettered
//! after a day (on a clock the test moves), redelivered on request, never lost across
//! a SIGKILL of tierlog, never sent to internal addresses or other hosts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{TestApp, TestDb, TestRedis, ServerProcess, KEY};

const SECRET: &str = "whsec_dGllcmxvZy10ZXN0LXdlYmhvb2stc2VjcmV0LTAxMjM0NTY3";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    at: Instant,
}

/// A webhook receiver: answers `fail_first` requests with 503, then `status`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    address: Option<SocketAddr>,
    /// Where `/elsewhere` redirects.
    redirect_to: Arc<Mutex<String>>,
}

impl Receiver {
    async fn start_on(address: &str, fail_first: usize, status: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(address).await.expect("receiver binds");
        let mut receiver = Receiver { status: Arc::new(AtomicU16::new(status)), ..Receiver::default() };
        receiver.fail_first.store(fail_first, Ordering::SeqCst);
        receiver.address = Some(listener.local_addr().unwrap());
        let state = receiver.clone();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .route("/elsewhere", axum::routing::post(|axum::extract::State(r): axum::extract::State<Receiver>| async move {
                let to = r.redirect_to.lock().unwrap().clone();
                (axum::http::StatusCode::TEMPORARY_REDIRECT, [("location", to)])
            }))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    async fn start(fail_first: usize, status: u16) -> Receiver {
        Receiver::start_on("127.0.0.1:0", fail_first, status).await
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address.unwrap())
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        while self.got().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = self.got();
        assert!(got.len() >= n, "the receiver got {} of {n}: {got:#?}", got.len());
        got
    }
}

async fn hook(
    axum::extract::State(receiver): axum::extract::State<Receiver>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    receiver.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
        at: Instant::now(),
    });
    let failing = receiver.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let status = if failing { 503 } else { receiver.status.load(Ordering::SeqCst) };
    axum::http::StatusCode::from_u16(status).unwrap()
}

/// Checks a request's signature as a receiver would, with the secret alone.
fn verify(received: &Received) {
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", received.id, received.timestamp, received.body).as_bytes());
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(received.signature, expected, "signature of {received:?}");
    let sent: i64 = received.timestamp.parse().expect("webhook-timestamp is seconds");
    assert!((chrono::Utc::now().timestamp() - sent).abs() < 60, "the timestamp is the real time");
}

fn fast(s: &mut tierlog::config::Settings) {
    s.webhooks.allow_networks = vec!["127.0.0.0/8".into()];
    s.webhooks.retry_base_ms = 300;
    s.webhooks.retry_max_ms = 5000;
    s.webhooks.poll_interval_ms = 50;
    s.webhooks.timeout_ms = 2000;
}

async fn create_endpoint(app: &TestApp, tenant: &str, url: &str, extra: Value) -> Value {
    let mut body = json!({"url": url, "tenant_id": tenant, "secret": SECRET});
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    let (status, created) = app.send_json(Method::POST, "/audit/webhooks", KEY, Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["secret"], SECRET);
    created["endpoint"].clone()
}

fn lockout(tenant: &str, user: &str) -> Value {
    json!({"category": "security", "tenant_id": tenant, "user_id": user, "security": {"event_type": "account_locked"}})
}

async fn messages(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let (status, body) = app.send_json(Method::GET, &format!("/audit/webhooks/{endpoint}/messages"), KEY, None).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

async fn wait_for_state(app: &TestApp, endpoint: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = messages(app, endpoint).await;
        if let Some(message) = found.iter().find(|m| m["state"] == state) {
            return message.clone();
        }
        assert!(Instant::now() < deadline, "no message became {state}: {found:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn alerts_reach_the_receiver_signed_and_retried_with_growing_delays() {
    let app = TestApp::spawn_with(fast).await;
    let receiver = Receiver::start(2, 200).await;
    let endpoint = create_endpoint(&app, "w1", &receiver.url(), json!({"rules": ["account-locked"]})).await;
    // Another endpoint of the tenant takes other rules only; one of another tenant
    // takes everything: neither gets this alert.
    let other_rules = Receiver::start(0, 200).await;
    create_endpoint(&app, "w1", &other_rules.url(), json!({"rules": ["credential-stuffing"]})).await;
    let other_tenant = Receiver::start(0, 200).await;
    create_endpoint(&app, "w2", &other_tenant.url(), json!({})).await;

    assert_eq!(app.post_events(&lockout("w1", "victim")).await.status(), 200);
    let got = receiver.wait_for(3, Duration::from_secs(20)).await;
    let id = endpoint["id"].as_str().unwrap();
    let delivered = wait_for_state(&app, id, "delivered").await;
    assert_eq!(delivered["attempts"], 3);
    assert_eq!(delivered["last_status"], 200);

    // Every attempt is the same message: one webhook-id, signed, the alert inside.
    assert_eq!(got.len(), 3, "delivered once, then never again: {got:#?}");
    for attempt in &got {
        assert_eq!(attempt.id, got[0].id);
        verify(attempt);
    }
    let expected_id = format!("msg_{}", delivered["id"].as_str().unwrap().replace('-', ""));
    assert_eq!(got[0].id, expected_id);
    let body: Value = serde_json::from_str(&got[2].body).unwrap();
    assert_eq!(body["type"], "security.alert");
    assert_eq!(body["data"]["details"]["rule"], "account-locked");
    assert_eq!(body["data"]["id"], delivered["event_id"]);
    // Retries come later each time: 0.15-0.3 s, then 0.3-0.6 s (base 0.3 s, jitter).
    let first_gap = got[1].at - got[0].at;
    let second_gap = got[2].at - got[1].at;
    assert!(first_gap >= Duration::from_millis(140), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(290), "{second_gap:?}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(other_rules.got().is_empty() && other_tenant.got().is_empty(), "endpoints get their own alerts only");
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tierlog_webhooks_delivered_total 1"), "{metrics}");
    assert!(metrics.contains("tierlog_webhooks_failed_attempts_total 2"), "{metrics}");
    assert!(metrics.contains("tierlog_alerts_total 1"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn a_message_failing_for_a_day_is_dead_lettered_and_redelivered_on_request() {
    let app = TestApp::spawn_with(fast).await;
    let receiver = Receiver::start(0, 500).await;
    let endpoint = create_endpoint(&app, "w3", &receiver.url(), json!({})).await;
    let id = endpoint["id"].as_str().unwrap();
    assert_eq!(app.post_events(&lockout("w3", "victim")).await.status(), 200);
    receiver.wait_for(2, Duration::from_secs(20)).await;
    let pending = messages(&app, id).await;
    assert_eq!(pending[0]["state"], "pending");
    assert_eq!(pending[0]["last_status"], 500);

    // A day and more later (the service's clock), the next failure is the last.
    app.clock.advance(chrono::Duration::hours(26));
    let dead = wait_for_state(&app, id, "dead").await;
    let attempts = dead["attempts"].as_i64().unwrap();
    assert!(attempts >= 3, "{dead}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.got().len() as i64, attempts, "no attempt after the dead letter");
    let (status, listed) = app.send_json(Method::GET, &format!("/audit/webhooks/{id}/messages?state=dead"), KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    // The receiver is fixed; the dead letter is sent again, with the same id.
    receiver.status.store(200, Ordering::SeqCst);
    let message = dead["id"].as_str().unwrap();
    let (status, body) =
        app.send_json(Method::POST, &format!("/audit/webhooks/{id}/messages/{message}/redeliver"), KEY, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "pending");
    wait_for_state(&app, id, "delivered").await;
    let got = receiver.got();
    assert!(got.iter().all(|r| r.id == got[0].id), "one webhook-id throughout");
    verify(got.last().unwrap());
    let (status, audit) = app.send_json(Method::GET, "/audit/logs?category=access&action=webhooks.redelivered&tenant_id=w3", KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(audit["items"][0]["details"]["state_before"], "dead");
    app.stop().await;
}

#[tokio::test]
async fn endpoints_refuse_internal_addresses_other_hosts_and_bad_fields() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(0, 200).await;
    for (body, field) in [
        (json!({"url": receiver.url(), "tenant_id": "w4"}), "url"),
        (json!({"url": "http://169.254.169.254/latest/meta-data", "tenant_id": "w4"}), "url"),
        (json!({"url": "http://[::1]:8080/", "tenant_id": "w4"}), "url"),
        (json!({"url": "http://10.0.0.8/", "tenant_id": "w4"}), "url"),
        (json!({"url": "http://localhost:8080/", "tenant_id": "w4"}), "url"),
        (json!({"url": "ftp://hooks.example.com/", "tenant_id": "w4"}), "url"),
        (json!({"url": "https://hooks.example.com/", "tenant_id": "w4", "secret": "hunter2"}), "secret"),
        (json!({"url": "https://hooks.example.com/", "tenant_id": "w4", "categories": ["access"]}), "categories[0]"),
        (json!({"url": "https://hooks.example.com/", "tenant_id": "w4", "rules": ["no spaces"]}), "rules[0]"),
        (json!({"url": "https://hooks.example.com/"}), "tenant_id"),
    ] {
        let (status, answer) = app.send_json(Method::POST, "/audit/webhooks", KEY, Some(&body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(field), "{field}: {answer}");
    }
    let (_, listed) = app.send_json(Method::GET, "/audit/webhooks", KEY, None).await;
    assert_eq!(listed["items"], json!([]), "nothing was created");

    // A tenant key manages its own tenant's endpoints only.
    let (_, key) = app.send_json(Method::POST, "/audit/keys", KEY, Some(&json!({"name": "w5", "tenant_id": "w5", "permissions": ["keys.manage"]}))).await;
    let tenant_key = key["secret"].as_str().unwrap();
    let (status, _) = app.send_json(Method::POST, "/audit/webhooks", tenant_key,
        Some(&json!({"url": "https://hooks.example.com/", "tenant_id": "w6"}))).await;
    assert_eq!(status, 403);
    app.stop().await;

    // Allowed to loopback, but a redirect to another host is not followed.
    let app = TestApp::spawn_with(fast).await;
    let elsewhere = Receiver::start_on("127.0.0.2:0", 0, 200).await;
    *receiver.redirect_to.lock().unwrap() = elsewhere.url();
    let endpoint = create_endpoint(&app, "w7", &receiver.url().replace("/hook", "/elsewhere"), json!({})).await;
    let (status, attempt) =
        app.send_json(Method::POST, &format!("/audit/webhooks/{}/test", endpoint["id"].as_str().unwrap()), KEY, None).await;
    assert_eq!(status, 200, "{attempt}");
    assert_eq!(attempt["delivered"], false);
    assert_eq!(attempt["status"], 307);
    assert!(elsewhere.got().is_empty());
    // The test message reaches a working endpoint, signed.
    let endpoint = create_endpoint(&app, "w7", &receiver.url(), json!({})).await;
    let (_, attempt) = app.send_json(Method::POST, &format!("/audit/webhooks/{}/test", endpoint["id"].as_str().unwrap()), KEY, None).await;
    assert_eq!(attempt["delivered"], true, "{attempt}");
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    verify(&got[0]);
    assert_eq!(serde_json::from_str::<Value>(&got[0].body).unwrap()["type"], "webhook.test");
    app.stop().await;
}

#[tokio::test]
async fn delivery_survives_a_sigkill_of_tierlog_and_a_receiver_down_meanwhile() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(crate::helpers::redis_url());
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TIERLOG__WEBHOOKS__ALLOW_NETWORKS", "127.0.0.1/32"),
        ("TIERLOG__WEBHOOKS__RETRY_BASE_MS", "200"),
        ("TIERLOG__WEBHOOKS__RETRY_MAX_MS", "1000"),
        ("TIERLOG__WEBHOOKS__POLL_INTERVAL_MS", "50"),
        ("TIERLOG__WEBHOOKS__TIMEOUT_MS", "1000"),
    ];
    // The receiver's port, closed for now: connections are refused.
    let port = crate::helpers::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let client = reqwest::Client::new();
    let call = |server: &ServerProcess, method: Method, path: &str, body: Option<Value>| {
        let mut request = client.request(method, format!("{}{path}", server.address)).bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.expect("request");
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let mut server = ServerProcess::start(&db, &redis, dir.path(), &env);
    let (status, created) = call(&server, Method::POST, "/audit/webhooks", Some(json!({"url": url, "tenant_id": "w8", "secret": SECRET}))).await;
    assert_eq!(status, 201, "{created}");
    let endpoint = created["endpoint"]["id"].as_str().unwrap().to_owned();
    let (status, _) = call(&server, Method::POST, "/audit/events", Some(lockout("w8", "victim"))).await;
    assert_eq!(status, 200);
    // Attempts fail while the receiver is down.
    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        let (_, listed) = call(&server, Method::GET, &format!("/audit/webhooks/{endpoint}/messages"), None).await;
        if let Some(m) = listed["items"].as_array().and_then(|items| items.first()).filter(|m| m["attempts"].as_i64() >= Some(2)) {
            break m.clone();
        }
        assert!(Instant::now() < deadline, "no failed attempts: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(message["state"], "pending");
    assert!(message["last_error"].as_str().unwrap().contains("error"), "{message}");

    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("killed");
    let receiver = Receiver::start_on(&format!("127.0.0.1:{port}"), 0, 200).await;
    let server = ServerProcess::start(&db, &redis, dir.path(), &env);
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].id, format!("msg_{}", message["id"].as_str().unwrap().replace('-', "")));
    verify(&got[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, listed) = call(&server, Method::GET, &format!("/audit/webhooks/{endpoint}/messages"), None).await;
        if listed["items"][0]["state"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
}

#[tokio::test]
async fn the_embedded_mode_delivers_from_its_own_outbox() {
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.postgres.url = String::new();
        s.redis.url = String::new();
        s.embedded.data_dir = s.files.path.with_file_name("data");
    })
    .await;
    let receiver = Receiver::start(1, 200).await;
    let endpoint = create_endpoint(&app, "default", &receiver.url(), json!({"categories": ["security"]})).await;
    assert_eq!(app.post_events(&lockout("default", "victim")).await.status(), 200);
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[0].id, got[1].id);
    verify(&got[1]);
    let delivered = wait_for_state(&app, endpoint["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(delivered["attempts"], 2);
    app.stop().await;
}
