//! The PDF form of a report, written in the process (`pdf-writer`: no browser, no
//! outside binary) from the same signed JSON as the HTML, with the signing key and
//! the signature's fingerprint on its first page. Text is set in Helvetica (one of
//! the PDF base fonts: nothing embedded); charts are filled rectangles.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};
use serde_json::{Map, Value};

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 842.0;
const MARGIN: f32 = 40.0;
const FONT: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// Text as WinAnsi bytes (what the base fonts read): ASCII as it is, a few common
/// signs mapped, anything else as `?`.
fn ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '·' => 0xB7,
            '—' | '–' => b'-',
            'é' => 0xE9,
            'è' => 0xE8,
            'ü' => 0xFC,
            'ö' => 0xF6,
            'ä' => 0xE4,
            _ => b'?',
        })
        .collect()
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Cuts `text` to what fits `width` points at `size` (Helvetica averages about half
/// the size per character).
fn fit(text: &str, width: f32, size: f32) -> String {
    let max = ((width / (size * 0.52)) as usize).max(4);
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(max - 3).collect::<String>())
    }
}

/// Pages being laid out, top to bottom.
struct Layout {
    pages: Vec<Content>,
    y: f32,
}

impl Layout {
    fn new() -> Layout {
        Layout { pages: vec![Content::new()], y: HEIGHT - MARGIN }
    }

    fn page(&mut self) -> &mut Content {
        self.pages.last_mut().expect("a page")
    }

    /// Room for `height` points, on a new page if need be.
    fn room(&mut self, height: f32) {
        if self.y - height < MARGIN {
            self.pages.push(Content::new());
            self.y = HEIGHT - MARGIN;
        }
    }

    fn text(&mut self, x: f32, size: f32, bold: bool, text: &str) {
        let y = self.y;
        let page = self.page();
        page.begin_text();
        page.set_font(if bold { BOLD } else { FONT }, size);
        page.next_line(x, y);
        page.show(Str(&ansi(text)));
        page.end_text();
    }

    fn line(&mut self, size: f32, bold: bool, text: &str) {
        self.room(size * 1.5);
        self.y -= size * 1.4;
        self.text(MARGIN, size, bold, text);
    }

    fn heading(&mut self, text: &str) {
        self.room(40.0);
        self.y -= 8.0;
        self.line(12.0, true, text);
    }

    /// A table: a bold header row, then the rows, each cell cut to its column.
    fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        let width = (WIDTH - 2.0 * MARGIN) / headers.len() as f32;
        let size = 8.0;
        let row = |layout: &mut Layout, cells: &[String], bold: bool| {
            layout.room(size * 1.6);
            layout.y -= size * 1.5;
            for (i, cell) in cells.iter().enumerate() {
                layout.text(MARGIN + i as f32 * width, size, bold, &fit(cell, width - 4.0, size));
            }
        };
        row(self, &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(), true);
        if rows.is_empty() {
            row(self, &["none in the period".to_owned()], false);
        }
        for cells in rows {
            row(self, cells, false);
        }
    }

    /// Logins and failed logins per day as bars.
    fn chart(&mut self, days: &[Value]) {
        if days.is_empty() {
            return;
        }
        let height = 90.0;
        self.room(height + 20.0);
        self.y -= height + 10.0;
        let base = self.y;
        let max = days.iter().map(|d| d["logins"].as_u64().unwrap_or(0).max(d["failed_logins"].as_u64().unwrap_or(0))).max().unwrap_or(0).max(1);
        let step = ((WIDTH - 2.0 * MARGIN - 30.0) / days.len() as f32).min(14.0);
        let page = self.page();
        for (i, day) in days.iter().enumerate() {
            for (j, (field, (r, g, b))) in [("logins", (0.17, 0.42, 0.69)), ("failed_logins", (0.77, 0.19, 0.19))].iter().enumerate() {
                let n = day[*field].as_u64().unwrap_or(0) as f32;
                let h = n / max as f32 * height;
                page.set_fill_rgb(*r, *g, *b);
                page.rect(MARGIN + 30.0 + i as f32 * step + j as f32 * step / 2.5, base, step / 2.5, h);
                page.fill_nonzero();
            }
        }
        page.set_fill_rgb(0.0, 0.0, 0.0);
        self.y = base + height;
        self.text(MARGIN, 7.0, false, &max.to_string());
        self.y = base;
        self.text(MARGIN, 7.0, false, "0");
        self.line(7.0, false, "logins (blue) and failed logins (red) per day");
    }
}

fn items<'v>(value: &'v Value, pointer: &str) -> &'v [Value] {
    value.pointer(pointer).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn rows(list: &[Value], fields: &[&str]) -> Vec<Vec<String>> {
    list.iter().map(|item| fields.iter().map(|f| show(item.pointer(f).unwrap_or(&Value::Null))).collect()).collect()
}

