//! Reading a table page by page with the shared filters, newest first.

use super::rows::ROW_SELECT;
use sqlx::{PgPool, Postgres, QueryBuilder};

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

/// Appends the WHERE conditions of `filters` (all but the cursor) for `categories`.
pub(crate) fn push_conditions(qb: &mut QueryBuilder<'_, Postgres>, filters: &Filters, categories: &[Category]) {
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
    }
    if let Some(to) = filters.to {
        qb.push(" AND occurred_at < ").push_bind(to);
    }
    if let Some(q) = &filters.q {
        qb.push(" AND search @@ websearch_to_tsquery('simple', ").push_bind(q.clone()).push(")");
    }
}

/// The page of `table` that `filters` select among `categories`.
pub async fn page(pool: &PgPool, table: Table, filters: &Filters, categories: &[Category]) -> Result<Page, sqlx::Error> {
    let mut qb = QueryBuilder::new(format!("SELECT {ROW_SELECT} FROM {table}"));
    push_conditions(&mut qb, filters, categories);
    if let Some(cursor) = &filters.cursor {
        qb.push(" AND (occurred_at, id) < (").push_bind(cursor.time()).push(", ").push_bind(cursor.id).push(")");
    }
    qb.push(" ORDER BY occurred_at DESC, id DESC LIMIT ").push_bind(filters.limit as i64 + 1);
    let rows = qb.build().fetch_all(pool).await?;
    let mut items = rows.iter().map(|row| stored_row(table, row)).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > filters.limit {
        items.truncate(filters.limit);
        items.last().map(|last| Cursor::after(last.event.timestamp, last.event.id))
    } else {
        None
    };
    let total = if filters.include_total {
        let mut count = QueryBuilder::new(format!("SELECT count(*) FROM {table}"));
        push_conditions(&mut count, filters, categories);
        Some(count.build_query_scalar::<i64>().fetch_one(pool).await?)
    } else {
        None
    };
    Ok(Page { items, next_cursor, total })
}
