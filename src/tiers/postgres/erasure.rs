//! GDPR erasure in Postgres: the subject's personal values are removed in place,
//! inside a maintenance transaction. Rows the subject acted in lose every personal
//! field (user_id becomes a pseudonym) and the personal values at their sealed
//! paths; rows about the subject (`resource = 'user'`, `resource_id` = the subject)
//! lose the personal values at their sealed paths. Every row's salt is dropped, so
//! its old personal values can no longer be confirmed against `pii_hash`. Row hashes
//! are unaffected (see `integrity::chain`).

use std::collections::BTreeMap;

use serde_json::Value;
use super::rows::ROW_SELECT;
use sqlx::{PgPool, Row};

use super::retention::enter_maintenance;
use crate::integrity::chain::{replace_path, PiiPath, ERASED};
use crate::tiers::Table;

/// Replaces the values at `paths` (rooted at `details` or `changes`) with the
/// erasure marker.
pub fn erase_paths(details: &mut Option<Value>, changes: &mut Option<Value>, paths: &[PiiPath]) {
    for path in paths {
        let (root, rest) = match path.split_first() {
            Some((root, rest)) if root == "details" => (details.as_mut(), rest),
            Some((root, rest)) if root == "changes" => (changes.as_mut(), rest),
            _ => continue,
        };
        if let Some(Value::Object(map)) = root {
            replace_path(map, rest, Value::String(ERASED.into()));
        }
    }
}

/// Rows changed per table.
pub async fn erase_subject(
    pool: &PgPool,
    tenant: Option<&str>,
    subject: &str,
    pseudonym: &str,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let mut changed = BTreeMap::new();
    let mut tx = pool.begin().await?;
    enter_maintenance(&mut tx).await?;
    for table in Table::ALL {
        let sql = format!(
            "SELECT tenant_id, seq, details, changes, pii_paths, user_id = $1 AS actor FROM {table}
             WHERE (user_id = $1 OR (resource = 'user' AND resource_id = $1))
               AND ($2::text IS NULL OR tenant_id = $2)
             FOR UPDATE"
        );
        let rows = sqlx::query(&sql).bind(subject).bind(tenant).fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            continue;
        }
        let (mut tenants, mut seqs, mut actors, mut details_col, mut changes_col) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let mut details: Option<Value> = row.try_get("details")?;
            let mut changes: Option<Value> = row.try_get("changes")?;
            let paths: Option<Value> = row.try_get("pii_paths")?;
            let paths: Vec<PiiPath> = paths.and_then(|p| serde_json::from_value(p).ok()).unwrap_or_default();
            erase_paths(&mut details, &mut changes, &paths);
            tenants.push(row.try_get::<String, _>("tenant_id")?);
            seqs.push(row.try_get::<i64, _>("seq")?);
            actors.push(row.try_get::<bool, _>("actor")?);
            details_col.push(details);
            changes_col.push(changes);
        }
        let sql = format!(
            "UPDATE {table} t SET
                 details = k.details, changes = k.changes, pii_salt = NULL,
                 user_id = CASE WHEN k.actor THEN $6 ELSE t.user_id END,
                 username = CASE WHEN k.actor THEN NULL ELSE t.username END,
                 email = CASE WHEN k.actor THEN NULL ELSE t.email END,
                 ip_address = CASE WHEN k.actor THEN NULL ELSE t.ip_address END,
                 user_agent = CASE WHEN k.actor THEN NULL ELSE t.user_agent END
             FROM unnest($1::text[], $2::int8[], $3::bool[], $4::jsonb[], $5::jsonb[]) AS k(tenant, seq, actor, details, changes)
             WHERE t.tenant_id = k.tenant AND t.seq = k.seq"
        );
        let result = sqlx::query(&sql)
            .bind(&tenants)
            .bind(&seqs)
            .bind(&actors)
            .bind(&details_col)
            .bind(&changes_col)
            .bind(pseudonym)
            .execute(&mut *tx)
            .await?;
        changed.insert(table.as_str().to_owned(), result.rows_affected());
    }
    tx.commit().await?;
    Ok(changed)
}


/// Every persisted row `subject` acted in or that is about them, newest first, at
/// most `limit` per table.
pub async fn subject_rows(
    pool: &PgPool,
    tenant: Option<&str>,
    subject: &str,
    limit: i64,
) -> Result<Vec<super::StoredRow>, sqlx::Error> {
    let mut found = Vec::new();
    for table in Table::ALL {
        let sql = format!(
            "SELECT {ROW_SELECT} FROM {table}
             WHERE (user_id = $1 OR (resource = 'user' AND resource_id = $1))
               AND ($2::text IS NULL OR tenant_id = $2)
             ORDER BY occurred_at DESC LIMIT $3"
        );
        for row in sqlx::query(&sql).bind(subject).bind(tenant).bind(limit).fetch_all(pool).await? {
            found.push(super::rows::stored_row(table, &row)?);
        }
    }
    found.sort_by_key(|row| std::cmp::Reverse(row.event.timestamp));
    Ok(found)
}
