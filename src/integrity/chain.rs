//! Hash chains: one per (tenant, table, writer shard).
//!
//! Each persisted row gets `seq`, `prev_hash` (the previous row's hash, 32 zero bytes
//! for the first) and `row_hash`:
//!
//! ```text
//! pii_hash     = SHA-256("tierlog.pii.v2" || pii_salt || canonical JSON of the personal values)
//! content_hash = SHA-256("tierlog.content.v2" || canonical JSON of
//!                        {table, pii_hash, pii_paths, event without its personal values})
//! row_hash     = SHA-256("tierlog.row.v2" || seq (8 bytes, big-endian)
//!                        || expires_at (microseconds since 1970, 8 bytes, big-endian)
//!                        || prev_hash || content_hash)
//! ```
//!
//! **Shards.** Every writing process (a node) claims a writer shard and extends only
//! the chains of its shard, so several nodes writing one tenant never wait on one
//! another's chain heads. Shard `s` numbers its rows `s·2^48 + 1, s·2^48 + 2, ...`
//! without gaps ([`shard_base`]): a row's `seq` names its chain, and the row hash,
//! which covers `seq`, covers the shard. A deployment of one node writes shard 0,
//! whose rows are numbered 1, 2, 3, ... as before shards existed.
//!
//! Personal values are the fields in [`PERSONAL_FIELDS`] plus the values inside
//! `details` and `changes` that matched the configured personal paths at ingest; the
//! concrete paths are stored with the row (`pii_paths`) and covered by the hash. They
//! enter the row hash only through `pii_hash`, salted per row. Erasing them (GDPR)
//! keeps `pii_hash`, so the chain still verifies, while the random salt, erased with
//! them, stops anyone from confirming a guessed value against the stored hash.
//! Changing anything else changes `row_hash`.
//!
//! `row_hash` is built from `content_hash` so that a row deleted by retention can
//! leave a tombstone (seq, expires_at, prev_hash, content_hash, row_hash): the chain
//! still links across it, and a verifier can check that it was due for deletion.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::encode::split_encoded;
use crate::event::json::{write_value_with, Object};
use crate::event::AuditEvent;

/// Version of the canonical encoding, hashed into every row.
pub const CHAIN_VERSION: u64 = 2;

/// The hash that precedes the first row of every chain.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Bits of `seq` that number rows within one writer shard (2^48 rows: 89 years of
/// one tenant's table at 100,000 events a second); the bits above name the shard.
pub const SHARD_BITS: u32 = 48;

/// The most chain shards a deployment uses: each writing process claims a writer
/// shard, and extends one chain shard per retention class of each table.
pub const MAX_SHARDS: i32 = 1024;

/// Chain shards per writer shard: a writer keeps a separate chain per (tenant, table,
/// retention class), so that rows kept for different lengths (auth for 90 days,
/// admin actions for a year, both in `audit_logs`) never interleave in one chain and
/// every chain expires from its start: a time partition that expires removes a
/// leading run of each chain it holds (see [`crate::tiers::Table::class_of`]).
pub const CLASSES: i32 = 8;

/// The most writer shards (writing processes with chains of their own).
pub const MAX_WRITERS: i32 = MAX_SHARDS / CLASSES;

/// The chain shard writer shard `writer` extends for retention class `class`.
pub fn chain_shard(writer: i32, class: i32) -> i32 {
    writer * CLASSES + class
}

/// The writer shard that extends chain shard `shard`.
pub fn writer_of(shard: i32) -> i32 {
    shard.div_euclid(CLASSES)
}

/// The head position of shard `shard`'s empty chain: its first row is `base + 1`.
pub fn shard_base(shard: i32) -> i64 {
    i64::from(shard) << SHARD_BITS
}

/// The shard a chain position (a row's `seq`, or an empty chain's base) belongs to.
pub fn shard_of(seq: i64) -> i32 {
    (seq >> SHARD_BITS) as i32
}

/// Fields that identify a person; they are hashed separately so erasure keeps chains
/// valid.
pub const PERSONAL_FIELDS: [&str; 5] = ["user_id", "username", "email", "ip_address", "user_agent"];

/// What an erased personal value inside `details` or `changes` is replaced with.
pub const ERASED: &str = "[erased]";

