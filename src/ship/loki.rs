//! Pushing every event to Loki's HTTP push API (`/loki/api/v1/push`), for
//! deployments without a log shipper. Off unless `loki.push_url` is set.
//!
//! A writer hands each batch to [`LokiPush::offer`] once it is durable (as it does
//! the live tail): that never waits. A full queue drops the batch's lines from the
//! push, counted in `tierlog_loki_dropped_lines_total` (the files, which a shipper
//! can read, still hold them). The push task gathers lines up to `batch_lines` or
//! `batch_wait_ms`, sends them in the push API's protobuf form compressed with
//! snappy (what Loki's own clients send: no JSON escaping of JSON lines, and a
//! compression far cheaper than gzip), with the shippers' label set (`service`,
//! `category`, `level`, `status`: a handful of streams) and structured metadata
//! (`id`, `tenant_id`, `request_id`, `event_time`), each line at its `received_at`
//! time.
//! A push that fails (no answer, 429 or 5xx) is sent again with exponential backoff
//! and jitter until it is taken; one Loki refuses as invalid (another 4xx) is
//! dropped and counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::mpsc;

use crate::config::LokiSettings;
use crate::event::Status;
use crate::tiers::EncodedBatch;

/// How many batches may wait for the push task.
const QUEUE_BATCHES: usize = 1024;

/// Counts of the push, for `/metrics`.
#[derive(Debug, Default)]
pub struct LokiCounters {
    pub pushed: AtomicU64,
    pub retries: AtomicU64,
    pub dropped: AtomicU64,
}

/// The handle writers offer batches to.
#[derive(Debug)]
pub struct LokiPush {
    queue: mpsc::Sender<Arc<EncodedBatch>>,
    /// Lines waiting (offered, not yet pushed or dropped), bounded by `queue_lines`.
    waiting: Arc<AtomicU64>,
    limit: u64,
    pub counters: Arc<LokiCounters>,
}

impl LokiPush {
    /// Starts the push task (it ends when the handle is dropped, after a last push).
    pub fn start(settings: LokiSettings) -> Arc<LokiPush> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms.min(5000)))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let (queue, batches) = mpsc::channel(QUEUE_BATCHES);
        let push = Arc::new(LokiPush {
            queue,
            waiting: Arc::default(),
            limit: settings.queue_lines as u64,
            counters: Arc::default(),
        });
        let task = Pusher { settings, client, counters: push.counters.clone(), waiting: push.waiting.clone() };
        tokio::spawn(task.run(batches));
        push
    }

    /// Hands a durable batch to the push, without waiting.
    pub fn offer(&self, batch: &Arc<EncodedBatch>) {
        let lines = batch.events.len() as u64;
        if self.waiting.load(Ordering::Relaxed) + lines > self.limit || self.queue.try_send(batch.clone()).is_err() {
            self.counters.dropped.fetch_add(lines, Ordering::Relaxed);
            return;
        }
        self.waiting.fetch_add(lines, Ordering::Relaxed);
    }
}

/// Loki's push request (`logproto.PushRequest` of Loki's `push.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// One stream: its labels in Prometheus form (`{category="auth", ...}`) and entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
}

/// One line, its time and its structured metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

struct Pusher {
    settings: LokiSettings,
    client: reqwest::Client,
    counters: Arc<LokiCounters>,
    waiting: Arc<AtomicU64>,
}

