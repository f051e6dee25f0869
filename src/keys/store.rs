//! API keys in the durable store (Postgres or the embedded SQLite), with the answers
//! remembered ([`super::cache`]) so authentication costs no query on most requests
//! and keys verified before a database outage keep working through it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, Row, SqlitePool};
use uuid::Uuid;

use super::cache::VerifiedKeys;
use super::{KeyInfo, Permission, Principal, Secret};

/// How long a looked-up key is trusted without asking the database again; also the
/// longest a revocation on another node takes to reach this one.
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// How long the set of every stored digest is trusted to say a digest is unknown.
pub const DIGEST_INDEX_TTL: Duration = Duration::from_secs(1);

/// Digests missing from the index that are still looked up one by one, per second
/// (a key just created on another node is found at once); past these, a flood of
/// made-up keys costs one index read per second and nothing more.
pub const UNINDEXED_LOOKUPS_PER_SECOND: u32 = 10;

/// How long a key verified before a database outage keeps working during it, unless
/// configured (`keys.outage_grace_seconds`).
pub const DEFAULT_OUTAGE_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub tenant_id: Option<String>,
    pub permissions: Vec<Permission>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Who creates it: a key id, or `cli`.
    pub created_by: String,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("stored key {0} has an unknown permission")]
    Corrupt(Uuid),
}