/// A concrete path to a value inside the event, e.g. `["details", "phone"]`.
pub type PiiPath = Vec<String>;

/// A row's place in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub seq: i64,
    pub prev_hash: [u8; 32],
    pub row_hash: [u8; 32],
}

/// The salted commitment to a row's personal values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiiSeal {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
}

/// Configured paths of personal values inside `details` and `changes`: dotted names
/// whose segments are keys, `*` standing for any key (`changes.*.email`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonalPaths {
    patterns: Vec<Vec<String>>,
}

impl PersonalPaths {
    /// Parses dotted patterns; each must start with `details` or `changes`.
    pub fn parse(patterns: &[String]) -> Result<PersonalPaths, String> {
        let mut parsed = Vec::new();
        for pattern in patterns {
            let segments: Vec<String> = pattern.split('.').map(str::to_owned).collect();
            if segments.len() < 2 || !matches!(segments[0].as_str(), "details" | "changes") {
                return Err(format!("`{pattern}` must start with `details.` or `changes.`"));
            }
            if segments.iter().any(String::is_empty) {
                return Err(format!("`{pattern}` has an empty segment"));
            }
            parsed.push(segments);
        }
        Ok(PersonalPaths { patterns: parsed })
    }

    /// The concrete paths of `event` that hold personal values, sorted. Walks
    /// `details` and `changes` where they are, without encoding the event.
    pub fn find(&self, event: &AuditEvent) -> Vec<PiiPath> {
        if self.patterns.is_empty() || (event.details.is_none() && event.changes.is_none()) {
            return Vec::new();
        }
        let changes = event
            .changes
            .as_ref()
            .filter(|_| self.patterns.iter().any(|p| p[0] == "changes"))
            .and_then(|changes| serde_json::to_value(changes).ok());
        let mut found = Vec::new();
        for pattern in &self.patterns {
            let root = match pattern[0].as_str() {
                "details" => event.details.as_ref(),
                _ => changes.as_ref().and_then(Value::as_object),
            };
            if let Some(root) = root {
                collect_in(root, &pattern[1..], &mut vec![pattern[0].clone()], &mut found);
            }
        }
        found.sort();
        found.dedup();
        found
    }

    /// Like [`PersonalPaths::find`] over an event's JSON object.
    pub fn find_in(&self, event: &Value) -> Vec<PiiPath> {
        let mut found = Vec::new();
        for pattern in &self.patterns {
            collect(event, pattern, &mut Vec::new(), &mut found);
        }
        found.sort();
        found.dedup();
        found
    }
}

fn collect(value: &Value, pattern: &[String], at: &mut Vec<String>, found: &mut Vec<PiiPath>) {
    if pattern.is_empty() {
        if !value.is_null() {
            found.push(at.clone());
        }
        return;
    }
    let Value::Object(map) = value else { return };
    collect_in(map, pattern, at, found);
}

/// [`collect`] over the members of `map` (`pattern` is not empty).
fn collect_in(map: &Map<String, Value>, pattern: &[String], at: &mut Vec<String>, found: &mut Vec<PiiPath>) {
    let Some((head, rest)) = pattern.split_first() else { return };
    let mut visit = |key: &String, child: &Value| {
        at.push(key.clone());
        collect(child, rest, at, found);
        at.pop();
    };
    if head == "*" {
        for (key, child) in map {
            visit(key, child);
        }
    } else if let Some(child) = map.get(head) {
        visit(head, child);
    }
}

/// Removes and returns the value at `path`.
pub(super) fn take_path(root: &mut Map<String, Value>, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut map = root;
    for key in parents {
        map = map.get_mut(key)?.as_object_mut()?;
    }
    map.remove(last)
}

/// Replaces the value at `path` (if present) with `replacement`.
pub fn replace_path(root: &mut Map<String, Value>, path: &[String], replacement: Value) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut map = root;
    for key in parents {
        match map.get_mut(key).and_then(Value::as_object_mut) {
            Some(next) => map = next,
            None => return false,
        }
    }
    match map.get_mut(last) {
        Some(slot) => {
            *slot = replacement;
            true
        }
        None => false,
    }
}

/// The salted hash of `event`'s personal values.
pub fn pii_hash(event: &AuditEvent, pii_paths: &[PiiPath], salt: &[u8; 16]) -> [u8; 32] {
    let (_, personal) = split_encoded(event, pii_paths);
    seal_bytes(&personal, salt)
}

