//! Replay: moves spooled events into Postgres, oldest first, once it answers again.
//!
//! Each round reads up to `spool.replay_batch_events` records, persists them in one
//! transaction (the store extends each chain in order and skips ids it already holds,
//! so a round repeated after a crash adds nothing twice), and only then advances the
//! spool's cursor. New events for Postgres are spooled behind the backlog until it is
//! empty (see [`super::writer`]), so no chain ever takes an event out of order.

use std::sync::Arc;
use std::time::Duration;

use crate::telemetry::Counters;
use crate::tiers::spool::{Spool, SpoolError, SpooledRow};
use crate::tiers::{DurableStore, PersistRequest, StoreError};

/// Why a replay round stopped; the spool is unchanged and the round is retried.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("spool")]
    Spool(#[from] SpoolError),
    #[error("durable store")]
    Store(#[from] StoreError),
    #[error("spool task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Replays until the task is aborted: at once while there is a backlog, otherwise
/// checking every `interval`.
pub async fn run(spool: Arc<Spool>, store: Arc<dyn DurableStore>, counters: Arc<Counters>, batch: usize, interval: Duration) {
    loop {
        if !spool.has_backlog() {
            tokio::time::sleep(interval).await;
            continue;
        }
        match replay_round(&spool, store.as_ref(), batch).await {
            Ok(replayed) => {
                Counters::add(&counters.events_replayed, replayed);
                if !spool.has_backlog() {
                    tracing::info!("spool replayed; events go straight to Postgres again");
                }
            }
            Err(ReplayError::Store(e)) if e.is_unreachable() => {
                tracing::debug!(error = ?e, pending = spool.status().pending_events, "spool replay waits for Postgres");
                tokio::time::sleep(interval).await;
            }
            Err(e) => {
                // Postgres answers but refuses the records, or the spool cannot be read:
                // an operator must look; the records stay and are retried.
                tracing::error!(error = ?e, pending = spool.status().pending_events, "spool replay failed");
                tokio::time::sleep(interval).await;
            }
        }
    }
}

/// One round: up to `batch` records into the store, then the cursor past them.
/// Returns how many records it replayed.
pub async fn replay_round(spool: &Arc<Spool>, store: &dyn DurableStore, batch: usize) -> Result<u64, ReplayError> {
    let reader = spool.clone();
    let (rows, to) = tokio::task::spawn_blocking(move || reader.read(batch)).await??;
    if !rows.is_empty() {
        let requests: Vec<PersistRequest<'_>> = rows.iter().map(SpooledRow::request).collect();
        store.persist_replayed(&requests).await?;
    }
    let count = rows.len() as u64;
    let advancer = spool.clone();
    tokio::task::spawn_blocking(move || advancer.advance(to, count)).await??;
    Ok(count)
}
