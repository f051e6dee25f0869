//! The audit event: the validated, normalised form every tier receives.
//!
//! This module is pure: no I/O. [`parse`] turns wire JSON into [`AuditEvent`]s and
//! explains every rejected field; [`body`] splits a request body into items.

pub mod access;
pub mod body;
pub mod currency;
pub mod exact;
pub mod json;
pub mod mask;
pub mod otlp;
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
    /// tierlog's own records of who read, exported or changed what (access records):
    /// written by tierlog only, left out of views and stats unless asked for.
    Access,
}

impl Category {
    /// Every category, in a fixed order.
    pub const ALL: [Category; 7] = [
        Category::Auth,
        Category::Security,
        Category::Api,
        Category::Error,
        Category::Audit,
        Category::Financial,
        Category::Access,
    ];

    /// Whether applications may send events of this category (`access` is tierlog's
    /// own).
    pub fn is_sent_by_applications(self) -> bool {
        self != Category::Access
    }

    /// The wire and key name of the category.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Auth => "auth",
            Category::Security => "security",
            Category::Api => "api",
            Category::Error => "error",
            Category::Audit => "audit",
            Category::Financial => "financial",
            Category::Access => "access",
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
    /// Holds every float of 1e16 or more that is a 64-bit integer as that integer,
    /// the form Postgres gives back (see [`exact::settle_wide_floats`]).
    pub fn settle_wide_floats(&mut self) {
        let changes = self.changes.iter_mut().flat_map(|c| [c.before.as_mut(), c.after.as_mut()]).flatten();
        for map in self.details.iter_mut().chain(changes) {
            map.values_mut().for_each(exact::settle_wide_floats);
        }
    }

    /// The event as one JSON line (no trailing newline): what the file and Redis tiers
    /// store. Control characters are escaped by the JSON encoder, so a line never
    /// breaks in two.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut line = Vec::with_capacity(512);
        self.write_json_line(&mut line);
        line
    }

    /// Appends the event's JSON line (no trailing newline) to `out`: the bytes
    /// `serde_json` writes for the event's `Serialize` (the tests hold the two
    /// together), written field by field without going through serde.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        let mut o = json::Object::open(out);
        o.str("id", Some(self.id.hyphenated().encode_lower(&mut Uuid::encode_buffer())));
        write_timestamp_member(&mut o, "timestamp", &self.timestamp);
        write_timestamp_member(&mut o, "received_at", &self.received_at);
        o.str("tenant_id", Some(&self.tenant_id));
        o.str("category", Some(self.category.as_str()));
        o.str("level", Some(self.level.as_str()));
        o.str("logger", self.logger.as_deref());
        o.str("message", self.message.as_deref());
        o.str("event_type", self.event_type.as_deref());
        o.str("action", self.action.as_deref());
        o.str("status", self.status.map(Status::as_str));
        o.str("application", self.application.as_deref());
        o.str("user_id", self.user_id.as_deref());
        o.str("username", self.username.as_deref());
        o.str("email", self.email.as_deref());
        o.str("resource", self.resource.as_deref());
        o.str("resource_id", self.resource_id.as_deref());
        if let Some(ip) = self.ip_address {
            o.plain_display("ip_address", ip);
        }
        o.str("user_agent", self.user_agent.as_deref());
        o.str("request_id", self.request_id.as_deref());
        o.str("session_id", self.session_id.as_deref());
        if let Some(details) = &self.details {
            o.field("details");
            json::write_map(details, o.out);
        }
        if let Some(changes) = &self.changes {
            o.field("changes");
            let mut c = json::Object::open(o.out);
            for (key, side) in [("before", &changes.before), ("after", &changes.after)] {
                if let Some(side) = side {
                    c.field(key);
                    json::write_map(side, c.out);
                }
            }
            c.close();
        }
        if let Some(security) = &self.security {
            o.field("security");
            let mut s = json::Object::open(o.out);
            s.str("event_type", Some(&security.event_type));
            s.str("severity", security.severity.as_deref());
            s.close();
        }
        if let Some(financial) = &self.financial {
            o.field("financial");
            let mut f = json::Object::open(o.out);
            f.str("transaction_id", financial.transaction_id.as_deref());
            f.str("amount", financial.amount.as_deref());
            f.str("currency", financial.currency.as_deref());
            f.str("account_id", financial.account_id.as_deref());
            f.str("counterparty", financial.counterparty.as_deref());
            f.close();
        }
        o.close();
    }
}

/// Writes an instant as a string member of `o`, in tierlog's format.
pub(crate) fn write_timestamp_member(o: &mut json::Object<'_>, key: &'static str, ts: &DateTime<Utc>) {
    match TimestampText::of(ts) {
        Some(text) => o.str(key, Some(text.as_str())),
        None => o.str(key, Some(&format_timestamp(ts))),
    }
}

/// Formats an instant the one way tierlog writes instants: RFC 3339, UTC,
/// microseconds (`2026-11-23T12:00:00.123456Z`).
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    match TimestampText::of(ts) {
        Some(text) => text.as_str().to_owned(),
        None => ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
}

fn serialize_timestamp<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    match TimestampText::of(ts) {
        Some(text) => s.serialize_str(text.as_str()),
        None => s.serialize_str(&format_timestamp(ts)),
    }
}

