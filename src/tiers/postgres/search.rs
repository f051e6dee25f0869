//! Upkeep of the full-text search indexes, off the acknowledgement path.
//!
//! Each event table has a GIN index over its search vector (migration 0003). GIN
//! indexes take new entries into a "pending list" and merge the list into the index
//! in one go once it outgrows `gin_pending_list_limit` (4 MB by default). Left to
//! itself, Postgres does that merge inside whichever insert crosses the limit: one
//! writer's batch then takes hundreds of milliseconds instead of a few, and every
//! request waiting on that batch waits with it. [`PgStore::merge_search_pending`],
//! called every `postgres.search_merge_interval_ms` by a background task, merges the
//! lists first, so a list seldom reaches the limit, and a writer that reaches it
//! while a merge is under way does not wait for it (Postgres skips a merge another
//! session holds).

use std::time::Duration;

use super::PgStore;
use crate::tiers::Table;

/// The search index of `table` (see migration 0003).
fn search_index(table: Table) -> String {
    format!("{table}_search")
}

impl PgStore {
    /// Merges the pending lists of the three search indexes into the indexes, as
    /// `gin_clean_pending_list` does; returns how many pending pages were merged.
    /// The tables are partitioned, so each index is one per time partition: every
    /// one is merged (those of partitions no longer written to have nothing
    /// pending, which costs a page read). Needs the database user to own the
    /// indexes (it does when tierlog migrated the database).
    pub async fn merge_search_pending(&self) -> Result<i64, sqlx::Error> {
        let mut merged = 0;
        for table in Table::ALL {
            let pages: Option<i64> = sqlx::query_scalar(
                "SELECT sum(gin_clean_pending_list(relid))::int8 FROM pg_partition_tree($1::regclass) WHERE isleaf",
            )
            .bind(search_index(table))
            .fetch_one(self.pool())
            .await?;
            merged += pages.unwrap_or(0);
        }
        Ok(merged)
    }
}

/// The background task: merges the pending lists every `every` until the database
/// refuses for lack of ownership (then it says so once and stops: Postgres's own
/// merges still happen, inside writers' inserts). Other errors (Postgres down) are
/// retried at the next turn.
pub async fn run_merges(store: PgStore, every: Duration, lease: std::sync::Arc<crate::cluster::lease::Lease>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if !lease.is_held() {
            continue;
        }
        match store.merge_search_pending().await {
            Ok(pages) => tracing::trace!(pages, "search index pending lists merged"),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
                tracing::warn!(
                    error = %e,
                    "cannot merge the search indexes' pending lists (the database user does not own them); \
                     Postgres will merge them inside inserts, which makes some batches slow"
                );
                return;
            }
            Err(e) => tracing::debug!(error = %e, "search index merge failed; retrying at the next turn"),
        }
    }
}
