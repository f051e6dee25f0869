//! Numbers at the edges of what JSON can say: every number a client sends is either
//! stored exactly as sent (same value in the durable tier, the files and the hash) or
//! refused with a 400 naming its field, and no accepted event can make verification
//! fail by itself or hide a later edit.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::behaviour::Backends;
use crate::helpers::KEY;

/// JSON number texts a client may send, heavy on the edges.
fn number_text() -> impl Strategy<Value = String> {
    let digits = |range: std::ops::Range<usize>| prop::collection::vec(0u8..10, range).prop_map(|d| d.into_iter().map(|x| char::from(b'0' + x)).collect::<String>());
    let sign = prop_oneof![Just(""), Just("-")];
    prop_oneof![
        // Negative zero in its spellings.
        prop_oneof![Just("-0"), Just("-0.0"), Just("-0e5"), Just("-0.000E-3"), Just("0"), Just("0.0"), Just("0e-9")].prop_map(String::from),
        // Any float, written shortest as serde_json writes it (always kept), and as
        // Rust writes it (the same but where two shortest texts tie).
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::to_string(&f).expect("finite")),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
        // Subnormals, written shortest or with extra digits.
        (1u64..(1 << 52)).prop_map(|bits| format!("{:e}", f64::from_bits(bits))),
        (sign.clone(), 1u32..10, digits(1..25), 300i32..330).prop_map(|(s, lead, rest, exp)| format!("{s}{lead}.{rest}e-{exp}")),
        // Huge and tiny exponents.
        (sign.clone(), 1u32..10, digits(0..5), -420i32..420).prop_map(|(s, lead, rest, exp)| format!("{s}{lead}.{rest}1e{exp}")),
        // Integers of 15 to 30 digits.
        (sign.clone(), 1u32..10, digits(14..30)).prop_map(|(s, lead, rest)| format!("{s}{lead}{rest}")),
        // Many decimals.
        (sign.clone(), digits(1..4), digits(10..40)).prop_map(|(s, int, frac)| format!("{s}{}.{frac}", int.trim_start_matches('0').to_owned() + "0")),
        // Whole floats of 1e16 and more.
        (sign, 1u32..10, digits(0..4), 16i32..22).prop_map(|(s, lead, rest, exp)| format!("{s}{lead}.{rest}1e{exp}")),
    ]
}

/// The text of the number after `"edge":` in `text`.
fn edge_token(text: &str) -> Option<String> {
    let start = text.find("\"edge\":")? + "\"edge\":".len();
    let token: String = text[start..].chars().take_while(|c| c.is_ascii_digit() || "-+.eE".contains(*c)).collect();
    (!token.is_empty()).then_some(token)
}

/// Whether two number texts have the same exact decimal value (Postgres `numeric`
/// as the referee).
async fn same_value(pool: &sqlx::PgPool, a: &str, b: &str) -> bool {
    sqlx::query_scalar("SELECT $1::numeric = $2::numeric").bind(a).bind(b).fetch_one(pool).await.expect("numeric")
}

/// Ingests one audit event per generated number for one tenant, checks each is kept
/// exactly or refused by field, then that the chain verifies and that an edit of any
/// single row after the edge rows is reported, and only it.
async fn numbers_are_kept_exactly_or_refused_by_field(backends: Backends) {
    // Masking would turn numbers that look like card numbers into strings.
    let app = backends.spawn(|s| s.masking.enabled = false).await;
    let mut runner = TestRunner::new(Config { cases: 1, ..Config::default() });
    let texts: Vec<String> = (0..160).map(|_| number_text().new_tree(&mut runner).expect("value").current()).collect();
    let mut accepted = Vec::new();
    for text in &texts {
        let id = Uuid::new_v4();
        let body = format!(r#"{{"id":"{id}","category":"audit","tenant_id":"edges","message":"n","details":{{"edge":{text},"list":[{text}]}}}}"#);
        let response = app.post_raw("application/json", body.into_bytes(), Some(KEY)).await;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.expect("json");
        match status {
            200 => accepted.push((id, text.clone())),
            400 => {
                let fields: Vec<&str> = answer["error"]["fields"].as_array().unwrap_or_else(|| panic!("{text}: {answer}")).iter().filter_map(|e| e["field"].as_str()).collect();
                assert_eq!(fields, ["details.edge", "details.list[0]"], "{text}: {answer}");
                // A float as serde_json writes it is always kept.
                let float: f64 = text.parse().unwrap_or(f64::NAN);
                assert!(
                    !float.is_finite() || text.starts_with('-') && float == 0.0 || serde_json::to_string(&float).ok().as_deref() != Some(text.as_str()),
                    "{text} is a float as tierlog writes it and was refused: {answer}"
                );
            }
            other => panic!("{text}: {other} {answer}"),
        }
    }
    assert!(accepted.len() >= 40 && accepted.len() < texts.len(), "{} of {} accepted", accepted.len(), texts.len());

    // What the durable tier gives back and what the files hold equal what was sent.
    let (status, stored) = app.send_json(Method::GET, "/audit/logs?tenant_id=edges&limit=500", KEY, None).await;
    assert_eq!(status, 200, "{stored}");
    let lines = std::fs::read_dir(app.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|p| std::fs::read_to_string(p).expect("file").lines().map(str::to_owned).collect::<Vec<_>>())
        .collect::<Vec<_>>();
    for (id, text) in &accepted {
        let row = stored["items"].as_array().expect("items").iter().find(|i| i["id"] == json!(id)).expect("stored");
        let row_text = serde_json::to_string(&row["details"]).expect("json");
        let from_store = edge_token(&row_text).expect("stored number");
        assert!(same_value(&app.pool, text, &from_store).await, "sent {text}, stored {from_store}");
        let line = lines.iter().find(|l| l.contains(&id.to_string())).expect("file line");
        let from_file = edge_token(line).expect("file number");
        assert!(same_value(&app.pool, text, &from_file).await, "sent {text}, file holds {from_file}");
    }

    let report = app.verify_all().await;
    assert_eq!(report["ok"], true, "{report}");

    // Edit one row after the first accepted edge row (itself included): exactly it is
    // reported, and so is a second edit further on.
    if backends.durable() == "postgres" {
        let rows = i64::try_from(accepted.len()).expect("count");
        // The chain's position before its first row (its retention class's base).
        let base: i64 = sqlx::query_scalar("SELECT min(seq) - 1 FROM audit_logs WHERE tenant_id = 'edges'")
            .fetch_one(&app.pool)
            .await
            .expect("base");
        let first = base + rows / 3;
        let second = base + rows - 1;
        app.tamper(&format!("UPDATE audit_logs SET message = 'edited' WHERE tenant_id = 'edges' AND seq IN ({first}, {second})")).await;
        let report = app.verify_all().await;
        let chain = report["chains"].as_array().expect("chains").iter().find(|c| c["tenant_id"] == "edges").expect("the edges chain");
        assert_eq!(chain["break_count"], 2, "{report}");
        assert_eq!(chain["breaks"], json!([{"kind": "content_changed", "seq": first}, {"kind": "content_changed", "seq": second}]));
    }
    app.stop().await;
}

behaviour!(numbers_are_kept_exactly_or_refused_by_field);
