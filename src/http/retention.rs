//! Retention policies and runs (permission `logs.configure`):
//! - `GET /audit/retention`: category defaults, plans, and tenant settings (a
//!   tenant-bound key sees its own tenant only);
//! - `PUT /audit/retention`: creates or replaces plans (all-tenant keys) and tenant
//!   settings, including legal hold; the change, before and after, is audited;
//! - `POST /audit/retention/run`: runs the retention job now (all-tenant keys).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::access::{self, Access};
use super::auth::require;
use super::error::ApiError;
use super::extract::{ApiJson, Caller};
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::AppState;
use crate::event::parse::is_tenant_id;
use crate::keys::{Permission, Principal};
use crate::retention::job::{RetentionJob, RunReport};
use crate::retention::{validate_days, Days, Policies, TenantPolicy};

/// A change of policies: plans and tenants given here are created or replaced.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionChange {
    /// Plan name -> days per category.
    #[serde(default, deserialize_with = "crate::retention::deserialize_plans")]
    #[schema(value_type = PlanMap)]
    pub plans: BTreeMap<String, Days>,
    /// Tenant -> its plan, own days and legal hold.
    #[serde(default)]
    #[schema(value_type = TenantMap)]
    pub tenants: BTreeMap<String, TenantPolicy>,
}

fn visible(policies: &Policies, principal: &Principal) -> Policies {
    let mut shown = policies.clone();
    if let Some(own) = &principal.tenant {
        shown.tenants.retain(|tenant, _| tenant == own);
    }
    shown
}

#[utoipa::path(get, path = "/audit/retention", tag = "retention",
    responses((status = 200, description = "the policies in force", body = Policies), CommonErrors))]
pub(super) async fn get_retention(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
) -> Result<Json<Policies>, ApiError> {
    require(&principal, Permission::LogsConfigure)?;
    let pg = state.reader()?;
    let defaults = Policies::from_settings(&state.settings);
    let policies = pg.load_policies(&defaults).await.map_err(ApiError::read_failed)?;
    state.policies.replace(policies.clone());
    access::record(
        &state,
        &principal,
        Access { action: "retention.viewed", tenant: None, endpoint: "GET /audit/retention", caller: &caller, details: Map::new() },
    )
    .await?;
    Ok(Json(visible(&policies, &principal)))
}

