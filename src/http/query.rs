//! The table endpoints: `GET /audit/logs`, `/audit/security-events`,
//! `/audit/financial`. Each answers `{"items", "next_cursor", "total"?}`, newest
//! first, limited to the tenant and categories the key may see, and records the read.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use super::access::{self, Access};
use super::error::ApiError;
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::extract::Caller;
use super::AppState;
use crate::event::Category;
use crate::keys::Principal;
use crate::query::{memory, visible_categories, view_permission, Cursor, Filters, QueryError};
use crate::tiers::{HotTierError, Table};

/// A page of items.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListResponse {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
    pub next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// Present on merged views: true when the hot tier could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<bool>,
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match e {
            QueryError::ForeignTenant => ApiError::forbidden_tenant(),
            QueryError::Invalid { .. } => ApiError::bad_request(e.to_string()),
        }
    }
}

/// The categories of `candidates` the key may view and the filter asks for (`access`
/// only when the filter names it); 403 when
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
        // Access records only when asked for (`category=access`): reading the log
        // must not crowd the log out of its own views.
        None => Ok(visible.into_iter().filter(|c| *c != Category::Access).collect()),
        Some(category) if visible.contains(&category) => Ok(vec![category]),
        Some(category) if candidates.contains(&category) => Err(ApiError::forbidden(view_permission(category).as_str())),
        Some(_) => Ok(Vec::new()),
    }
}

async fn list_table(
    state: &AppState,
    principal: &Principal,
    caller: &Caller,
    raw_query: Option<&str>,
    table: Table,
    endpoint: &str,
) -> Result<Json<ListResponse>, ApiError> {
    let (filters, _) = Filters::parse(raw_query, principal, &[])?;
    let categories = categories_for(principal, &state.settings.categories_in(table), &filters)?;
    let pg = state.reader()?;
    let result = if categories.is_empty() {
        page_of_nothing()
    } else {
        pg.page(table, &filters, &categories).await.map_err(ApiError::read_failed)?
    };
    let items: Vec<Value> = result.items.iter().map(|row| row.to_item()).collect();
    record_read(state, principal, &filters, endpoint, caller, raw_query, items.len()).await?;
    Ok(Json(ListResponse { items, next_cursor: result.next_cursor.map(|c| c.encode()), total: result.total, partial: None }))
}

fn page_of_nothing() -> crate::tiers::postgres::query::Page {
    crate::tiers::postgres::query::Page { items: Vec::new(), next_cursor: None, total: Some(0) }
}

#[utoipa::path(get, path = "/audit/logs", tag = "read", description = "the audit_logs table", params(QueryParams, PageParams),
    responses((status = 200, description = "a page, newest first", body = ListResponse), CommonErrors))]
pub(super) async fn logs(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    list_table(&state, &principal, &caller, query.as_deref(), Table::AuditLogs, "GET /audit/logs").await
}

#[utoipa::path(get, path = "/audit/security-events", tag = "read", description = "the security_events table", params(QueryParams, PageParams),
    responses((status = 200, description = "a page, newest first", body = ListResponse), CommonErrors))]
pub(super) async fn security_events(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    list_table(&state, &principal, &caller, query.as_deref(), Table::SecurityEvents, "GET /audit/security-events")
        .await
}

#[utoipa::path(get, path = "/audit/financial", tag = "read", description = "the financial_audit_logs table", params(QueryParams, PageParams),
    responses((status = 200, description = "a page, newest first", body = ListResponse), CommonErrors))]
pub(super) async fn financial(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    list_table(&state, &principal, &caller, query.as_deref(), Table::FinancialAuditLogs, "GET /audit/financial")
        .await
}

