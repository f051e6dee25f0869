//! The live tail, `GET /audit/stream`: accepted events as Server-Sent Events, with
//! the filters, permissions and tenant scope of `/audit/combined`, resumable with
//! `Last-Event-ID`, and a slow client cut off without holding anything up.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{event, TestApp, KEY};

/// One SSE message: its `event` name (`message` by default), `id` and `data`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    pub(crate) event: String,
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

/// A client following the stream.
pub(crate) struct Follower {
    response: reqwest::Response,
    buffer: String,
}

impl Follower {
    pub(crate) async fn open(app: &TestApp, query: &str, key: &str, last: Option<&str>) -> Follower {
        let mut request = app.client.get(format!("{}/audit/stream{query}", app.address)).bearer_auth(key);
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status(), 200, "{:?}", response.headers());
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Follower { response, buffer: String::new() }
    }

    /// The next message (keep-alive comments skipped), or `None` when the stream ends
    /// or nothing comes within `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message { event: "message".into(), id: None, data: String::new() };
                let mut fields = 0;
                for line in block.lines() {
                    if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "event" => message.event = value.into(),
                            "id" => message.id = Some(value.into()),
                            "data" => message.data.push_str(value),
                            _ => continue,
                        }
                        fields += 1;
                    }
                }
                if fields > 0 {
                    return Some(message);
                }
                continue;
            }
            match tokio::time::timeout(wait, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
                _ => return None,
            }
        }
    }

    /// The next `n` messages, failing if they do not come.
    pub(crate) async fn take(&mut self, n: usize) -> Vec<Message> {
        let mut taken = Vec::new();
        while taken.len() < n {
            taken.push(self.next(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("only {taken:?} came")));
        }
        taken
    }

    /// Whether nothing more comes within a short while.
    pub(crate) async fn quiet(&mut self) -> bool {
        self.next(Duration::from_millis(500)).await.is_none()
    }
}

fn item(message: &Message) -> Value {
    serde_json::from_str(&message.data).expect("the data is the event's JSON line")
}

const EVERYTHING: [&str; 5] = ["logs.auth.view", "logs.actions.view", "logs.security.view", "logs.financial.view", "events.write"];

