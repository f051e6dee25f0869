//! Retention in the embedded store: policies, expired rows, tombstones and their
//! compaction into signed checkpoints, as in [`crate::tiers::postgres::retention`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::erasure::{enter_maintenance, leave_maintenance};
use super::{instant_text, ROW_SELECT};
use crate::integrity::chain::content_hash;
use crate::integrity::checkpoint::{ChainHead, Checkpoint, Keyring, Signer};
use crate::integrity::verify::Verifier;
use crate::retention::{Days, Policies, TenantPolicy};
use crate::tiers::chain_walk::{self, ChainSource};
use crate::tiers::stored::{decode_stored, StoredRow};
use crate::tiers::{Chain, Table};

fn days(text: String) -> Result<Days, sqlx::Error> {
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Plans and tenant policies from the database over `defaults`.
pub async fn load_policies(pool: &SqlitePool, defaults: &Policies) -> Result<Policies, sqlx::Error> {
    let mut policies = Policies { defaults: defaults.defaults.clone(), ..Policies::default() };
    for row in sqlx::query("SELECT plan, days FROM retention_plans").fetch_all(pool).await? {
        policies.plans.insert(row.try_get("plan")?, days(row.try_get("days")?)?);
    }
    for row in sqlx::query("SELECT * FROM tenant_retention").fetch_all(pool).await? {
        policies.tenants.insert(
            row.try_get("tenant_id")?,
            TenantPolicy {
                plan: row.try_get("plan")?,
                days: days(row.try_get("days")?)?,
                legal_hold: row.try_get("legal_hold")?,
                hold_reason: row.try_get("hold_reason")?,
            },
        );
    }
    Ok(policies)
}

/// Creates or replaces plans and tenant policies in one transaction.
pub async fn save_policies(
    pool: &SqlitePool,
    plans: &BTreeMap<String, Days>,
    tenants: &BTreeMap<String, TenantPolicy>,
) -> Result<(), sqlx::Error> {
    let now = instant_text(&Utc::now());
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for (plan, days) in plans {
        sqlx::query(
            "INSERT INTO retention_plans (plan, days, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (plan) DO UPDATE SET days = excluded.days, updated_at = excluded.updated_at",
        )
        .bind(plan)
        .bind(serde_json::to_string(days).unwrap_or_default())
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    }
    for (tenant, policy) in tenants {
        sqlx::query(
            "INSERT INTO tenant_retention (tenant_id, plan, days, legal_hold, hold_reason, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (tenant_id) DO UPDATE SET plan = excluded.plan, days = excluded.days, legal_hold = excluded.legal_hold,
                 hold_reason = excluded.hold_reason, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(&policy.plan)
        .bind(serde_json::to_string(&policy.days).unwrap_or_default())
        .bind(policy.legal_hold)
        .bind(&policy.hold_reason)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Opens a write transaction and reads up to `limit` expired rows of tenants not on
/// hold, oldest expiry first (SQLite has one writer: nothing else changes them until
/// [`finish_expiry`] commits or the transaction is dropped).
pub async fn begin_expiry(
    pool: &SqlitePool,
    table: Table,
    now: DateTime<Utc>,
    held: &[String],
    limit: i64,
) -> Result<(Transaction<'static, Sqlite>, Vec<StoredRow>), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let held_json = serde_json::to_string(held).unwrap_or_else(|_| "[]".into());
    let sql = format!(
        "SELECT {ROW_SELECT} FROM {table}
         WHERE expires_at <= ?1 AND tenant_id NOT IN (SELECT value FROM json_each(?2))
         ORDER BY expires_at LIMIT ?3"
    );
    let rows = sqlx::query(&sql).bind(instant_text(&now)).bind(held_json).bind(limit).fetch_all(&mut *tx).await?;
    let mut rows: Vec<StoredRow> = rows.iter().map(|row| decode_stored(table, row)).collect::<Result<_, _>>()?;
    rows.sort_by(|a, b| (&a.event.tenant_id, a.seq).cmp(&(&b.event.tenant_id, b.seq)));
    Ok((tx, rows))
}

/// Deletes `rows`, leaving a tombstone for each, and commits.
pub async fn finish_expiry(
    mut tx: Transaction<'static, Sqlite>,
    table: Table,
    rows: &[StoredRow],
    now: DateTime<Utc>,
    run_id: Uuid,
) -> Result<u64, sqlx::Error> {
    enter_maintenance(&mut tx).await?;
    let delete = format!("DELETE FROM {table} WHERE tenant_id = ?1 AND seq = ?2");
    let mut deleted = 0;
    for row in rows {
        let seal: [u8; 32] = row.pii_hash.as_slice().try_into().unwrap_or([0; 32]);
        let content = content_hash(table.as_str(), &seal, &row.pii_paths, &row.event);
        sqlx::query(
            "INSERT INTO chain_tombstones (tenant_id, table_name, seq, expires_at, deleted_at, prev_hash, content_hash, row_hash, run_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&row.event.tenant_id)
        .bind(table.as_str())
        .bind(row.seq)
        .bind(instant_text(&row.expires_at))
        .bind(instant_text(&now))
        .bind(&row.prev_hash)
        .bind(content.to_vec())
        .bind(&row.row_hash)
        .bind(run_id.to_string())
        .execute(&mut *tx)
        .await?;
        deleted += sqlx::query(&delete).bind(&row.event.tenant_id).bind(row.seq).execute(&mut *tx).await?.rows_affected();
    }
    leave_maintenance(&mut tx).await?;
    tx.commit().await?;
    Ok(deleted)
}

/// Replaces the chain's leading tombstones by one signed checkpoint at the last of
/// them, after checking that they link; `None` when there is nothing to fold or they
/// do not verify (left for `verify` to report).
pub async fn compact(
    pool: &SqlitePool,
    signer: &Signer,
    keys: &Keyring,
    chain: &Chain,
    now: DateTime<Utc>,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let (tenant, table) = (chain.tenant.as_str(), chain.table);
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let sql = format!(
        "SELECT (SELECT min(seq) FROM {table} WHERE tenant_id = ?1 AND seq > ?3 AND seq < ?4) AS first_row,
                (SELECT seq FROM chain_heads WHERE tenant_id = ?1 AND table_name = ?2 AND seq >= ?3 AND seq < ?4) AS head,
                (SELECT min(seq) FROM chain_tombstones WHERE tenant_id = ?1 AND table_name = ?2 AND seq > ?3 AND seq < ?4) AS first_tomb"
    );
    let row =
        sqlx::query(&sql).bind(tenant).bind(table.as_str()).bind(chain.base()).bind(chain.end()).fetch_one(&mut *tx).await?;
    let (head, first_tomb, first_row): (Option<i64>, Option<i64>, Option<i64>) =
        (row.try_get("head")?, row.try_get("first_tomb")?, row.try_get("first_row")?);
    let (Some(head), Some(first_tomb)) = (head, first_tomb) else { return Ok(None) };
    let boundary = first_row.unwrap_or(head + 1);
    if first_tomb >= boundary {
        return Ok(None);
    }
    let mut source = super::verify::SqliteSource { tx, chain: chain.clone() };
    let (anchors, bad) = chain_walk::anchors(&source.checkpoints().await?, keys);
    let (mut verifier, unanchored) = Verifier::starting_at(first_tomb, anchors);
    if !bad.is_empty() || unanchored.is_some() {
        return Ok(None);
    }
    let tombs = source.tombstones_after(first_tomb - 1, boundary - first_tomb).await?;
    let mut last_hash = None;
    for tomb in &tombs {
        if verifier.check_tombstone(tomb).is_err() {
            return Ok(None);
        }
        last_hash = Some(tomb.row_hash.clone());
    }
    let (Some(hash), true) = (last_hash, verifier.last_seq() == boundary - 1) else { return Ok(None) };
    let last = boundary - 1;
    let checkpoint = signer.checkpoint(
        ChainHead { tenant_id: tenant.to_owned(), table: table.as_str().to_owned(), seq: last, hash: hex::encode(hash) },
        "retention",
        now,
    );
    let mut tx = source.tx;
    enter_maintenance(&mut tx).await?;
    super::checkpoints::insert(&mut *tx, &checkpoint).await?;
    sqlx::query("DELETE FROM chain_tombstones WHERE tenant_id = ?1 AND table_name = ?2 AND seq > ?4 AND seq <= ?3")
        .bind(tenant)
        .bind(table.as_str())
        .bind(last)
        .bind(chain.base())
        .execute(&mut *tx)
        .await?;
    leave_maintenance(&mut tx).await?;
    tx.commit().await?;
    Ok(Some(checkpoint))
}