#[utoipa::path(put, path = "/audit/retention", tag = "retention", request_body = RetentionChange,
    responses((status = 200, description = "the policies now in force", body = Policies), (status = 404, description = "a tenant names a plan that does not exist", body = ErrorEnvelope), (status = 413, description = "the body is over 2 MiB", body = ErrorEnvelope), (status = 415, description = "the body is not application/json", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn put_retention(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    ApiJson(change): ApiJson<RetentionChange>,
) -> Result<Json<Policies>, ApiError> {
    require(&principal, Permission::LogsConfigure)?;
    if principal.tenant.is_some() && !change.plans.is_empty() {
        return Err(ApiError::forbidden_tenant());
    }
    for (plan, days) in &change.plans {
        if !is_tenant_id(plan) {
            return Err(ApiError::bad_request(format!("plans.{plan}: a plan name is 1-64 letters, digits, '.', '_' or '-'")));
        }
        validate_days(days, &format!("plans.{plan}")).map_err(ApiError::bad_request)?;
    }
    let pg = state.reader()?;
    let defaults = Policies::from_settings(&state.settings);
    let before = pg.load_policies(&defaults).await.map_err(ApiError::read_failed)?;
    for (tenant, policy) in &change.tenants {
        if !is_tenant_id(tenant) {
            return Err(ApiError::bad_request(format!("tenants.{tenant}: is not a tenant id")));
        }
        if !principal.may_access_tenant(tenant) {
            return Err(ApiError::forbidden_tenant());
        }
        validate_days(&policy.days, &format!("tenants.{tenant}.days")).map_err(ApiError::bad_request)?;
        if let Some(plan) = &policy.plan {
            if !before.plans.contains_key(plan) && !change.plans.contains_key(plan) {
                return Err(ApiError::not_found(format!("tenants.{tenant}.plan: no plan is named {plan}")));
            }
        }
        if policy.hold_reason.as_ref().is_some_and(|r| r.chars().count() > 1024) {
            return Err(ApiError::bad_request(format!("tenants.{tenant}.hold_reason: at most 1024 characters")));
        }
    }
    pg.save_policies(&change.plans, &change.tenants).await.map_err(ApiError::read_failed)?;
    let after = pg.load_policies(&defaults).await.map_err(ApiError::read_failed)?;
    state.policies.replace(after.clone());
    if let crate::tiers::database::Database::Postgres(store) = pg {
        crate::app::partition_upkeep(store, &state.settings, &state.policies, &state.counters, state.clock.now()).await;
    }

    // One audit record per tenant changed, and one for plan changes.
    let pick = |policies: &Policies, tenant: &str| serde_json::to_value(policies.tenants.get(tenant)).unwrap_or(Value::Null);
    for tenant in change.tenants.keys() {
        let mut details = Map::new();
        details.insert("before".into(), pick(&before, tenant));
        details.insert("after".into(), pick(&after, tenant));
        access::record(
            &state,
            &principal,
            Access { action: "retention.changed", tenant: Some(tenant), endpoint: "PUT /audit/retention", caller: &caller, details },
        )
        .await?;
    }
    if !change.plans.is_empty() {
        let plans = |policies: &Policies| {
            let chosen: BTreeMap<&String, &Days> = policies.plans.iter().filter(|(p, _)| change.plans.contains_key(*p)).collect();
            serde_json::to_value(chosen).unwrap_or(Value::Null)
        };
        let mut details = Map::new();
        details.insert("before".into(), plans(&before));
        details.insert("after".into(), plans(&after));
        access::record(
            &state,
            &principal,
            Access { action: "retention.plans_changed", tenant: None, endpoint: "PUT /audit/retention", caller: &caller, details },
        )
        .await?;
    }
    Ok(Json(visible(&after, &principal)))
}

#[utoipa::path(post, path = "/audit/retention/run", tag = "retention",
    responses((status = 200, description = "what the run deleted and archived", body = RunReport), CommonErrors))]
pub(super) async fn run_retention(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
) -> Result<Json<RunReport>, ApiError> {
    require(&principal, Permission::LogsConfigure)?;
    if principal.tenant.is_some() {
        return Err(ApiError::forbidden_tenant());
    }
    let report = run_job(&state).await?;
    let mut details = Map::new();
    details.insert("run_id".into(), report.run_id.to_string().into());
    access::record(
        &state,
        &principal,
        Access { action: "retention.started", tenant: None, endpoint: "POST /audit/retention/run", caller: &caller, details },
    )
    .await?;
    Ok(Json(report))
}

/// One retention run as of the service clock, its `LogRetentionRun` events submitted
/// through the pipeline. Shared by the endpoint and the background loop.
pub async fn run_job(state: &AppState) -> Result<RunReport, ApiError> {
    let pg = state.reader()?;
    let signer = state.integrity.signer_for(pg).await.map_err(ApiError::not_signing)?;
    let job = RetentionJob::new(
        pg.retention_db(),
        signer.clone(),
        state.integrity.keyring(pg).await,
        state.policies.clone(),
        &state.settings.retention,
    );
    let report = job.run_once(state.clock.now()).await.map_err(|e| match e {
        crate::retention::job::RetentionError::Database(e) => ApiError::read_failed(e),
        crate::retention::job::RetentionError::Archive(e) => ApiError::internal("archive write failed", &e),
    })?;
    state.pipeline.submit(report.events()).await.map_err(|_| {
        ApiError::unavailable(
            "storage_unavailable",
            "the retention run record could not be written; retry later",
            state.settings.ingest.retry_after_seconds,
        )
    })?;
    Ok(report)
}
