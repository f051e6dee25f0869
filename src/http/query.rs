//! The table endpoints: `GET /audit/logs`, `/audit/security-events`,
//! `/audit/financial`. Each answers `{"items", "next_cursor", "total"?}`, newest
//! first, limited to the tenant and categories the key may see, and records the read.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use super::access::{self, Access};
use super::error::ApiError;
use super::extract::RequestId;
use super::AppState;
use crate::event::Category;
use crate::keys::Principal;
use crate::query::{visible_categories, view_permission, Filters, QueryError};
use crate::tiers::postgres::query::page;
use crate::tiers::Table;

/// A page of items.
#[derive(Debug, Serialize)]
pub struct ListResponse {
    pub items: Vec<Value>,
    pub next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match e {
            QueryError::ForeignTenant => ApiError::forbidden_tenant(),
            QueryError::Invalid { .. } => ApiError::bad_request(e.to_string()),
        }
    }
}

/// The categories of `candidates` the key may view and the filter asks for; 403 when
/// the key may view none of the endpoint's categories.
pub(super) fn categories_for(
    principal: &Principal,
    candidates: &[Category],
    filters: &Filters,
) -> Result<Vec<Category>, ApiError> {
    let visible: Vec<Category> =
        visible_categories(principal).into_iter().filter(|c| candidates.contains(c)).collect();
    if visible.is_empty() {
        let needed = candidates.first().map(|c| view_permission(*c).as_str()).unwrap_or("logs.auth.view");
        return Err(ApiError::forbidden(needed));
    }
    match filters.category {
        None => Ok(visible),
        Some(category) if visible.contains(&category) => Ok(vec![category]),
        Some(category) if candidates.contains(&category) => Err(ApiError::forbidden(view_permission(category).as_str())),
        Some(_) => Ok(Vec::new()),
    }
}

async fn list_table(
    state: &AppState,
    principal: &Principal,
    request_id: Option<&str>,
    raw_query: Option<&str>,
    table: Table,
    endpoint: &str,
) -> Result<Json<ListResponse>, ApiError> {
    let (filters, _) = Filters::parse(raw_query, principal, &[])?;
    let categories = categories_for(principal, &state.settings.categories_in(table), &filters)?;
    let pg = state.postgres.as_ref().ok_or_else(|| ApiError::not_found("no database is configured"))?;
    let result = if categories.is_empty() {
        page_of_nothing()
    } else {
        page(pg.pool(), table, &filters, &categories).await.map_err(|e| {
            tracing::error!(error = ?e, "table query failed");
            ApiError::unavailable("storage_unavailable", "the database cannot be read right now; retry later", 1)
        })?
    };
    let items: Vec<Value> = result.items.iter().map(|row| row.to_item()).collect();
    let mut details = Map::new();
    details.insert("query".into(), raw_query.unwrap_or("").into());
    details.insert("result_count".into(), items.len().into());
    access::record(
        state,
        principal,
        Access { action: "logs.viewed", tenant: filters.tenant.as_deref(), endpoint, request_id, details },
    )
    .await?;
    Ok(Json(ListResponse { items, next_cursor: result.next_cursor.map(|c| c.encode()), total: result.total }))
}

fn page_of_nothing() -> crate::tiers::postgres::query::Page {
    crate::tiers::postgres::query::Page { items: Vec::new(), next_cursor: None, total: Some(0) }
}

pub(super) async fn logs(
    State(state): State<AppState>,
    principal: Principal,
    RequestId(request_id): RequestId,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    list_table(&state, &principal, request_id.as_deref(), query.as_deref(), Table::AuditLogs, "GET /audit/logs").await
}

pub(super) async fn security_events(
    State(state): State<AppState>,
    principal: Principal,
    RequestId(request_id): RequestId,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    list_table(&state, &principal, request_id.as_deref(), query.as_deref(), Table::SecurityEvents, "GET /audit/security-events")
        .await
}

pub(super) async fn financial(
    State(state): State<AppState>,
    principal: Principal,
    RequestId(request_id): RequestId,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    list_table(&state, &principal, request_id.as_deref(), query.as_deref(), Table::FinancialAuditLogs, "GET /audit/financial")
        .await
}
