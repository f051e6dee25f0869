//! `GET /audit/alerts`: the alerts detection wrote (`security.alert` events), newest
//! first, with the common filters and `rule=`; permission `logs.security.view`.

use axum::extract::{RawQuery, State};
use axum::Json;

use super::error::ApiError;
use super::extract::Caller;
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::query::{categories_for, record_read, ListResponse};
use super::AppState;
use crate::detect::alert::ALERT_ACTION;
use crate::event::Category;
use crate::keys::Principal;
use crate::query::Filters;
use crate::tiers::Table;

/// The rule whose alerts to list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct AlertParams {
    /// Only this rule's alerts.
    #[param(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    pub rule: Option<String>,
}

/// The alerts detection wrote, newest first.
#[utoipa::path(get, path = "/audit/alerts", tag = "detection", params(AlertParams, QueryParams, PageParams),
    responses((status = 200, description = "a page of alerts, newest first", body = ListResponse), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn alerts(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    let (mut filters, rest): (Filters, _) = Filters::parse(query.as_deref(), &principal, &["rule"])?;
    // Alerts are security events with action security.alert: another category or
    // action matches none.
    let none = filters.category.is_some_and(|c| c != Category::Security) || filters.action.as_deref().is_some_and(|a| a != ALERT_ACTION);
    filters.category = Some(Category::Security);
    filters.action = Some(ALERT_ACTION.into());
    if let Some((_, rule)) = rest.iter().find(|(k, _)| k == "rule") {
        if !crate::event::parse::is_tenant_id(rule) {
            return Err(ApiError::bad_request("rule: a rule name is 1-64 letters, digits, '.', '_' or '-'"));
        }
        filters.resource = Some("rule".into());
        filters.resource_id = Some(rule.clone());
    }
    // The permission first, whatever the filters.
    let categories = categories_for(&principal, &[Category::Security], &filters)?;
    let categories = if none { Vec::new() } else { categories };
    let db = state.reader()?;
    let page = match categories.is_empty() {
        true => crate::tiers::postgres::query::Page { items: Vec::new(), next_cursor: None, total: Some(0) },
        false => db.page(Table::SecurityEvents, &filters, &categories).await.map_err(ApiError::read_failed)?,
    };
    let items: Vec<serde_json::Value> = page.items.iter().map(|row| row.to_item()).collect();
    record_read(&state, &principal, &filters, "GET /audit/alerts", &caller, query.as_deref(), items.len()).await?;
    Ok(Json(ListResponse { items, next_cursor: page.next_cursor.map(|c| c.encode()), total: page.total, partial: None }))
}
