//! One wire item as read from the body: the value of each known top-level field and
//! the names of unknown ones, in one pass over the bytes.
//!
//! Reading into a JSON map first would allocate every key and insert it into a tree
//! only for validation to take it out again; here a key is matched against the field
//! list where it lies in the body and its value lands in a fixed slot. Values are
//! still read as JSON values, so validation ([`super::parse`]) sees exactly what a map
//! would have held; what a map forgets (number text, repeated keys) is checked on the
//! item's bytes by [`super::exact`] and travels with the fields.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::exact::{self, Scan};

/// Every top-level field of a wire event.
const TOP_LEVEL_FIELDS: [&str; 24] = [
    "id", "timestamp", "category", "level", "logger", "message", "event_type", "action",
    "status", "tenant_id", "application", "user_id", "username", "email", "resource",
    "resource_id", "ip_address", "user_agent", "request_id", "session_id", "details",
    "changes", "security", "financial",
];

fn field_index(name: &str) -> Option<usize> {
    TOP_LEVEL_FIELDS.iter().position(|field| *field == name)
}

/// One item of a request body.
// Items live in one Vec per request; boxing the fields would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum WireItem {
    /// A JSON object, split into its fields.
    Object(WireFields),
    /// Any other JSON value (refused by validation).
    NotObject,
}

/// The fields of one JSON object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireFields {
    values: [Option<Value>; TOP_LEVEL_FIELDS.len()],
    /// Keys that are not event fields, sorted, each once.
    unknown: Vec<String>,
    /// What the item's bytes say of its numbers and keys.
    scan: Scan,
}

impl WireFields {
    /// Takes a known field's value out (`None` when absent).
    pub(super) fn take(&mut self, name: &str) -> Option<Value> {
        field_index(name).and_then(|i| self.values[i].take())
    }

    /// A known field's value, left in place.
    pub(super) fn get(&self, name: &str) -> Option<&Value> {
        field_index(name).and_then(|i| self.values[i].as_ref())
    }

    /// The keys that are not event fields.
    pub(super) fn unknown(&self) -> &[String] {
        &self.unknown
    }

    /// What the item's bytes say of its numbers and keys.
    pub(super) fn scan(&self) -> &Scan {
        &self.scan
    }
}

impl WireItem {
    /// Reads one item from its JSON text, numbers and keys checked on the bytes.
    pub fn from_slice(raw: &[u8]) -> serde_json::Result<WireItem> {
        let Unscanned(item) = serde_json::from_slice(raw)?;
        Ok(item.with_scan(exact::scan(raw)))
    }

    /// Splits an already parsed JSON value (tests, tools), checked through its text.
    pub fn from_value(value: Value) -> WireItem {
        let scan = exact::scan_value(&value);
        // A `Value` always deserializes: every shape has a branch below.
        Unscanned::deserialize(value).map_or(WireItem::NotObject, |Unscanned(item)| item.with_scan(scan))
    }

    fn with_scan(mut self, scan: Scan) -> WireItem {
        if let WireItem::Object(fields) = &mut self {
            fields.scan = scan;
        }
        self
    }
}

/// An item read by serde before its bytes are checked. Only [`WireItem::from_slice`]
/// and [`WireItem::from_value`] read items, so none escapes the check.
struct Unscanned(WireItem);

impl<'de> Deserialize<'de> for Unscanned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unscanned, D::Error> {
        deserializer.deserialize_any(ItemVisitor).map(Unscanned)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = WireItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireItem, A::Error> {
        let mut fields = WireFields::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // Unknown values are read in full too, so they are held to the same JSON
            // rules (numbers in range, valid escapes) as known ones.
            let value: Value = map.next_value()?;
            match key {
                Key::Known(i) => fields.values[i] = Some(value),
                Key::Unknown(name) => fields.unknown.push(name),
            }
        }
        fields.unknown.sort();
        fields.unknown.dedup();
        Ok(WireItem::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireItem, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(WireItem::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<WireItem, E> {
        Ok(WireItem::NotObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<WireItem, E> {
        Ok(WireItem::NotObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<WireItem, E> {
        Ok(WireItem::NotObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<WireItem, E> {
        Ok(WireItem::NotObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<WireItem, E> {
        Ok(WireItem::NotObject)
    }

    fn visit_unit<E>(self) -> Result<WireItem, E> {
        Ok(WireItem::NotObject)
    }

    fn visit_none<E>(self) -> Result<WireItem, E> {
        Ok(WireItem::NotObject)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<WireItem, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(WireItem::NotObject)
    }
}

/// A key: the index of a known field (no allocation), or an unknown name.
enum Key {
    Known(usize),
    Unknown(String),
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> Result<Key, E> {
        Ok(field_index(name).map_or_else(|| Key::Unknown(name.to_owned()), Key::Known))
    }

    fn visit_string<E>(self, name: String) -> Result<Key, E> {
        Ok(match field_index(&name) {
            Some(i) => Key::Known(i),
            None => Key::Unknown(name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_and_values_split_alike_and_a_repeated_key_is_noted() {
        let bytes = br#"{"category":"auth","zz":1,"message":"a","message":"b","aa":[1],"zz":2}"#;
        let read = WireItem::from_slice(bytes).expect("json");
        let WireItem::Object(mut fields) = read.clone() else { panic!("an object") };
        assert_eq!(fields.unknown(), ["aa", "zz"]);
        assert_eq!(fields.take("message"), Some(json!("b")));
        assert_eq!(fields.take("message"), None);
        assert_eq!(fields.get("category"), Some(&json!("auth")));
        let repeated: Vec<&str> = fields.scan().problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(repeated, ["message", "zz"]);
        let plain = br#"{"category":"auth","zz":1.5,"message":"b","aa":[1]}"#;
        let value: Value = serde_json::from_slice(plain).expect("json");
        assert_eq!(WireItem::from_value(value), WireItem::from_slice(plain).expect("json"));
    }

    #[test]
    fn anything_but_an_object_is_not_an_object() {
        for text in ["[1, {\"a\": 2}]", "\"s\"", "1", "-1", "1.5", "true", "null"] {
            let read = WireItem::from_slice(text.as_bytes()).expect("json");
            assert_eq!(read, WireItem::NotObject, "{text}");
        }
        assert!(WireItem::from_slice(br#"{"details": 1e400}"#).is_err());
        assert!(WireItem::from_slice(br#"{"unknown": "\ud800"}"#).is_err());
    }
}
