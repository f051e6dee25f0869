//! Aggregates over a table of the embedded store: the same answers as
//! [`crate::tiers::postgres::stats`].

use sqlx::{QueryBuilder, Row, SqlitePool};

use super::parse_instant;
use super::query::push_conditions;
use crate::event::Category;
use crate::query::Filters;
use crate::tiers::postgres::stats::{Count, FailureGroup, FailureQuery, GroupBy};
use crate::tiers::Table;

/// How many events of `table` match, by category, status and action.
pub async fn counts(pool: &SqlitePool, table: Table, filters: &Filters, categories: &[Category]) -> Result<Vec<Count>, sqlx::Error> {
    let mut qb = QueryBuilder::new(format!("SELECT category, status, action, count(*) AS n FROM {table}"));
    push_conditions(&mut qb, table, filters, categories);
    qb.push(" GROUP BY 1, 2, 3");
    let rows = qb.build().fetch_all(pool).await?;
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

/// Failed events of `table` grouped by address or user, most failures first.
pub async fn failures(
    pool: &SqlitePool,
    table: Table,
    filters: &Filters,
    categories: &[Category],
    how: FailureQuery,
) -> Result<Vec<FailureGroup>, sqlx::Error> {
    let FailureQuery { group_by, logins_only, min_failures, limit } = how;
    let (key, other) = match group_by {
        GroupBy::Ip => ("ip_address", "user_id"),
        GroupBy::User => ("user_id", "ip_address"),
    };
    let mut qb = QueryBuilder::new(format!(
        "SELECT {key} AS k, count(*) AS n, count(DISTINCT {other}) AS d, min(occurred_at) AS first_seen,
                max(occurred_at) AS last_seen FROM {table}"
    ));
    push_conditions(&mut qb, table, filters, categories);
    qb.push(" AND status = 'failure'");
    qb.push(format!(" AND {key} IS NOT NULL"));
    if logins_only {
        qb.push(" AND action LIKE '%login%'");
    }
    qb.push(" GROUP BY 1 HAVING count(*) >= ").push_bind(min_failures);
    qb.push(" ORDER BY n DESC, k LIMIT ").push_bind(limit);
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            Ok(FailureGroup {
                key: row.try_get("k")?,
                failures: row.try_get("n")?,
                distinct: row.try_get("d")?,
                first_seen: parse_instant("first_seen", &row.try_get::<String, _>("first_seen")?)?,
                last_seen: parse_instant("last_seen", &row.try_get::<String, _>("last_seen")?)?,
            })
        })
        .collect()
}
