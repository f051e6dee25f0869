//! `/audit/webhooks`: the endpoints a tenant's alerts are delivered to, and their
//! messages (permission `keys.manage`: an endpoint holds a secret, like a key).
//! A tenant-bound key sees and makes endpoints of its own tenant only. Every change
//! is audited with before and after (never the secret).

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Duration;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::access::{self, Access};
use super::auth::require;
use super::error::ApiError;
use super::extract::{strict_params, ApiJson, Caller, PathUuid};
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::AppState;
use crate::event::parse::{is_tenant_id, TENANT_ID_RULE};
use crate::event::Category;
use crate::keys::{Permission, Principal};
use crate::webhooks::deliver::{webhook_id, Attempt, Sender};
use crate::tiers::portable::Pooled;
use crate::webhooks::{sign, store, Endpoint, Message, MessageState};

/// `POST /audit/webhooks` and `PUT /audit/webhooks/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// `https://...` (or `http://`) without credentials; an address that is internal
    /// (loopback, private, link-local, ...) only when `webhooks.allow_networks` holds it.
    #[schema(max_length = 2048, pattern = "^https?://")]
    pub url: String,
    /// The tenant whose alerts it takes (all-tenant keys must name one; a
    /// tenant-bound key's own by default).
    #[schema(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    pub tenant_id: Option<String>,
    /// `whsec_` and the base64 of 24-64 bytes; generated when absent (on update: kept).
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")]
    pub secret: Option<String>,
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub description: Option<String>,
    /// Rules whose alerts it takes (empty: all).
    #[serde(default)]
    #[schema(max_items = 200, value_type = Vec<RuleName>)]
    pub rules: Vec<String>,
    /// Categories of the triggering events (empty: all).
    #[serde(default)]
    #[schema(value_type = Vec<SentCategory>)]
    pub categories: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A created endpoint, and its secret (shown this once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedEndpoint {
    pub endpoint: Endpoint,
    pub secret: String,
}

/// A list of endpoints.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointList {
    pub items: Vec<Endpoint>,
}

/// A list of messages, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageList {
    pub items: Vec<Message>,
}

fn sender(state: &AppState) -> Result<&Sender, ApiError> {
    state.webhooks.as_ref().ok_or_else(|| ApiError::not_found("webhooks are switched off (webhooks.enabled)"))
}

async fn pooled(state: &AppState) -> Result<Pooled, ApiError> {
    Pooled::acquire(state.reader()?).await.map_err(ApiError::read_failed)
}

/// Checks `input`; the error names the field.
fn validate(input: &EndpointInput, sender: &Sender) -> Result<(), ApiError> {
    let bad = |field: &str, why: &str| Err(ApiError::bad_request(format!("{field}: {why}")));
    if let Err(why) = sender.guard().check_url(&input.url) {
        return bad("url", &why);
    }
    if let Some(secret) = &input.secret {
        if let Err(why) = sign::key(secret) {
            return bad("secret", why);
        }
    }
    if input.description.as_ref().is_some_and(|d| d.chars().count() > 1024 || d.contains('\0')) {
        return bad("description", "at most 1024 characters, no NUL");
    }
    if input.rules.len() > 200 {
        return bad("rules", "at most 200 names");
    }
    for (i, rule) in input.rules.iter().enumerate() {
        if !is_tenant_id(rule) {
            return bad(&format!("rules[{i}]"), "a rule name is 1-64 letters, digits, '.', '_' or '-'");
        }
    }
    for (i, category) in input.categories.iter().enumerate() {
        if Category::parse(category).is_none_or(|c| !c.is_sent_by_applications()) {
            return bad(&format!("categories[{i}]"), "one of auth, security, api, error, audit, financial");
        }
    }
    Ok(())
}

