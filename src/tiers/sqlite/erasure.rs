//! GDPR erasure and export in the embedded store: the same edits as
//! [`crate::tiers::postgres::erasure`] (the address key column goes with the
//! address).

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::ROW_SELECT;
use crate::integrity::chain::PiiPath;
use crate::tiers::postgres::erasure::erase_paths;
use crate::tiers::stored::{decode_stored, StoredRow};
use crate::tiers::Table;

/// Lets this transaction change audit rows; [`leave_maintenance`] must follow before
/// the commit.
pub(crate) async fn enter_maintenance(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tierlog_maintenance SET on_ = 1").execute(&mut *conn).await?;
    Ok(())
}

pub(crate) async fn leave_maintenance(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tierlog_maintenance SET on_ = 0").execute(&mut *conn).await?;
    Ok(())
}

fn json_text(value: Option<String>) -> Option<Value> {
    value.and_then(|text| serde_json::from_str(&text).ok())
}

/// Rows changed per table.
pub async fn erase_subject(
    pool: &SqlitePool,
    tenant: Option<&str>,
    subject: &str,
    pseudonym: &str,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let mut changed = BTreeMap::new();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    enter_maintenance(&mut tx).await?;
    for table in Table::ALL {
        let sql = format!(
            "SELECT tenant_id, seq, details, changes, pii_paths, user_id = ?1 AS actor FROM {table}
             WHERE (user_id = ?1 OR (resource = 'user' AND resource_id = ?1)) AND (?2 IS NULL OR tenant_id = ?2)"
        );
        let rows = sqlx::query(&sql).bind(subject).bind(tenant).fetch_all(&mut *tx).await?;
        let update = format!(
            "UPDATE {table} SET details = ?3, changes = ?4, pii_salt = NULL,
                 user_id = CASE WHEN ?5 THEN ?6 ELSE user_id END,
                 username = CASE WHEN ?5 THEN NULL ELSE username END,
                 email = CASE WHEN ?5 THEN NULL ELSE email END,
                 ip_address = CASE WHEN ?5 THEN NULL ELSE ip_address END,
                 ip_key = CASE WHEN ?5 THEN NULL ELSE ip_key END,
                 user_agent = CASE WHEN ?5 THEN NULL ELSE user_agent END
             WHERE tenant_id = ?1 AND seq = ?2"
        );
        let mut count = 0;
        for row in &rows {
            let mut details = json_text(row.try_get("details")?);
            let mut changes = json_text(row.try_get("changes")?);
            let paths: Vec<PiiPath> = json_text(row.try_get("pii_paths")?)
                .and_then(|p| serde_json::from_value(p).ok())
                .unwrap_or_default();
            erase_paths(&mut details, &mut changes, &paths);
            count += sqlx::query(&update)
                .bind(row.try_get::<String, _>("tenant_id")?)
                .bind(row.try_get::<i64, _>("seq")?)
                .bind(details.map(|d| d.to_string()))
                .bind(changes.map(|c| c.to_string()))
                .bind(row.try_get::<bool, _>("actor")?)
                .bind(pseudonym)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        if count > 0 {
            changed.insert(table.as_str().to_owned(), count);
        }
    }
    leave_maintenance(&mut tx).await?;
    tx.commit().await?;
    Ok(changed)
}

/// Every persisted row `subject` acted in or that is about them, newest first, at
/// most `limit` per table.
pub async fn subject_rows(pool: &SqlitePool, tenant: Option<&str>, subject: &str, limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
    let mut found = Vec::new();
    for table in Table::ALL {
        let sql = format!(
            "SELECT {ROW_SELECT} FROM {table}
             WHERE (user_id = ?1 OR (resource = 'user' AND resource_id = ?1)) AND (?2 IS NULL OR tenant_id = ?2)
             ORDER BY occurred_at DESC LIMIT ?3"
        );
        for row in sqlx::query(&sql).bind(subject).bind(tenant).bind(limit).fetch_all(pool).await? {
            found.push(decode_stored(table, &row)?);
        }
    }
    found.sort_by_key(|row| std::cmp::Reverse(row.event.timestamp));
    Ok(found)
}
