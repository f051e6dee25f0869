//! Detection rules (permission `logs.configure`):
//! - `GET /audit/rules[?tenant_id=]`: the rules in force for the deployment or a
//!   tenant, and the overrides saved for it (a tenant-bound key sees its own tenant);
//! - `PUT /audit/rules`: replaces the overrides of the deployment (all-tenant keys,
//!   no `tenant_id`) or of one tenant; the change, before and after, is audited.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::access::{self, Access};
use super::auth::require;
use super::error::ApiError;
use super::extract::{strict_params, ApiJson, Caller};
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::AppState;
use crate::detect::rules::{self, Rule};
use crate::detect::RuleBook;
use crate::event::parse::is_tenant_id;
use crate::keys::{Permission, Principal};
use crate::tiers::database::Database;
use crate::detect::saved;
use crate::tiers::portable::Pooled;

/// Loads the saved overrides into `book`.
pub async fn reload(db: &Database, book: &RuleBook) -> Result<(), sqlx::Error> {
    let mut pooled = Pooled::acquire(db).await?;
    let saved = saved::saved_rules(&mut pooled.conn()).await?;
    book.replace_saved(saved);
    Ok(())
}

/// Which rules to show.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct RulesQuery {
    /// The tenant whose rules to show (a tenant-bound key: its own, the default).
    #[param(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    pub tenant_id: Option<String>,
}

/// The rules in force for one scope, and the overrides saved for it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleSet {
    /// The tenant; absent for the deployment's rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Every rule in force (switched-off ones with `enabled: false`).
    pub rules: Vec<Rule>,
    /// The overrides saved through `PUT /audit/rules` for this scope.
    pub overrides: Vec<Rule>,
}

/// A new set of overrides for one scope.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesChange {
    /// The tenant whose overrides these are; absent: the deployment's (all-tenant keys).
    #[schema(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    pub tenant_id: Option<String>,
    /// Rules laid over the configured ones by name; they replace every override
    /// saved before for this scope (an empty list removes them).
    pub rules: Vec<Rule>,
}

fn book(state: &AppState) -> Result<&RuleBook, ApiError> {
    state.detector.as_ref().map(|d| d.book.as_ref()).ok_or_else(|| ApiError::not_found("detection is switched off (detection.enabled)"))
}

fn scope(principal: &Principal, tenant: Option<String>) -> Result<Option<String>, ApiError> {
    match (tenant, &principal.tenant) {
        (Some(t), _) if !is_tenant_id(&t) => Err(ApiError::bad_request("tenant_id: is not a tenant id")),
        (Some(t), _) if !principal.may_access_tenant(&t) => Err(ApiError::forbidden_tenant()),
        (Some(t), _) => Ok(Some(t)),
        (None, Some(own)) => Ok(Some(own.clone())),
        (None, None) => Ok(None),
    }
}

fn rule_set(book: &RuleBook, tenant: Option<String>) -> RuleSet {
    RuleSet { rules: book.effective(tenant.as_deref()), overrides: book.saved(tenant.as_deref()), tenant_id: tenant }
}

/// The detection rules in force for the deployment or a tenant.
#[utoipa::path(get, path = "/audit/rules", tag = "detection", params(RulesQuery),
    responses((status = 200, description = "the rules in force", body = RuleSet), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn get_rules(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<RuleSet>, ApiError> {
    require(&principal, Permission::LogsConfigure)?;
    let mut params = strict_params(query.as_deref(), &["tenant_id"])?;
    let tenant = scope(&principal, params.remove("tenant_id"))?;
    let book = book(&state)?;
    reload(state.reader()?, book).await.map_err(ApiError::read_failed)?;
    access::record(
        &state,
        &principal,
        Access { action: "rules.viewed", tenant: tenant.as_deref(), endpoint: "GET /audit/rules", caller: &caller, details: Map::new() },
    )
    .await?;
    Ok(Json(rule_set(book, tenant)))
}

/// Replaces the rule overrides of the deployment or a tenant.
#[utoipa::path(put, path = "/audit/rules", tag = "detection", request_body = RulesChange,
    responses((status = 200, description = "the rules now in force for the scope", body = RuleSet), (status = 413, description = "the body is over 2 MiB", body = ErrorEnvelope), (status = 415, description = "the body is not application/json", body = ErrorEnvelope), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn put_rules(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    ApiJson(change): ApiJson<RulesChange>,
) -> Result<Json<RuleSet>, ApiError> {
    require(&principal, Permission::LogsConfigure)?;
    let tenant = scope(&principal, change.tenant_id)?;
    rules::validate_list(&change.rules, "rules").map_err(ApiError::bad_request)?;
    let book = book(&state)?;
    let db = state.reader()?;
    reload(db, book).await.map_err(ApiError::read_failed)?;
    let before = rule_set(book, tenant.clone());
    let mut pooled = Pooled::acquire(db).await.map_err(ApiError::read_failed)?;
    saved::save_rules(&mut pooled.conn(), tenant.as_deref(), &change.rules, state.clock.now().timestamp_millis())
        .await
        .map_err(ApiError::read_failed)?;
    drop(pooled);
    reload(db, book).await.map_err(ApiError::read_failed)?;
    let after = rule_set(book, tenant.clone());
    let mut details = Map::new();
    details.insert("scope".into(), tenant.clone().map_or(Value::from("deployment"), Value::from));
    details.insert("before".into(), serde_json::to_value(&before.overrides).unwrap_or_default());
    details.insert("after".into(), serde_json::to_value(&after.overrides).unwrap_or_default());
    access::record(
        &state,
        &principal,
        Access { action: "rules.changed", tenant: tenant.as_deref(), endpoint: "PUT /audit/rules", caller: &caller, details },
    )
    .await?;
    Ok(Json(after))
}
