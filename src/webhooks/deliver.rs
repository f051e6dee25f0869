//! The delivery loop of one node: claim due messages, post them signed, record how
//! each attempt went.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use uuid::Uuid;

use super::guard::{Guard, GuardedResolver};
use super::store::{self, Claimed, Recorded};
use super::{sign, Pooled};
use crate::clock::Clock;
use crate::config::WebhookSettings;
use crate::tiers::database::Database;

/// Delivery counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dead: AtomicU64,
}

/// How one attempt went.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// The receiver answered 2xx.
    pub delivered: bool,
    /// The receiver's status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    /// The `webhook-id` sent.
    pub webhook_id: String,
}

/// Posts signed messages to endpoints.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    guard: Guard,
}

impl Sender {
    /// A sender following `settings` (timeouts, allowed networks); redirects are
    /// followed only within the endpoint's host, at most three.
    pub fn new(settings: &WebhookSettings) -> Result<Sender, String> {
        let guard = Guard::new(super::guard::parse_networks(&settings.allow_networks).map_err(|(_, why)| why)?);
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt.previous().first().is_some_and(|first| first.host_str() == attempt.url().host_str());
            if attempt.previous().len() > 3 || !same_host {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.timeout_ms))
            .redirect(policy)
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .user_agent(concat!("tierlog-webhooks/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Sender { client, guard })
    }

    /// The guard of the endpoints' URLs.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Posts `body` to `url` signed with `secret` as message `id`.
    pub async fn send(&self, url: &str, secret: &str, id: &str, body: &str) -> Attempt {
        let started = std::time::Instant::now();
        let mut attempt = Attempt { delivered: false, status: None, error: None, duration_ms: 0, webhook_id: id.to_owned() };
        let checked = self.guard.check_url(url).and_then(|url| sign::key(secret).map(|key| (url, key)).map_err(str::to_owned));
        match checked {
            Err(why) => attempt.error = Some(why),
            Ok((url, key)) => {
                // The receiver compares it with its own clock: real time, not the service's.
                let timestamp = chrono::Utc::now().timestamp();
                let request = self
                    .client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", sign::signature(&key, id, timestamp, body.as_bytes()))
                    .body(body.to_owned());
                match request.send().await {
                    Ok(response) => {
                        let status = response.status();
                        attempt.status = Some(status.as_u16());
                        attempt.delivered = status.is_success();
                        if !attempt.delivered {
                            attempt.error = Some(format!("the receiver answered {status}"));
                        }
                        // Read (and bound) the body so the connection can be reused.
                        let _ = tokio::time::timeout(Duration::from_secs(1), response.bytes()).await;
                    }
                    Err(e) => attempt.error = Some(describe(&e)),
                }
            }
        }
        attempt.duration_ms = started.elapsed().as_millis() as u64;
        attempt
    }
}

/// A request error with its causes (reqwest's own message is terse).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(500).collect()
}

/// The delay before attempt `attempts + 1`: `base` doubled per attempt made, at most
/// `max`, then between half and all of it (jitter, so receivers coming back are not
/// hit by every sender at once).
pub fn backoff(settings: &WebhookSettings, attempts: i32) -> u64 {
    let doublings = attempts.saturating_sub(1).clamp(0, 40) as u32;
    let full = settings.retry_base_ms.saturating_mul(1u64 << doublings.min(40)).min(settings.retry_max_ms);
    rand::rng().random_range(full / 2..=full.max(1))
}

/// The delivery loop of one node.
pub struct Dispatcher {
    pub db: Database,
    pub sender: Sender,
    pub settings: WebhookSettings,
    pub clock: Clock,
    pub counters: Arc<DeliveryCounters>,
}

impl Dispatcher {
    /// Delivers until the task is dropped.
    pub async fn run(self) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        loop {
            match self.round().await {
                Ok(0) => tokio::time::sleep(poll).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery round failed");
                    tokio::time::sleep(poll).await;
                }
            }
        }
    }

    /// Claims the messages due now and attempts each; returns how many.
    pub async fn round(&self) -> Result<usize, sqlx::Error> {
        let now = self.clock.now().timestamp_millis();
        // Not due again before the attempt has surely ended.
        let until = now + self.settings.timeout_ms as i64 * 2 + 30_000;
        let limit = (self.settings.concurrency * 2) as i64;
        let mut pooled = Pooled::acquire(&self.db).await?;
        let claimed = store::claim_due(&mut pooled.conn(), now, until, limit).await?;
        let mut endpoints = std::collections::HashMap::new();
        for message in &claimed {
            if !endpoints.contains_key(&message.endpoint_id) {
                let found = store::endpoint(&mut pooled.conn(), message.endpoint_id).await?;
                endpoints.insert(message.endpoint_id, found.map(|(e, secret)| (e.url, secret)));
            }
        }
        drop(pooled);
        let count = claimed.len();
        futures_util::stream::iter(claimed)
            .for_each_concurrent(self.settings.concurrency, |message| {
                let target = endpoints.get(&message.endpoint_id).cloned().flatten();
                async move {
                    if let Some((url, secret)) = target {
                        if let Err(e) = self.attempt(&message, &url, &secret).await {
                            tracing::warn!(error = %e, message = %message.id, "webhook attempt not recorded; it will be tried again");
                        }
                    }
                }
            })
            .await;
        Ok(count)
    }

    async fn attempt(&self, message: &Claimed, url: &str, secret: &str) -> Result<(), sqlx::Error> {
        let attempt = self.sender.send(url, secret, &webhook_id(message.id), &message.payload).await;
        let now = self.clock.now().timestamp_millis();
        let deadline = message.retry_until.unwrap_or(message.created_at + self.settings.give_up_after_seconds as i64 * 1000);
        let error = attempt.error.as_deref().unwrap_or_default();
        let outcome = if attempt.delivered {
            self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            Recorded::Delivered { status: attempt.status.unwrap_or(200) }
        } else {
            self.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let next = now + backoff(&self.settings, message.attempts) as i64;
            if next > deadline {
                self.counters.dead.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(message = %message.id, attempts = message.attempts, error, "webhook message dead-lettered");
                Recorded::Dead { status: attempt.status, error }
            } else {
                tracing::debug!(message = %message.id, attempts = message.attempts, error, "webhook attempt failed");
                Recorded::Retry { next, status: attempt.status, error }
            }
        };
        let mut pooled = Pooled::acquire(&self.db).await?;
        store::record(&mut pooled.conn(), message.id, now, outcome).await
    }
}

/// The `webhook-id` of a message.
pub fn webhook_id(id: Uuid) -> String {
    format!("msg_{}", id.simple())
}
