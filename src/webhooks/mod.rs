//! Webhooks: alerts delivered to the endpoints a tenant registers, never lost.
//!
//! The store writes an alert's messages into the outbox (`webhook_messages`) in the
//! transaction that writes the alert ([`store::enqueue_alerts`]), so an alert is
//! stored with its messages or not at all. Every node's [`deliver`] loop claims due
//! messages (`FOR UPDATE SKIP LOCKED`, so two nodes never send one at once), signs
//! them per the Standard Webhooks specification ([`sign`]) and posts them through a
//! client that refuses internal addresses ([`guard`]). A failed attempt is tried
//! again with exponential backoff and jitter until `webhooks.give_up_after_seconds`
//! after the alert, then dead-lettered; `POST .../redeliver` queues it again.
//! Receivers may see a message twice (a node dying mid-attempt), never miss one:
//! every attempt carries the same `webhook-id`.

pub mod deliver;
pub mod guard;
pub mod sign;
pub mod store;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::AuditEvent;
use crate::tiers::portable::Pooled;

/// A registered endpoint (its secret is shown once, when created).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub tenant_id: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Rules whose alerts it takes (empty: all).
    pub rules: Vec<String>,
    /// Categories of the triggering events whose alerts it takes (empty: all).
    pub categories: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    Pending,
    Delivered,
    Dead,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Pending => "pending",
            MessageState::Delivered => "delivered",
            MessageState::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> MessageState {
        match text {
            "delivered" => MessageState::Delivered,
            "dead" => MessageState::Dead,
            _ => MessageState::Pending,
        }
    }
}

/// One alert for one endpoint, and how its delivery went.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Message {
    /// The `webhook-id` of every attempt.
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub tenant_id: String,
    /// The alert event.
    pub event_id: Uuid,
    pub event_type: String,
    pub state: MessageState,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Milliseconds since 1970 as an instant.
pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The body of an alert's message: `{"type", "timestamp", "data"}` (Standard
/// Webhooks), `data` being the alert event as stored.
pub fn payload(alert: &AuditEvent) -> String {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(br#"{"type":""#);
    out.extend_from_slice(alert.action.as_deref().unwrap_or("security.alert").as_bytes());
    out.extend_from_slice(br#"","timestamp":""#);
    out.extend_from_slice(alert.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).as_bytes());
    out.extend_from_slice(br#"","data":"#);
    alert.write_json_line(&mut out);
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}