impl Pusher {
    async fn run(self, mut batches: mpsc::Receiver<Arc<EncodedBatch>>) {
        let wait = Duration::from_millis(self.settings.batch_wait_ms);
        let mut held: Vec<Arc<EncodedBatch>> = Vec::new();
        let mut lines = 0usize;
        loop {
            // The first batch of a push, then more until the push is full or due.
            let Some(first) = batches.recv().await else { return };
            lines += first.events.len();
            held.push(first);
            let due = tokio::time::Instant::now() + wait;
            let mut open = true;
            while lines < self.settings.batch_lines {
                match tokio::time::timeout_at(due, batches.recv()).await {
                    Ok(Some(batch)) => {
                        lines += batch.events.len();
                        held.push(batch);
                    }
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.push(&held).await;
            self.waiting.fetch_sub(lines as u64, Ordering::Relaxed);
            held.clear();
            lines = 0;
            if !open {
                return;
            }
        }
    }

    /// Sends `batches` as one push request until Loki takes it (or refuses it).
    async fn push(&self, batches: &[Arc<EncodedBatch>]) {
        let lines: u64 = batches.iter().map(|b| b.events.len() as u64).sum();
        let body = match encode(batches) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, lines, "a Loki push could not be encoded; its lines are dropped");
                self.counters.dropped.fetch_add(lines, Ordering::Relaxed);
                return;
            }
        };
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .client
                .post(&self.settings.push_url)
                .header("content-type", "application/x-protobuf")
                .body(body.clone());
            if !self.settings.org_id.is_empty() {
                request = request.header("X-Scope-OrgID", &self.settings.org_id);
            }
            if !self.settings.bearer_token.is_empty() {
                request = request.bearer_auth(&self.settings.bearer_token);
            }
            let outcome = request.send().await;
            let retry = match &outcome {
                Ok(response) if response.status().is_success() => {
                    self.counters.pushed.fetch_add(lines, Ordering::Relaxed);
                    return;
                }
                Ok(response) => {
                    let status = response.status();
                    status.as_u16() == 429 || status.is_server_error()
                }
                Err(_) => true,
            };
            let why = match outcome {
                Ok(response) => {
                    let status = response.status();
                    format!("{status}: {}", response.text().await.unwrap_or_default().chars().take(300).collect::<String>())
                }
                Err(e) => e.to_string(),
            };
            if !retry {
                tracing::error!(%why, lines, "Loki refused a push; its lines are dropped (the files still hold them)");
                self.counters.dropped.fetch_add(lines, Ordering::Relaxed);
                return;
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let delay = backoff(attempt, self.settings.retry_base_ms, self.settings.retry_max_ms);
            if attempt == 0 {
                tracing::warn!(%why, lines, retry_in_ms = delay.as_millis() as u64, "a Loki push failed; sending it again");
            }
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
        }
    }
}

/// `base * 2^attempt`, at most `max`, less a random part of up to a half (jitter).
fn backoff(attempt: u32, base_ms: u64, max_ms: u64) -> Duration {
    let full = base_ms.saturating_mul(1u64 << attempt.min(30)).min(max_ms);
    let jitter = rand::random_range(0..=full / 2);
    Duration::from_millis(full - jitter)
}

/// The labels of an event's stream: the shippers' (promtail/promtail.yml).
fn labels(event: &crate::event::AuditEvent) -> (&'static str, &'static str, &'static str) {
    (event.category.as_str(), event.level.as_str(), event.status.map_or("", Status::as_str))
}

/// A push request (protobuf, snappy) holding every line of `batches`.
fn encode(batches: &[Arc<EncodedBatch>]) -> std::io::Result<Vec<u8>> {
    let mut streams: BTreeMap<(&str, &str, &str), Vec<EntryAdapter>> = BTreeMap::new();
    for batch in batches {
        for (event, line) in batch.iter() {
            let line = std::str::from_utf8(line).map_err(std::io::Error::other)?.trim_end_matches('\n');
            let pair = |name: &str, value: String| LabelPairAdapter { name: name.into(), value };
            let mut metadata = vec![
                pair("id", event.id.to_string()),
                pair("tenant_id", event.tenant_id.clone()),
                pair("event_time", event.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            ];
            if let Some(request_id) = &event.request_id {
                metadata.push(pair("request_id", request_id.clone()));
            }
            let received = event.received_at;
            streams.entry(labels(event)).or_default().push(EntryAdapter {
                timestamp: Some(Timestamp { seconds: received.timestamp(), nanos: received.timestamp_subsec_nanos() as i32 }),
                line: line.to_owned(),
                structured_metadata: metadata,
            });
        }
    }
    let request = PushRequest {
        streams: streams
            .into_iter()
            .map(|((category, level, status), entries)| StreamAdapter {
                labels: format!(
                    r#"{{category="{}", level="{}", service="tierlog", status="{}"}}"#,
                    category, level, status
                ),
                entries,
            })
            .collect(),
    };
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).map_err(std::io::Error::other)
}
