//! Reading a table page by page with the shared filters, newest first.

use super::leads::{self, ExpiryBound};
use super::rows::ROW_SELECT;
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};

use super::rows::stored_row;
use super::StoredRow;
use crate::event::Category;
use crate::query::{Cursor, Filters};
use crate::tiers::Table;

/// One page of a table.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<StoredRow>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
    /// The number of matching rows, when asked for.
    pub total: Option<i64>,
}

/// The transaction a read of `filters` runs in, and what it may skip: with a `from`
/// time, a repeatable-read snapshot holding the table's expiry bound (see
/// [`leads`]), so the read skips the time partitions that expire too early.
pub(crate) async fn read_snapshot(
    pool: &PgPool,
    table: Table,
    filters: &Filters,
) -> Result<(Transaction<'static, Postgres>, Option<ExpiryBound>), sqlx::Error> {
    match filters.from {
        Some(_) => leads::snapshot(pool, table).await,
        None => Ok((pool.begin().await?, None)),
    }
}

/// Appends the WHERE conditions of `filters` (all but the cursor) for `categories`,
/// and with a `from` time the partitions `bound` lets the read skip.
pub(crate) fn push_conditions(qb: &mut QueryBuilder<'_, Postgres>, filters: &Filters, categories: &[Category], bound: Option<&ExpiryBound>) {
    let names: Vec<&'static str> = categories.iter().map(|c| c.as_str()).collect();
    qb.push(" WHERE category = ANY(").push_bind(names).push(")");
    let mut equal = |column: &str, value: &Option<String>| {
        if let Some(value) = value {
            qb.push(format!(" AND {column} = ")).push_bind(value.clone());
        }
    };
    equal("tenant_id", &filters.tenant);
    equal("user_id", &filters.user_id);
    equal("action", &filters.action);
    equal("resource", &filters.resource);
    equal("resource_id", &filters.resource_id);
    equal("request_id", &filters.request_id);
    if let Some(status) = filters.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(ip) = &filters.ip {
        let operator = if ip.prefix.is_some() { "<<=" } else { "=" };
        qb.push(format!(" AND ip_address {operator} ")).push_bind(ip.to_inet()).push("::inet");
    }
    if let Some(from) = filters.from {
        qb.push(" AND occurred_at >= ").push_bind(from);
        if let Some(bound) = bound {
            bound.push(qb, from);
        }
    }
    if let Some(to) = filters.to {
        qb.push(" AND occurred_at < ").push_bind(to);
    }
    if let Some(q) = &filters.q {
        qb.push(" AND search @@ websearch_to_tsquery('simple', ").push_bind(q.clone()).push(")");
    }
}

/// How far back a page with no `from` first looks: far enough for a full page of an
/// active tenant, near enough that the read skips all but the newest partitions.
const RECENT: chrono::Duration = chrono::Duration::days(1);

/// The page of `table` that `filters` select among `categories`. Without a `from`
/// time it first reads only the day before the page's start (the newest partitions,
/// see [`leads`]): when that day fills the page, no older row can be on it;
/// otherwise it reads again without the day.
pub async fn page(pool: &PgPool, table: Table, filters: &Filters, categories: &[Category]) -> Result<Page, sqlx::Error> {
    let (mut tx, bound) = leads::snapshot(pool, table).await?;
    let mut rows = Vec::new();
    if let (None, Some(_)) = (filters.from, bound) {
        let start = [filters.cursor.as_ref().map(|cursor| cursor.time()), filters.to].into_iter().flatten().min();
        let start = start.unwrap_or_else(chrono::Utc::now);
        let recent = Filters { from: Some(start - RECENT), ..filters.clone() };
        rows = rows_of(&mut tx, table, &recent, categories, bound.as_ref()).await?;
        if rows.len() <= filters.limit {
            rows.clear();
        }
    }
    if rows.is_empty() {
        rows = rows_of(&mut tx, table, filters, categories, bound.as_ref()).await?;
    }
    let mut items = rows;
    let next_cursor = if items.len() > filters.limit {
        items.truncate(filters.limit);
        items.last().map(|last| Cursor::after(last.event.timestamp, last.event.id))
    } else {
        None
    };
    let total = if filters.include_total {
        let mut count = QueryBuilder::new(format!("SELECT count(*) FROM {table}"));
        push_conditions(&mut count, filters, categories, bound.as_ref());
        Some(count.build_query_scalar::<i64>().fetch_one(&mut *tx).await?)
    } else {
        None
    };
    tx.commit().await?;
    Ok(Page { items, next_cursor, total })
}

/// Up to `filters.limit + 1` rows after the cursor, newest first.
async fn rows_of(
    tx: &mut Transaction<'static, Postgres>,
    table: Table,
    filters: &Filters,
    categories: &[Category],
    bound: Option<&ExpiryBound>,
) -> Result<Vec<StoredRow>, sqlx::Error> {
    let mut qb = QueryBuilder::new(format!("SELECT {ROW_SELECT} FROM {table}"));
    push_conditions(&mut qb, filters, categories, bound);
    if let Some(cursor) = &filters.cursor {
        qb.push(" AND (occurred_at, id) < (").push_bind(cursor.time()).push(", ").push_bind(cursor.id).push(")");
    }
    qb.push(" ORDER BY occurred_at DESC, id DESC LIMIT ").push_bind(filters.limit as i64 + 1);
    let rows = qb.build().fetch_all(&mut **tx).await?;
    rows.iter().map(|row| stored_row(table, row)).collect()
}
