//! Strict validation of wire events. Every problem is reported with the item index
//! and the field it concerns, so a client can fix a whole batch in one go.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::wire::{WireFields, WireItem};
use super::{
    truncate_to_micros, AuditEvent, Category, Changes, FinancialInfo, Level, SecurityInfo, Status,
    DEFAULT_TENANT,
};

/// Size limits applied to incoming events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted encoded event, in bytes.
    pub max_event_bytes: usize,
    /// Largest accepted request body, in bytes.
    pub max_request_bytes: usize,
    /// Most events accepted in one request.
    pub max_batch_events: usize,
    /// Longest accepted short string field (ids, names), in characters.
    pub max_field_chars: usize,
    /// Longest accepted `message`, in characters.
    pub max_message_chars: usize,
    /// Deepest accepted nesting inside `details` and `changes`.
    pub max_json_depth: usize,
    /// How far ahead of the receiving clock an event's `timestamp` may be, in
    /// seconds (clock skew); later ones are refused.
    pub max_future_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 64 * 1024,
            max_request_bytes: 10 * 1024 * 1024,
            max_batch_events: 1000,
            max_field_chars: 1024,
            max_message_chars: 16 * 1024,
            max_json_depth: 16,
            max_future_seconds: 3600,
        }
    }
}

/// One reason an item was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Position of the item in the request (0 for a single object).
    pub index: usize,
    /// The offending field, dotted for nested ones (`security.severity`).
    pub field: String,
    /// What is wrong, in words.
    pub reason: String,
}

const SEVERITIES: &[&str] = &["low", "medium", "high", "critical"];

/// Turns wire JSON into validated events.
#[derive(Debug, Clone)]
pub struct EventParser {
    limits: Limits,
    /// Tenant fixed by the caller's key; `None` for keys that may write any tenant.
    bound_tenant: Option<String>,
    received_at: DateTime<Utc>,
}

impl EventParser {
    /// A parser for one request received at `received_at`.
    pub fn new(limits: Limits, bound_tenant: Option<String>, received_at: DateTime<Utc>) -> Self {
        EventParser { limits, bound_tenant, received_at: truncate_to_micros(received_at) }
    }

    /// Validates one item given as a JSON value; see [`EventParser::parse_item`].
    pub fn parse(&self, index: usize, item: Value) -> Result<AuditEvent, Vec<FieldError>> {
        self.parse_item(index, WireItem::from_value(item))
    }

