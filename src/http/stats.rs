//! `GET /audit/stats` and `GET /audit/failed-logins`: aggregates over the persisted
//! events a key may view. Events kept only in Redis and the files (for example `api`
//! below ERROR) are not counted.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{Duration, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::access::{self, Access};
use super::error::ApiError;
#[allow(unused_imports)] // Named in OpenAPI annotations.
use super::openapi::*;
use super::extract::Caller;
use super::query::categories_for;
use super::AppState;
use crate::event::Category;
use crate::keys::Principal;
use crate::query::{view_permission, Filters};
use crate::tiers::postgres::stats::{FailureGroup, FailureQuery, GroupBy};
use crate::tiers::Table;

/// Applies `hours` (default 24, at most 8,760) as the window when `from` is not given.
fn window(filters: &mut Filters, extra: &[(String, String)]) -> Result<(), ApiError> {
    let hours = match extra.iter().find(|(k, _)| k == "hours") {
        Some((_, raw)) => raw
            .parse::<i64>()
            .ok()
            .filter(|h| (1..=8760).contains(h))
            .ok_or_else(|| ApiError::bad_request("hours: must be a whole number from 1 to 8760"))?,
        None => 24,
    };
    if filters.from.is_none() {
        filters.from = Some(filters.to.unwrap_or_else(Utc::now) - Duration::hours(hours));
    }
    Ok(())
}

fn tables_for(state: &AppState, categories: &[Category]) -> Vec<(Table, Vec<Category>)> {
    Table::ALL
        .into_iter()
        .map(|table| {
            let cats: Vec<Category> =
                state.settings.categories_in(table).into_iter().filter(|c| categories.contains(c)).collect();
            (table, cats)
        })
        .filter(|(_, cats)| !cats.is_empty())
        .collect()
}

/// Merges per-table groups, keeping the largest first.
fn merge_groups(mut groups: Vec<FailureGroup>, limit: usize) -> Vec<FailureGroup> {
    let mut merged: BTreeMap<String, FailureGroup> = BTreeMap::new();
    for group in groups.drain(..) {
        merged
            .entry(group.key.clone())
            .and_modify(|m| {
                m.failures += group.failures;
                m.distinct = m.distinct.max(group.distinct);
                m.first_seen = m.first_seen.min(group.first_seen);
                m.last_seen = m.last_seen.max(group.last_seen);
            })
            .or_insert(group);
    }
    let mut list: Vec<FailureGroup> = merged.into_values().collect();
    list.sort_by(|a, b| b.failures.cmp(&a.failures).then_with(|| a.key.cmp(&b.key)));
    list.truncate(limit);
    list
}

/// The `/audit/stats` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub from: String,
    pub to: String,
    pub total: i64,
    pub by_category: BTreeMap<String, i64>,
    /// tierlog's own access records (reads, exports, key changes) in the window,
    /// counted apart: they are in `total` and `by_category` only when the request
    /// asks for `category=access`. Absent when the key cannot view them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_records: Option<i64>,
    pub by_status: BTreeMap<String, i64>,
    #[schema(value_type = Vec<Object>)]
    pub by_action: Vec<Value>,
    pub top_failing_ips: Vec<FailureGroup>,
    pub top_failing_users: Vec<FailureGroup>,
}

#[utoipa::path(get, path = "/audit/stats", tag = "read", params(QueryParams, PageParams, WindowParams),
    responses((status = 200, description = "counts over the window", body = Stats), CommonErrors))]
