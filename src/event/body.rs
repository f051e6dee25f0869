//! Splits a request body into wire items: one JSON object, a JSON array of them, or
//! NDJSON (one object per line).

use serde_json::value::RawValue;

use super::exact;
use super::parse::FieldError;
use super::wire::WireItem;

/// How the body is framed, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: an object or an array of objects.
    Json,
    /// `application/x-ndjson` (or `application/jsonl`): one object per line.
    Ndjson,
}

impl BodyFormat {
    /// The format for a `Content-Type` header value, ignoring parameters.
    pub fn from_content_type(content_type: &str) -> Option<BodyFormat> {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(BodyFormat::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl"
            | "application/x-jsonlines" => Some(BodyFormat::Ndjson),
            _ => None,
        }
    }
}

/// Why a body could not be split into items.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the body is empty")]
    Empty,
    #[error("item {index} is not valid JSON: {reason}")]
    Malformed { index: usize, reason: String },
    /// Valid JSON but for numbers out of the range of a 64-bit float, named by field.
    #[error("item {} has numbers out of range", .0.first().map_or(0, |e| e.index))]
    NumbersOutOfRange(Vec<FieldError>),
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("item {index} is {size} bytes, more than the {limit}-byte limit per event")]
    EventTooLarge { index: usize, size: usize, limit: usize },
    #[error("the request holds {count} events, more than the {limit} allowed")]
    TooManyEvents { count: usize, limit: usize },
}

/// Splits `body` into items, each read into its fields, enforcing the per-event size
/// and the count limit before any item is read.
pub fn split_items(
    body: &[u8],
    format: BodyFormat,
    max_event_bytes: usize,
    max_batch_events: usize,
) -> Result<Vec<WireItem>, BodyError> {
    let raw_items: Vec<(usize, &[u8])> = match format {
        BodyFormat::Json => json_items(body)?,
        BodyFormat::Ndjson => body
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .enumerate()
            .collect(),
    };
    // An empty JSON array is an empty batch; a body with no JSON at all is an error.
    if raw_items.is_empty() && format == BodyFormat::Ndjson {
        return Err(BodyError::Empty);
    }
    if raw_items.len() > max_batch_events {
        return Err(BodyError::TooManyEvents { count: raw_items.len(), limit: max_batch_events });
    }
    if let Some((index, raw)) = raw_items.iter().find(|(_, raw)| raw.len() > max_event_bytes) {
        return Err(BodyError::EventTooLarge { index: *index, size: raw.len(), limit: max_event_bytes });
    }
    raw_items
        .into_iter()
        .map(|(index, raw)| WireItem::from_slice(raw).map_err(|e| unreadable(index, raw, &e)))
        .collect()
}

/// Why an item could not be read: its out-of-range numbers by field when that is
/// what the parser stumbled on, or the parser's own words.
fn unreadable(index: usize, raw: &[u8], error: &serde_json::Error) -> BodyError {
    let out_of_range: Vec<FieldError> = exact::scan(raw)
        .problems
        .into_iter()
        .filter(|p| p.reason == exact::OUT_OF_RANGE)
        .map(|p| FieldError { index, field: p.field, reason: p.reason.to_owned() })
        .collect();
    if out_of_range.is_empty() {
        BodyError::Malformed { index, reason: error.to_string() }
    } else {
        BodyError::NumbersOutOfRange(out_of_range)
    }
}

fn json_items(body: &[u8]) -> Result<Vec<(usize, &[u8])>, BodyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(BodyError::Empty),
        Some(b'[') => {
            let items: Vec<&RawValue> =
                serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
            Ok(items.into_iter().map(|raw| raw.get().as_bytes()).enumerate().collect())
        }
        Some(_) => {
            let raw: &RawValue =
                serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
            Ok(vec![(0, raw.get().as_bytes())])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_map_to_formats_ignoring_parameters() {
        assert_eq!(BodyFormat::from_content_type("application/json; charset=utf-8"), Some(BodyFormat::Json));
        assert_eq!(BodyFormat::from_content_type("application/x-ndjson"), Some(BodyFormat::Ndjson));
        assert_eq!(BodyFormat::from_content_type("text/plain"), None);
    }

    #[test]
    fn an_array_and_ndjson_give_the_same_items() {
        let array = br#"[{"a":1}, {"b":2}]"#;
        let ndjson = b"{\"a\":1}\r\n\n{\"b\":2}\n";
        let from_array = split_items(array, BodyFormat::Json, 100, 10).expect("array");
        let from_lines = split_items(ndjson, BodyFormat::Ndjson, 100, 10).expect("ndjson");
        assert_eq!(from_array, from_lines);
        assert_eq!(from_array.len(), 2);
    }

    #[test]
    fn limits_are_enforced_before_parsing() {
        let body = br#"[{"a":"0123456789"}, {}]"#;
        assert_eq!(
            split_items(body, BodyFormat::Json, 10, 10),
            Err(BodyError::EventTooLarge { index: 0, size: 18, limit: 10 })
        );
        assert_eq!(
            split_items(body, BodyFormat::Json, 100, 1),
            Err(BodyError::TooManyEvents { count: 2, limit: 1 })
        );
    }

    #[test]
    fn numbers_out_of_range_are_named_by_field() {
        let body = b"{}\n{\"details\":{\"big\":[1e400]}}\n";
        match split_items(body, BodyFormat::Ndjson, 100, 10) {
            Err(BodyError::NumbersOutOfRange(fields)) => {
                assert_eq!(fields.len(), 1);
                assert_eq!((fields[0].index, fields[0].field.as_str()), (1, "details.big[0]"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broken_ndjson_line_is_named_by_index() {
        let body = b"{}\n{oops\n";
        assert!(matches!(
            split_items(body, BodyFormat::Ndjson, 100, 10),
            Err(BodyError::Malformed { index: 1, .. })
        ));
        assert_eq!(split_items(b"  ", BodyFormat::Json, 100, 10), Err(BodyError::Empty));
        assert_eq!(split_items(b"\n\n", BodyFormat::Ndjson, 100, 10), Err(BodyError::Empty));
        assert_eq!(split_items(b" [ ] ", BodyFormat::Json, 100, 10), Ok(Vec::new()));
    }
}