/// Where keys are kept.
enum KeyDb {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The key store.
pub struct KeyStore {
    db: KeyDb,
    /// The database's answers, by digest of the presented secret.
    cache: Mutex<VerifiedKeys>,
    /// Requests let in on a remembered key while the database could not be asked.
    outage_auths: AtomicU64,
    /// The digest of every stored key, and when it was read.
    index: tokio::sync::Mutex<(HashSet<[u8; 32]>, Option<Instant>)>,
    /// Queries made to authenticate (lookups and index reads).
    queries: AtomicU64,
    /// Lookups of digests missing from the index in the current second.
    unindexed: Mutex<(Option<Instant>, u32)>,
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// The Postgres notification channel on which revocations are announced (payload:
/// the key's id).
pub const REVOCATION_CHANNEL: &str = "tierlog_key_revoked";

const COLUMNS: &str = "id, name, key_prefix, tenant_id, permissions, created_at, created_by, expires_at, revoked_at, last_used_at";

fn permissions(id: Uuid, names: &[String]) -> Result<Vec<Permission>, KeyStoreError> {
    names.iter().map(|n| n.parse::<Permission>()).collect::<Result<Vec<_>, _>>().map_err(|_| KeyStoreError::Corrupt(id))
}

fn key_info(row: &PgRow) -> Result<KeyInfo, KeyStoreError> {
    let id: Uuid = row.try_get("id")?;
    let names: Vec<String> = row.try_get("permissions")?;
    let permissions = permissions(id, &names)?;
    Ok(KeyInfo {
        id,
        name: row.try_get("name")?,
        prefix: row.try_get("key_prefix")?,
        tenant_id: row.try_get("tenant_id")?,
        permissions,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

fn lite_instant(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, KeyStoreError> {
    let text: Option<String> = row.try_get(column)?;
    Ok(text.map(|t| crate::tiers::sqlite::parse_instant(column, &t)).transpose()?)
}

fn lite_key_info(row: &SqliteRow) -> Result<KeyInfo, KeyStoreError> {
    let id_text: String = row.try_get("id")?;
    let id = Uuid::parse_str(&id_text).map_err(|_| KeyStoreError::Corrupt(Uuid::nil()))?;
    let names: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("permissions")?).map_err(|_| KeyStoreError::Corrupt(id))?;
    Ok(KeyInfo {
        id,
        name: row.try_get("name")?,
        prefix: row.try_get("key_prefix")?,
        tenant_id: row.try_get("tenant_id")?,
        permissions: permissions(id, &names)?,
        created_at: lite_instant(row, "created_at")?.ok_or(KeyStoreError::Corrupt(id))?,
        created_by: row.try_get("created_by")?,
        expires_at: lite_instant(row, "expires_at")?,
        revoked_at: lite_instant(row, "revoked_at")?,
        last_used_at: lite_instant(row, "last_used_at")?,
    })
}

fn now_text() -> String {
    crate::tiers::sqlite::instant_text(&Utc::now())
}

impl KeyStore {
    fn over(db: KeyDb) -> KeyStore {
        let cache = VerifiedKeys::new(chrono_duration(CACHE_TTL), chrono_duration(DEFAULT_OUTAGE_GRACE), None);
        KeyStore {
            db,
            cache: Mutex::new(cache),
            outage_auths: AtomicU64::new(0),
            index: tokio::sync::Mutex::new((HashSet::new(), None)),
            queries: AtomicU64::new(0),
            unindexed: Mutex::new((None, 0)),
        }
    }

    /// A store over `pool` (migrated).
    pub fn new(pool: PgPool) -> KeyStore {
        KeyStore::over(KeyDb::Postgres(pool))
    }

    /// A store in the embedded database (migrated).
    pub fn sqlite(pool: SqlitePool) -> KeyStore {
        KeyStore::over(KeyDb::Sqlite(pool))
    }

    /// Keys verified within `grace` keep working while the database cannot be
    /// asked; with a `file`, what was verified survives a restart.
    pub fn with_outage_grace(mut self, grace: Duration, file: Option<PathBuf>) -> KeyStore {
        self.cache = Mutex::new(VerifiedKeys::new(chrono_duration(CACHE_TTL), chrono_duration(grace), file));
        self
    }

    fn cache(&self) -> MutexGuard<'_, VerifiedKeys> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests let in on a remembered key while the database could not be asked.
    pub fn outage_auths(&self) -> u64 {
        self.outage_auths.load(Ordering::Relaxed)
    }

    /// Queries made to authenticate keys so far.
    pub fn auth_queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Whether one more digest missing from the index may be looked up this second.
    fn unindexed_lookup_allowed(&self) -> bool {
        let mut window = self.unindexed.lock().unwrap_or_else(|p| p.into_inner());
        if window.0.is_none_or(|start| start.elapsed() >= Duration::from_secs(1)) {
            *window = (Some(Instant::now()), 0);
        }
        window.1 += 1;
        window.1 <= UNINDEXED_LOOKUPS_PER_SECOND
    }

    /// Whether `digest` is stored, from the index of every digest (read again when
    /// older than [`DIGEST_INDEX_TTL`]); `None` when the index cannot be read.
    async fn may_exist(&self, digest: &[u8; 32]) -> Option<bool> {
        let mut index = self.index.lock().await;
        if index.1.is_none_or(|at| at.elapsed() >= DIGEST_INDEX_TTL) {
            self.queries.fetch_add(1, Ordering::Relaxed);
            let digests: Vec<Vec<u8>> = match &self.db {
                KeyDb::Postgres(pool) => sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_all(pool).await.ok()?,
                KeyDb::Sqlite(pool) => sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_all(pool).await.ok()?,
            };
            index.0 = digests.into_iter().filter_map(|d| <[u8; 32]>::try_from(d).ok()).collect();
            index.1 = Some(Instant::now());
        }
        Some(index.0.contains(digest))
    }

    /// Creates a key and returns it with its secret, which is not kept.
    pub async fn create(&self, new: NewKey) -> Result<(KeyInfo, Secret), KeyStoreError> {
        let secret = Secret::generate();
        let names: Vec<&str> = new.permissions.iter().map(|p| p.as_str()).collect();
        let pool = match &self.db {
            KeyDb::Postgres(pool) => pool,
            KeyDb::Sqlite(pool) => {
                let row = sqlx::query(&format!(
                    "INSERT INTO api_keys (id, name, key_prefix, key_hash, tenant_id, permissions, created_at, created_by, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING {COLUMNS}"
                ))
                .bind(Uuid::now_v7().to_string())
                .bind(&new.name)
                .bind(&secret.prefix)
                .bind(&secret.digest[..])
                .bind(&new.tenant_id)
                .bind(serde_json::to_string(&names).unwrap_or_default())
                .bind(now_text())
                .bind(&new.created_by)
                .bind(new.expires_at.as_ref().map(crate::tiers::sqlite::instant_text))
                .fetch_one(pool)
                .await?;
                self.index.lock().await.0.insert(secret.digest);
                return Ok((lite_key_info(&row)?, secret));
            }
        };
        let row = sqlx::query(&format!(
            "INSERT INTO api_keys (id, name, key_prefix, key_hash, tenant_id, permissions, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(&new.name)
        .bind(&secret.prefix)
        .bind(&secret.digest[..])
        .bind(&new.tenant_id)
        .bind(&names)
        .bind(&new.created_by)
        .bind(new.expires_at)
        .fetch_one(pool)
        .await?;
        self.index.lock().await.0.insert(secret.digest);
        Ok((key_info(&row)?, secret))
    }

    /// Keys, newest first; only `tenant`'s when given.
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, KeyStoreError> {
        let pool = match &self.db {
            KeyDb::Postgres(pool) => pool,
            KeyDb::Sqlite(pool) => {
                let rows = sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM api_keys WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY created_at DESC, id"
                ))
                .bind(tenant)
                .fetch_all(pool)
                .await?;
                return rows.iter().map(lite_key_info).collect();
            }
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY created_at DESC, id"
        ))
        .bind(tenant)
        .fetch_all(pool)
        .await?;
        rows.iter().map(key_info).collect()
    }

    /// One key, if it exists (and belongs to `tenant` when given).
    pub async fn get(&self, id: Uuid, tenant: Option<&str>) -> Result<Option<KeyInfo>, KeyStoreError> {
        let pool = match &self.db {
            KeyDb::Postgres(pool) => pool,
            KeyDb::Sqlite(pool) => {
                let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)"))
                    .bind(id.to_string())
                    .bind(tenant)
                    .fetch_optional(pool)
                    .await?;
                return row.as_ref().map(lite_key_info).transpose();
            }
        };
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
        row.as_ref().map(key_info).transpose()
    }

    /// Revokes a key (idempotent); `None` when there is no such key (in `tenant`).
    pub async fn revoke(&self, id: Uuid, tenant: Option<&str>) -> Result<Option<KeyInfo>, KeyStoreError> {
        let revoked = match &self.db {
            KeyDb::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let row = sqlx::query(&format!(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
                     WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) RETURNING {COLUMNS}"
                ))
                .bind(id)
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
                if row.is_some() {
                    // Delivered to every node's listener when (and only if) this commits.
                    sqlx::query("SELECT pg_notify($1, $2)").bind(REVOCATION_CHANNEL).bind(id.to_string()).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                row.as_ref().map(key_info).transpose()?
            }
            KeyDb::Sqlite(pool) => {
                let row = sqlx::query(&format!(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3)
                     WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2) RETURNING {COLUMNS}"
                ))
                .bind(id.to_string())
                .bind(tenant)
                .bind(now_text())
                .fetch_optional(pool)
                .await?;
                row.as_ref().map(lite_key_info).transpose()?
            }
        };
        if let Some(key) = &revoked {
            self.cache().revoked(key.id, key.revoked_at.unwrap_or_else(Utc::now));
        }
        Ok(revoked)
    }