fn tenant_of(principal: &Principal, asked: Option<&str>) -> Result<String, ApiError> {
    match (asked, &principal.tenant) {
        (Some(t), _) if !is_tenant_id(t) => Err(ApiError::bad_request(format!("tenant_id: {TENANT_ID_RULE}"))),
        (Some(t), _) if !principal.may_access_tenant(t) => Err(ApiError::forbidden_tenant()),
        (Some(t), _) => Ok(t.to_owned()),
        (None, Some(own)) => Ok(own.clone()),
        (None, None) => Err(ApiError::bad_request("tenant_id: required for an all-tenant key (whose alerts should it take?)")),
    }
}

/// The endpoint `id`, if the key may see it (404 otherwise, so ids of other
/// tenants are not confirmed), and its secret.
async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> Result<(Endpoint, String), ApiError> {
    let mut pooled = pooled(state).await?;
    match store::endpoint(&mut pooled.conn(), id).await.map_err(ApiError::read_failed)? {
        Some((endpoint, secret)) if principal.may_access_tenant(&endpoint.tenant_id) => Ok((endpoint, secret)),
        _ => Err(ApiError::not_found("no such webhook endpoint")),
    }
}

async fn audit(state: &AppState, principal: &Principal, caller: &Caller, action: &str, endpoint: &str, tenant: &str, details: Map<String, Value>) -> Result<(), ApiError> {
    access::record(state, principal, Access { action, tenant: Some(tenant), endpoint, caller, details }).await
}

fn before_after(before: Option<&Endpoint>, after: Option<&Endpoint>) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("before".into(), serde_json::to_value(before).unwrap_or_default());
    details.insert("after".into(), serde_json::to_value(after).unwrap_or_default());
    details
}

/// Registers a webhook endpoint for a tenant's alerts.
#[utoipa::path(post, path = "/audit/webhooks", tag = "detection", request_body = EndpointInput,
    responses((status = 201, description = "the endpoint and its secret (shown once)", body = CreatedEndpoint), (status = 413, description = "the body is over 2 MiB", body = ErrorEnvelope), (status = 415, description = "the body is not application/json", body = ErrorEnvelope), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn create(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    ApiJson(input): ApiJson<EndpointInput>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
    require(&principal, Permission::KeysManage)?;
    validate(&input, sender(&state)?)?;
    let tenant = tenant_of(&principal, input.tenant_id.as_deref())?;
    let now = state.clock.now();
    let endpoint = Endpoint {
        id: Uuid::now_v7(),
        tenant_id: tenant.clone(),
        url: input.url,
        description: input.description,
        rules: input.rules,
        categories: input.categories,
        enabled: input.enabled,
        created_at: now,
        updated_at: now,
    };
    let secret = input.secret.unwrap_or_else(sign::generate);
    store::create_endpoint(&mut pooled(&state).await?.conn(), &endpoint, &secret).await.map_err(ApiError::read_failed)?;
    audit(&state, &principal, &caller, "webhooks.created", "POST /audit/webhooks", &tenant, before_after(None, Some(&endpoint))).await?;
    Ok((StatusCode::CREATED, Json(CreatedEndpoint { endpoint, secret })))
}

/// The webhook endpoints the key may see.
/// Which endpoints to list.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct ListParams {
    /// Only this tenant's.
    #[param(pattern = "^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,64}$")]
    tenant_id: Option<String>,
}