/// The hash of everything in a row except its chain position.
pub fn content_hash(table: &str, pii_hash: &[u8; 32], pii_paths: &[PiiPath], event: &AuditEvent) -> [u8; 32] {
    let (content, _) = split_encoded(event, pii_paths);
    hash_content_bytes(table, pii_hash, pii_paths, &content)
}

/// [`content_hash`] and, given the salt, [`pii_hash`] of `event`, splitting it once.
pub fn hashes(
    table: &str,
    pii_hash: &[u8; 32],
    pii_paths: &[PiiPath],
    event: &AuditEvent,
    salt: Option<&[u8; 16]>,
) -> ([u8; 32], Option<[u8; 32]>) {
    let (content, personal) = split_encoded(event, pii_paths);
    let pii = salt.map(|salt| seal_bytes(&personal, salt));
    (hash_content_bytes(table, pii_hash, pii_paths, &content), pii)
}

/// [`content_hash`] and [`pii_hash`] of an event given as its JSON object (as read
/// back from an archive), so a verifier needs no event type: `(content, pii)`.
pub fn hashes_of_value(
    table: &str,
    pii_hash: &[u8; 32],
    pii_paths: &[PiiPath],
    event: Map<String, Value>,
    salt: Option<&[u8; 16]>,
) -> ([u8; 32], Option<[u8; 32]>) {
    let (content, personal) = split_value(event, pii_paths);
    let (content, personal) = (object_bytes(&content), object_bytes(&personal));
    let pii = salt.map(|salt| seal_bytes(&personal, salt));
    (hash_content_bytes(table, pii_hash, pii_paths, &content), pii)
}

fn object_bytes(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_object(map, &mut out);
    out
}

/// The hash of a row at position `seq` after `prev_hash`, from its content hash.
pub fn link_hash(seq: i64, expires_at: &DateTime<Utc>, prev_hash: &[u8; 32], content_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"tierlog.row.v2");
    hasher.update(seq.to_be_bytes());
    hasher.update(expires_at.timestamp_micros().to_be_bytes());
    hasher.update(prev_hash);
    hasher.update(content_hash);
    hasher.finalize().into()
}

/// The hash of a row at position `seq` after `prev_hash`.
#[allow(clippy::too_many_arguments)]
pub fn row_hash(
    table: &str,
    seq: i64,
    prev_hash: &[u8; 32],
    expires_at: &DateTime<Utc>,
    pii_hash: &[u8; 32],
    pii_paths: &[PiiPath],
    event: &AuditEvent,
) -> [u8; 32] {
    link_hash(seq, expires_at, prev_hash, &content_hash(table, pii_hash, pii_paths, event))
}

/// Extends a chain whose head is (`head_seq`, `head_hash`) by one row, sealing its
/// personal values with a fresh salt. Encodes the event once for both hashes.
pub fn next_link(
    table: &str,
    head_seq: i64,
    head_hash: &[u8; 32],
    expires_at: &DateTime<Utc>,
    pii_paths: &[PiiPath],
    event: &AuditEvent,
) -> (Link, PiiSeal) {
    let (content, personal) = split_encoded(event, pii_paths);
    let salt: [u8; 16] = rand::random();
    let seal = PiiSeal { salt, hash: seal_bytes(&personal, &salt) };
    let seq = head_seq + 1;
    let content = hash_content_bytes(table, &seal.hash, pii_paths, &content);
    let row_hash = link_hash(seq, expires_at, head_hash, &content);
    (Link { seq, prev_hash: *head_hash, row_hash }, seal)
}

/// An event's JSON object split into its non-personal content and its personal
/// values: the definition that [`split_encoded`] implements fast.
fn split_value(mut content: Map<String, Value>, pii_paths: &[PiiPath]) -> (Map<String, Value>, Map<String, Value>) {
    let mut personal = Map::new();
    for field in PERSONAL_FIELDS {
        if let Some(value) = content.remove(field) {
            personal.insert(field.to_owned(), value);
        }
    }
    if !pii_paths.is_empty() {
        let mut values = Vec::with_capacity(pii_paths.len());
        for path in pii_paths {
            let value = take_path(&mut content, path).unwrap_or(Value::Null);
            values.push(Value::Array(vec![path_value(path), value]));
        }
        personal.insert("paths".into(), Value::Array(values));
    }
    (content, personal)
}