/// The hot tier's items that pass `filters` (cursor included), newest first, each
/// marked as held by Redis.
async fn hot_items(state: &AppState, filters: &Filters, categories: &[Category]) -> Result<Vec<Value>, HotTierError> {
    let Some(hot) = &state.hot else { return Ok(Vec::new()) };
    let lines = hot.recent(filters.tenant.as_deref(), categories).await?;
    let mut items: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|item| memory::matches(filters, categories, item))
        .filter(|item| {
            let cursor = filters.cursor;
            cursor.is_none_or(|c| memory::sort_key(item).is_some_and(|(t, id)| (t, id) < (c.t, c.id)))
        })
        .collect();
    memory::sort_newest_first(&mut items);
    // A list holds an id once, but one id may sit in several lists only by accident
    // of a category change; keep the first.
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item["id"].as_str().unwrap_or("").to_owned()));
    let name = state.hot.as_ref().map_or("redis", |hot| hot.name());
    for item in &mut items {
        item["tiers"] = serde_json::json!([name]);
    }
    Ok(items)
}

fn cursor_after(item: &Value) -> Option<String> {
    memory::sort_key(item).map(|(t, id)| Cursor { t, id }.encode())
}

pub(super) async fn record_read(
    state: &AppState,
    principal: &Principal,
    filters: &Filters,
    endpoint: &str,
    caller: &Caller,
    raw_query: Option<&str>,
    count: usize,
) -> Result<(), ApiError> {
    let mut details = Map::new();
    details.insert("query".into(), raw_query.unwrap_or("").into());
    details.insert("result_count".into(), count.into());
    access::record(state, principal, Access { action: "logs.viewed", tenant: filters.tenant.as_deref(), endpoint, caller, details })
        .await
}

/// `GET /audit/redis`: the hot tier, per category, with the common filters.
#[utoipa::path(get, path = "/audit/redis", tag = "read", description = "the Redis hot tier", params(QueryParams, PageParams),
    responses((status = 200, description = "a page, newest first", body = ListResponse), CommonErrors))]
pub(super) async fn redis(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    let (filters, _) = Filters::parse(query.as_deref(), &principal, &[])?;
    let categories = categories_for(&principal, &Category::ALL, &filters)?;
    let mut items = hot_items(&state, &filters, &categories).await.map_err(|e| {
        tracing::warn!(error = %e, "hot tier read failed");
        ApiError::unavailable("hot_tier_unavailable", "Redis cannot be read right now; /audit/combined still answers", 1)
    })?;
    let total = filters.include_total.then_some(items.len() as i64);
    let next_cursor = if items.len() > filters.limit {
        items.truncate(filters.limit);
        items.last().and_then(cursor_after)
    } else {
        None
    };
    record_read(&state, &principal, &filters, "GET /audit/redis", &caller, query.as_deref(), items.len()).await?;
    Ok(Json(ListResponse { items, next_cursor, total, partial: None }))
}

/// `GET /audit/combined`: Redis and Postgres merged, de-duplicated by id, newest
/// first; each item lists the tiers holding it. Without Redis the answer comes from
/// Postgres alone and says `"partial": true`.
#[utoipa::path(get, path = "/audit/combined", tag = "read", description = "Redis and Postgres merged by id, newest first", params(QueryParams, PageParams),
    responses((status = 200, description = "a page, newest first", body = ListResponse), CommonErrors))]
pub(super) async fn combined(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    let (filters, _) = Filters::parse(query.as_deref(), &principal, &[])?;
    let response = merged_page(&state, &principal, &filters).await?;
    record_read(&state, &principal, &filters, "GET /audit/combined", &caller, query.as_deref(), response.items.len())
        .await?;
    Ok(Json(response))
}

/// `GET /audit/users/{id}/activity`: one user's timeline across every tier and every
/// category the key may view.
#[utoipa::path(get, path = "/audit/users/{id}/activity", tag = "read", params(("id" = String, Path, description = "the user id", min_length = 1, max_length = 1024, pattern = "^[^\\x00]*$"), QueryParams, PageParams),
    responses((status = 200, description = "the user's timeline, newest first", body = ListResponse), CommonErrors))]