/// An instant in tierlog's format, written into a fixed buffer: every event is
/// written with two of them, so this skips the general formatter. `None` for what
/// the fixed layout cannot hold (years outside 0–9999, a leap second), which
/// [`format_timestamp`] leaves to chrono.
struct TimestampText([u8; 27]);

impl TimestampText {
    fn of(ts: &DateTime<Utc>) -> Option<TimestampText> {
        use chrono::{Datelike, Timelike};
        // UTC's fields, read without applying an offset for each of them.
        let ts = ts.naive_utc();
        let year = u32::try_from(ts.year()).ok().filter(|y| *y <= 9999)?;
        let nanos = ts.nanosecond();
        if nanos >= 1_000_000_000 {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, ts.month());
        put(8, 2, ts.day());
        put(11, 2, ts.hour());
        put(14, 2, ts.minute());
        put(17, 2, ts.second());
        put(20, 6, nanos / 1000);
        Some(TimestampText(out))
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Truncates an instant to whole microseconds (Postgres' precision).
pub fn truncate_to_micros(ts: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(ts.timestamp_micros()).unwrap_or(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn chrono_text(ts: &DateTime<Utc>) -> String {
        ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        // Spread over years 0 to 9999, with every field's edges among them.
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let first = NaiveDate::from_ymd_opt(0, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).expect("date").and_utc();
        let last = NaiveDate::from_ymd_opt(9999, 12, 31).and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999)).expect("date").and_utc();
        let span = (last.timestamp_micros() - first.timestamp_micros()) as u64;
        let mut instants = vec![first, last, DateTime::UNIX_EPOCH, Utc.with_ymd_and_hms(2026, 2, 28, 9, 5, 7).single().expect("time")];
        // Below a microsecond, both cut rather than round.
        instants.push(DateTime::from_timestamp(1_700_000_000, 123_456_999).expect("time"));
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let micros = first.timestamp_micros() + (state % (span + 1)) as i64;
            instants.push(DateTime::from_timestamp_micros(micros).expect("in range"));
        }
        for ts in &instants {
            assert_eq!(format_timestamp(ts), chrono_text(ts));
            let json = serde_json::to_string(&AuditEvent { timestamp: *ts, ..sample() }).expect("json");
            assert!(json.contains(&format!("\"timestamp\":\"{}\"", chrono_text(ts))), "{json}");
        }
    }

    #[test]
    fn instants_the_fixed_layout_cannot_hold_are_left_to_chrono() {
        let far = NaiveDate::from_ymd_opt(10_000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).expect("date").and_utc();
        let before = NaiveDate::from_ymd_opt(-1, 12, 31).and_then(|d| d.and_hms_opt(23, 59, 59)).expect("date").and_utc();
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).and_then(|d| d.and_hms_micro_opt(23, 59, 59, 1_500_000)).expect("leap second").and_utc();
        for ts in [far, before, leap] {
            assert!(TimestampText::of(&ts).is_none());
            assert_eq!(format_timestamp(&ts), chrono_text(&ts));
        }
    }

    #[test]
    fn lines_are_the_serde_encoding_with_every_field_and_with_each_one_missing() {
        let full = serde_json::json!({
            "id": "0192f0c4-7a4e-7c3a-9c55-3f1f2a7d9b10", "timestamp": "2026-11-23T12:00:00.5Z",
            "tenant_id": "acme", "category": "financial", "level": "WARNING", "logger": "app.pay",
            "message": "moved \"money\"\n", "event_type": "transfer", "action": "payment.transfer",
            "status": "success", "application": "billing", "user_id": "u-1", "username": "alice",
            "email": "a@example.com", "resource": "account", "resource_id": "acc-1",
            "ip_address": "2001:db8::1", "user_agent": "UA/1.0", "request_id": "r-1", "session_id": "s-1",
            "details": {"z": [1, 2.5, null], "a": {"nested": "é\t"}},
            "changes": {"before": {"limit": 10}, "after": {"limit": 20}},
            "security": {"event_type": "suspicious_transfer", "severity": "high"},
            "financial": {"transaction_id": "tx-1", "amount": "12.50", "currency": "EUR",
                          "account_id": "acc-1", "counterparty": "ACME GmbH"},
        });
        let parser = EventParser::new(Limits::default(), None, Utc::now());
        let mut items = vec![full.clone()];
        // Every field but the one an event must have.
        for field in full.as_object().expect("object").keys().filter(|k| *k != "category") {
            let mut item = full.clone();
            item.as_object_mut().expect("object").remove(field);
            items.push(item);
        }
        for nested in ["changes.before", "changes.after", "security.severity", "financial.transaction_id",
                       "financial.amount", "financial.currency", "financial.account_id", "financial.counterparty"] {
            let (outer, inner) = nested.split_once('.').expect("dotted");
            let mut item = full.clone();
            item[outer].as_object_mut().expect("object").remove(inner);
            items.push(item);
        }
        for item in items {
            let event = parser.parse(0, item.clone()).expect("valid");
            assert_eq!(String::from_utf8(event.to_json_line()).expect("utf-8"), serde_json::to_string(&event).expect("json"), "{item}");
        }
    }

    fn sample() -> AuditEvent {
        let parser = EventParser::new(Limits::default(), None, Utc::now());
        parser.parse(0, serde_json::json!({"category": "auth"})).expect("valid")
    }
}
