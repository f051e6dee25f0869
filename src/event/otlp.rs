//! OpenTelemetry log records (OTLP) as wire events.
//!
//! Each log record of an export request becomes one wire event (a JSON object),
//! which then goes through the same validation as a body of `POST /audit/events`.
//! The mapping (docs/otlp.md):
//!
//! - attributes named like an event field (`category`, `action`, `user_id`, ...) set
//!   that field; OpenTelemetry's semantic-convention names are accepted where one
//!   exists (`enduser.id`, `client.address`, `user_agent.original`, ...);
//!   `details.<key>`, `security.<key>`, `financial.<key>`, `changes.before.<key>`
//!   and `changes.after.<key>` fill those objects; any other attribute lands in
//!   `details` under its own name, so nothing a record carries is lost;
//! - the body is the message (a map body's entries count as attributes);
//! - the severity is the level, the record's time the timestamp;
//! - trace and span ids go to `details.trace_id` / `details.span_id`;
//! - the resource gives event fields that hold for all its records (and
//!   `service.name` the application), the scope's name the logger;
//! - a record without an `id` attribute gets one made from its own content, so an
//!   exporter that sends a request again makes the same ids and nothing twice.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};

/// Event fields an attribute may set by name.
const FIELDS: [&str; 21] = [
    "id", "timestamp", "category", "level", "logger", "message", "event_type", "action",
    "status", "tenant_id", "application", "user_id", "username", "email", "resource",
    "resource_id", "ip_address", "user_agent", "request_id", "session_id", "changes",
];
/// Event fields that are objects, filled whole or key by key (`details.<key>`).
const OBJECTS: [&str; 3] = ["details", "security", "financial"];

/// OpenTelemetry semantic-convention names, and the event field each one sets
/// (when the record does not name the field itself).
pub const ALIASES: [(&str, &str); 11] = [
    ("enduser.id", "user_id"),
    ("user.id", "user_id"),
    ("user.name", "username"),
    ("user.email", "email"),
    ("client.address", "ip_address"),
    ("user_agent.original", "user_agent"),
    ("session.id", "session_id"),
    ("tenant.id", "tenant_id"),
    ("service.name", "application"),
    ("event.name", "action"),
    ("http.request.id", "request_id"),
];

/// Reads an export request in OTLP's JSON encoding. Unknown fields inside are
/// ignored (newer senders may add some), but the top level must be the request's
/// own field: a body of another shape (an audit event, a trace export) is an error,
/// not an empty request.
pub fn from_json(bytes: &[u8]) -> serde_json::Result<ExportLogsServiceRequest> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        #[serde(rename = "resourceLogs", alias = "resource_logs", default)]
        resource_logs: Vec<opentelemetry_proto::tonic::logs::v1::ResourceLogs>,
    }
    let request: Request = serde_json::from_slice(bytes)?;
    Ok(ExportLogsServiceRequest { resource_logs: request.resource_logs })
}

/// How many log records `request` holds.
pub fn count(request: &ExportLogsServiceRequest) -> usize {
    request.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum()
}

/// Each record of `request` as a wire event, in order; a record larger than
/// `max_record_bytes` (encoded) as the reason it is refused.
pub fn events(request: &ExportLogsServiceRequest, max_record_bytes: usize) -> Vec<Result<Value, String>> {
    let mut out = Vec::with_capacity(count(request));
    for resource_logs in &request.resource_logs {
        let base = resource_fields(resource_logs.resource.as_ref());
        let resource_bytes = resource_logs.resource.as_ref().map(Message::encode_to_vec).unwrap_or_default();
        for scope_logs in &resource_logs.scope_logs {
            let scope_bytes = scope_logs.scope.as_ref().map(Message::encode_to_vec).unwrap_or_default();
            for record in &scope_logs.log_records {
                let size = record.encoded_len();
                if size > max_record_bytes {
                    out.push(Err(format!("the record is {size} bytes, over the {max_record_bytes} an event may have")));
                    continue;
                }
                // Hashed only for a record that names no id of its own.
                let digest = || {
                    let mut seed = Sha256::new();
                    for part in [&resource_bytes, &scope_bytes] {
                        seed.update((part.len() as u64).to_be_bytes());
                        seed.update(part);
                    }
                    seed.update(record.encode_to_vec());
                    seed.finalize()
                };
                out.push(Ok(event(&base, scope_logs.scope.as_ref(), record, digest)));
            }
        }
    }
    out
}

/// What a resource says of all its records.
fn resource_fields(resource: Option<&Resource>) -> Map<String, Value> {
    let mut event = Map::new();
    let Some(resource) = resource else { return event };
    for attribute in &resource.attributes {
        let name = attribute.key.as_str();
        if name == "service.name" {
            if let Some(any_value::Value::StringValue(service)) = attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
                // The SDKs' stand-in when none was configured says nothing.
                if !service.starts_with("unknown_service") {
                    event.insert("application".into(), Value::String(service.clone()));
                }
            }
        } else if let Some(field) = field_for(name) {
            event.insert(field.into(), scalar_text(json(attribute.value.as_ref())));
        }
    }
    event
}