pub(super) async fn user_activity(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    check_user_id(&user_id)?;
    let (mut filters, _) = Filters::parse(query.as_deref(), &principal, &[])?;
    // Filters are all met at once: a `user_id` filter naming another user than the
    // path matches nothing.
    let another_user = filters.user_id.as_ref().is_some_and(|asked| *asked != user_id);
    filters.user_id = Some(user_id);
    let response = if another_user {
        ListResponse { items: Vec::new(), next_cursor: None, total: filters.include_total.then_some(0), partial: Some(false) }
    } else {
        merged_page(&state, &principal, &filters).await?
    };
    record_read(&state, &principal, &filters, "GET /audit/users/{id}/activity", &caller, query.as_deref(), response.items.len())
        .await?;
    Ok(Json(response))
}

/// A user id of a path (`/audit/users/{id}/...`): 1-1024 characters, no NUL.
pub(super) fn check_user_id(user_id: &str) -> Result<(), ApiError> {
    if user_id.is_empty() || user_id.chars().count() > 1024 || user_id.contains('\0') {
        return Err(ApiError::bad_request("the user id must be 1-1024 characters"));
    }
    Ok(())
}

/// One page of the merged view for `filters`.
pub(super) async fn merged_page(state: &AppState, principal: &Principal, filters: &Filters) -> Result<ListResponse, ApiError> {
    let categories = categories_for(principal, &Category::ALL, filters)?;
    let pg = state.reader()?;

    let mut merged: Vec<Value> = Vec::new();
    let mut more_in_postgres = false;
    let mut pg_total = 0;
    for table in Table::ALL {
        let in_table: Vec<Category> =
            state.settings.categories_in(table).into_iter().filter(|c| categories.contains(c)).collect();
        if in_table.is_empty() {
            continue;
        }
        let result = pg.page(table, filters, &in_table).await.map_err(ApiError::read_failed)?;
        more_in_postgres |= result.next_cursor.is_some();
        pg_total += result.total.unwrap_or(0);
        merged.extend(result.items.iter().map(|row| {
            let mut item = row.to_item();
            item["tiers"] = serde_json::json!([pg.name()]);
            item
        }));
    }
    let (hot, partial) = match hot_items(state, filters, &categories).await {
        Ok(items) => (items, false),
        Err(e) => {
            tracing::warn!(error = %e, "hot tier read failed; answering from Postgres");
            (Vec::new(), true)
        }
    };
    let mut hot_only = 0;
    let mut by_id: std::collections::HashMap<String, usize> =
        merged.iter().enumerate().map(|(i, item)| (item["id"].as_str().unwrap_or("").to_owned(), i)).collect();
    for item in hot {
        let id = item["id"].as_str().unwrap_or("").to_owned();
        match by_id.get(&id) {
            Some(&i) => {
                let name = state.hot.as_ref().map_or("redis", |hot| hot.name());
                let durable = state.database.as_ref().map_or("postgres", |db| db.name());
                merged[i]["tiers"] = serde_json::json!([name, durable]);
            }
            None => {
                if !is_persisted(state, &item) {
                    hot_only += 1;
                }
                by_id.insert(id, merged.len());
                merged.push(item);
            }
        }
    }
    memory::sort_newest_first(&mut merged);
    let next_cursor = if merged.len() > filters.limit || (more_in_postgres && merged.len() >= filters.limit) {
        merged.truncate(filters.limit);
        merged.last().and_then(cursor_after)
    } else {
        None
    };
    let total = filters.include_total.then_some(pg_total + hot_only);
    Ok(ListResponse { items: merged, next_cursor, total, partial: Some(partial) })
}

/// Whether the policy persists an item of this category and level.
fn is_persisted(state: &AppState, item: &Value) -> bool {
    let category = item["category"].as_str().and_then(Category::parse);
    let level = item["level"].as_str().and_then(crate::event::Level::parse);
    match (category, level) {
        (Some(category), Some(level)) => state.settings.category(category).table_for(level).is_some(),
        _ => false,
    }
}