fn path_value(path: &[String]) -> Value {
    Value::Array(path.iter().map(|s| Value::String(s.clone())).collect())
}

fn seal_bytes(personal: &[u8], salt: &[u8; 16]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"tierlog.pii.v2");
    hasher.update(salt);
    hasher.update(personal);
    hasher.finalize().into()
}

/// Hashes the envelope `{"event":…,"pii_hash":…,"pii_paths":…,"table":…,"v":2}`
/// (keys in canonical order) around the canonical bytes of the content.
fn hash_content_bytes(table: &str, pii_hash: &[u8; 32], pii_paths: &[PiiPath], content: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"tierlog.content.v2");
    hasher.update(b"{\"event\":");
    hasher.update(content);
    hasher.update(b",\"pii_hash\":\"");
    hasher.update(hex::encode(pii_hash).as_bytes());
    hasher.update(b"\",\"pii_paths\":");
    hasher.update(canonical_json(&Value::Array(pii_paths.iter().map(|p| path_value(p)).collect())));
    hasher.update(b",\"table\":");
    hasher.update(serde_json::to_vec(table).unwrap_or_default());
    hasher.update(format!(",\"v\":{CHAIN_VERSION}}}").as_bytes());
    hasher.finalize().into()
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings
/// and numbers as serde_json writes them. Independent of serde_json's map ordering
/// features.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

pub(super) fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut object = Object::open(out);
    let mut member = |key: &String, item: &Value| {
        object.key(key);
        write_canonical(item, object.out);
    };
    // Maps are sorted by key already unless serde_json keeps insertion order.
    if map.keys().is_sorted_by(|a, b| a.as_bytes() <= b.as_bytes()) {
        map.iter().for_each(|(key, item)| member(key, item));
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        entries.into_iter().for_each(|(key, item)| member(key, item));
    }
    object.close();
}

