//! `GET /audit/export`: every matching persisted row as NDJSON or CSV, streamed page
//! by page (1,000 rows at a time), so memory stays flat whatever the size.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::access::{self, Access};
use super::auth::require;
use super::error::ApiError;
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::extract::Caller;
use super::query::categories_for;
use super::AppState;
use crate::event::Category;
use crate::keys::{Permission, Principal};
use crate::query::Filters;
use crate::tiers::database::Database;
use crate::tiers::postgres::StoredRow;
use crate::tiers::Table;

/// Rows fetched per round trip.
const CHUNK: usize = 1000;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

/// Every field of an exported row, in this order. The objects (`details`, `changes`,
/// `security`, `financial`) are one column each, holding their JSON (as the NDJSON
/// export writes them); an absent field is an empty cell.
const CSV_COLUMNS: [&str; 28] = [
    "table", "seq", "hash", "id", "timestamp", "received_at", "tenant_id", "category", "level", "action", "status",
    "event_type", "logger", "message", "application", "user_id", "username", "email", "ip_address", "user_agent",
    "resource", "resource_id", "request_id", "session_id", "details", "changes", "security", "financial",
];

/// One CSV field: quoted when needed; a leading `=`, `+`, `-`, `@` is prefixed with
/// `'` so a spreadsheet never runs it as a formula.
fn csv_field(raw: &str, out: &mut String) {
    let defused = matches!(raw.chars().next(), Some('=' | '+' | '-' | '@' | '\t' | '\r'));
    let value = if defused { format!("'{raw}") } else { raw.to_owned() };
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&value);
    }
}

fn csv_row(item: &Value) -> String {
    let mut line = String::new();
    for (i, column) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        let text = match &item[*column] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        csv_field(&text, &mut line);
    }
    line.push_str("\r\n");
    line
}

fn encode(rows: &[StoredRow], format: Format) -> Bytes {
    let mut out = String::new();
    for row in rows {
        let item = row.to_item();
        match format {
            Format::Ndjson => {
                out.push_str(&item.to_string());
                out.push('\n');
            }
            Format::Csv => out.push_str(&csv_row(&item)),
        }
    }
    Bytes::from(out)
}

/// Where the stream is: which table, and the filters (with the cursor) for its next page.
struct Progress {
    db: Database,
    tables: Vec<(Table, Vec<Category>)>,
    filters: Filters,
    format: Format,
}

async fn next_chunk(mut progress: Progress) -> Option<(Result<Bytes, std::io::Error>, Progress)> {
    loop {
        let (table, categories) = progress.tables.first()?.clone();
        match progress.db.page(table, &progress.filters, &categories).await {
            Err(e) => {
                tracing::error!(error = ?e, "export stopped by a database error");
                progress.tables.clear();
                return Some((Err(std::io::Error::other("export interrupted")), progress));
            }
            Ok(result) => {
                match result.next_cursor {
                    Some(cursor) => progress.filters.cursor = Some(cursor),
                    None => {
                        progress.tables.remove(0);
                        progress.filters.cursor = None;
                    }
                }
                if !result.items.is_empty() {
                    return Some((Ok(encode(&result.items, progress.format)), progress));
                }
            }
        }
    }
}

#[utoipa::path(get, path = "/audit/export", tag = "read", params(QueryParams, ExportParams),
    responses((status = 200, description = "streamed NDJSON (format=ndjson, the default) or CSV (format=csv)", content((String = "application/x-ndjson"), (String = "text/csv"))), CommonErrors))]
pub(super) async fn export(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(&principal, Permission::LogsExport)?;
    let (mut filters, extra) = Filters::parse(query.as_deref(), &principal, &["format", "table"])?;
    if filters.cursor.is_some() || filters.include_total || query.as_deref().unwrap_or("").split('&').any(|p| p.starts_with("limit=")) {
        return Err(ApiError::bad_request("limit, cursor and include_total do not apply to exports"));
    }
    let param = |name: &str| extra.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let format = match param("format").unwrap_or("ndjson") {
        "ndjson" => Format::Ndjson,
        "csv" => Format::Csv,
        _ => return Err(ApiError::bad_request("format: must be ndjson or csv")),
    };
    let only = match param("table") {
        None => None,
        Some(name) => Some(Table::parse(name).ok_or_else(|| {
            ApiError::bad_request("table: must be audit_logs, security_events or financial_audit_logs")
        })?),
    };
    let categories = categories_for(&principal, &Category::ALL, &filters)?;
    let tables: Vec<(Table, Vec<Category>)> = Table::ALL
        .into_iter()
        .filter(|t| only.is_none_or(|o| o == *t))
        .map(|t| (t, state.settings.categories_in(t).into_iter().filter(|c| categories.contains(c)).collect::<Vec<_>>()))
        .filter(|(_, cats)| !cats.is_empty())
        .collect();
    let pg = state.reader()?;
    filters.limit = CHUNK;

    let mut details = Map::new();
    details.insert("query".into(), query.clone().unwrap_or_default().into());
    access::record(
        &state,
        &principal,
        Access { action: "logs.exported", tenant: filters.tenant.as_deref(), endpoint: "GET /audit/export", caller: &caller, details },
    )
    .await?;

    let progress = Progress { db: pg.clone(), tables, filters, format };
    let rows = futures_util::stream::unfold(progress, next_chunk);
    let (content_type, extension) = match format {
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let body = match format {
        Format::Ndjson => Body::from_stream(rows),
        Format::Csv => {
            let mut header_line = CSV_COLUMNS.join(",");
            header_line.push_str("\r\n");
            let head = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(header_line)) });
            Body::from_stream(futures_util::StreamExt::chain(head, rows))
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"tierlog-export.{extension}\"")),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        csv_field("plain", &mut out);
        out.push('|');
        csv_field("a,b \"c\"\nd", &mut out);
        out.push('|');
        csv_field("=HYPERLINK(\"x\")", &mut out);
        assert_eq!(out, "plain|\"a,b \"\"c\"\"\nd\"|\"'=HYPERLINK(\"\"x\"\")\"");
    }
}
