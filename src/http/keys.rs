//! `/audit/keys`: create, list and revoke API keys (permission `keys.manage`).
//!
//! A tenant-bound manager only sees and makes keys of its own tenant, and no key may
//! grant a permission its creator lacks.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::access::{self, Access};
use super::auth::require;
use super::error::ApiError;
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::extract::{ApiJson, Caller, PathUuid};
use super::AppState;
use crate::event::parse::{is_tenant_id, TENANT_ID_RULE};
use crate::keys::{KeyInfo, KeyStore, NewKey, Permission, Principal};

/// `POST /audit/keys` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1 to 128 characters, not only spaces.
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub name: String,
    /// The tenant to bind the key to; omitted means all tenants (all-tenant managers
    /// only) or the manager's own tenant.
    #[schema(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    pub tenant_id: Option<String>,
    /// At least one; each must be held by the key that creates it.
    #[schema(value_type = Vec<Permission>, min_items = 1)]
    pub permissions: Vec<String>,
    /// In the future.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A revoked key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevokedKey {
    pub key: KeyInfo,
}

/// A created key: its description and, once, its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub key: KeyInfo,
    pub secret: String,
}

/// A list of keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyInfo>,
}

fn store(state: &AppState) -> Result<&KeyStore, ApiError> {
    state.auth.store().map(|s| s.as_ref()).ok_or_else(|| ApiError::not_found("key management is not available"))
}

fn store_error(e: crate::keys::KeyStoreError) -> ApiError {
    tracing::error!(error = ?e, "key store failed");
    ApiError::unavailable("storage_unavailable", "the key store is unavailable; retry later", 1)
}

/// Checks a creation request against what `principal` may grant.
pub fn plan_key(principal: &Principal, request: CreateKey) -> Result<NewKey, ApiError> {
    let name = request.name.trim().to_owned();
    // Postgres text cannot hold NUL: refused here, not failed in the store (a 503).
    if name.is_empty() || name.chars().count() > 128 || name.contains('\0') {
        return Err(ApiError::bad_request("name must be 1-128 characters, without NUL"));
    }
    let mut permissions = Vec::new();
    for raw in &request.permissions {
        let permission: Permission = raw.parse().map_err(ApiError::bad_request)?;
        if !principal.can(permission) {
            return Err(ApiError::forbidden(permission.as_str()));
        }
        permissions.push(permission);
    }
    permissions.sort();
    permissions.dedup();
    if permissions.is_empty() {
        return Err(ApiError::bad_request("permissions must name at least one permission"));
    }
    let tenant_id = match (&principal.tenant, request.tenant_id) {
        (Some(bound), Some(asked)) if *bound != asked => {
            return Err(ApiError::forbidden_tenant());
        }
        (Some(bound), _) => Some(bound.clone()),
        (None, asked) => asked,
    };
    if let Some(tenant) = &tenant_id {
        if !is_tenant_id(tenant) {
            return Err(ApiError::bad_request(format!("tenant_id {TENANT_ID_RULE}")));
        }
    }
    if request.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::bad_request("expires_at must be in the future"));
    }
    Ok(NewKey { name, tenant_id, permissions, expires_at: request.expires_at, created_by: principal.key_id.clone() })
}

fn key_details(key: &KeyInfo) -> Map<String, Value> {
    let details = json!({
        "target_key_id": key.id,
        "name": key.name,
        "tenant_id": key.tenant_id,
        "permissions": key.permissions,
    });
    details.as_object().cloned().unwrap_or_default()
}

#[utoipa::path(post, path = "/audit/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, description = "the key and, once, its secret", body = CreatedKey), (status = 413, description = "the body is over 2 MiB", body = ErrorEnvelope), (status = 415, description = "the body is not application/json", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    ApiJson(request): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    require(&principal, Permission::KeysManage)?;
    let new = plan_key(&principal, request)?;
    let (key, secret) = store(&state)?.create(new).await.map_err(store_error)?;
    access::record(
        &state,
        &principal,
        Access {
            action: "keys.created",
            tenant: key.tenant_id.as_deref(),
            endpoint: "POST /audit/keys",
            caller: &caller,
            details: key_details(&key),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { key, secret: secret.plaintext })))
}

#[utoipa::path(get, path = "/audit/keys", tag = "keys",
    responses((status = 200, description = "keys, newest first, never their secrets", body = KeyList), CommonErrors))]
pub(super) async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
) -> Result<Json<KeyList>, ApiError> {
    require(&principal, Permission::KeysManage)?;
    let items = store(&state)?.list(principal.tenant.as_deref()).await.map_err(store_error)?;
    let mut details = Map::new();
    details.insert("result_count".into(), items.len().into());
    access::record(
        &state,
        &principal,
        Access { action: "keys.listed", tenant: None, endpoint: "GET /audit/keys", caller: &caller, details },
    )
    .await?;
    Ok(Json(KeyList { items }))
}

#[utoipa::path(delete, path = "/audit/keys/{id}", tag = "keys", params(("id" = uuid::Uuid, Path, description = "the key id")),
    responses((status = 200, description = "the revoked key", body = RevokedKey), (status = 404, description = "no such key", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    PathUuid(id): PathUuid,
) -> Result<Json<RevokedKey>, ApiError> {
    require(&principal, Permission::KeysManage)?;
    let key = store(&state)?
        .revoke(id, principal.tenant.as_deref())
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("no such key"))?;
    access::record(
        &state,
        &principal,
        Access {
            action: "keys.revoked",
            tenant: key.tenant_id.as_deref(),
            endpoint: "DELETE /audit/keys/{id}",
            caller: &caller,
            details: key_details(&key),
        },
    )
    .await?;
    Ok(Json(RevokedKey { key }))
}

/// The `/audit/whoami` answer: the calling key, never its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The key's id, or `bootstrap`.
    pub key_id: String,
    /// The tenant the key is bound to; absent for an all-tenant key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub permissions: Vec<String>,
}

/// The calling key: its id, tenant and permissions (what the console shows and offers).
#[utoipa::path(get, path = "/audit/whoami", tag = "keys",
    responses((status = 200, description = "the calling key", body = WhoAmI), CommonErrors))]
pub(super) async fn whoami(principal: Principal) -> Json<WhoAmI> {
    Json(WhoAmI {
        key_id: principal.key_id.clone(),
        tenant_id: principal.tenant.clone(),
        permissions: principal.permissions.iter().map(|p| p.as_str().to_owned()).collect(),
    })
}