    /// Validates one item; on failure returns every problem found in it.
    pub fn parse_item(&self, index: usize, item: WireItem) -> Result<AuditEvent, Vec<FieldError>> {
        let mut item_check = ItemCheck { index, limits: &self.limits, errors: Vec::new() };
        let WireItem::Object(mut fields) = item else {
            item_check.fail("", "each event must be a JSON object");
            return Err(item_check.errors);
        };
        let obj = &mut fields;
        for key in obj.unknown() {
            item_check.fail(key, "unknown field");
        }
        for problem in &obj.scan().problems {
            item_check.fail(&problem.field, problem.reason);
        }
        let wide_floats = obj.scan().wide_floats;

        let id = match item_check.string(obj, "id", 64) {
            Some(raw) => match Uuid::parse_str(&raw) {
                Ok(id) => Some(id),
                Err(_) => {
                    item_check.fail("id", "must be a UUID");
                    None
                }
            },
            None => Some(Uuid::now_v7()),
        };
        let timestamp = match item_check.string(obj, "timestamp", 64) {
            Some(raw) => match DateTime::parse_from_rfc3339(&raw) {
                Ok(ts) if ts.with_timezone(&Utc) > self.latest_timestamp() => {
                    item_check.fail(
                        "timestamp",
                        &format!("is more than {} seconds ahead of the server's clock", self.limits.max_future_seconds),
                    );
                    None
                }
                Ok(ts) => Some(truncate_to_micros(ts.with_timezone(&Utc))),
                Err(_) => {
                    item_check.fail("timestamp", "must be an RFC 3339 date-time with offset");
                    None
                }
            },
            None => Some(self.received_at),
        };
        let category = match obj.get("category") {
            None | Some(Value::Null) => {
                obj.take("category");
                item_check.fail("category", "is required");
                None
            }
            Some(_) => item_check.string(obj, "category", 32).and_then(|raw| {
                let parsed = Category::parse(&raw).filter(|c| c.is_sent_by_applications());
                if parsed.is_none() {
                    item_check.fail(
                        "category",
                        "must be one of auth, security, api, error, audit, financial (access is tierlog's own)",
                    );
                }
                parsed
            }),
        };
        let level = match item_check.string(obj, "level", 16) {
            Some(raw) => {
                let parsed = Level::parse(&raw);
                if parsed.is_none() {
                    item_check.fail("level", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL");
                }
                parsed
            }
            None => Some(Level::Info),
        };
        let status = item_check.string(obj, "status", 16).and_then(|raw| {
            let parsed = match raw.as_str() {
                "success" => Some(Status::Success),
                "failure" => Some(Status::Failure),
                "error" => Some(Status::Error),
                _ => None,
            };
            if parsed.is_none() {
                item_check.fail("status", "must be one of success, failure, error");
            }
            parsed
        });
        let tenant_id = self.tenant(&mut item_check, obj);
        let action = item_check.string(obj, "action", 128);
        if let Some(action) = &action {
            if !is_dotted_name(action) {
                item_check.fail(
                    "action",
                    "must be a dotted name of letters, digits, '_' and '-' (e.g. auth.login)",
                );
            }
            // Alerts start webhooks: only tierlog's detection writes them.
            if action == crate::detect::alert::ALERT_ACTION {
                item_check.fail("action", "security.alert is written by tierlog's detection only");
            }
        }
        let ip_address = item_check.string(obj, "ip_address", 64).and_then(|raw| {
            let parsed = raw.parse::<IpAddr>().ok();
            if parsed.is_none() {
                item_check.fail("ip_address", "must be an IPv4 or IPv6 address");
            }
            parsed
        });
        let email = item_check.string(obj, "email", 320);
        if let Some(email) = &email {
            if !email.contains('@') {
                item_check.fail("email", "must be an e-mail address");
            }
        }
        let max_field = self.limits.max_field_chars;
        let event = AuditEvent {
            id: id.unwrap_or_default(),
            timestamp: timestamp.unwrap_or(self.received_at),
            received_at: self.received_at,
            tenant_id: tenant_id.unwrap_or_default(),
            category: category.unwrap_or(Category::Audit),
            level: level.unwrap_or(Level::Info),
            logger: item_check.string(obj, "logger", max_field),
            message: item_check.string(obj, "message", self.limits.max_message_chars),
            event_type: item_check.string(obj, "event_type", max_field),
            action,
            status,
            application: item_check.string(obj, "application", max_field),
            user_id: item_check.string(obj, "user_id", max_field),
            username: item_check.string(obj, "username", max_field),
            email,
            resource: item_check.string(obj, "resource", max_field),
            resource_id: item_check.string(obj, "resource_id", max_field),
            ip_address,
            user_agent: item_check.string(obj, "user_agent", max_field),
            request_id: item_check.string(obj, "request_id", max_field),
            session_id: item_check.string(obj, "session_id", max_field),
            details: item_check.object(obj, "details"),
            changes: item_check.changes(obj),
            security: item_check.security(obj),
            financial: item_check.financial(obj),
        };
        if item_check.errors.is_empty() {
            let mut event = event;
            if wide_floats {
                event.settle_wide_floats();
            }
            Ok(event)
        } else {
            Err(item_check.errors)
        }
    }

    /// The latest event time accepted.
    fn latest_timestamp(&self) -> DateTime<Utc> {
        let ahead = i64::try_from(self.limits.max_future_seconds).unwrap_or(i64::MAX);
        self.received_at + chrono::Duration::try_seconds(ahead).unwrap_or(chrono::Duration::MAX)
    }

    fn tenant(&self, check: &mut ItemCheck<'_>, obj: &mut WireFields) -> Option<String> {
        let claimed = check.string(obj, "tenant_id", 64);
        if let Some(claimed) = &claimed {
            if !is_tenant_id(claimed) {
                check.fail("tenant_id", TENANT_ID_RULE);
                return None;
            }
        }
        match (&self.bound_tenant, claimed) {
            (Some(bound), Some(claimed)) if *bound != claimed => {
                check.fail("tenant_id", "does not match the tenant of the API key");
                None
            }
            (Some(bound), _) => Some(bound.clone()),
            (None, Some(claimed)) => Some(claimed),
            (None, None) => Some(DEFAULT_TENANT.to_owned()),
        }
    }
}

/// True when `name` may be used as a tenant id. It becomes part of Redis keys and a
/// directory name (archives, chain exports), so it must be a safe path component:
/// letters, digits, '.', '_' and '-', and not `.` or `..`.
pub fn is_tenant_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// What a tenant id must be, in words, for error messages.
pub const TENANT_ID_RULE: &str = "must be 1-64 characters of letters, digits, '.', '_' or '-', and not '.' or '..'";

fn is_dotted_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        })
}