/// The event field an attribute name sets by itself (a field's own name or a
/// semantic-convention name), if any.
fn field_for(name: &str) -> Option<&'static str> {
    FIELDS.iter().chain(&OBJECTS).find(|f| **f == name).copied().or_else(|| ALIASES.iter().find(|(alias, _)| *alias == name).map(|(_, f)| *f))
}

fn event(
    base: &Map<String, Value>,
    scope: Option<&InstrumentationScope>,
    record: &LogRecord,
    digest: impl FnOnce() -> sha2::digest::Output<Sha256>,
) -> Value {
    let mut event = base.clone();
    if let Some(scope) = scope.filter(|s| !s.name.is_empty()) {
        event.entry("logger").or_insert_with(|| Value::String(scope.name.clone()));
    }
    // A map body counts as attributes (the record's own attributes win); any other
    // body is the message.
    let mut attributes: Vec<&KeyValue> = Vec::new();
    match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::KvlistValue(list)) => attributes.extend(&list.values),
        Some(any_value::Value::StringValue(text)) => {
            event.insert("message".into(), Value::String(text.clone()));
        }
        Some(_) => {
            event.insert("message".into(), Value::String(json(record.body.as_ref()).to_string()));
        }
        None => {}
    }
    attributes.extend(&record.attributes);
    // Semantic-convention names first, so that a field's own name wins over them.
    let (aliased, own): (Vec<&KeyValue>, Vec<&KeyValue>) =
        attributes.into_iter().partition(|kv| ALIASES.iter().any(|(alias, _)| *alias == kv.key));
    let mut details = match event.remove("details") {
        Some(Value::Object(details)) => details,
        _ => Map::new(),
    };
    for attribute in aliased.into_iter().chain(own) {
        place(&mut event, &mut details, &attribute.key, json(attribute.value.as_ref()));
    }
    if !record.trace_id.is_empty() {
        details.entry("trace_id").or_insert_with(|| Value::String(hex::encode(&record.trace_id)));
    }
    if !record.span_id.is_empty() {
        details.entry("span_id").or_insert_with(|| Value::String(hex::encode(&record.span_id)));
    }
    if !details.is_empty() {
        event.insert("details".into(), Value::Object(details));
    }
    if let Some(level) = level(record) {
        event.entry("level").or_insert_with(|| Value::String(level.into()));
    }
    let nanos = if record.time_unix_nano != 0 { record.time_unix_nano } else { record.observed_time_unix_nano };
    let time = (nanos != 0).then(|| DateTime::<Utc>::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX)));
    if let Some(time) = time {
        event.entry("timestamp").or_insert_with(|| Value::String(time.to_rfc3339_opts(SecondsFormat::Micros, true)));
    }
    event.entry("id").or_insert_with(|| {
        let digest = digest();
        let millis = time.map_or(0, |t| t.timestamp_millis().max(0) as u64);
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest[..10]);
        Value::String(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid().to_string())
    });
    Value::Object(event)
}

/// Puts one attribute where its name says.
fn place(event: &mut Map<String, Value>, details: &mut Map<String, Value>, name: &str, value: Value) {
    if name == "details" {
        if let Value::Object(entries) = value {
            details.extend(entries);
        } else {
            // Not an object: validation says so.
            event.insert("details".into(), value);
        }
        return;
    }
    if let Some(key) = name.strip_prefix("details.") {
        details.insert(key.into(), value);
        return;
    }
    for object in ["security", "financial"] {
        if let Some(key) = name.strip_prefix(object).and_then(|rest| rest.strip_prefix('.')) {
            if let Value::Object(map) = event.entry(object).or_insert_with(|| Value::Object(Map::new())) {
                map.insert(key.into(), scalar_text(value));
            }
            return;
        }
    }
    for side in ["before", "after"] {
        if let Some(key) = name.strip_prefix("changes.").and_then(|rest| rest.strip_prefix(side)).and_then(|rest| rest.strip_prefix('.')) {
            let changes = event.entry("changes").or_insert_with(|| Value::Object(Map::new()));
            if let Some(Value::Object(half)) = changes.as_object_mut().map(|c| c.entry(side).or_insert_with(|| Value::Object(Map::new()))) {
                half.insert(key.into(), value);
            }
            return;
        }
    }
    match field_for(name) {
        Some(field @ ("changes" | "security" | "financial")) => {
            event.insert(field.into(), value);
        }
        Some(field) => {
            event.insert(field.into(), scalar_text(value));
        }
        None => {
            details.insert(name.into(), value);
        }
    }
}

/// Numbers and booleans given for a text field, as text (`user_id = 42` is "42").
fn scalar_text(value: Value) -> Value {
    match value {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        other => other,
    }
}

