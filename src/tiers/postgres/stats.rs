//! Aggregates over a table: counts by category, status and action, top failing
//! addresses and users, and failed logins grouped for brute-force detection.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, QueryBuilder, Row};

use super::query::{push_conditions, read_snapshot};
use crate::event::Category;
use crate::query::Filters;
use crate::tiers::Table;

/// Counts of one (category, status, action) combination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub category: String,
    pub status: Option<String>,
    pub action: Option<String>,
    pub count: i64,
}

/// How many events of `table` match, by category, status and action.
pub async fn counts(pool: &PgPool, table: Table, filters: &Filters, categories: &[Category]) -> Result<Vec<Count>, sqlx::Error> {
    let (mut tx, bound) = read_snapshot(pool, table, filters).await?;
    let mut qb = QueryBuilder::new(format!("SELECT category, status, action, count(*) AS n FROM {table}"));
    push_conditions(&mut qb, filters, categories, bound.as_ref());
    qb.push(" GROUP BY 1, 2, 3");
    let rows = qb.build().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    rows.iter()
        .map(|row| {
            Ok(Count {
                category: row.try_get("category")?,
                status: row.try_get("status")?,
                action: row.try_get("action")?,
                count: row.try_get("n")?,
            })
        })
        .collect()
}

/// One group of failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FailureGroup {
    /// The address or user id.
    pub key: String,
    pub failures: i64,
    /// Distinct users failing from this address, or addresses failing for this user:
    /// many users from one address suggests credential stuffing, many attempts on one
    /// user brute force.
    pub distinct: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// What failures are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Ip,
    User,
}

/// How failures are grouped and cut.
#[derive(Debug, Clone, Copy)]
pub struct FailureQuery {
    pub group_by: GroupBy,
    /// Keep only actions that name a login.
    pub logins_only: bool,
    /// Leave out groups with fewer failures.
    pub min_failures: i64,
    pub limit: i64,
}

/// Failed events of `table` grouped by address or user, most failures first.
pub async fn failures(
    pool: &PgPool,
    table: Table,
    filters: &Filters,
    categories: &[Category],
    how: FailureQuery,
) -> Result<Vec<FailureGroup>, sqlx::Error> {
    let FailureQuery { group_by, logins_only, min_failures, limit } = how;
    let (key, other) = match group_by {
        GroupBy::Ip => ("host(ip_address)", "user_id"),
        GroupBy::User => ("user_id", "ip_address"),
    };
    let mut qb = QueryBuilder::new(format!(
        "SELECT {key} AS k, count(*) AS n, count(DISTINCT {other}) AS d, min(occurred_at) AS first_seen,
                max(occurred_at) AS last_seen FROM {table}"
    ));
    let (mut tx, bound) = read_snapshot(pool, table, filters).await?;
    push_conditions(&mut qb, filters, categories, bound.as_ref());
    qb.push(" AND status = 'failure'");
    qb.push(format!(" AND {key} IS NOT NULL"));
    if logins_only {
        qb.push(" AND action LIKE '%login%'");
    }
    qb.push(" GROUP BY 1 HAVING count(*) >= ").push_bind(min_failures);
    qb.push(" ORDER BY n DESC, k LIMIT ").push_bind(limit);
    let rows = qb.build().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    rows.iter()
        .map(|row| {
            Ok(FailureGroup {
                key: row.try_get("k")?,
                failures: row.try_get("n")?,
                distinct: row.try_get("d")?,
                first_seen: row.try_get("first_seen")?,
                last_seen: row.try_get("last_seen")?,
            })
        })
        .collect()
}
