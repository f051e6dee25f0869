//! The canonical encoding of an event, written straight from [`AuditEvent`] without
//! building a JSON tree first: the hot path of every chained insert and every
//! verification. It must produce exactly the bytes of the generic encoding in
//! [`super::chain`] (sorted keys, no whitespace, personal values split off); the tests
//! hold the two together.

use serde::Serialize;
use serde_json::{Map, Value};

use super::chain::{take_path, write_canonical, write_object, PiiPath};
use crate::event::json::Object;
use crate::event::{write_timestamp_member, AuditEvent, Changes};

/// The members of the canonical encoding that are not plain strings: written with
/// sorted keys, as [`super::chain`] writes them.
trait Canonical {
    fn value(&mut self, key: &'static str, value: Option<&Value>);
    fn map(&mut self, key: &'static str, value: Option<&Map<String, Value>>);
    fn changes(&mut self, key: &'static str, value: Option<&Changes>);
}

impl Canonical for Object<'_> {
    fn value(&mut self, key: &'static str, value: Option<&Value>) {
        if let Some(value) = value {
            self.field(key);
            write_canonical(value, self.out);
        }
    }

    fn map(&mut self, key: &'static str, value: Option<&Map<String, Value>>) {
        if let Some(value) = value {
            self.field(key);
            write_object(value, self.out);
        }
    }

    /// `changes` as its generic encoding has it: `after` and `before`, each if present.
    fn changes(&mut self, key: &'static str, value: Option<&Changes>) {
        if let Some(changes) = value {
            self.field(key);
            let mut inner = Object::open(self.out);
            inner.map("after", changes.after.as_ref());
            inner.map("before", changes.before.as_ref());
            inner.close();
        }
    }
}

fn plain<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The canonical bytes of `event`'s content (without personal values) and of its
/// personal values, as [`super::chain`] defines them.
pub(super) fn split_encoded(event: &AuditEvent, pii_paths: &[PiiPath]) -> (Vec<u8>, Vec<u8>) {
    // The personal paths live in details and changes: only those are copied, and
    // only when a path touches them.
    let mut nested = Map::new();
    let mut taken = Vec::new();
    if !pii_paths.is_empty() {
        if let Some(details) = &event.details {
            nested.insert("details".into(), Value::Object(details.clone()));
        }
        if let Some(changes) = &event.changes {
            nested.insert("changes".into(), plain(changes));
        }
        for path in pii_paths {
            taken.push((path, take_path(&mut nested, path).unwrap_or(Value::Null)));
        }
    }
    let mut content = Vec::with_capacity(512);
    let mut o = Object::open(&mut content);
    o.str("action", event.action.as_deref());
    o.str("application", event.application.as_deref());
    o.str("category", Some(event.category.as_str()));
    if pii_paths.is_empty() {
        // Written from the event itself, without copying them into values.
        o.changes("changes", event.changes.as_ref());
        o.map("details", event.details.as_ref());
    } else {
        o.value("changes", nested.get("changes"));
        o.value("details", nested.get("details"));
    }
    o.str("event_type", event.event_type.as_deref());
    o.value("financial", event.financial.as_ref().map(plain).as_ref());
    o.str("id", Some(event.id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer())));
    o.str("level", Some(event.level.as_str()));
    o.str("logger", event.logger.as_deref());
    o.str("message", event.message.as_deref());
    write_timestamp_member(&mut o, "received_at", &event.received_at);
    o.str("request_id", event.request_id.as_deref());
    o.str("resource", event.resource.as_deref());
    o.str("resource_id", event.resource_id.as_deref());
    o.value("security", event.security.as_ref().map(plain).as_ref());
    o.str("session_id", event.session_id.as_deref());
    o.str("status", event.status.map(|s| s.as_str()));
    o.str("tenant_id", Some(&event.tenant_id));
    write_timestamp_member(&mut o, "timestamp", &event.timestamp);
    o.close();

    let mut personal = Vec::with_capacity(128);
    let mut p = Object::open(&mut personal);
    p.str("email", event.email.as_deref());
    if let Some(ip) = event.ip_address {
        p.plain_display("ip_address", ip);
    }
    if !pii_paths.is_empty() {
        p.field("paths");
        p.out.push(b'[');
        for (i, (path, value)) in taken.iter().enumerate() {
            if i > 0 {
                p.out.push(b',');
            }
            p.out.push(b'[');
            write_canonical(&Value::Array(path.iter().map(|s| Value::String(s.clone())).collect()), p.out);
            p.out.push(b',');
            write_canonical(value, p.out);
            p.out.push(b']');
        }
        p.out.push(b']');
    }
    p.str("user_agent", event.user_agent.as_deref());
    p.str("user_id", event.user_id.as_deref());
    p.str("username", event.username.as_deref());
    p.close();
    (content, personal)
}
