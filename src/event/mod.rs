//! The audit event: the validated, normalised form every tier receives.
//!
//! This module is pure: no I/O. [`parse`] turns wire JSON into [`AuditEvent`]s and
//! explains every rejected field; [`body`] splits a request body into items.

pub mod access;
pub mod body;
pub mod mask;
pub mod parse;
pub mod wire;

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use parse::{EventParser, FieldError, Limits};

/// The tenant an event belongs to when it names none.
pub const DEFAULT_TENANT: &str = "default";

/// Event category: decides the Redis list, the Postgres table and the retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Auth,
    Security,
    Api,
    Error,
    Audit,
    Financial,
}

impl Category {
    /// Every category, in a fixed order.
    pub const ALL: [Category; 6] = [
        Category::Auth,
        Category::Security,
        Category::Api,
        Category::Error,
        Category::Audit,
        Category::Financial,
    ];

    /// The wire and key name of the category.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Auth => "auth",
            Category::Security => "security",
            Category::Api => "api",
            Category::Error => "error",
            Category::Audit => "audit",
            Category::Financial => "financial",
        }
    }

    /// Parses a wire name (exact, lowercase).
    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity level, ordered so that "at least ERROR" is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    /// The upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// Parses a level name, case-insensitively; `WARN` is accepted for `WARNING`.
    pub fn parse(name: &str) -> Option<Level> {
        match name.to_ascii_uppercase().as_str() {
            "DEBUG" => Some(Level::Debug),
            "INFO" => Some(Level::Info),
            "WARNING" | "WARN" => Some(Level::Warning),
            "ERROR" => Some(Level::Error),
            "CRITICAL" => Some(Level::Critical),
            _ => None,
        }
    }
}

/// Outcome of the audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failure,
    Error,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Error => "error",
        }
    }
}

/// Security classification carried by security events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityInfo {
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// Money movement carried by financial events; `amount` stays a decimal string so
/// no tier ever rounds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinancialInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterparty: Option<String>,
}

/// Before/after values of an entity update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Map<String, Value>>,
}

/// A validated audit event. Timestamps are truncated to microseconds so that every
/// tier (and the hash chain) sees the same instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: Uuid,
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<Utc>,
    #[serde(serialize_with = "serialize_timestamp")]
    pub received_at: DateTime<Utc>,
    pub tenant_id: String,
    pub category: Category,
    pub level: Level,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logger: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub financial: Option<FinancialInfo>,
}

impl AuditEvent {
    /// The event as one JSON line (no trailing newline): what the file and Redis tiers
    /// store. Control characters are escaped by the JSON encoder, so a line never
    /// breaks in two.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(512);
        self.write_json_line(&mut line);
        line
    }

    /// Appends the event's JSON line (no trailing newline) to `out`.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        // Serialising a struct of plain data into memory cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
    }
}

/// Formats an instant the one way tierlog writes instants: RFC 3339, UTC,
/// microseconds.
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn serialize_timestamp<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(ts))
}

/// Truncates an instant to whole microseconds (Postgres' precision).
pub fn truncate_to_micros(ts: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(ts.timestamp_micros()).unwrap_or(ts)
}