#[tokio::test]
async fn the_tail_streams_accepted_events_within_filters_and_tenant_and_resumes_after_the_last_id() {
    // Counts what each client gets: no alerts in between.
    let app = TestApp::spawn_with(|s| s.detection.enabled = false).await;
    let (_, beta_key) = app.create_key(json!({"name": "beta", "tenant_id": "beta", "permissions": EVERYTHING})).await;
    let mut all = Follower::open(&app, "", KEY, None).await;
    let mut security = Follower::open(&app, "?category=security", KEY, None).await;
    let mut beta = Follower::open(&app, "", &beta_key, None).await;
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\ntierlog_tail_clients 3\n"), "{metrics}");
    assert!(metrics.contains("\ntierlog_tail_dropped_events_total 0\n"), "{metrics}");

    let mut locked = event("security", "acme");
    locked["security"] = json!({"event_type": "account_locked"});
    let sent = [event("auth", "acme"), locked, event("auth", "beta")];
    assert_eq!(app.post_events(&json!(sent)).await.status(), 200);

    // In the order the node acknowledged them (tenants may be written by different
    // writers, so not always the order sent).
    let got = all.take(3).await;
    let ids: Vec<&str> = got.iter().map(|m| m.id.as_deref().expect("an id")).collect();
    for message in &got {
        assert_eq!(message.event, "message");
        let sent_as = sent.iter().find(|e| e["id"].as_str() == message.id.as_deref()).expect("a sent event");
        assert_eq!(item(message)["tenant_id"], sent_as["tenant_id"]);
        assert_eq!(item(message)["category"], sent_as["category"]);
    }
    assert!(all.quiet().await, "each event once, and no access record (the stream's own reads) unless asked for");
    let only_security = security.take(1).await;
    assert_eq!(only_security[0].id.as_deref(), sent[1]["id"].as_str());
    assert!(security.quiet().await);
    let only_beta = beta.take(1).await;
    assert_eq!(only_beta[0].id.as_deref(), sent[2]["id"].as_str());
    assert!(beta.quiet().await, "a tenant key sees its tenant only");

    // A tenant key cannot follow another tenant.
    let other = app.client.get(format!("{}/audit/stream?tenant_id=acme", app.address)).bearer_auth(&beta_key).send().await.unwrap();
    assert_eq!(other.status(), 403);
    // Reconnecting after the first event gets the two that came after it, then more.
    drop(all);
    let mut again = Follower::open(&app, "", KEY, Some(ids[0])).await;
    let missed = again.take(2).await;
    assert_eq!(missed.iter().map(|m| m.id.as_deref().unwrap()).collect::<Vec<_>>(), ids[1..]);
    let later = event("audit", "acme");
    assert_eq!(app.post_events(&later).await.status(), 200);
    assert_eq!(again.take(1).await[0].id.as_deref(), later["id"].as_str());
    // An id no longer held: a reset notice, then the live events.
    let mut unknown = Follower::open(&app, "", KEY, Some(&uuid::Uuid::new_v4().to_string())).await;
    assert_eq!(unknown.take(1).await[0].event, "reset");
    // A malformed Last-Event-ID is refused.
    let bad = app.client.get(format!("{}/audit/stream", app.address)).bearer_auth(KEY).header("Last-Event-ID", "7").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    // No key, no stream.
    let anonymous = app.client.get(format!("{}/audit/stream", app.address)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// One client reads everything while another reads nothing: ingest goes on at once,
/// the reading client gets every event, and the stalled one, once read again, finds
/// a `dropped` notice and the end of its stream instead of an unbounded backlog.
#[tokio::test]
async fn a_slow_client_is_dropped_with_a_notice_and_holds_up_neither_ingest_nor_other_clients() {
    // A client may fall 10 batches behind (each request below makes a batch or two).
    let app = TestApp::spawn_with(|s| s.stream.client_buffer_events = 10 * tierlog::stream::EVENTS_PER_BATCH).await;
    let mut slow = Follower::open(&app, "?category=api", KEY, None).await;
    let mut fast = Follower::open(&app, "?category=api", KEY, None).await;
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 1000;
    // The reading client reports how far it got; each batch is sent once it has the
    // one before, so it stays well within its 10 batches of slack however busy the
    // machine, while the stalled client falls 40,000 behind.
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = read.clone();
    let reader = tokio::spawn(async move {
        while let Some(message) = fast.next(Duration::from_secs(20)).await {
            assert_eq!(message.event, "message");
            let ids = progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if ids == BATCHES * PER_BATCH {
                break;
            }
        }
    });
    for sent in 1..=BATCHES {
        let batch: Vec<Value> = (0..PER_BATCH)
            .map(|_| {
                let mut e = event("api", "acme");
                e["message"] = json!("x".repeat(300));
                e
            })
            .collect();
        let started = std::time::Instant::now();
        assert_eq!(app.post_events(&json!(batch)).await.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(10), "ingest was held up");
        let caught_up = crate::helpers::eventually(Duration::from_secs(20), || {
            read.load(std::sync::atomic::Ordering::SeqCst) >= sent * PER_BATCH
        })
        .await;
        assert!(caught_up, "the reading client fell behind at batch {sent}");
    }
    reader.await.unwrap();
    assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), BATCHES * PER_BATCH, "the reading client got every event");
    let mut received = 0;
    let mut last = None;
    while let Some(message) = slow.next(Duration::from_secs(10)).await {
        if message.event == "message" {
            received += 1;
        }
        last = Some(message);
    }
    let last = last.expect("the slow client got something");
    assert_eq!(last.event, "dropped", "the stream ends with the notice");
    assert!(last.data.contains("reconnect with Last-Event-ID"), "{last:?}");
    assert!(received < BATCHES * PER_BATCH, "it was cut off: {received}");
    println!("stream: the stalled client got {received} of {} events before the notice", BATCHES * PER_BATCH);
}

/// A node shutting down ends its streams with a notice, so the graceful shutdown
/// (which waits for every response) is not held up by clients following the tail.
#[tokio::test]
async fn shutting_down_ends_the_streams_with_a_notice() {
    let app = TestApp::spawn().await;
    let mut follower = Follower::open(&app, "", KEY, None).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.stop()).await;
    assert!(stopped.is_ok(), "the shutdown waited for the stream");
    let last = follower.next(Duration::from_secs(5)).await.expect("a last message");
    assert_eq!(last.event, "closing", "{last:?}");
    assert!(last.data.contains("Last-Event-ID"), "{last:?}");
    assert!(follower.next(Duration::from_secs(1)).await.is_none(), "and the stream ends");
}

