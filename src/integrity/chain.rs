//! Per-(tenant, table) hash chains.
//!
//! Each persisted row gets `seq` (1, 2, 3, ... without gaps), `prev_hash` (the previous
//! row's hash, 32 zero bytes for the first) and `row_hash`:
//!
//! ```text
//! row_hash = SHA-256(canonical JSON of {v, table, seq, prev_hash, expires_at, pii_hash,
//!                                       event without its personal fields})
//! pii_hash = SHA-256("tierlog.pii.v1" || pii_salt || canonical JSON of the personal fields)
//! ```
//!
//! Personal fields (username, email, ip_address, user_agent) enter the row hash only
//! through `pii_hash`, salted per row. Erasing them later (GDPR) keeps `pii_hash`, so
//! the chain still verifies, while the random salt, erased with them, stops anyone
//! from confirming a guessed value against the stored hash. Changing any other column
//! changes `row_hash`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::{format_timestamp, AuditEvent};

/// Version of the canonical encoding, hashed into every row.
pub const CHAIN_VERSION: u64 = 1;

/// The hash that precedes the first row of every chain.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Fields that identify a person; they are hashed separately so erasure keeps chains
/// valid.
pub const PERSONAL_FIELDS: [&str; 4] = ["username", "email", "ip_address", "user_agent"];

/// A row's place in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub seq: i64,
    pub prev_hash: [u8; 32],
    pub row_hash: [u8; 32],
}

/// The salted commitment to a row's personal fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiiSeal {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
}

/// The salted hash of `event`'s personal fields.
pub fn pii_hash(event: &AuditEvent, salt: &[u8; 16]) -> [u8; 32] {
    let (_, personal) = split_personal(event);
    seal_personal(&personal, salt)
}

/// The hash of a row at position `seq` after `prev_hash`.
pub fn row_hash(
    table: &str,
    seq: i64,
    prev_hash: &[u8; 32],
    expires_at: &DateTime<Utc>,
    pii_hash: &[u8; 32],
    event: &AuditEvent,
) -> [u8; 32] {
    let (content, _) = split_personal(event);
    hash_content(table, seq, prev_hash, expires_at, pii_hash, content)
}

/// Extends a chain whose head is (`head_seq`, `head_hash`) by one row, sealing its
/// personal fields with a fresh salt. Encodes the event once for both hashes.
pub fn next_link(
    table: &str,
    head_seq: i64,
    head_hash: &[u8; 32],
    expires_at: &DateTime<Utc>,
    event: &AuditEvent,
) -> (Link, PiiSeal) {
    let (content, personal) = split_personal(event);
    let salt: [u8; 16] = rand::random();
    let seal = PiiSeal { salt, hash: seal_personal(&personal, &salt) };
    let seq = head_seq + 1;
    let row_hash = hash_content(table, seq, head_hash, expires_at, &seal.hash, content);
    (Link { seq, prev_hash: *head_hash, row_hash }, seal)
}

/// The event's JSON object, split into its non-personal and personal fields.
fn split_personal(event: &AuditEvent) -> (Map<String, Value>, Map<String, Value>) {
    let mut content = event_value(event);
    let mut personal = Map::new();
    for field in PERSONAL_FIELDS {
        if let Some(value) = content.remove(field) {
            personal.insert(field.to_owned(), value);
        }
    }
    (content, personal)
}

fn seal_personal(personal: &Map<String, Value>, salt: &[u8; 16]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"tierlog.pii.v1");
    hasher.update(salt);
    let mut encoded = Vec::with_capacity(128);
    write_object(personal, &mut encoded);
    hasher.update(encoded);
    hasher.finalize().into()
}

fn hash_content(
    table: &str,
    seq: i64,
    prev_hash: &[u8; 32],
    expires_at: &DateTime<Utc>,
    pii_hash: &[u8; 32],
    content: Map<String, Value>,
) -> [u8; 32] {
    let mut envelope = Map::new();
    envelope.insert("v".into(), CHAIN_VERSION.into());
    envelope.insert("table".into(), table.into());
    envelope.insert("seq".into(), seq.into());
    envelope.insert("prev_hash".into(), hex::encode(prev_hash).into());
    envelope.insert("expires_at".into(), format_timestamp(expires_at).into());
    envelope.insert("pii_hash".into(), hex::encode(pii_hash).into());
    envelope.insert("event".into(), Value::Object(content));
    let mut encoded = Vec::with_capacity(1024);
    write_object(&envelope, &mut encoded);
    Sha256::digest(encoded).into()
}

fn event_value(event: &AuditEvent) -> Map<String, Value> {
    match serde_json::to_value(event) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings
/// and numbers as serde_json writes them. Independent of serde_json's map ordering
/// features.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        write_canonical(item, out);
    }
    out.push(b'}');
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventParser, Limits};
    use serde_json::json;

    fn event(extra: Value) -> AuditEvent {
        let mut item = json!({
            "id": "0192f0c4-7a4e-7c3a-9c55-3f1f2a7d9b10", "category": "auth",
            "timestamp": "2026-11-23T12:00:00Z", "username": "alice", "email": "a@example.com",
            "details": {"b": 1, "a": [1.5, "x"]}
        });
        if let (Some(base), Value::Object(more)) = (item.as_object_mut(), extra) {
            base.extend(more);
        }
        let received = DateTime::parse_from_rfc3339("2026-11-23T12:00:01Z").expect("ts").to_utc();
        EventParser::new(Limits::default(), None, received).parse(0, item).expect("valid")
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": {"z": 1, "a": [ {"y": 2, "x": 1} ]}, "a": "é\n"});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).expect("utf8"),
            r#"{"a":"é\n","b":{"a":[{"x":1,"y":2}],"z":1}}"#
        );
    }

    #[test]
    fn erasing_personal_fields_keeps_the_row_hash_but_other_changes_break_it() {
        let original = event(json!({}));
        let expires = original.received_at;
        let (link, seal) = next_link("audit_logs", 0, &GENESIS_HASH, &expires, &original);

        let mut erased = original.clone();
        erased.username = None;
        erased.email = None;
        let after_erasure = row_hash("audit_logs", link.seq, &link.prev_hash, &expires, &seal.hash, &erased);
        assert_eq!(after_erasure, link.row_hash);
        assert_ne!(pii_hash(&erased, &seal.salt), seal.hash, "pii hash must notice the erasure");

        let mut tampered = original.clone();
        tampered.details = Some(json!({"b": 2, "a": [1.5, "x"]}).as_object().cloned().unwrap_or_default());
        let after_tamper = row_hash("audit_logs", link.seq, &link.prev_hash, &expires, &seal.hash, &tampered);
        assert_ne!(after_tamper, link.row_hash);
    }

    #[test]
    fn the_hash_depends_on_position_and_predecessor() {
        let e = event(json!({}));
        let (first, seal) = next_link("audit_logs", 0, &GENESIS_HASH, &e.received_at, &e);
        let moved = row_hash("audit_logs", 2, &GENESIS_HASH, &e.received_at, &seal.hash, &e);
        let other_table = row_hash("security_events", 1, &GENESIS_HASH, &e.received_at, &seal.hash, &e);
        assert_eq!(first.seq, 1);
        assert_eq!(first.row_hash, row_hash("audit_logs", 1, &GENESIS_HASH, &e.received_at, &seal.hash, &e));
        assert_ne!(first.row_hash, moved);
        assert_ne!(first.row_hash, other_table);
    }
}