/// The document.
pub fn render(report: &Map<String, Value>) -> Vec<u8> {
    let r = Value::Object(report.clone());
    let mut l = Layout::new();
    l.line(16.0, true, &format!("Compliance report - tenant {}", show(&r["tenant_id"])));
    l.line(9.0, false, &format!("Period {} to {}", show(&r["from"]), show(&r["to"])));
    l.line(9.0, false, &format!("Generated {} by {}", show(&r["generated_at"]), show(&r["generator"])));
    l.line(9.0, true, &format!("Signed with Ed25519 key {}", show(&r["key_id"])));
    l.line(9.0, true, &format!("Signature fingerprint {}", super::html::fingerprint(report)));
    l.line(8.0, false, "The JSON form carries the signature: tierlog verify-report FILE --public-key KEY");

    l.heading("Authentication");
    let t = &r["authentication"]["totals"];
    l.table(&["logins", "failed logins", "lockouts", "resets", "logouts"], &[["logins", "failed_logins", "lockouts", "resets", "logouts"].iter().map(|k| show(&t[*k])).collect()]);
    l.chart(items(&r, "/authentication/by_day"));
    l.line(9.0, true, "Top failing users");
    l.table(&["user", "failures"], &rows(items(&r, "/authentication/top_failing_users"), &["/user_id", "/failures"]));
    l.line(9.0, true, "Top failing addresses");
    l.table(&["address", "failures"], &rows(items(&r, "/authentication/top_failing_ips"), &["/ip_address", "/failures"]));
    l.line(9.0, true, "Accounts locked");
    l.table(&["user", "locked at", "ended at", "ended by", "seconds"], &rows(items(&r, "/authentication/lockouts"), &["/user_id", "/at", "/ended_at", "/ended_by", "/locked_seconds"]));

    l.heading(&format!("Privileged changes ({})", show(&r["privileged_changes"]["count"])));
    l.table(&["when", "who", "action", "resource", "before", "after"], &rows(items(&r, "/privileged_changes/items"), &["/at", "/user_id", "/action", "/resource_id", "/before", "/after"]));

    l.heading("Access to the logs");
    let by_action: Vec<Vec<String>> = r["log_access"]["by_action"].as_object().map(|m| m.iter().map(|(k, v)| vec![k.clone(), show(v)]).collect()).unwrap_or_default();
    l.table(&["access", "records"], &by_action);
    l.table(&["when", "who", "action", "endpoint"], &rows(items(&r, "/log_access/exports_verifications_erasures"), &["/at", "/by", "/action", "/endpoint"]));

    l.heading("Security events");
    l.table(&["type", "severity", "events"], &rows(items(&r, "/security"), &["/event_type", "/severity", "/count"]));
    l.heading("Financial activity");
    l.table(&["currency", "status", "transactions", "amount"], &rows(items(&r, "/financial"), &["/currency", "/status", "/count", "/amount"]));

    l.heading("Data lifecycle");
    let days: Vec<Vec<String>> = r["lifecycle"]["retention_days_in_force"].as_object().map(|m| m.iter().map(|(k, v)| vec![k.clone(), show(v)]).collect()).unwrap_or_default();
    l.table(&["category", "retention (days)"], &days);
    l.line(9.0, false, &format!("Legal hold: {}", show(&r["lifecycle"]["legal_hold"])));
    for (title, pointer) in [("Retention runs", "/lifecycle/retention_runs"), ("Retention changes", "/lifecycle/retention_changes"), ("Erasures (receipts)", "/lifecycle/erasures")] {
        l.line(9.0, true, title);
        l.table(&["when", "action", "details"], &rows(items(&r, pointer), &["/at", "/action", "/details"]));
    }

    l.heading("Integrity");
    let integrity = &r["integrity"];
    let verdict = if integrity["ok"] == Value::Bool(true) { "every chain holds" } else { "BREAKS FOUND" };
    l.line(10.0, true, &format!("{verdict}: {} chain(s), {} row(s) checked", show(&integrity["chains_verified"]), show(&integrity["rows_checked"])));
    l.table(&["table", "shard", "rows", "head seq", "checkpoints", "holds"], &rows(items(&r, "/integrity/chains"), &["/table", "/shard", "/rows_checked", "/head_seq", "/checkpoints", "/ok"]));
    l.line(9.0, true, "Signed checkpoints");
    l.table(&["created", "table", "seq", "reason", "key"], &rows(items(&r, "/integrity/checkpoints"), &["/created_at", "/table", "/seq", "/reason", "/key_id"]));

    // The document: catalog, page tree, fonts, then each page and its content.
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let (font, bold) = (Ref::new(3), Ref::new(4));
    let first = 5;
    let pages: Vec<Ref> = (0..l.pages.len()).map(|i| Ref::new(first + 2 * i as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(pages.iter().copied()).count(pages.len() as i32);
    pdf.type1_font(font).base_font(Name(b"Helvetica")).encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold).base_font(Name(b"Helvetica-Bold")).encoding_predefined(Name(b"WinAnsiEncoding"));
    for (i, content) in l.pages.into_iter().enumerate() {
        let id = pages[i];
        let content_id = Ref::new(id.get() + 1);
        let mut page = pdf.page(id);
        page.media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT));
        page.parent(tree);
        page.contents(content_id);
        let mut resources = page.resources();
        resources.fonts().pair(FONT, font).pair(BOLD, bold);
        resources.finish();
        page.finish();
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}
