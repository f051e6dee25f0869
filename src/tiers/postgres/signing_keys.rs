//! The deployment's checkpoint signing keys in Postgres (`signing_keys`): which public
//! keys count and which one is current. See [`crate::integrity::identity`].

use sqlx::{PgPool, Row};

use crate::integrity::checkpoint::PublicKey;

/// A registered key.
#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    pub key: PublicKey,
    pub current: bool,
}

/// Every registered key, current first.
pub async fn all(pool: &PgPool) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT public_key, current FROM signing_keys ORDER BY current DESC, added_at")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let text: String = row.try_get("public_key")?;
            let key = PublicKey::parse(&text).map_err(|e| sqlx::Error::Decode(format!("signing_keys.public_key {e}").into()))?;
            Ok(SigningKeyRow { key, current: row.try_get("current")? })
        })
        .collect()
}

/// Makes `key` current when no key is (a new deployment's first node), then returns
/// every registered key. Two nodes starting at once both try; the unique index lets
/// one win and the other sees the winner.
pub async fn enroll(pool: &PgPool, key: &PublicKey) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (key_id, public_key, current)
         SELECT $1, $2, true WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE current)
         ON CONFLICT DO NOTHING",
    )
    .bind(key.id())
    .bind(key.to_base64())
    .execute(pool)
    .await?;
    all(pool).await
}

/// Makes `key` the current signing key; the one before it is retired (its
/// checkpoints keep counting). Returns the retired key's id, if any.
pub async fn promote(pool: &PgPool, key: &PublicKey) -> Result<Option<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // One rotation at a time.
    sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    let retired: Option<String> = sqlx::query_scalar(
        "UPDATE signing_keys SET current = false, retired_at = now() WHERE current AND key_id <> $1 RETURNING key_id",
    )
    .bind(key.id())
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO signing_keys (key_id, public_key, current) VALUES ($1, $2, true)
         ON CONFLICT (key_id) DO UPDATE SET current = true, retired_at = NULL",
    )
    .bind(key.id())
    .bind(key.to_base64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(retired)
}
