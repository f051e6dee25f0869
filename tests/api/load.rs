//! A steady load of clients and the checks that end every fault test: each
//! acknowledged event is where its acknowledgement promised, exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{event, file_lines_in, KEY};

pub const CATEGORIES: [&str; 4] = ["auth", "security", "financial", "api"];
pub const PERSISTED: [&str; 3] = ["auth", "security", "financial"];
pub const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// What the clients of a load saw.
#[derive(Default)]
pub struct Outcome {
    /// Events of 200 responses.
    pub acked: Vec<Value>,
    /// Batches still unacknowledged when the load stopped (only with `give_up`).
    pub unacked: Vec<Vec<Value>>,
    /// Non-200 answers and failed connections, each retried with the same ids.
    pub refusals: u64,
}

/// Clients posting small mixed batches as fast as they are answered. A refused
/// batch is retried with the same ids, as a real client would.
pub struct Load {
    stop: Arc<AtomicBool>,
    give_up: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Outcome>>,
}

impl Load {
    pub fn start(address: &str, clients: usize, batch: usize) -> Load {
        Load::start_as(address, clients, batch, KEY, &TENANTS)
    }

    /// A load sent with `key`, spread over `tenants`.
    pub fn start_as(address: &str, clients: usize, batch: usize, key: &str, tenants: &'static [&'static str]) -> Load {
        Load::start_across(&[address.to_owned()], clients, batch, key, tenants)
    }

    /// A load spread over several nodes, as a load balancer would: client `c` starts
    /// on node `c % n`, and a refused or failed batch is retried, with the same ids,
    /// on the next node.
    pub fn start_across(addresses: &[String], clients: usize, batch: usize, key: &str, tenants: &'static [&'static str]) -> Load {
        let urls: Vec<String> = addresses.iter().map(|address| format!("{address}/audit/events")).collect();
        let key = key.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let give_up = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        let tasks = (0..clients)
            .map(|c| {
                let (urls, stop, give_up, sent, client, key) =
                    (urls.clone(), stop.clone(), give_up.clone(), sent.clone(), client.clone(), key.clone());
                tokio::spawn(async move {
                    let mut outcome = Outcome::default();
                    let mut n = c;
                    let mut node = c % urls.len();
                    'load: while !stop.load(Ordering::Relaxed) {
                        let events: Vec<Value> = (0..batch)
                            .map(|_| {
                                n += 1;
                                event(CATEGORIES[n % CATEGORIES.len()], tenants[n % tenants.len()])
                            })
                            .collect();
                        loop {
                            let answer = client.post(&urls[node]).bearer_auth(&key).json(&events).send().await;
                            if matches!(&answer, Ok(r) if r.status() == 200) {
                                sent.fetch_add(events.len() as u64, Ordering::Relaxed);
                                outcome.acked.extend(events);
                                break;
                            }
                            outcome.refusals += 1;
                            node = (node + 1) % urls.len();
                            if give_up.load(Ordering::Relaxed) {
                                outcome.unacked.push(events);
                                break 'load;
                            }
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                    }
                    outcome
                })
            })
            .collect();
        Load { stop, give_up, sent, tasks }
    }

    /// Waits until `more` events beyond now are acknowledged (or `limit` passes).
    pub async fn progress(&self, more: u64, limit: Duration) {
        let target = self.sent.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + limit;
        while self.sent.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load stalled: {} events acknowledged", self.sent.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the clients; each finishes (retrying) the batch it holds.
    pub async fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        self.collect().await
    }

    /// Stops the clients at once; batches without an answer are returned unacked.
    pub async fn abandon(self) -> Outcome {
        self.give_up.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        self.collect().await
    }

    async fn collect(self) -> Outcome {
        let mut all = Outcome::default();
        for task in self.tasks {
            let outcome = tokio::time::timeout(Duration::from_secs(60), task).await.expect("clients finish").expect("client task");
            all.acked.extend(outcome.acked);
            all.unacked.extend(outcome.unacked);
            all.refusals += outcome.refusals;
        }
        all
    }
}

/// Each acknowledged event is once in Postgres (persisted categories only) and once
/// in the files; nothing else is there.
pub async fn assert_exactly_once(pool: &PgPool, file_dirs: &[&std::path::Path], acked: &[Value]) {
    let mut stored: HashMap<Uuid, i64> = HashMap::new();
    for table in ["audit_logs", "security_events", "financial_audit_logs"] {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(&format!("SELECT id, count(*) FROM {table} GROUP BY id"))
            .fetch_all(pool)
            .await
            .expect("ids");
        for (id, count) in rows {
            *stored.entry(id).or_default() += count;
        }
    }
    let id = |e: &Value| Uuid::parse_str(e["id"].as_str().expect("id")).expect("uuid");
    let persisted: Vec<Uuid> =
        acked.iter().filter(|e| PERSISTED.contains(&e["category"].as_str().unwrap_or(""))).map(id).collect();
    for event_id in &persisted {
        assert_eq!(stored.get(event_id), Some(&1), "acknowledged event {event_id} is in Postgres exactly once");
    }
    assert_eq!(stored.len(), persisted.len(), "Postgres holds nothing but the acknowledged persisted events");

    let mut lines: HashMap<Uuid, usize> = HashMap::new();
    for line in file_dirs.iter().flat_map(|dir| file_lines_in(dir)) {
        *lines.entry(id(&line)).or_default() += 1;
    }
    for event in acked {
        assert_eq!(lines.get(&id(event)), Some(&1), "acknowledged event {} is in the files exactly once", event["id"]);
    }
    assert_eq!(lines.len(), acked.len(), "the files hold nothing but acknowledged events");
}

pub async fn verify_ok(client: &reqwest::Client, address: &str) {
    let report: Value = client
        .get(format!("{address}/audit/verify"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("json");
    assert_eq!(report["ok"], true, "{report}");
}

pub async fn readiness(client: &reqwest::Client, address: &str) -> Value {
    client.get(format!("{address}/readyz")).send().await.expect("readyz").json().await.expect("json")
}