/// Accepts `-?digits(.digits)?` with at most 28 integer and 10 fractional digits; a
/// leading zero only before the point.
fn is_decimal_amount(raw: &str) -> bool {
    let unsigned = raw.strip_prefix('-').unwrap_or(raw);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let int_ok = !int.is_empty()
        && int.len() <= 28
        && int.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'));
    let frac_ok = frac.is_none_or(|f| {
        !f.is_empty() && f.len() <= 10 && f.bytes().all(|b| b.is_ascii_digit())
    });
    int_ok && frac_ok
}

/// Collects the problems of one item.
struct ItemCheck<'a> {
    index: usize,
    limits: &'a Limits,
    errors: Vec<FieldError>,
}

impl ItemCheck<'_> {
    fn fail(&mut self, field: &str, reason: &str) {
        self.errors.push(FieldError {
            index: self.index,
            field: field.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// An optional string field, taken out of `obj`: absent or null gives `None`.
    fn string(&mut self, obj: &mut WireFields, field: &str, max_chars: usize) -> Option<String> {
        self.string_at(obj.take(field), field, max_chars)
    }

    fn string_at(&mut self, value: Option<Value>, field: &str, max_chars: usize) -> Option<String> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                if s.len() > max_chars && s.chars().count() > max_chars {
                    self.fail(field, &format!("is longer than {max_chars} characters"));
                    None
                } else if s.contains('\0') {
                    self.fail(field, "must not contain NUL characters");
                    None
                } else {
                    Some(s)
                }
            }
            Some(_) => {
                self.fail(field, "must be a string");
                None
            }
        }
    }

    fn object(&mut self, obj: &mut WireFields, field: &str) -> Option<Map<String, Value>> {
        self.object_at(obj.take(field), field)
    }

    fn object_at(&mut self, value: Option<Value>, field: &str) -> Option<Map<String, Value>> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => {
                let depth = map.values().map(json_depth).max().unwrap_or(0) + 1;
                if depth > self.limits.max_json_depth {
                    self.fail(field, &format!("nests deeper than {} levels", self.limits.max_json_depth));
                    None
                } else if map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)) {
                    self.fail(field, "must not contain NUL characters");
                    None
                } else {
                    Some(map)
                }
            }
            Some(_) => {
                self.fail(field, "must be an object");
                None
            }
        }
    }

    /// A nested object, taken out of `obj`, whose keys must all be in `allowed`.
    fn sub_object(
        &mut self,
        obj: &mut WireFields,
        field: &str,
        allowed: &[&str],
    ) -> Option<Map<String, Value>> {
        match obj.take(field) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => {
                for key in map.keys() {
                    if !allowed.contains(&key.as_str()) {
                        self.fail(&format!("{field}.{key}"), "unknown field");
                    }
                }
                Some(map)
            }
            Some(_) => {
                self.fail(field, "must be an object");
                None
            }
        }
    }

    fn changes(&mut self, obj: &mut WireFields) -> Option<Changes> {
        let mut map = self.sub_object(obj, "changes", &["before", "after"])?;
        Some(Changes {
            before: self.object_at(map.remove("before"), "changes.before"),
            after: self.object_at(map.remove("after"), "changes.after"),
        })
    }

    fn security(&mut self, obj: &mut WireFields) -> Option<SecurityInfo> {
        let mut map = self.sub_object(obj, "security", &["event_type", "severity"])?;
        if map.get("event_type").is_none_or(Value::is_null) {
            self.fail("security.event_type", "is required");
        }
        let event_type = self.string_at(map.remove("event_type"), "security.event_type", 64);
        if event_type.as_deref() == Some("") {
            self.fail("security.event_type", "must not be empty");
        }
        let severity = self.string_at(map.remove("severity"), "security.severity", 16);
        if let Some(severity) = &severity {
            if !SEVERITIES.contains(&severity.as_str()) {
                self.fail("security.severity", "must be one of low, medium, high, critical");
            }
        }
        Some(SecurityInfo { event_type: event_type?, severity })
    }

    fn financial(&mut self, obj: &mut WireFields) -> Option<FinancialInfo> {
        let allowed = ["transaction_id", "amount", "currency", "account_id", "counterparty"];
        let mut map = self.sub_object(obj, "financial", &allowed)?;
        let max = self.limits.max_field_chars;
        let amount = self.string_at(map.remove("amount"), "financial.amount", 40);
        if let Some(amount) = &amount {
            if !is_decimal_amount(amount) {
                self.fail(
                    "financial.amount",
                    "must be a decimal string such as \"1250.00\" (no exponent, no leading zeros)",
                );
            }
        }
        let currency = self.string_at(map.remove("currency"), "financial.currency", 3);
        if let Some(currency) = &currency {
            if !super::currency::is_iso_4217(currency) {
                self.fail("financial.currency", "must be an ISO 4217 currency code such as EUR");
            }
        }
        Some(FinancialInfo {
            transaction_id: self.string_at(map.remove("transaction_id"), "financial.transaction_id", max),
            amount,
            currency,
            account_id: self.string_at(map.remove("account_id"), "financial.account_id", max),
            counterparty: self.string_at(map.remove("counterparty"), "financial.counterparty", max),
        })
    }
}

