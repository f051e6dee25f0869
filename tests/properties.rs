//! Hostile input, generated: property tests over every parser that sees bytes from
//! clients (event bodies, NDJSON splitting, events, query filters, cursors) and the
//! spool's record format. Each runs `PROPTEST_CASES` cases (256 unless set), so the
//! harness runs in CI in bounded time; a failure prints the shrunk input.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tierlog::event::body::{split_items, BodyError, BodyFormat};
use tierlog::event::wire::WireItem;
use tierlog::event::{json, AuditEvent, EventParser, Limits};
use tierlog::integrity::chain::canonical_json;
use tierlog::keys::Principal;
use tierlog::query::filter::MAX_LIMIT;
use tierlog::query::{Cursor, Filters};

/// Strings with the characters that break naive encoders: control characters,
/// newlines, quotes, backslashes, bidi overrides, astral planes and NUL.
fn nasty_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            any::<char>(),
            Just('\n'),
            Just('\r'),
            Just('\u{0}'),
            Just('\u{1b}'),
            Just('"'),
            Just('\\'),
            Just('\u{202e}'),
            Just('\u{2028}'),
            Just('\u{1F600}'),
        ],
        0..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// Any JSON value, with huge and tiny numbers and nesting deeper than the limit.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![any::<f64>(), Just(1e308), Just(-1e308), Just(5e-324)]
            .prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        nasty_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(24, 200, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Objects shaped like events, with hostile values in every field.
fn event_like() -> impl Strategy<Value = Value> {
    let field = prop_oneof![json_value(), nasty_string().prop_map(Value::from)];
    let category = prop_oneof![
        Just(json!("auth")),
        Just(json!("security")),
        Just(json!("financial")),
        Just(json!("admin")),
        Just(json!("api")),
        nasty_string().prop_map(Value::from),
    ];
    (
        category,
        prop::collection::vec(
            (
                prop_oneof![
                    Just("message"),
                    Just("user_id"),
                    Just("username"),
                    Just("email"),
                    Just("action"),
                    Just("resource"),
                    Just("resource_id"),
                    Just("ip_address"),
                    Just("user_agent"),
                    Just("request_id"),
                    Just("session_id"),
                    Just("details"),
                    Just("changes"),
                    Just("timestamp"),
                    Just("level"),
                    Just("status"),
                    Just("tenant_id"),
                    Just("id"),
                    Just("security"),
                    Just("financial"),
                    Just("unknown_field"),
                ],
                field,
            ),
            0..8,
        ),
        prop::option::of(json_value()),
    )
        .prop_map(|(category, fields, details)| {
            let mut item = Map::new();
            item.insert("category".into(), category);
            for (name, value) in fields {
                item.insert(name.into(), value);
            }
            if let Some(details) = details {
                item.insert("details".into(), json!({ "nested": details }));
            }
            Value::Object(item)
        })
}

fn received() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z").expect("instant").to_utc()
}