/// Which messages to list.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the schema generator only.
pub struct MessageParams {
    /// Only messages in this state.
    state: Option<MessageState>,
    /// How many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/audit/webhooks", tag = "detection", params(ListParams),
    responses((status = 200, description = "the endpoints the key may see", body = EndpointList), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<EndpointList>, ApiError> {
    require(&principal, Permission::KeysManage)?;
    let params = strict_params(query.as_deref(), &["tenant_id"])?;
    let tenant = match params.get("tenant_id") {
        Some(t) => Some(tenant_of(&principal, Some(t))?),
        None => principal.tenant.clone(),
    };
    let items = store::endpoints(&mut pooled(&state).await?.conn(), tenant.as_deref()).await.map_err(ApiError::read_failed)?;
    let mut details = Map::new();
    details.insert("result_count".into(), items.len().into());
    access::record(&state, &principal, Access { action: "webhooks.viewed", tenant: tenant.as_deref(), endpoint: "GET /audit/webhooks", caller: &caller, details }).await?;
    Ok(Json(EndpointList { items }))
}

/// Changes a webhook endpoint.
#[utoipa::path(put, path = "/audit/webhooks/{id}", tag = "detection", request_body = EndpointInput, params(("id" = Uuid, Path)),
    responses((status = 200, description = "the endpoint as changed", body = Endpoint), (status = 413, description = "the body is over 2 MiB", body = ErrorEnvelope), (status = 415, description = "the body is not application/json", body = ErrorEnvelope), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn update(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    PathUuid(id): PathUuid,
    ApiJson(input): ApiJson<EndpointInput>,
) -> Result<Json<Endpoint>, ApiError> {
    require(&principal, Permission::KeysManage)?;
    validate(&input, sender(&state)?)?;
    let (before, _) = visible(&state, &principal, id).await?;
    if input.tenant_id.as_ref().is_some_and(|t| *t != before.tenant_id) {
        return Err(ApiError::bad_request("tenant_id: an endpoint stays with its tenant; create a new one"));
    }
    let after = Endpoint {
        url: input.url,
        description: input.description,
        rules: input.rules,
        categories: input.categories,
        enabled: input.enabled,
        updated_at: state.clock.now(),
        ..before.clone()
    };
    store::update_endpoint(&mut pooled(&state).await?.conn(), &after, input.secret.as_deref()).await.map_err(ApiError::read_failed)?;
    let mut details = before_after(Some(&before), Some(&after));
    details.insert("secret_changed".into(), input.secret.is_some().into());
    audit(&state, &principal, &caller, "webhooks.changed", "PUT /audit/webhooks/{id}", &before.tenant_id, details).await?;
    Ok(Json(after))
}

/// Deletes a webhook endpoint and its messages.
#[utoipa::path(delete, path = "/audit/webhooks/{id}", tag = "detection", params(("id" = Uuid, Path)),
    responses((status = 200, description = "the deleted endpoint (its messages go with it)", body = Endpoint), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    PathUuid(id): PathUuid,
) -> Result<Json<Endpoint>, ApiError> {
    require(&principal, Permission::KeysManage)?;
    let (before, _) = visible(&state, &principal, id).await?;
    store::delete_endpoint(&mut pooled(&state).await?.conn(), id).await.map_err(ApiError::read_failed)?;
    audit(&state, &principal, &caller, "webhooks.deleted", "DELETE /audit/webhooks/{id}", &before.tenant_id, before_after(Some(&before), None)).await?;
    Ok(Json(before))
}

/// Sends a signed test message to the endpoint once.
#[utoipa::path(post, path = "/audit/webhooks/{id}/test", tag = "detection", params(("id" = Uuid, Path)),
    responses((status = 200, description = "how the test message's one attempt went (not retried)", body = Attempt), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn test(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    PathUuid(id): PathUuid,
) -> Result<Json<Attempt>, ApiError> {
    require(&principal, Permission::KeysManage)?;
    let sender = sender(&state)?;
    let (endpoint, secret) = visible(&state, &principal, id).await?;
    let now = state.clock.now();
    let body = serde_json::json!({
        "type": "webhook.test",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {"endpoint_id": endpoint.id, "tenant_id": endpoint.tenant_id, "message": "a test message from tierlog"},
    })
    .to_string();
    let attempt = sender.send(&endpoint.url, &secret, &webhook_id(Uuid::now_v7()), &body).await;
    let mut details = Map::new();
    details.insert("endpoint_id".into(), endpoint.id.to_string().into());
    details.insert("attempt".into(), serde_json::to_value(&attempt).unwrap_or_default());
    audit(&state, &principal, &caller, "webhooks.tested", "POST /audit/webhooks/{id}/test", &endpoint.tenant_id, details).await?;
    Ok(Json(attempt))
}

/// An endpoint's messages and how their delivery went.
#[utoipa::path(get, path = "/audit/webhooks/{id}/messages", tag = "detection",
    params(("id" = Uuid, Path), MessageParams),
    responses((status = 200, description = "the endpoint's messages, newest first", body = MessageList), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn messages(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    PathUuid(id): PathUuid,
    RawQuery(query): RawQuery,
) -> Result<Json<MessageList>, ApiError> {
    require(&principal, Permission::KeysManage)?;
    let params = strict_params(query.as_deref(), &["state", "limit"])?;
    let wanted = match params.get("state").map(String::as_str) {
        None => None,
        Some(s @ ("pending" | "delivered" | "dead")) => Some(MessageState::parse(s)),
        Some(_) => return Err(ApiError::bad_request("state: one of pending, delivered, dead")),
    };
    let limit = match params.get("limit") {
        None => 100,
        Some(l) => l.parse::<i64>().ok().filter(|l| (1..=1000).contains(l)).ok_or_else(|| ApiError::bad_request("limit: 1 to 1000"))?,
    };
    let (endpoint, _) = visible(&state, &principal, id).await?;
    let items = store::messages(&mut pooled(&state).await?.conn(), id, wanted, limit).await.map_err(ApiError::read_failed)?;
    let mut details = Map::new();
    details.insert("endpoint_id".into(), id.to_string().into());
    details.insert("result_count".into(), items.len().into());
    access::record(&state, &principal, Access { action: "webhooks.messages_viewed", tenant: Some(&endpoint.tenant_id), endpoint: "GET /audit/webhooks/{id}/messages", caller: &caller, details }).await?;
    Ok(Json(MessageList { items }))
}

/// Queues a message again (a dead-lettered one, say).
#[utoipa::path(post, path = "/audit/webhooks/{id}/messages/{message_id}/redeliver", tag = "detection",
    params(("id" = Uuid, Path), ("message_id" = Uuid, Path)),
    responses((status = 200, description = "the message, queued again (retried for another webhooks.give_up_after_seconds)", body = Message), (status = 404, description = "no such endpoint or message, or the feature is switched off", body = ErrorEnvelope), CommonErrors))]
pub(super) async fn redeliver(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<Json<Message>, ApiError> {
    require(&principal, Permission::KeysManage)?;
    let parse = |raw: &str| raw.parse::<Uuid>().map_err(|_| ApiError::bad_request(format!("{raw:?} is not a UUID")));
    let (id, message_id) = (parse(&id)?, parse(&message_id)?);
    let (endpoint, _) = visible(&state, &principal, id).await?;
    let mut pooled = pooled(&state).await?;
    let before = store::message(&mut pooled.conn(), id, message_id).await.map_err(ApiError::read_failed)?.ok_or_else(|| ApiError::not_found("no such message"))?;
    let now = state.clock.now();
    let until = now + Duration::seconds(state.settings.webhooks.give_up_after_seconds as i64);
    store::redeliver(&mut pooled.conn(), message_id, now.timestamp_millis(), until.timestamp_millis()).await.map_err(ApiError::read_failed)?;
    let after = store::message(&mut pooled.conn(), id, message_id).await.map_err(ApiError::read_failed)?.ok_or_else(|| ApiError::not_found("no such message"))?;
    drop(pooled);
    let mut details = Map::new();
    details.insert("endpoint_id".into(), id.to_string().into());
    details.insert("message_id".into(), message_id.to_string().into());
    details.insert("state_before".into(), before.state.as_str().into());
    audit(&state, &principal, &caller, "webhooks.redelivered", "POST /audit/webhooks/{id}/messages/{message_id}/redeliver", &endpoint.tenant_id, details).await?;
    Ok(Json(after))
}