    /// Applies revocations made on any node as they commit: listens on Postgres's
    /// [`REVOCATION_CHANNEL`] and drops the revoked key from this node's answers at
    /// once. Whenever the listening connection is lost (a notice may have been
    /// missed), every answer is made stale; the cache's 10-second freshness bounds
    /// what a lost notice can cost. Runs until the process ends.
    pub async fn follow_revocations(self: std::sync::Arc<Self>) {
        let KeyDb::Postgres(pool) = &self.db else { return };
        let mut listener: Option<sqlx::postgres::PgListener> = None;
        loop {
            let Some(active) = listener.as_mut() else {
                match sqlx::postgres::PgListener::connect_with(pool).await {
                    Ok(mut fresh) => match fresh.listen(REVOCATION_CHANNEL).await {
                        Ok(()) => {
                            // Anything revoked while nobody listened.
                            self.cache().stale_all(Utc::now());
                            listener = Some(fresh);
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot listen for key revocations yet"),
                    },
                    Err(e) => tracing::debug!(error = %e, "cannot listen for key revocations yet"),
                }
                if listener.is_none() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            };
            match active.try_recv().await {
                Ok(Some(notice)) => match notice.payload().parse::<Uuid>() {
                    Ok(id) => {
                        tracing::debug!(key.id = %id, "key revoked on another node");
                        self.cache().revoked(id, Utc::now());
                    }
                    Err(_) => tracing::warn!(payload = notice.payload(), "unreadable key revocation notice"),
                },
                // The connection was lost; the next call reconnects.
                Ok(None) => self.cache().stale_all(Utc::now()),
                Err(e) => {
                    tracing::debug!(error = %e, "key revocation listener failed; reconnecting");
                    self.cache().stale_all(Utc::now());
                    listener = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The principal of a presented key, if it is known, active and unexpired. While
    /// the database cannot be asked, a key it vouched for within the grace period
    /// still answers; any other key is an error (the caller refuses it).
    pub async fn authenticate(&self, digest: &[u8; 32]) -> Result<Option<Principal>, KeyStoreError> {
        let now = Utc::now();
        let fresh = self.cache().fresh(digest, now);
        let info = match fresh {
            Some(answer) => answer,
            // A digest no stored key has: refused without a lookup of its own once
            // more than a few a second arrive.
            None if self.may_exist(digest).await == Some(false) && !self.unindexed_lookup_allowed() => {
                self.cache().record(digest, None, now);
                None
            }
            None => match self.look_up(digest).await {
                Ok(answer) => {
                    self.cache().record(digest, answer.clone(), now);
                    answer
                }
                Err(KeyStoreError::Database(e)) => {
                    let remembered = self.cache().during_outage(digest, now);
                    match remembered {
                        Some(key) => {
                            self.outage_auths.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %e, key.id = %key.id, "key database unreachable; using the key as last verified");
                            Some(key)
                        }
                        None => return Err(KeyStoreError::Database(e)),
                    }
                }
                Err(e) => return Err(e),
            },
        };
        Ok(info.filter(|key| key.is_active(now)).map(|key| Principal {
            key_id: key.id.to_string(),
            tenant: key.tenant_id,
            permissions: key.permissions,
        }))
    }

    /// Asks the database for the key of `digest`, noting its use.
    async fn look_up(&self, digest: &[u8; 32]) -> Result<Option<KeyInfo>, KeyStoreError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        match &self.db {
            KeyDb::Postgres(pool) => {
                let row = sqlx::query(&format!("UPDATE api_keys SET last_used_at = now() WHERE key_hash = $1 RETURNING {COLUMNS}"))
                    .bind(&digest[..])
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(key_info).transpose()
            }
            KeyDb::Sqlite(pool) => {
                let row = sqlx::query(&format!("UPDATE api_keys SET last_used_at = ?2 WHERE key_hash = ?1 RETURNING {COLUMNS}"))
                    .bind(&digest[..])
                    .bind(now_text())
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(lite_key_info).transpose()
            }
        }
    }
}
