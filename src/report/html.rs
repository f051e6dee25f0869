//! The printable form of a report: one HTML page, its styles and charts inline (no
//! outside asset: it prints and archives as it is), made from the signed JSON,
//! with the signature's key and fingerprint at the top.

use std::fmt::Write as _;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

/// The first 16 bytes of SHA-256 of the signature, in hex groups: what a reader
/// compares with the JSON's `signature`.
pub fn fingerprint(report: &Map<String, Value>) -> String {
    fingerprint_of(report.get("signature").and_then(Value::as_str).unwrap_or(""))
}

/// The fingerprint of a signature (base64, as the report holds it).
pub fn fingerprint_of(signature: &str) -> String {
    let digest = Sha256::digest(signature.as_bytes());
    hex::encode(&digest[..16]).as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

fn table(out: &mut String, headers: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    out.push_str("<table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    let mut any = false;
    for row in rows {
        any = true;
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    if !any {
        let _ = write!(out, "<tr><td colspan=\"{}\" class=\"none\">None in the period.</td></tr>", headers.len());
    }
    out.push_str("</tbody></table>");
}

fn items<'v>(value: &'v Value, pointer: &str) -> &'v [Value] {
    value.pointer(pointer).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Logins and failed logins per day, as an SVG bar chart.
fn chart(days: &[Value]) -> String {
    let max = days.iter().map(|d| d["logins"].as_u64().unwrap_or(0).max(d["failed_logins"].as_u64().unwrap_or(0))).max().unwrap_or(0).max(1);
    let width = 14 * days.len().max(1) + 40;
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"140\" role=\"img\" aria-label=\"logins and failed logins per day\">");
    for (i, day) in days.iter().enumerate() {
        let x = 30 + i * 14;
        for (j, (field, color)) in [("logins", "#2b6cb0"), ("failed_logins", "#c53030")].iter().enumerate() {
            let n = day[*field].as_u64().unwrap_or(0);
            let h = (n as f64 / max as f64 * 110.0).round() as u64;
            let _ = write!(svg, "<rect x=\"{}\" y=\"{}\" width=\"6\" height=\"{h}\" fill=\"{color}\"><title>{} {field}: {n}</title></rect>", x + j * 6, 120 - h, show(&day["day"]));
        }
    }
    let _ = write!(svg, "<text x=\"0\" y=\"12\" font-size=\"10\">{max}</text><text x=\"0\" y=\"120\" font-size=\"10\">0</text></svg>");
    svg
}

/// The page.
pub fn render(report: &Map<String, Value>) -> String {
    let r = Value::Object(report.clone());
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Compliance report — {tenant}</title><style>\
body{{font:13px/1.45 system-ui,sans-serif;margin:24px;color:#1a202c}}h1{{font-size:20px}}h2{{font-size:16px;margin-top:28px;border-bottom:1px solid #cbd5e0}}\
table{{border-collapse:collapse;margin:8px 0;width:100%}}td,th{{border:1px solid #e2e8f0;padding:3px 6px;text-align:left;vertical-align:top}}th{{background:#f7fafc}}\
.none{{color:#718096}}.sig{{background:#f7fafc;border:1px solid #cbd5e0;padding:8px}}.bad{{color:#c53030;font-weight:bold}}.ok{{color:#276749;font-weight:bold}}\
@media print{{body{{margin:0}}h2{{page-break-after:avoid}}}}</style></head><body>",
        tenant = show(&r["tenant_id"])
    );
    let _ = write!(
        out,
        "<h1>Compliance report — tenant {}</h1><p>Period {} to {} · generated {} by {}</p>\
<p class=\"sig\">Signed with Ed25519 key <b>{}</b> · signature fingerprint <b>{}</b> · check the JSON form with <code>tierlog verify-report FILE --public-key KEY</code></p>",
        show(&r["tenant_id"]), show(&r["from"]), show(&r["to"]), show(&r["generated_at"]), show(&r["generator"]), show(&r["key_id"]), fingerprint(report)
    );

    let totals = &r["authentication"]["totals"];
    out.push_str("<h2>Authentication</h2>");
    table(&mut out, &["logins", "failed logins", "lockouts", "resets", "logouts"], std::iter::once(
        ["logins", "failed_logins", "lockouts", "resets", "logouts"].iter().map(|k| show(&totals[*k])).collect(),
    ));
    out.push_str(&chart(items(&r, "/authentication/by_day")));
    out.push_str("<h3>Top failing users</h3>");
    table(&mut out, &["user", "failures"], items(&r, "/authentication/top_failing_users").iter().map(|u| vec![show(&u["user_id"]), show(&u["failures"])]));
    out.push_str("<h3>Top failing addresses</h3>");
    table(&mut out, &["address", "failures"], items(&r, "/authentication/top_failing_ips").iter().map(|u| vec![show(&u["ip_address"]), show(&u["failures"])]));
    out.push_str("<h3>Accounts locked</h3>");
    table(&mut out, &["user", "locked at", "ended", "by", "seconds"], items(&r, "/authentication/lockouts").iter().map(|l| {
        vec![show(&l["user_id"]), show(&l["at"]), show(&l["ended_at"]), show(&l["ended_by"]), show(&l["locked_seconds"])]
    }));

    let _ = write!(out, "<h2>Privileged changes ({})</h2>", show(&r["privileged_changes"]["count"]));
    table(&mut out, &["when", "who", "action", "what", "before", "after"], items(&r, "/privileged_changes/items").iter().map(|c| {
        vec![show(&c["at"]), show(&c["user_id"]), show(&c["action"]), format!("{} {}", show(&c["resource"]), show(&c["resource_id"])), show(&c["before"]), show(&c["after"])]
    }));

    out.push_str("<h2>Access to the logs</h2>");
    let by_action = r["log_access"]["by_action"].as_object().cloned().unwrap_or_default();
    table(&mut out, &["access", "records"], by_action.iter().map(|(k, v)| vec![esc(k), show(v)]));
    table(&mut out, &["when", "who", "action", "endpoint", "results"], items(&r, "/log_access/exports_verifications_erasures").iter().map(|a| {
        vec![show(&a["at"]), show(&a["by"]), show(&a["action"]), show(&a["endpoint"]), show(&a["result_count"])]
    }));

    out.push_str("<h2>Security events</h2>");
    table(&mut out, &["type", "severity", "events"], items(&r, "/security").iter().map(|s| vec![show(&s["event_type"]), show(&s["severity"]), show(&s["count"])]));
    out.push_str("<h2>Financial activity</h2>");
    table(&mut out, &["currency", "status", "transactions", "amount"], items(&r, "/financial").iter().map(|f| {
        vec![show(&f["currency"]), show(&f["status"]), show(&f["count"]), show(&f["amount"])]
    }));

    out.push_str("<h2>Data lifecycle</h2>");
    let days = r["lifecycle"]["retention_days_in_force"].as_object().cloned().unwrap_or_default();
    table(&mut out, &["category", "retention (days)"], days.iter().map(|(k, v)| vec![esc(k), show(v)]));
    let _ = write!(out, "<p>Legal hold: {}</p>", show(&r["lifecycle"]["legal_hold"]));
    for (title, pointer) in [("Retention runs", "/lifecycle/retention_runs"), ("Retention changes", "/lifecycle/retention_changes"), ("Erasures (receipts)", "/lifecycle/erasures")] {
        let _ = write!(out, "<h3>{title}</h3>");
        table(&mut out, &["when", "action", "details"], items(&r, pointer).iter().map(|e| vec![show(&e["at"]), show(&e["action"]), show(&e["details"])]));
    }

    let integrity = &r["integrity"];
    let verdict = if integrity["ok"] == Value::Bool(true) { "<span class=\"ok\">every chain holds</span>" } else { "<span class=\"bad\">BREAKS FOUND</span>" };
    let _ = write!(out, "<h2>Integrity</h2><p>{verdict}: {} chain(s), {} row(s) checked.</p>", show(&integrity["chains_verified"]), show(&integrity["rows_checked"]));
    table(&mut out, &["table", "shard", "rows", "first seq", "head seq", "checkpoints", "holds", "first break"], items(&r, "/integrity/chains").iter().map(|c| {
        vec![show(&c["table"]), show(&c["shard"]), show(&c["rows_checked"]), show(&c["first_seq"]), show(&c["head_seq"]), show(&c["checkpoints"]), show(&c["ok"]), show(c.get("first_break").unwrap_or(&Value::Null))]
    }));
    out.push_str("<h3>Signed checkpoints</h3>");
    table(&mut out, &["created", "table", "seq", "reason", "key"], items(&r, "/integrity/checkpoints").iter().map(|c| {
        vec![show(&c["created_at"]), show(&c["table"]), show(&c["seq"]), show(&c["reason"]), show(&c["key_id"])]
    }));
    out.push_str("</body></html>\n");
    out
}