fn json_depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        Value::Array(items) => items.iter().any(contains_nul),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parser(bound: Option<&str>) -> EventParser {
        EventParser::new(Limits::default(), bound.map(str::to_owned), Utc::now())
    }

    fn fields(result: Result<AuditEvent, Vec<FieldError>>) -> Vec<String> {
        result.err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_minimal_event_gets_an_id_a_timestamp_and_the_default_tenant() {
        let event = parser(None).parse(0, json!({"category": "auth"})).expect("valid");
        assert_eq!(event.id.get_version_num(), 7);
        assert_eq!(event.tenant_id, DEFAULT_TENANT);
        assert_eq!(event.level, Level::Info);
        assert_eq!(event.timestamp, event.received_at);
    }

    #[test]
    fn every_bad_field_of_an_item_is_reported() {
        let item = json!({
            "id": "not-a-uuid", "category": "nope", "ip_address": "999.1.1.1",
            "timestamp": "yesterday", "level": "LOUD", "status": "ok", "user_id": 5,
            "extra": true, "details": [], "security": {"severity": "extreme"},
            "financial": {"amount": "1e3", "currency": "eur"}, "action": "bad action"
        });
        let mut got = fields(parser(None).parse(3, item));
        got.sort();
        let mut want = vec![
            "id", "category", "ip_address", "timestamp", "level", "status", "user_id", "extra",
            "details", "security.event_type", "security.severity", "financial.amount",
            "financial.currency", "action",
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn tenant_ids_are_safe_path_components() {
        for bad in [".", "..", "", "a/b", "a\\b", "x y", &"t".repeat(65)] {
            assert!(!is_tenant_id(bad), "{bad:?}");
            let item = json!({"category": "auth", "tenant_id": bad});
            assert_eq!(fields(parser(None).parse(0, item)), vec!["tenant_id"], "{bad:?}");
        }
        for good in ["acme", "...", "..a", "a..", ".hidden", "t-1_2.3"] {
            assert!(is_tenant_id(good), "{good:?}");
        }
    }

    #[test]
    fn timestamps_may_run_ahead_of_the_clock_only_by_the_configured_skew() {
        let now = Utc::now();
        let p = EventParser::new(Limits { max_future_seconds: 60, ..Limits::default() }, None, now);
        let at = |seconds: i64| (now + chrono::Duration::seconds(seconds)).to_rfc3339();
        assert!(p.parse(0, json!({"category": "auth", "timestamp": at(59)})).is_ok());
        assert_eq!(fields(p.parse(0, json!({"category": "auth", "timestamp": at(61)}))), vec!["timestamp"]);
        assert_eq!(fields(p.parse(0, json!({"category": "auth", "timestamp": "9999-12-31T23:59:59Z"}))), vec!["timestamp"]);
        assert!(p.parse(0, json!({"category": "auth", "timestamp": "1999-01-01T00:00:00Z"})).is_ok());
    }

    #[test]
    fn currencies_must_be_iso_4217_codes() {
        for good in ["EUR", "USD", "JPY", "CHF", "XAU"] {
            assert!(parser(None).parse(0, json!({"category": "financial", "financial": {"currency": good}})).is_ok(), "{good}");
        }
        for bad in ["ZZZ", "eur", "EURO", "ABC", "E1R"] {
            let item = json!({"category": "financial", "financial": {"currency": bad}});
            assert_eq!(fields(parser(None).parse(0, item)), vec!["financial.currency"], "{bad}");
        }
    }

    #[test]
    fn a_missing_category_is_refused() {
        assert_eq!(fields(parser(None).parse(0, json!({"message": "x"}))), vec!["category"]);
    }

    #[test]
    fn a_tenant_bound_key_cannot_write_another_tenant() {
        let p = parser(Some("acme"));
        assert_eq!(fields(p.parse(0, json!({"category": "auth", "tenant_id": "other"}))), vec!["tenant_id"]);
        let event = p.parse(0, json!({"category": "auth"})).expect("valid");
        assert_eq!(event.tenant_id, "acme");
    }

    #[test]
    fn over_long_strings_and_deep_nesting_are_refused() {
        let long = "x".repeat(2000);
        let mut deep = json!(1);
        for _ in 0..20 {
            deep = json!({ "d": deep });
        }
        let item = json!({"category": "api", "username": long, "details": {"deep": deep}});
        assert_eq!(fields(parser(None).parse(0, item)), vec!["username", "details"]);
    }

    #[test]
    fn nul_characters_are_refused_anywhere() {
        let item = json!({"category": "api", "message": "a\u{0}b", "details": {"k": ["\u{0}"]}});
        assert_eq!(fields(parser(None).parse(0, item)), vec!["message", "details"]);
    }

    #[test]
    fn timestamps_are_truncated_to_microseconds_and_normalised_to_utc() {
        let item = json!({"category": "auth", "timestamp": "2026-11-23T14:00:00.123456789+02:00"});
        let event = parser(None).parse(0, item).expect("valid");
        assert_eq!(super::super::format_timestamp(&event.timestamp), "2026-11-23T12:00:00.123456Z");
    }

    #[test]
    fn amounts_must_be_plain_decimal_strings() {
        for good in ["0", "0.5", "-12.50", "1250.00"] {
            assert!(is_decimal_amount(good), "{good}");
        }
        for bad in ["", "01", "1.", ".5", "1e3", "+1", "1,000", "--1"] {
            assert!(!is_decimal_amount(bad), "{bad}");
        }
    }
}