pub(super) async fn stats(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Stats>, ApiError> {
    let (mut filters, extra) = Filters::parse(query.as_deref(), &principal, &["hours"])?;
    window(&mut filters, &extra)?;
    let categories = categories_for(&principal, &Category::ALL, &filters)?;
    let pg = state.reader()?;
    let mut by_category = BTreeMap::new();
    let mut by_status = BTreeMap::new();
    let mut by_action: BTreeMap<String, i64> = BTreeMap::new();
    let mut ips = Vec::new();
    let mut users = Vec::new();
    for (table, cats) in tables_for(&state, &categories) {
        for count in pg.counts(table, &filters, &cats).await.map_err(ApiError::read_failed)? {
            *by_category.entry(count.category).or_insert(0) += count.count;
            *by_status.entry(count.status.unwrap_or_else(|| "none".into())).or_insert(0) += count.count;
            *by_action.entry(count.action.unwrap_or_else(|| "none".into())).or_insert(0) += count.count;
        }
        let top = |group_by| FailureQuery { group_by, logins_only: false, min_failures: 1, limit: 10 };
        ips.extend(pg.failures(table, &filters, &cats, top(GroupBy::Ip)).await.map_err(ApiError::read_failed)?);
        users.extend(pg.failures(table, &filters, &cats, top(GroupBy::User)).await.map_err(ApiError::read_failed)?);
    }
    let mut actions: Vec<(String, i64)> = by_action.into_iter().collect();
    actions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    actions.truncate(50);
    let total = by_category.values().sum();
    let access_records = match filters.category {
        Some(Category::Access) => Some(total),
        Some(_) => None,
        None if !principal.can(view_permission(Category::Access)) => None,
        None => {
            let mut n = 0;
            for (table, cats) in tables_for(&state, &[Category::Access]) {
                let counts = pg.counts(table, &filters, &cats).await.map_err(ApiError::read_failed)?;
                n += counts.iter().map(|c| c.count).sum::<i64>();
            }
            Some(n)
        }
    };
    let mut details = Map::new();
    details.insert("query".into(), query.clone().unwrap_or_default().into());
    details.insert("result_count".into(), json!(total));
    access::record(
        &state,
        &principal,
        Access { action: "stats.viewed", tenant: filters.tenant.as_deref(), endpoint: "GET /audit/stats", caller: &caller, details },
    )
    .await?;
    Ok(Json(Stats {
        from: filters.from.map(|t| t.to_rfc3339()).unwrap_or_default(),
        to: filters.to.unwrap_or_else(Utc::now).to_rfc3339(),
        total,
        by_category,
        access_records,
        by_status,
        by_action: actions.into_iter().map(|(action, count)| json!({"action": action, "count": count})).collect(),
        top_failing_ips: merge_groups(ips, 10),
        top_failing_users: merge_groups(users, 10),
    }))
}

/// The `/audit/failed-logins` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FailedLogins {
    pub group_by: &'static str,
    pub from: String,
    pub items: Vec<FailureGroup>,
}

#[utoipa::path(get, path = "/audit/failed-logins", tag = "read", params(QueryParams, PageParams, WindowParams, FailureParams),
    responses((status = 200, description = "failures grouped by address or user", body = FailedLogins), CommonErrors))]
pub(super) async fn failed_logins(
    State(state): State<AppState>,
    principal: Principal,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<FailedLogins>, ApiError> {
    let (mut filters, extra) = Filters::parse(query.as_deref(), &principal, &["hours", "group_by", "min_failures"])?;
    window(&mut filters, &extra)?;
    let param = |name: &str| extra.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let group_by = match param("group_by").unwrap_or("ip") {
        "ip" => GroupBy::Ip,
        "user" => GroupBy::User,
        _ => return Err(ApiError::bad_request("group_by: must be ip or user")),
    };
    let min_failures = match param("min_failures") {
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| ApiError::bad_request("min_failures: must be a whole number from 1 to 1000000"))?,
        None => 1,
    };
    // Failed logins are auth events: asking for another category matches nothing.
    let other_category = filters.category.is_some_and(|c| c != Category::Auth);
    filters.category = Some(Category::Auth);
    let categories = categories_for(&principal, &[Category::Auth], &filters)?;
    let pg = state.reader()?;
    let mut groups = Vec::new();
    for (table, cats) in tables_for(&state, &categories).into_iter().filter(|_| !other_category) {
        groups.extend(
            pg.failures(
                table,
                &filters,
                &cats,
                FailureQuery { group_by, logins_only: true, min_failures, limit: filters.limit as i64 },
            )
            .await
            .map_err(ApiError::read_failed)?,
        );
    }
    let items = merge_groups(groups, filters.limit);
    let mut details = Map::new();
    details.insert("query".into(), query.clone().unwrap_or_default().into());
    details.insert("result_count".into(), items.len().into());
    access::record(
        &state,
        &principal,
        Access {
            action: "failed_logins.viewed",
            tenant: filters.tenant.as_deref(),
            endpoint: "GET /audit/failed-logins",
            caller: &caller,
            details,
        },
    )
    .await?;
    Ok(Json(FailedLogins {
        group_by: if group_by == GroupBy::Ip { "ip" } else { "user" },
        from: filters.from.map(|t| t.to_rfc3339()).unwrap_or_default(),
        items,
    }))
}
