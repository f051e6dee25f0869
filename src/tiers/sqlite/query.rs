//! Reading a table of the embedded store page by page with the shared filters,
//! newest first: the same answers as [`crate::tiers::postgres::query`].
//!
//! Differences in means, not results: a CIDR filter is a range over the address key
//! key column (`ip_key`); `q` is an FTS5 match of every word (quoted, so no input is FTS5 syntax).

use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::{instant_text, ip_key_range, ROW_SELECT};
use crate::event::Category;
use crate::query::{Cursor, Filters};
use crate::tiers::postgres::query::Page;
use crate::tiers::stored::decode_stored;
use crate::tiers::Table;

/// `q` as an FTS5 query: each word quoted, all required.
fn fts_query(q: &str) -> String {
    q.split_whitespace().map(|word| format!("\"{}\"", word.replace('"', "\"\""))).collect::<Vec<_>>().join(" ")
}

pub(crate) fn push_conditions(qb: &mut QueryBuilder<'_, Sqlite>, table: Table, filters: &Filters, categories: &[Category]) {
    qb.push(" WHERE category IN (");
    let mut names = qb.separated(", ");
    for category in categories {
        names.push_bind(category.as_str());
    }
    qb.push(")");
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
        let (low, high) = ip_key_range(ip);
        qb.push(" AND ip_key BETWEEN ").push_bind(low).push(" AND ").push_bind(high);
    }
    if let Some(from) = filters.from {
        qb.push(" AND occurred_at >= ").push_bind(instant_text(&from));
    }
    if let Some(to) = filters.to {
        qb.push(" AND occurred_at < ").push_bind(instant_text(&to));
    }
    if let Some(q) = filters.q.as_deref().map(fts_query).filter(|q| !q.is_empty()) {
        qb.push(format!(" AND rowid IN (SELECT rowid FROM {table}_search WHERE {table}_search MATCH "))
            .push_bind(q)
            .push(")");
    }
}

/// The page of `table` that `filters` select among `categories`.
pub async fn page(pool: &SqlitePool, table: Table, filters: &Filters, categories: &[Category]) -> Result<Page, sqlx::Error> {
    let mut qb = QueryBuilder::new(format!("SELECT {ROW_SELECT} FROM {table}"));
    push_conditions(&mut qb, table, filters, categories);
    if let Some(cursor) = &filters.cursor {
        qb.push(" AND (occurred_at, id) < (")
            .push_bind(instant_text(&cursor.time()))
            .push(", ")
            .push_bind(cursor.id.to_string())
            .push(")");
    }
    qb.push(" ORDER BY occurred_at DESC, id DESC LIMIT ").push_bind(filters.limit as i64 + 1);
    let rows = qb.build().fetch_all(pool).await?;
    let mut items = rows.iter().map(|row| decode_stored(table, row)).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > filters.limit {
        items.truncate(filters.limit);
        items.last().map(|last| Cursor::after(last.event.timestamp, last.event.id))
    } else {
        None
    };
    let total = if filters.include_total {
        let mut count = QueryBuilder::new(format!("SELECT count(*) FROM {table}"));
        push_conditions(&mut count, table, filters, categories);
        Some(count.build_query_scalar::<i64>().fetch_one(pool).await?)
    } else {
        None
    };
    Ok(Page { items, next_cursor, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::IpFilter;
    use crate::tiers::sqlite::ip_key;

    #[test]
    fn address_keys_order_like_addresses_and_networks_are_ranges() {
        let key = |s: &str| ip_key(s.parse().expect("ip"));
        let within = |net: &str, ip: &str| {
            let (low, high) = ip_key_range(&IpFilter::parse(net).expect("net"));
            let k = key(ip);
            low <= k && k <= high
        };
        assert!(key("10.0.0.2") < key("10.0.0.10"));
        assert!(within("10.1.0.0/16", "10.1.255.7") && !within("10.1.0.0/16", "10.2.0.1"));
        assert!(within("10.1.2.3", "10.1.2.3") && !within("10.1.2.3", "10.1.2.4"));
        assert!(within("0.0.0.0/0", "192.168.1.1") && !within("0.0.0.0/0", "2001:db8::1"));
        assert!(within("2001:db8::/32", "2001:db8:ffff::1") && !within("2001:db8::/32", "2001:db9::1"));
        assert!(!within("::/0", "10.0.0.1"), "families never mix, as in Postgres");
        assert!(within("::/0", "::ffff:10.0.0.1"));
    }

    #[test]
    fn search_words_are_quoted_so_input_is_never_fts5_syntax() {
        assert_eq!(fts_query("invalid password"), r#""invalid" "password""#);
        assert_eq!(fts_query(r#"a"b OR NEAR(x"#), r#""a""b" "OR" "NEAR(x""#);
    }
}
