//! The durable store as the read side sees it: Postgres or the embedded SQLite
//! store, one method per operation, each answered the same way by both. The read
//! endpoints' queries (pages, stats, a subject's rows) go to a Postgres read replica
//! when one is configured and current ([`PgStore::read`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::chain_walk::ChainReport;
use super::postgres::query::Page;
use super::postgres::stats::{Count, FailureGroup, FailureQuery};
use super::postgres::{self, PgStore};
use super::sqlite::{self, SqliteStore};
use super::stored::StoredRow;
use super::{Chain, DurableStore, Table};
use crate::event::Category;
use crate::integrity::checkpoint::{Checkpoint, Keyring, Signer};
use crate::keys::KeyStore;
use crate::query::Filters;
use crate::retention::job::Db;
use crate::retention::{Days, Policies, TenantPolicy};

/// The system of record of a running service.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Database {
    /// The name reads give this tier.
    pub fn name(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "postgres",
            Database::Sqlite(_) => "sqlite",
        }
    }

    /// The writer side.
    pub fn durable(&self) -> Arc<dyn DurableStore> {
        match self {
            Database::Postgres(store) => Arc::new(store.clone()),
            Database::Sqlite(store) => Arc::new(store.clone()),
        }
    }

    /// The API keys kept in this database.
    pub fn key_store(&self) -> KeyStore {
        match self {
            Database::Postgres(store) => KeyStore::new(store.pool().clone()),
            Database::Sqlite(store) => KeyStore::sqlite(store.pool().clone()),
        }
    }

    /// The retention job's handle on this database.
    pub fn retention_db(&self) -> Db {
        match self {
            Database::Postgres(store) => Db::Postgres(store.pool().clone()),
            Database::Sqlite(store) => Db::Sqlite(store.pool().clone()),
        }
    }

    pub async fn page(&self, table: Table, filters: &Filters, categories: &[Category]) -> Result<Page, sqlx::Error> {
        match self {
            Database::Postgres(store) => store.read(|pool| async move { postgres::query::page(&pool, table, filters, categories).await }).await,
            Database::Sqlite(store) => sqlite::query::page(store.pool(), table, filters, categories).await,
        }
    }

    pub async fn counts(&self, table: Table, filters: &Filters, categories: &[Category]) -> Result<Vec<Count>, sqlx::Error> {
        match self {
            Database::Postgres(store) => store.read(|pool| async move { postgres::stats::counts(&pool, table, filters, categories).await }).await,
            Database::Sqlite(store) => sqlite::stats::counts(store.pool(), table, filters, categories).await,
        }
    }

    pub async fn failures(
        &self,
        table: Table,
        filters: &Filters,
        categories: &[Category],
        how: FailureQuery,
    ) -> Result<Vec<FailureGroup>, sqlx::Error> {
        match self {
            Database::Postgres(store) => {
                store.read(|pool| async move { postgres::stats::failures(&pool, table, filters, categories, how).await }).await
            }
            Database::Sqlite(store) => sqlite::stats::failures(store.pool(), table, filters, categories, how).await,
        }
    }

    /// The chains that hold rows (every writer shard's), each with its head.
    pub async fn chains(&self, tenant: Option<&str>, table: Option<Table>) -> Result<Vec<(Chain, i64)>, sqlx::Error> {
        match self {
            Database::Postgres(store) => postgres::verify::chains(store.pool(), tenant, table).await,
            Database::Sqlite(store) => sqlite::verify::chains(store.pool(), tenant, table).await,
        }
    }

    pub async fn verify_chain(&self, keys: &Keyring, chain: &Chain) -> Result<ChainReport, sqlx::Error> {
        match self {
            Database::Postgres(store) => postgres::verify::verify_chain(store.pool(), keys, chain).await,
            Database::Sqlite(store) => sqlite::verify::verify_chain(store.pool(), keys, chain).await,
        }
    }

    pub async fn list_checkpoints(
        &self,
        tenant: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<Checkpoint>, sqlx::Error> {
        match self {
            Database::Postgres(store) => postgres::checkpoints::list(store.pool(), tenant, since, limit).await,
            Database::Sqlite(store) => sqlite::checkpoints::list(store.pool(), tenant, since, limit).await,
        }
    }

    pub async fn checkpoint_heads(
        &self,
        signer: &Signer,
        tenant: Option<&str>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Checkpoint>, sqlx::Error> {
        match self {
            Database::Postgres(store) => postgres::checkpoints::checkpoint_heads(store.pool(), signer, tenant, reason, now).await,
            Database::Sqlite(store) => sqlite::checkpoints::checkpoint_heads(store.pool(), signer, tenant, reason, now).await,
        }
    }

    pub async fn load_policies(&self, defaults: &Policies) -> Result<Policies, sqlx::Error> {
        match self {
            Database::Postgres(store) => postgres::retention::load_policies(store.pool(), defaults).await,
            Database::Sqlite(store) => sqlite::retention::load_policies(store.pool(), defaults).await,
        }
    }

    pub async fn save_policies(
        &self,
        plans: &BTreeMap<String, Days>,
        tenants: &BTreeMap<String, TenantPolicy>,
    ) -> Result<(), sqlx::Error> {
        match self {
            Database::Postgres(store) => postgres::retention::save_policies(store.pool(), plans, tenants).await,
            Database::Sqlite(store) => sqlite::retention::save_policies(store.pool(), plans, tenants).await,
        }
    }

    pub async fn erase_subject(&self, tenant: Option<&str>, subject: &str, pseudonym: &str) -> Result<BTreeMap<String, u64>, sqlx::Error> {
        match self {
            Database::Postgres(store) => postgres::erasure::erase_subject(store.pool(), tenant, subject, pseudonym).await,
            Database::Sqlite(store) => sqlite::erasure::erase_subject(store.pool(), tenant, subject, pseudonym).await,
        }
    }

    /// Up to `limit` rows of one chain after sequence `after`, in order.
    pub async fn read_chain_after(&self, chain: &Chain, after: i64, limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
        match self {
            Database::Postgres(store) => store.read_chain_after(chain, after, limit).await,
            Database::Sqlite(store) => store.read_chain_after(chain, after, limit).await,
        }
    }

    /// Opens the database `settings` name: Postgres at `postgres.url` (migrated), or
    /// with no URL the embedded store under `embedded.data_dir`.
    pub async fn open(settings: &crate::config::Settings) -> Result<Database, sqlx::Error> {
        if settings.postgres.url.is_empty() {
            return Ok(Database::Sqlite(SqliteStore::open(&settings.embedded_store_path()).await?));
        }
        let store = PgStore::connect_lazy(&settings.postgres)?;
        postgres::migrate(store.pool()).await.map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        Ok(Database::Postgres(store))
    }

    pub async fn subject_rows(&self, tenant: Option<&str>, subject: &str, limit: i64) -> Result<Vec<StoredRow>, sqlx::Error> {
        match self {
            Database::Postgres(store) => {
                store.read(|pool| async move { postgres::erasure::subject_rows(&pool, tenant, subject, limit).await }).await
            }
            Database::Sqlite(store) => sqlite::erasure::subject_rows(store.pool(), tenant, subject, limit).await,
        }
    }
}