/// The level of a record: from its severity number, or its severity text when the
/// number is unset; `None` leaves the event's default.
fn level(record: &LogRecord) -> Option<&'static str> {
    match record.severity_number {
        1..=8 => Some("DEBUG"),
        9..=12 => Some("INFO"),
        13..=16 => Some("WARNING"),
        17..=20 => Some("ERROR"),
        21..=24 => Some("CRITICAL"),
        _ => match record.severity_text.to_ascii_uppercase().as_str() {
            "TRACE" | "DEBUG" => Some("DEBUG"),
            "INFO" | "NOTICE" => Some("INFO"),
            "WARN" | "WARNING" => Some("WARNING"),
            "ERROR" => Some("ERROR"),
            "FATAL" | "CRITICAL" => Some("CRITICAL"),
            _ => None,
        },
    }
}

/// An OpenTelemetry value as JSON: maps as objects, arrays as arrays, bytes as
/// base64 text, doubles that JSON cannot hold (NaN, infinities) as text.
fn json(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| Value::String(d.to_string()), Value::Number)
        }
        Some(any_value::Value::ArrayValue(array)) => Value::Array(array.values.iter().map(|v| json(Some(v))).collect()),
        Some(any_value::Value::KvlistValue(list)) => {
            Value::Object(list.values.iter().map(|kv| (kv.key.clone(), json(kv.value.as_ref()))).collect())
        }
        Some(any_value::Value::BytesValue(bytes)) => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        #[allow(unreachable_patterns)]
        Some(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn derived_id(event: &Value) -> Option<Uuid> {
        event.get("id").and_then(Value::as_str).and_then(|s| s.parse().ok())
    }
    use opentelemetry_proto::tonic::common::v1::KeyValueList;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
    }

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource { attributes: vec![text("service.name", "billing"), text("tenant_id", "acme")], ..Default::default() }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "app.audit".into(), ..Default::default() }),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn login() -> LogRecord {
        LogRecord {
            time_unix_nano: 1_764_892_800_123_456_789,
            severity_number: 13,
            body: Some(AnyValue { value: Some(any_value::Value::StringValue("bad password".into())) }),
            attributes: vec![
                text("category", "auth"),
                text("action", "auth.login_failed"),
                text("enduser.id", "u-1"),
                text("user_id", "u-2"),
                text("client.address", "203.0.113.9"),
                text("user_agent.original", "curl/8"),
                text("details.method", "password"),
                text("code.function.name", "login"),
            ],
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            ..Default::default()
        }
    }

    #[test]
    fn a_record_maps_to_the_event_fields() {
        let events = events(&request(vec![login()]), 65536);
        let event = events[0].as_ref().unwrap();
        assert_eq!(event["category"], "auth");
        assert_eq!(event["action"], "auth.login_failed");
        // The field's own name wins over the semantic-convention name.
        assert_eq!(event["user_id"], "u-2");
        assert_eq!(event["ip_address"], "203.0.113.9");
        assert_eq!(event["user_agent"], "curl/8");
        assert_eq!(event["tenant_id"], "acme");
        assert_eq!(event["application"], "billing");
        assert_eq!(event["logger"], "app.audit");
        assert_eq!(event["message"], "bad password");
        assert_eq!(event["level"], "WARNING");
        assert_eq!(event["timestamp"], "2025-12-05T00:00:00.123456Z");
        assert_eq!(event["details"]["method"], "password");
        assert_eq!(event["details"]["code.function.name"], "login");
        assert_eq!(event["details"]["trace_id"], "ab".repeat(16));
        assert_eq!(event["details"]["span_id"], "cd".repeat(8));
    }

    #[test]
    fn the_same_record_gets_the_same_id_and_another_record_another() {
        let first = derived_id(events(&request(vec![login()]), 65536)[0].as_ref().unwrap()).unwrap();
        let again = derived_id(events(&request(vec![login()]), 65536)[0].as_ref().unwrap()).unwrap();
        let mut other = login();
        other.time_unix_nano += 1;
        let other = derived_id(events(&request(vec![other]), 65536)[0].as_ref().unwrap()).unwrap();
        assert_eq!(first, again);
        assert_ne!(first, other);
        assert_eq!(first.get_version_num(), 7);
    }

    #[test]
    fn map_bodies_nested_objects_and_numbers() {
        let mut record = login();
        record.attributes = vec![
            KeyValue { key: "user_id".into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(42)) }), ..Default::default() },
            text("changes.before.role", "member"),
            text("changes.after.role", "admin"),
            text("financial.amount", "12.50"),
        ];
        record.body = Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList { values: vec![text("category", "audit"), text("message", "role changed")] })),
        });
        let event = events(&request(vec![record]), 65536).remove(0).unwrap();
        assert_eq!(event["user_id"], "42");
        assert_eq!(event["category"], "audit");
        assert_eq!(event["message"], "role changed");
        assert_eq!(event["changes"]["before"]["role"], "member");
        assert_eq!(event["changes"]["after"]["role"], "admin");
        assert_eq!(event["financial"]["amount"], "12.50");
    }

    #[test]
    fn an_oversized_record_is_refused_with_its_size() {
        let mut record = login();
        record.body = Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(2000))) });
        let out = events(&request(vec![login(), record]), 1000);
        assert!(out[0].is_ok());
        assert!(out[1].as_ref().unwrap_err().contains("over the 1000"));
    }
}