pub(super) fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    write_value_with(value, out, write_object);
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
            "user_id": "u-1", "details": {"b": 1, "a": [1.5, "x"], "phone": "+1 555 0100"},
            "changes": {"before": {"email": "old@example.com", "role": "user"}, "after": {"email": "new@example.com", "role": "admin"}}
        });
        if let (Some(base), Value::Object(more)) = (item.as_object_mut(), extra) {
            base.extend(more);
        }
        let received = DateTime::parse_from_rfc3339("2026-11-23T12:00:01Z").expect("ts").to_utc();
        EventParser::new(Limits::default(), None, received).parse(0, item).expect("valid")
    }

    fn event_value(event: &AuditEvent) -> Map<String, Value> {
        match serde_json::to_value(event) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    fn paths() -> PersonalPaths {
        PersonalPaths::parse(&["details.phone".into(), "changes.*.email".into(), "details.absent".into()]).expect("valid")
    }

    /// The generic encoding, the definition the fast one must match.
    fn generic(event: &AuditEvent, paths: &[PiiPath]) -> (Vec<u8>, Vec<u8>) {
        let (content, personal) = split_value(event_value(event), paths);
        (object_bytes(&content), object_bytes(&personal))
    }

    #[test]
    fn the_fast_encoding_matches_the_generic_one() {
        let finder = paths();
        let variants = [
            json!({}),
            json!({"username": null, "email": null, "user_id": null, "details": null, "changes": null}),
            json!({"message": "é \" \n \u{1F600} </script>", "logger": "l", "event_type": "t", "action": "a.b",
                   "status": "failure", "application": "app", "resource": "user", "resource_id": "42",
                   "ip_address": "2001:db8::1", "user_agent": "UA", "request_id": "r", "session_id": "s",
                   "level": "critical", "tenant_id": "t-1"}),
            json!({"category": "security", "security": {"event_type": "ip_blocked", "severity": "high"}}),
            json!({"category": "financial", "financial": {"transaction_id": "tx", "amount": "12.50", "currency": "EUR"}}),
            json!({"details": {"phone": {"home": "1", "work": [1, 2.5, -3e40]}, "z": {"b": null, "a": true}},
                   "changes": {"after": {"email": "x"}}}),
            json!({"details": {"b": 1}, "changes": {"before": {"email": "x", "name": "n"}}}),
        ];
        for extra in variants {
            let e = event(extra.clone());
            // Walking details and changes in place finds what a walk of the whole
            // encoded event finds.
            assert_eq!(finder.find(&e), finder.find_in(&Value::Object(event_value(&e))), "{extra}");
            for found in [Vec::new(), finder.find(&e), vec![vec!["details".into(), "missing".into()]]] {
                assert_eq!(split_encoded(&e, &found), generic(&e, &found), "{extra} with {found:?}");
            }
        }
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
    fn personal_paths_find_concrete_values_and_reject_bad_patterns() {
        let found = paths().find(&event(json!({})));
        let expected: Vec<PiiPath> = vec![
            vec!["changes".into(), "after".into(), "email".into()],
            vec!["changes".into(), "before".into(), "email".into()],
            vec!["details".into(), "phone".into()],
        ];
        assert_eq!(found, expected);
        assert!(PersonalPaths::parse(&["message".into()]).is_err());
        assert!(PersonalPaths::parse(&["details..x".into()]).is_err());
    }

    #[test]
    fn erasing_personal_values_keeps_the_row_hash_but_other_changes_break_it() {
        let original = event(json!({}));
        let found = paths().find(&original);
        let expires = original.received_at;
        let (link, seal) = next_link("audit_logs", 0, &GENESIS_HASH, &expires, &found, &original);
        let hash_of = |e: &AuditEvent, pii: &[PiiPath]| {
            row_hash("audit_logs", link.seq, &link.prev_hash, &expires, &seal.hash, pii, e)
        };
        assert_eq!(hash_of(&original, &found), link.row_hash);

        let mut erased = original.clone();
        erased.username = None;
        erased.email = None;
        erased.user_id = Some("erased-0123".into());
        if let Some(details) = erased.details.as_mut() {
            assert!(replace_path(details, &["phone".into()], ERASED.into()));
        }
        if let Some(before) = erased.changes.as_mut().and_then(|c| c.before.as_mut()) {
            before.insert("email".into(), ERASED.into());
        }
        assert_eq!(hash_of(&erased, &found), link.row_hash);
        assert_ne!(pii_hash(&erased, &found, &seal.salt), seal.hash, "pii hash must notice the erasure");

        let mut tampered = original.clone();
        if let Some(details) = tampered.details.as_mut() {
            details.insert("b".into(), 2.into());
        }
        assert_ne!(hash_of(&tampered, &found), link.row_hash);
        let mut role = original.clone();
        if let Some(after) = role.changes.as_mut().and_then(|c| c.after.as_mut()) {
            after.insert("role".into(), "user".into());
        }
        assert_ne!(hash_of(&role, &found), link.row_hash);
        assert_ne!(hash_of(&original, &found[1..]), link.row_hash, "the path list is covered");
    }

    #[test]
    fn the_hash_depends_on_position_predecessor_and_expiry() {
        let e = event(json!({}));
        let (first, seal) = next_link("audit_logs", 0, &GENESIS_HASH, &e.received_at, &[], &e);
        let at = |table: &str, seq: i64, expires: &DateTime<Utc>| row_hash(table, seq, &GENESIS_HASH, expires, &seal.hash, &[], &e);
        assert_eq!(first.seq, 1);
        assert_eq!(first.row_hash, at("audit_logs", 1, &e.received_at));
        assert_ne!(first.row_hash, at("audit_logs", 2, &e.received_at));
        assert_ne!(first.row_hash, at("security_events", 1, &e.received_at));
        assert_ne!(first.row_hash, at("audit_logs", 1, &e.timestamp));
        let content = content_hash("audit_logs", &seal.hash, &[], &e);
        assert_eq!(first.row_hash, link_hash(1, &e.received_at, &GENESIS_HASH, &content));
    }

    /// Chains written by earlier versions must still verify: the hashes of a fixed
    /// event with every kind of escape are pinned to what tierlog has always written.
    #[test]
    fn hashes_of_a_fixed_event_never_change() {
        let e = event(json!({"message": "tab\t quote\" back\\ bell\u{7} esc\u{1b} é \u{2028} \u{1F600} plain text over eight bytes",
            "ip_address": "2001:db8::1", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "details": {"phone": "+1 555 0100", "z\nkey": {"b": null, "a": [true, -3e40, 12]}}}));
        let found = paths().find(&e);
        let pii = pii_hash(&e, &found, &[9; 16]);
        let content = content_hash("audit_logs", &pii, &found, &e);
        assert_eq!(hex::encode(pii), "f793d1625ea1197b8bb380ded1df20a334183e4001dbedd2eb2fd6f4243a2a8b");
        assert_eq!(hex::encode(content), "ba9a4c68ee2c1811fbe725674ad254f8e4645132b9999648a9ceb9ecab9d3be7");
    }

    fn hex32(value: &Value) -> [u8; 32] {
        hex::decode(value.as_str().expect("hex")).expect("hex").try_into().expect("32 bytes")
    }

    /// The published vectors (docs/chain-test-vectors.json): what tierlog computes
    /// for each row, and what the formulas of docs/integrity.md give from the
    /// vectors' own bytes, must both equal the published hashes.
    #[test]
    fn the_published_test_vectors_hold() {
        let vectors: Value = serde_json::from_str(include_str!("../../docs/chain-test-vectors.json")).expect("vectors");
        let configured: Vec<String> =
            serde_json::from_value(vectors["personal_paths_configured"].clone()).expect("configured paths");
        let configured = PersonalPaths::parse(&configured).expect("valid");
        let mut prev = GENESIS_HASH;
        let rows = vectors["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 3);
        for row in rows {
            let expect = &row["expect"];
            let seq = row["seq"].as_i64().expect("seq");
            let table = row["table"].as_str().expect("table");
            let expires_at = DateTime::parse_from_rfc3339(row["expires_at"].as_str().expect("expires_at")).expect("ts").to_utc();
            let salt: [u8; 16] = hex::decode(row["pii_salt"].as_str().expect("salt")).expect("hex").try_into().expect("16");
            let paths: Vec<PiiPath> = serde_json::from_value(row["pii_paths"].clone()).expect("paths");
            let map = row["event"].as_object().expect("event").clone();
            assert_eq!(hex32(&row["prev_hash"]), prev, "seq {seq} links to the row before");

            // tierlog, from the event object (as archives and exports hold it) ...
            let (content, pii) = hashes_of_value(table, &hex32(&expect["pii_hash"]), &paths, map.clone(), Some(&salt));
            let pii = pii.expect("with its salt the seal is recomputed");
            assert_eq!(pii, hex32(&expect["pii_hash"]), "seq {seq} pii_hash");
            assert_eq!(content, hex32(&expect["content_hash"]), "seq {seq} content_hash");
            let row_hash = link_hash(seq, &expires_at, &prev, &content);
            assert_eq!(row_hash, hex32(&expect["row_hash"]), "seq {seq} row_hash");
            // ... and from the event as ingest holds it, through the fast encoder.
            let event: AuditEvent = serde_json::from_value(Value::Object(map)).expect("an event");
            assert_eq!(configured.find(&event), paths, "seq {seq}: the configured paths find the sealed values");
            assert_eq!(hashes(table, &pii, &paths, &event, Some(&salt)), (content, Some(pii)));

            // The formulas of docs/integrity.md, from the vectors' canonical bytes.
            let personal_json = expect["personal_json"].as_str().expect("personal");
            let content_json = expect["content_json"].as_str().expect("content");
            let sha = |parts: &[&[u8]]| -> [u8; 32] {
                let mut hasher = Sha256::new();
                parts.iter().for_each(|p| hasher.update(p));
                hasher.finalize().into()
            };
            assert_eq!(sha(&[b"tierlog.pii.v2", &salt, personal_json.as_bytes()]), pii);
            let envelope = format!(
                "{{\"event\":{content_json},\"pii_hash\":\"{}\",\"pii_paths\":{},\"table\":\"{table}\",\"v\":2}}",
                hex::encode(pii),
                serde_json::to_string(&paths).expect("paths")
            );
            assert_eq!(sha(&[b"tierlog.content.v2", envelope.as_bytes()]), content);
            let micros = expires_at.timestamp_micros().to_be_bytes();
            assert_eq!(sha(&[b"tierlog.row.v2", &seq.to_be_bytes(), &micros, &prev, &content]), row_hash);
            prev = row_hash;
        }
    }
}
