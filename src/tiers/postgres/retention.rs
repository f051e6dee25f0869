//! Retention in Postgres: policies, expired rows, tombstones and their compaction
//! into signed checkpoints.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use super::rows::ROW_SELECT;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::checkpoints;
use super::rows::stored_row;
use super::verify::tombstones;
use crate::tiers::chain_walk;
use super::StoredRow;
use crate::integrity::chain::content_hash;
use crate::integrity::checkpoint::{ChainHead, Checkpoint, Keyring, Signer};
use crate::integrity::verify::Verifier;
use crate::retention::{Days, Policies, TenantPolicy};
use crate::tiers::{Chain, Table};

/// Lets this transaction change audit rows (the append-only trigger yields).
pub(crate) async fn enter_maintenance(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL tierlog.maintenance = 'on'").execute(&mut **tx).await?;
    Ok(())
}

fn days(value: Value) -> Result<Days, sqlx::Error> {
    serde_json::from_value(value).map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Plans and tenant policies from the database over `defaults`.
pub async fn load_policies(pool: &PgPool, defaults: &Policies) -> Result<Policies, sqlx::Error> {
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
    pool: &PgPool,
    plans: &BTreeMap<String, Days>,
    tenants: &BTreeMap<String, TenantPolicy>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for (plan, days) in plans {
        sqlx::query(
            "INSERT INTO retention_plans (plan, days) VALUES ($1, $2)
             ON CONFLICT (plan) DO UPDATE SET days = EXCLUDED.days, updated_at = now()",
        )
        .bind(plan)
        .bind(serde_json::to_value(days).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
    }
    for (tenant, policy) in tenants {
        sqlx::query(
            "INSERT INTO tenant_retention (tenant_id, plan, days, legal_hold, hold_reason) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id) DO UPDATE SET plan = EXCLUDED.plan, days = EXCLUDED.days,
                 legal_hold = EXCLUDED.legal_hold, hold_reason = EXCLUDED.hold_reason, updated_at = now()",
        )
        .bind(tenant)
        .bind(&policy.plan)
        .bind(serde_json::to_value(&policy.days).unwrap_or_default())
        .bind(policy.legal_hold)
        .bind(&policy.hold_reason)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Locks up to `limit` expired rows of tenants not on hold in `relation` (a
/// partition of `table`), oldest chain position first. Rows locked by another run
/// are skipped, never waited for.
pub async fn lock_expired(
    tx: &mut Transaction<'_, Postgres>,
    table: Table,
    relation: &str,
    now: DateTime<Utc>,
    held: &[String],
    limit: i64,
) -> Result<Vec<StoredRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ROW_SELECT} FROM {relation}
         WHERE expires_at <= $1 AND NOT (tenant_id = ANY($2))
         ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED"
    );
    let rows = sqlx::query(&sql).bind(now).bind(held).bind(limit).fetch_all(&mut **tx).await?;
    let mut rows: Vec<StoredRow> = rows.iter().map(|row| stored_row(table, row)).collect::<Result<_, _>>()?;
    rows.sort_by(|a, b| (&a.event.tenant_id, a.seq).cmp(&(&b.event.tenant_id, b.seq)));
    Ok(rows)
}

/// Deletes `rows`, leaving a tombstone for each (the transaction must be in
/// maintenance).
pub async fn delete_with_tombstones(
    tx: &mut Transaction<'_, Postgres>,
    table: Table,
    rows: &[StoredRow],
    now: DateTime<Utc>,
    run_id: Uuid,
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    insert_tombstones(tx, table, rows, now, run_id).await?;
    let tenants: Vec<&str> = rows.iter().map(|r| r.event.tenant_id.as_str()).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let expires: Vec<DateTime<Utc>> = rows.iter().map(|r| r.expires_at).collect();
    // The expiry lets Postgres look in the row's partition only.
    let sql = format!(
        "DELETE FROM {table} t USING unnest($1::text[], $2::int8[], $3::timestamptz[]) AS k(tenant, seq, e)
         WHERE t.tenant_id = k.tenant AND t.seq = k.seq AND t.expires_at = k.e"
    );
    Ok(sqlx::query(&sql).bind(&tenants).bind(&seqs).bind(&expires).execute(&mut **tx).await?.rows_affected())
}

/// Leaves a tombstone for each of `rows`, which are leaving the table.
pub async fn insert_tombstones(
    tx: &mut Transaction<'_, Postgres>,
    table: Table,
    rows: &[StoredRow],
    now: DateTime<Utc>,
    run_id: Uuid,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = rows.iter().map(|r| r.event.tenant_id.as_str()).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let expires: Vec<DateTime<Utc>> = rows.iter().map(|r| r.expires_at).collect();
    let prev: Vec<&[u8]> = rows.iter().map(|r| r.prev_hash.as_slice()).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| r.row_hash.as_slice()).collect();
    let contents: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| {
            let seal: [u8; 32] = r.pii_hash.as_slice().try_into().unwrap_or([0; 32]);
            content_hash(table.as_str(), &seal, &r.pii_paths, &r.event).to_vec()
        })
        .collect();
    sqlx::query(
        "INSERT INTO chain_tombstones (tenant_id, table_name, seq, expires_at, deleted_at, prev_hash, content_hash, row_hash, run_id)
         SELECT t, $2, s, e, $3, p, c, h, $4
         FROM unnest($1::text[], $5::int8[], $6::timestamptz[], $7::bytea[], $8::bytea[], $9::bytea[]) AS k(t, s, e, p, c, h)",
    )
    .bind(&tenants)
    .bind(table.as_str())
    .bind(now)
    .bind(run_id)
    .bind(&seqs)
    .bind(&expires)
    .bind(&prev)
    .bind(&contents)
    .bind(&hashes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Replaces the chain's leading tombstones (those before its oldest remaining row)
/// by one signed checkpoint at the last of them, after checking that they link.
/// Returns the checkpoint, or `None` when there is nothing to compact or the
/// tombstones do not verify (left for `verify` to report).
pub async fn compact(
    pool: &PgPool,
    signer: &Signer,
    keys: &Keyring,
    chain: &Chain,
    now: DateTime<Utc>,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let (tenant, table) = (chain.tenant.as_str(), chain.table);
    let mut conn = pool.acquire().await?;
    let head = super::verify::head(&mut conn, chain).await?;
    let (first_held, first_row) = super::verify::first_held(&mut conn, chain).await?;
    // The oldest held entry is a tombstone when it is not the oldest row.
    let first_tomb = first_held.filter(|first| Some(*first) != first_row);
    let (Some(head), Some(first_tomb)) = (head, first_tomb) else { return Ok(None) };
    let boundary = first_row.unwrap_or(head + 1);
    if first_tomb >= boundary {
        return Ok(None);
    }
    let (anchors, bad) = chain_walk::anchors(&checkpoints::for_chain(&mut *conn, chain).await?, keys);
    let (mut verifier, unanchored) = Verifier::starting_at(first_tomb, anchors);
    if !bad.is_empty() || unanchored.is_some() {
        return Ok(None);
    }
    let mut after = first_tomb - 1;
    let mut last_hash = None;
    while after < boundary - 1 {
        let chunk = tombstones(&mut conn, chain, after, 5000).await?;
        if chunk.is_empty() {
            return Ok(None);
        }
        for tomb in chunk.iter().take_while(|t| t.seq < boundary) {
            if verifier.check_tombstone(tomb).is_err() {
                return Ok(None);
            }
            after = tomb.seq;
            last_hash = Some(tomb.row_hash.clone());
        }
        if chunk.last().is_some_and(|t| t.seq >= boundary) {
            break;
        }
    }
    let (Some(hash), true) = (last_hash, after == boundary - 1) else { return Ok(None) };
    let checkpoint = signer.checkpoint(
        ChainHead { tenant_id: tenant.to_owned(), table: table.as_str().to_owned(), seq: after, hash: hex::encode(hash) },
        "retention",
        now,
    );
    drop(conn);
    let mut tx = pool.begin().await?;
    enter_maintenance(&mut tx).await?;
    checkpoints::insert(&mut *tx, &checkpoint).await?;
    sqlx::query("DELETE FROM chain_tombstones WHERE tenant_id = $1 AND table_name = $2 AND seq > $4 AND seq <= $3")
        .bind(tenant)
        .bind(table.as_str())
        .bind(after)
        .bind(chain.base())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(checkpoint))
}
