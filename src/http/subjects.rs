//! GDPR endpoints for one data subject (a `user_id`):
//! - `POST /audit/subjects/{id}/erase` (permission `logs.delete`) erases the
//!   subject's personal values (see [`crate::privacy`]) and returns a receipt, which
//!   is also recorded, without the subject id, in the audit chain;
//! - `GET /audit/subjects/{id}/export` (permission `logs.export`) returns everything
//!   held about the subject, from Postgres and the hot tier, as JSON.

use std::collections::HashSet;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::access::{self, Access};
use super::error::ApiError;
use super::extract::{scoped_request, Caller};
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::AppState;
use crate::event::Category;
use crate::keys::{Permission, Principal};
use crate::privacy::{self, ErasureReceipt};

fn subject_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > 1024 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request("id: must be 1-1024 characters without control characters"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/audit/subjects/{id}/erase", tag = "privacy",
    params(("id" = String, Path, description = "the subject's user_id", min_length = 1, max_length = 1024, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"),
           ("tenant_id" = Option<String>, Query, description = "one tenant (default: the key's, or every tenant)", pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, description = "the erasure receipt", body = ErasureReceipt), CommonErrors))]
pub(super) async fn erase(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<ErasureReceipt>, ApiError> {
    let (_, tenant) = scoped_request(&principal, Permission::LogsDelete, query.as_deref(), &[])?;
    subject_id(&id)?;
    let pg = state.reader()?;
    let receipt = privacy::erase(
        pg,
        state.hot.as_ref(),
        &state.settings.privacy.personal_paths,
        privacy::Subject { tenant: tenant.as_deref(), id: &id },
        &principal.key_id,
        state.clock.now(),
    )
    .await
    .map_err(ApiError::read_failed)?;
    access::record(
        &state,
        &principal,
        Access {
            action: "subject.erased",
            tenant: tenant.as_deref(),
            endpoint: "POST /audit/subjects/{id}/erase",
            caller: &caller,
            details: receipt.recorded(),
        },
    )
    .await?;
    Ok(Json(receipt))
}

/// Everything held about a subject.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubjectExport {
    pub subject_id: String,
    pub tenant_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: DateTime<Utc>,
    /// Persisted events the subject acted in or that are about them, newest first.
    #[schema(value_type = Vec<Object>)]
    pub persisted: Vec<Value>,
    /// Events held only in the hot tier (categories not persisted), newest first.
    #[schema(value_type = Vec<Object>)]
    pub hot_only: Vec<Value>,
    /// False when the hot tier could not be read.
    pub hot_tier_read: bool,
}

/// The most persisted events one export returns.
const EXPORT_LIMIT: i64 = 100_000;

#[utoipa::path(get, path = "/audit/subjects/{id}/export", tag = "privacy",
    params(("id" = String, Path, description = "the subject's user_id", min_length = 1, max_length = 1024, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"),
           ("tenant_id" = Option<String>, Query, description = "one tenant (default: the key's, or every tenant)", pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, description = "everything held about the subject", body = SubjectExport), CommonErrors))]
pub(super) async fn export(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<SubjectExport>, ApiError> {
    let (_, tenant) = scoped_request(&principal, Permission::LogsExport, query.as_deref(), &[])?;
    subject_id(&id)?;
    let pg = state.reader()?;
    let rows = pg.subject_rows(tenant.as_deref(), &id, EXPORT_LIMIT).await.map_err(ApiError::read_failed)?;
    let held: HashSet<(String, String)> =
        rows.iter().map(|r| (r.event.tenant_id.clone(), r.event.id.to_string())).collect();
    let persisted: Vec<Value> = rows.iter().map(|r| r.to_item()).collect();
    let (hot_only, hot_tier_read) = match &state.hot {
        Some(hot) => match hot.recent(tenant.as_deref(), &Category::ALL).await {
            Ok(lines) => {
                let mut items: Vec<Value> = lines
                    .iter()
                    .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
                    .filter(|item| concerns(item, &id))
                    .filter(|item| {
                        let key = (str_of(item, "tenant_id"), str_of(item, "id"));
                        !held.contains(&key)
                    })
                    .collect();
                items.sort_by_key(|item| std::cmp::Reverse(str_of(item, "timestamp")));
                (items, true)
            }
            Err(_) => (Vec::new(), false),
        },
        None => (Vec::new(), true),
    };
    let mut details = Map::new();
    details.insert("result_count".into(), (persisted.len() + hot_only.len()).into());
    access::record(
        &state,
        &principal,
        Access {
            action: "subject.exported",
            tenant: tenant.as_deref(),
            endpoint: "GET /audit/subjects/{id}/export",
            caller: &caller,
            details,
        },
    )
    .await?;
    Ok(Json(SubjectExport { subject_id: id, tenant_id: tenant, generated_at: Utc::now(), persisted, hot_only, hot_tier_read }))
}

fn str_of(item: &Value, key: &str) -> String {
    item.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn concerns(item: &Value, subject: &str) -> bool {
    item.get("user_id").and_then(Value::as_str) == Some(subject)
        || (item.get("resource").and_then(Value::as_str) == Some("user")
            && item.get("resource_id").and_then(Value::as_str) == Some(subject))
}