/// Two nodes sharing Redis: a client of either follows the events both accept, each
/// once.
#[tokio::test]
async fn a_client_of_one_node_follows_the_events_of_every_node_sharing_redis() {
    let redis = crate::helpers::TestRedis::new(crate::helpers::redis_url());
    let prefix = redis.prefix.clone();
    let a = TestApp::spawn_on(redis, |_| {}).await;
    let b = TestApp::spawn_on(crate::helpers::TestRedis { url: crate::helpers::redis_url(), prefix }, |_| {}).await;
    let mut on_a = Follower::open(&a, "", KEY, None).await;
    let mut on_b = Follower::open(&b, "", KEY, None).await;
    // Both subscriptions are in place once an event sent to each reaches both.
    let mut warm = std::collections::HashSet::new();
    for _ in 0..50 {
        let probe = event("audit", "acme");
        assert_eq!(b.post_events(&probe).await.status(), 200);
        if on_a.next(Duration::from_millis(200)).await.is_some() {
            warm.insert(probe["id"].as_str().unwrap().to_owned());
            break;
        }
    }
    assert!(!warm.is_empty(), "node a never heard of node b's events");
    while on_a.next(Duration::from_millis(300)).await.is_some() {}
    while on_b.next(Duration::from_millis(300)).await.is_some() {}

    let from_a = event("auth", "acme");
    let from_b = event("security", "acme");
    assert_eq!(a.post_events(&from_a).await.status(), 200);
    assert_eq!(b.post_events(&from_b).await.status(), 200);
    for follower in [&mut on_a, &mut on_b] {
        let mut ids: Vec<String> = follower.take(2).await.into_iter().map(|m| m.id.unwrap()).collect();
        ids.sort();
        let mut sent = vec![from_a["id"].as_str().unwrap().to_owned(), from_b["id"].as_str().unwrap().to_owned()];
        sent.sort();
        assert_eq!(ids, sent);
        assert!(follower.quiet().await, "each event once");
    }
}

/// `tierlog tail category=security` prints each matching event's line as it is
/// accepted, and a refused key ends it with the service's answer. (The test waits on
/// the command's output with blocking calls: the service needs threads of its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tierlog_tail_prints_the_matching_events_as_they_are_accepted() {
    use std::io::BufRead;
    let app = TestApp::spawn().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(["tail", "category=security"])
        .env("TIERLOG_URL", &app.address)
        .env("TIERLOG_API_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tierlog tail starts");
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // Send until the tail is connected and prints one, then one more of each kind.
    let mut first = None;
    for _ in 0..100 {
        let mut security = event("security", "acme");
        security["security"] = json!({"event_type": "account_locked"});
        assert_eq!(app.post_events(&json!([event("auth", "acme"), security])).await.status(), 200);
        if let Ok(line) = received.recv_timeout(Duration::from_millis(100)) {
            first = Some(line);
            break;
        }
    }
    let first: Value = serde_json::from_str(&first.expect("tierlog tail printed nothing")).expect("a JSON line");
    assert_eq!(first["category"], "security");
    while received.recv_timeout(Duration::from_millis(300)).is_ok() {}
    let mut security = event("security", "acme");
    security["security"] = json!({"event_type": "account_locked"});
    assert_eq!(app.post_events(&json!([event("auth", "acme"), security.clone()])).await.status(), 200);
    let line: Value = serde_json::from_str(&received.recv_timeout(Duration::from_secs(10)).expect("a line")).unwrap();
    assert_eq!(line["id"], security["id"], "{line}");
    assert!(received.recv_timeout(Duration::from_millis(500)).is_err(), "the auth event is filtered out");
    child.kill().expect("stopped");
    let _ = child.wait();

    let mut refused = std::process::Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(["tail"])
        .env("TIERLOG_URL", &app.address)
        .env("TIERLOG_API_KEY", "not-a-key")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tierlog tail runs");
    let mut status = None;
    for _ in 0..100 {
        status = refused.try_wait().expect("wait");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if status.is_none() {
        refused.kill().expect("stopped");
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.is_some_and(|s| !s.success()), "a refused key ends the tail: {stderr}");
    assert!(stderr.contains("401"), "{stderr}");
}
