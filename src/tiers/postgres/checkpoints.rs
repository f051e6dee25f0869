//! Signed checkpoints in Postgres: recording chain heads, and reading them back for
//! verification and export.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, PgPool, Row};

use crate::integrity::chain::SHARD_BITS;
use crate::integrity::checkpoint::{sign_heads, ChainHead, Checkpoint, Signer};
use crate::tiers::Chain;

fn checkpoint(row: &PgRow) -> Result<Checkpoint, sqlx::Error> {
    Ok(Checkpoint {
        head: ChainHead {
            tenant_id: row.try_get("tenant_id")?,
            table: row.try_get("table_name")?,
            seq: row.try_get("seq")?,
            hash: row.try_get("head_hash")?,
        },
        created_at: row.try_get("created_at")?,
        reason: row.try_get("reason")?,
        key_id: row.try_get("key_id")?,
        signature: row.try_get("signature")?,
    })
}

/// Stores a signed checkpoint.
pub async fn insert<'e>(executor: impl PgExecutor<'e>, checkpoint: &Checkpoint) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO checkpoints (tenant_id, table_name, seq, head_hash, created_at, reason, key_id, signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&checkpoint.head.tenant_id)
    .bind(&checkpoint.head.table)
    .bind(checkpoint.head.seq)
    .bind(&checkpoint.head.hash)
    .bind(checkpoint.created_at)
    .bind(&checkpoint.reason)
    .bind(&checkpoint.key_id)
    .bind(&checkpoint.signature)
    .execute(executor)
    .await?;
    Ok(())
}

/// Every checkpoint of one chain, oldest sequence first.
pub async fn for_chain<'e>(executor: impl PgExecutor<'e>, chain: &Chain) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM checkpoints WHERE tenant_id = $1 AND table_name = $2 AND seq >= $3 AND seq < $4 ORDER BY seq, id",
    )
    .bind(&chain.tenant)
    .bind(chain.table.as_str())
    .bind(chain.base())
    .bind(chain.end())
    .fetch_all(executor)
    .await?;
    rows.iter().map(checkpoint).collect()
}

/// Checkpoints, newest first, optionally of one tenant and from a time on.
pub async fn list(
    pool: &PgPool,
    tenant: Option<&str>,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM checkpoints
         WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::timestamptz IS NULL OR created_at >= $2)
         ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(checkpoint).collect()
}

/// Signs and stores the head of every chain (of `tenant`, or all; every shard) that
/// moved since its last checkpoint.
pub async fn checkpoint_heads(
    pool: &PgPool,
    signer: &Signer,
    tenant: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let heads: Vec<(String, String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT h.tenant_id, h.table_name, h.seq, h.head_hash FROM chain_heads h
         WHERE h.seq > (h.shard::int8 << $2) AND ($1::text IS NULL OR h.tenant_id = $1)
           AND h.seq > COALESCE((SELECT max(c.seq) FROM checkpoints c
                                 WHERE c.tenant_id = h.tenant_id AND c.table_name = h.table_name
                                   AND c.seq >= (h.shard::int8 << $2) AND c.seq < ((h.shard::int8 + 1) << $2)), 0)
         ORDER BY h.tenant_id, h.table_name, h.shard",
    )
    .bind(tenant)
    .bind(SHARD_BITS as i32)
    .fetch_all(pool)
    .await?;
    let made = sign_heads(signer, heads, reason, now);
    for signed in &made {
        insert(pool, signed).await?;
    }
    Ok(made)
}
