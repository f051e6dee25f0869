//! `GET /audit/verify` (permission `logs.verify`): recomputes the hash chains of a
//! tenant (or, for all-tenant keys without `tenant_id`, of every tenant) and names
//! the first broken link of each.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::Serialize;
use serde_json::Map;

use super::access::{self, Access};
use super::auth::require;
use super::error::ApiError;
use super::extract::Caller;
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::AppState;
use crate::event::parse::is_tenant_id;
use crate::keys::{Permission, Principal};
use crate::tiers::postgres::verify::{chains, verify_chain, ChainReport};
use crate::tiers::Table;

/// The verdict on every chain asked about.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyResponse {
    /// True when every chain holds.
    pub ok: bool,
    pub chains: Vec<ChainReport>,
}

#[utoipa::path(get, path = "/audit/verify", tag = "integrity",
    params(("tenant_id" = Option<String>, Query, description = "one tenant (required for tenant-bound keys' own tenant only)"),
           ("table" = Option<String>, Query, description = "audit_logs, security_events or financial_audit_logs")),
    responses((status = 200, description = "the verdict on each chain", body = VerifyResponse), CommonErrors))]
pub(super) async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<VerifyResponse>, ApiError> {
    require(&principal, Permission::LogsVerify)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::bad_request("query: is not a valid query string"))?;
    let mut tenant = principal.tenant.clone();
    let mut table = None;
    for (key, value) in pairs {
        match key.as_str() {
            "tenant_id" => {
                if !is_tenant_id(&value) {
                    return Err(ApiError::bad_request("tenant_id: must be 1-64 characters of letters, digits, '.', '_' or '-'"));
                }
                if !principal.may_access_tenant(&value) {
                    return Err(ApiError::forbidden_tenant());
                }
                tenant = Some(value);
            }
            "table" => {
                table = Some(Table::parse(&value).ok_or_else(|| {
                    ApiError::bad_request("table: must be audit_logs, security_events or financial_audit_logs")
                })?);
            }
            other => return Err(ApiError::bad_request(format!("{other}: is not a known parameter"))),
        }
    }
    let pg = state.reader()?;
    let mut reports = Vec::new();
    for (chain_tenant, chain_table, head) in chains(pg.pool(), tenant.as_deref(), table).await.map_err(ApiError::read_failed)? {
        reports.push(verify_chain(pg.pool(), &chain_tenant, chain_table, head).await.map_err(ApiError::read_failed)?);
    }
    let ok = reports.iter().all(|r| r.ok);
    let mut details = Map::new();
    details.insert("query".into(), query.clone().unwrap_or_default().into());
    details.insert("result_count".into(), reports.len().into());
    details.insert("ok".into(), ok.into());
    access::record(
        &state,
        &principal,
        Access { action: "logs.verified", tenant: tenant.as_deref(), endpoint: "GET /audit/verify", caller: &caller, details },
    )
    .await?;
    Ok(Json(VerifyResponse { ok, chains: reports }))
}