/// A line is safe for files, Redis and shippers: one line, valid UTF-8 JSON, no raw
/// control characters.
fn assert_safe_line(line: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(!line.iter().any(|b| *b < 0x20), "raw control byte in {:?}", String::from_utf8_lossy(line));
    prop_assert!(std::str::from_utf8(line).is_ok());
    prop_assert!(serde_json::from_slice::<Value>(line).is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn event_parsing_never_panics_and_accepted_events_encode_to_one_safe_line(item in event_like()) {
        let parser = EventParser::new(Limits::default(), None, received());
        match parser.parse(0, item) {
            Ok(event) => {
                let line = event.to_json_line();
                assert_safe_line(&line)?;
                // The hand-written line is the event's serde encoding, byte for byte.
                prop_assert_eq!(&line, &serde_json::to_vec(&event).expect("json"));
                // What the files and the spool hold reads back as the same event.
                let back: AuditEvent = serde_json::from_slice(&line).expect("the line decodes");
                prop_assert_eq!(back, event);
            }
            Err(errors) => prop_assert!(!errors.is_empty(), "a refusal names its fields"),
        }
    }

    #[test]
    fn strings_and_values_are_written_as_serde_json_writes_them(
        text in prop_oneof![nasty_string(), any::<String>()],
        value in json_value(),
    ) {
        let mut out = Vec::new();
        json::write_str(&text, &mut out);
        prop_assert_eq!(&out, &serde_json::to_vec(&text).expect("json"));
        let mut out = Vec::new();
        json::write_value(&value, &mut out);
        let expected = serde_json::to_vec(&value).expect("json");
        prop_assert_eq!(&out, &expected);
        // serde_json's maps are sorted by key here, so the canonical form is the same.
        prop_assert_eq!(canonical_json(&value), expected);
    }

    #[test]
    fn any_json_value_as_an_event_is_accepted_or_refused_with_reasons(item in json_value()) {
        let parser = EventParser::new(Limits::default(), Some("acme".into()), received());
        match parser.parse(3, item) {
            Ok(event) => {
                prop_assert_eq!(event.tenant_id.as_str(), "acme");
                assert_safe_line(&event.to_json_line())?;
            }
            Err(errors) => prop_assert!(errors.iter().all(|e| e.index == 3)),
        }
    }

    #[test]
    fn an_item_read_from_the_body_bytes_validates_like_its_json_value(
        item in prop_oneof![event_like(), json_value()],
    ) {
        let parser = EventParser::new(Limits::default(), None, received());
        let bytes = serde_json::to_vec(&item).expect("json");
        let read = WireItem::from_slice(&bytes).expect("bytes of a JSON value read back");
        match (parser.parse_item(0, read), parser.parse(0, item)) {
            (Ok(mut from_bytes), Ok(from_value)) => {
                // An item without an id gets a fresh one each time.
                from_bytes.id = from_value.id;
                prop_assert_eq!(from_bytes, from_value);
            }
            (Err(from_bytes), Err(from_value)) => prop_assert_eq!(from_bytes, from_value),
            (from_bytes, from_value) => prop_assert!(false, "{from_bytes:?} against {from_value:?}"),
        }
    }

    #[test]
    fn splitting_arbitrary_bytes_never_panics_and_respects_the_limits(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        ndjson in any::<bool>(),
        max_event in 1usize..512,
        max_events in 1usize..16,
    ) {
        let format = if ndjson { BodyFormat::Ndjson } else { BodyFormat::Json };
        if let Ok(items) = split_items(&body, format, max_event, max_events) {
            prop_assert!(!items.is_empty() && items.len() <= max_events);
        }
    }

    #[test]
    fn ndjson_splits_into_exactly_the_objects_sent_whatever_the_line_endings(
        items in prop::collection::vec(event_like(), 1..12),
        crlf in any::<bool>(),
        blank_lines in 0usize..3,
    ) {
        let mut body = Vec::new();
        for item in &items {
            body.extend(serde_json::to_vec(item).expect("json"));
            body.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            for _ in 0..blank_lines {
                body.extend_from_slice(b" \n");
            }
        }
        let split = split_items(&body, BodyFormat::Ndjson, 1 << 20, 100).expect("valid NDJSON splits");
        prop_assert_eq!(split, items.into_iter().map(WireItem::from_value).collect::<Vec<_>>());
    }

    #[test]
    fn a_json_array_of_more_items_than_allowed_is_refused_before_parsing(count in 2usize..40) {
        let body = serde_json::to_vec(&vec![json!({"category": "auth"}); count]).expect("json");
        let refused = split_items(&body, BodyFormat::Json, 1 << 20, count - 1);
        prop_assert!(matches!(refused, Err(BodyError::TooManyEvents { .. })), "{refused:?}");
    }

    #[test]
    fn query_filters_never_panic_and_keep_the_page_bounded(
        pairs in prop::collection::vec(
            (prop_oneof![
                Just("category".to_owned()), Just("user_id".to_owned()), Just("ip".to_owned()),
                Just("from".to_owned()), Just("to".to_owned()), Just("limit".to_owned()),
                Just("cursor".to_owned()), Just("status".to_owned()), Just("q".to_owned()),
                Just("tenant_id".to_owned()), Just("include_total".to_owned()), nasty_string(),
            ], nasty_string()),
            0..6,
        ),
        raw in nasty_string(),
    ) {
        let encoded = serde_urlencoded::to_string(&pairs).expect("encode");
        for query in [encoded.as_str(), raw.as_str()] {
            if let Ok((filters, rest)) = Filters::parse(Some(query), &Principal::bootstrap(), &[]) {
                prop_assert!((1..=MAX_LIMIT).contains(&filters.limit));
                prop_assert!(rest.is_empty(), "no unknown parameter passes: {rest:?}");
            }
        }
    }

    #[test]
    fn cursors_round_trip_and_forged_ones_are_refused(t in any::<i64>(), id in any::<u128>(), forged in nasty_string()) {
        // Event times, and so issued cursors, lie in the years 0 to 9999.
        const YEAR_0: i64 = -62_167_219_200_000_000;
        const YEAR_10000: i64 = 253_402_300_800_000_000;
        let issued = (YEAR_0..YEAR_10000).contains(&t);
        let cursor = Cursor { t, id: uuid::Uuid::from_u128(id) };
        let query = format!("cursor={}", cursor.encode());
        match Filters::parse(Some(&query), &Principal::bootstrap(), &[]) {
            Ok((filters, _)) => prop_assert_eq!(filters.cursor, Some(cursor)),
            Err(_) => prop_assert!(!issued, "an issued cursor parses: {t}"),
        }
        let edge = Cursor { t: t.rem_euclid(YEAR_10000 - YEAR_0) + YEAR_0, id: uuid::Uuid::from_u128(id) };
        let edge_query = format!("cursor={}", edge.encode());
        prop_assert!(Filters::parse(Some(&edge_query), &Principal::bootstrap(), &[]).is_ok(), "{}", edge.t);
        let forged_query = serde_urlencoded::to_string([("cursor", forged.as_str())]).expect("encode");
        if let Ok((filters, _)) = Filters::parse(Some(&forged_query), &Principal::bootstrap(), &[]) {
            prop_assert!(filters.cursor.is_some() || forged.is_empty());
        }
    }
}
