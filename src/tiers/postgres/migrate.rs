//! Schema migrations, compiled into the binary from `migrations/`.

use std::borrow::Cow;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::PgPool;

use crate::tiers::BoxFuture;

/// Why migrating failed.
pub type MigrateError = sqlx::migrate::MigrateError;

/// Version and file of every migration, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "event tables", include_str!("../../../migrations/0001_event_tables.sql")),
    (2, "api keys", include_str!("../../../migrations/0002_api_keys.sql")),
    (3, "search", include_str!("../../../migrations/0003_search.sql")),
    (4, "integrity and retention", include_str!("../../../migrations/0004_integrity_retention.sql")),
    (5, "signing keys and leases", include_str!("../../../migrations/0005_signing_keys.sql")),
    (6, "writer shards", include_str!("../../../migrations/0006_writer_shards.sql")),
    (7, "time partitions", include_str!("../../../migrations/0007_time_partitions.sql")),
    (8, "expiry leads", include_str!("../../../migrations/0008_expiry_leads.sql")),
    (9, "event ids keyed by id", include_str!("../../../migrations/0009_event_ids_key.sql")),
    (10, "table id keys dropped", include_str!("../../../migrations/0010_table_id_keys_dropped.sql")),
    (11, "detection and webhooks", include_str!("../../../migrations/0011_detection_webhooks.sql")),
];

/// Migrations compiled into the binary: (version, description, SQL).
#[derive(Debug)]
pub(crate) struct Embedded(pub &'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Applies every pending migration; safe to run from several processes at once.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    Migrator::new(Embedded(MIGRATIONS)).await?.run(pool).await
}

/// Applies the migrations up to and including `version` only: the schema of an
/// earlier release, for tests of the migrations that follow it.
pub async fn migrate_through(pool: &PgPool, version: i64) -> Result<(), MigrateError> {
    let count = MIGRATIONS.iter().take_while(|(v, _, _)| *v <= version).count();
    Migrator::new(Embedded(&MIGRATIONS[..count])).await?.run(pool).await
}
