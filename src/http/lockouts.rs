//! `GET /audit/users/{id}/lockouts`: lockout diagnostics — each lockout of one user
//! with the failed attempts that led to it and the reset that ended it
//! ([`crate::query::lockouts`]), from the user's events in every tier the key may read.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::extract::Caller;
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::auth::require;
use super::query::{check_user_id, merged_page, record_read};
use super::AppState;
use crate::keys::{Permission, Principal};
use crate::query::filter::{Cursor, Filters, MAX_LIMIT};
use crate::query::lockouts::{diagnose, Lockout};

/// The most events of one user looked at for one answer (newest first).
const MAX_EVENTS: usize = 20_000;
/// The window when no failed-login rule says otherwise (detection off).
const DEFAULT_WINDOW_SECONDS: u64 = 900;

/// The diagnostics of one user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LockoutsResponse {
    pub user_id: String,
    pub tenant_id: Option<String>,
    /// How far before a lockout failed attempts count: the window of the tenant's
    /// `failed-logins-per-user` rule (15 minutes unless changed).
    pub window_seconds: u64,
    /// Oldest first.
    pub lockouts: Vec<Lockout>,
    /// How many of the user's events were looked at...
    pub events_examined: usize,
    /// ...and whether older ones were left out (more than 20,000 in the period:
    /// narrow it with `from`).
    pub truncated: bool,
}

/// `GET /audit/users/{id}/lockouts`.
#[utoipa::path(get, path = "/audit/users/{id}/lockouts", tag = "read",
    description = "each lockout of the user (within from/to), with the failed login attempts inside the failed-login window before it (time, address, user agent, outcome) and the unlock or reset that ended it",
    params(("id" = String, Path, description = "the user id", min_length = 1, max_length = 1024, pattern = "^[^\\x00]*$"), QueryParams),
    responses((status = 200, description = "the user's lockouts, oldest first", body = LockoutsResponse), CommonErrors))]
pub(super) async fn lockouts(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<LockoutsResponse>, ApiError> {
    check_user_id(&user_id)?;
    let (mut filters, _) = Filters::parse(query.as_deref(), &principal, &[])?;
    // Lockouts and failed logins are authentication events.
    require(&principal, Permission::LogsAuthView)?;
    let another_user = filters.user_id.as_ref().is_some_and(|asked| *asked != user_id);
    filters.user_id = Some(user_id.clone());
    filters.limit = MAX_LIMIT;
    filters.include_total = false;
    let window_seconds = state
        .detector
        .as_ref()
        .and_then(|detector| {
            detector.book.effective(filters.tenant.as_deref()).into_iter().find(|r| r.name == "failed-logins-per-user" && r.enabled)
        })
        .and_then(|rule| rule.window_seconds)
        .unwrap_or(DEFAULT_WINDOW_SECONDS);

    let mut events = Vec::new();
    let mut truncated = false;
    while !another_user {
        let page = merged_page(&state, &principal, &filters).await?;
        events.extend(page.items);
        match page.next_cursor {
            Some(_) if events.len() >= MAX_EVENTS => {
                truncated = true;
                break;
            }
            Some(cursor) => filters.cursor = Some(Cursor::decode(&cursor)?),
            None => break,
        }
    }
    let lockouts = diagnose(&events, chrono::Duration::seconds(window_seconds as i64));
    record_read(&state, &principal, &filters, "GET /audit/users/{id}/lockouts", &caller, query.as_deref(), lockouts.len()).await?;
    Ok(Json(LockoutsResponse {
        user_id,
        tenant_id: filters.tenant.clone(),
        window_seconds,
        lockouts,
        events_examined: events.len(),
        truncated,
    }))
}
