//! `GET /audit/reports`: a signed compliance report of one tenant and period
//! ([`crate::report`]), as JSON (signed, canonical), a printable HTML page or a PDF.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, Response, StatusCode};
use serde_json::Map;

use super::access::{self, Access};
use super::error::ApiError;
use super::extract::{scoped_request, Caller};
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::AppState;
use crate::keys::{Permission, Principal};
use crate::report::{Period, ReportError};
use crate::retention::Policies;

/// The forms of a report.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // A description: the query is read as text.
pub enum ReportFormat {
    Json,
    Html,
    Pdf,
}

/// `GET /audit/reports`.
#[utoipa::path(get, path = "/audit/reports", tag = "integrity",
    description = "a compliance report of one tenant and period (logs.export): authentication, privileged changes, access to the logs, security and financial activity, data lifecycle and integrity; JSON signed with the deployment's checkpoint key (check it offline with `tierlog verify-report`), or a printable HTML page, or a PDF with the signature's fingerprint on its first page",
    params(
        ("tenant_id" = String, Query, description = "the tenant (a tenant key may only name its own)", pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$"),
        ("from" = Option<String>, Query, description = "RFC 3339; default 30 days before `to`; not before the retention horizon", format = DateTime),
        ("to" = Option<String>, Query, description = "RFC 3339; default now", format = DateTime),
        ("format" = Option<ReportFormat>, Query, description = "json (default, signed), html or pdf"),
    ),
    responses((status = 200, description = "the report (application/json, signed; text/html; application/pdf); the X-Report-Signature header holds its signature (the fingerprint on the page and the PDF's first page is made from it)", body = Object), CommonErrors))]
pub(super) async fn report(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response<Body>, ApiError> {
    let (params, tenant) = scoped_request(&principal, Permission::LogsExport, query.as_deref(), &["from", "to", "format"])?;
    let tenant = tenant.ok_or_else(|| ApiError::bad_request("tenant_id: a report is of one tenant; name it"))?;
    let format = match params.get("format").map(String::as_str) {
        None => "json",
        Some(format @ ("json" | "html" | "pdf")) => format,
        Some(_) => return Err(ApiError::bad_request("format: json, html or pdf")),
    };
    let pg = state.reader()?;
    let now = state.clock.now();
    let policies = pg.load_policies(&Policies::from_settings(&state.settings)).await.map_err(ApiError::read_failed)?;
    let horizon = crate::report::horizon(&policies, &tenant, now);
    let period = Period::parse(tenant, params.get("from").map(String::as_str), params.get("to").map(String::as_str), now, horizon)
        .map_err(|(_, why)| ApiError::bad_request(why))?;
    let keyring = state.integrity.keyring(pg).await;
    let report = crate::report::build(pg, &period, &policies, &keyring, state.integrity.signer(), now).await.map_err(|e| match e {
        ReportError::NeedsPostgres => ApiError::not_found(e.to_string()),
        ReportError::Database(e) => ApiError::read_failed(e),
    })?;
    let mut details = Map::new();
    details.insert("from".into(), period.from.to_rfc3339().into());
    details.insert("to".into(), period.to.to_rfc3339().into());
    details.insert("format".into(), format.into());
    access::record(
        &state,
        &principal,
        Access { action: "reports.generated", tenant: Some(&period.tenant), endpoint: "GET /audit/reports", caller: &caller, details },
    )
    .await?;
    // The signature, whatever the form: what a PDF's or page's fingerprint is made of.
    let signature = report.get("signature").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
    let (content_type, body) = match format {
        "html" => ("text/html; charset=utf-8", crate::report::html::render(&report).into_bytes()),
        "pdf" => ("application/pdf", crate::report::pdf::render(&report)),
        _ => ("application/json", serde_json::to_vec_pretty(&serde_json::Value::Object(report)).map_err(|e| ApiError::internal("report", &e))?),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header("x-report-signature", signature)
        .body(Body::from(body))
        .map_err(|e| ApiError::internal("report", &e))
}
