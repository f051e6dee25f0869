//! Integrity endpoints (permission `logs.verify`):
//! - `GET /audit/verify` recomputes the hash chains of a tenant (or, for all-tenant
//!   keys without `tenant_id`, of every tenant) and names the first broken link of
//!   each;
//! - `GET /audit/checkpoints` exports signed checkpoints with the public key, and
//!   `POST /audit/checkpoints` signs every moved chain head now;
//! - `GET /audit/checkpoints/public-key` (no key needed) serves the public key.

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::DateTime;
use serde::Serialize;
use serde_json::Map;

use super::access::{self, Access};
use super::error::ApiError;
use super::extract::{scoped_request, Caller};
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::AppState;
use crate::integrity::checkpoint::Checkpoint;
use crate::keys::{Permission, Principal};
use crate::tiers::postgres::verify::ChainReport;
use crate::tiers::Table;

/// The verdict on every chain asked about.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyResponse {
    /// True when every chain holds.
    pub ok: bool,
    pub chains: Vec<ChainReport>,
}

#[utoipa::path(get, path = "/audit/verify", tag = "integrity",
    params(("tenant_id" = Option<String>, Query, description = "one tenant (required for tenant-bound keys' own tenant only)", pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$"),
           ("table" = Option<String>, Query, description = "audit_logs, security_events or financial_audit_logs", pattern = "^(audit_logs|security_events|financial_audit_logs)$")),
    responses((status = 200, description = "the verdict on each chain", body = VerifyResponse), CommonErrors))]
pub(super) async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<VerifyResponse>, ApiError> {
    let (params, tenant) = scoped_request(&principal, Permission::LogsVerify, query.as_deref(), &["table"])?;
    let table = params
        .get("table")
        .map(|value| {
            Table::parse(value)
                .ok_or_else(|| ApiError::bad_request("table: must be audit_logs, security_events or financial_audit_logs"))
        })
        .transpose()?;
    let pg = state.reader()?;
    let keyring = state.integrity.keyring(pg).await;
    let mut reports = Vec::new();
    for (chain, _) in pg.chains(tenant.as_deref(), table).await.map_err(ApiError::read_failed)? {
        reports.push(pg.verify_chain(&keyring, &chain).await.map_err(ApiError::read_failed)?);
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

/// Checkpoints with the key that verifies them: everything an offline verifier needs
/// besides the rows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointExport {
    /// Base64 Ed25519 public key of the current signing key.
    pub public_key: String,
    pub key_id: String,
    pub checkpoints: Vec<Checkpoint>,
}

/// The public key alone.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicKeyResponse {
    pub algorithm: &'static str,
    /// Base64 of the 32 key bytes.
    pub public_key: String,
    pub key_id: String,
}

#[utoipa::path(get, path = "/audit/checkpoints/public-key", tag = "integrity", security(()),
    responses((status = 200, description = "the checkpoint signing key's public half", body = PublicKeyResponse)))]
pub(super) async fn public_key(State(state): State<AppState>) -> Json<PublicKeyResponse> {
    let public = state.integrity.signer().public();
    Json(PublicKeyResponse { algorithm: "ed25519", public_key: public.to_base64(), key_id: public.id().to_owned() })
}

#[utoipa::path(get, path = "/audit/checkpoints", tag = "integrity",
    params(("tenant_id" = Option<String>, Query, description = "one tenant", pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$"),
           ("since" = Option<String>, Query, description = "RFC 3339: checkpoints created from then on", format = DateTime),
           ("limit" = Option<u32>, Query, description = "at most this many, newest first (default 1000, at most 10000)", minimum = 1, maximum = 10000)),
    responses((status = 200, description = "signed checkpoints and the public key", body = CheckpointExport), CommonErrors))]
pub(super) async fn list_checkpoints(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<CheckpointExport>, ApiError> {
    let (params, tenant) = scoped_request(&principal, Permission::LogsVerify, query.as_deref(), &["since", "limit"])?;
    let since = params
        .get("since")
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.to_utc())
                .map_err(|_| ApiError::bad_request("since: must be an RFC 3339 timestamp"))
        })
        .transpose()?;
    let limit = match params.get("limit") {
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit: must be between 1 and 10000"))?,
        None => 1000,
    };
    let pg = state.reader()?;
    let found = pg.list_checkpoints(tenant.as_deref(), since, limit).await.map_err(ApiError::read_failed)?;
    let mut details = Map::new();
    details.insert("query".into(), query.clone().unwrap_or_default().into());
    details.insert("result_count".into(), found.len().into());
    access::record(
        &state,
        &principal,
        Access { action: "checkpoints.exported", tenant: tenant.as_deref(), endpoint: "GET /audit/checkpoints", caller: &caller, details },
    )
    .await?;
    let public = state.integrity.signer().public();
    Ok(Json(CheckpointExport { public_key: public.to_base64(), key_id: public.id().to_owned(), checkpoints: found }))
}

#[utoipa::path(post, path = "/audit/checkpoints", tag = "integrity",
    params(("tenant_id" = Option<String>, Query, description = "one tenant (default: the key's, or every tenant)", pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, description = "the checkpoints signed now (chains that moved since their last one)", body = CheckpointExport), CommonErrors))]
pub(super) async fn create_checkpoints(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<CheckpointExport>, ApiError> {
    let (_, tenant) = scoped_request(&principal, Permission::LogsVerify, query.as_deref(), &[])?;
    let pg = state.reader()?;
    let signer = state.integrity.signer_for(pg).await.map_err(ApiError::not_signing)?;
    let made = pg.checkpoint_heads(signer, tenant.as_deref(), "on_demand", state.clock.now())
        .await
        .map_err(ApiError::read_failed)?;
    let mut details = Map::new();
    details.insert("result_count".into(), made.len().into());
    access::record(
        &state,
        &principal,
        Access { action: "checkpoints.created", tenant: tenant.as_deref(), endpoint: "POST /audit/checkpoints", caller: &caller, details },
    )
    .await?;
    let public = state.integrity.signer().public();
    Ok(Json(CheckpointExport { public_key: public.to_base64(), key_id: public.id().to_owned(), checkpoints: made }))
}

