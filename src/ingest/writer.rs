//! The writer tasks: gather queued jobs into a batch and write it to every tier.
//!
//! Order per batch: the durable store first (Postgres, the system of record for
//! persisted categories), then the files (the system of record for the rest) and the
//! hot tier side by side. Jobs complete only when the store and the files succeeded;
//! a hot-tier failure is counted as a miss and does not fail the batch. Every tier
//! skips ids it already holds, so a client retrying a failed request cannot create
//! a second copy anywhere.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::time::Instant;

use super::route::Routing;
use super::Job;
use crate::event::AuditEvent;
use crate::telemetry::Counters;
use crate::tiers::files::{FileError, RollingFiles};
use crate::tiers::{DurableStore, HotTier, StoreError};

/// Why a batch was not made durable.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("durable store")]
    Store(#[from] StoreError),
    #[error("file tier")]
    Files(#[from] FileError),
    #[error("file writer task failed")]
    FileTask(#[source] tokio::task::JoinError),
}

/// When a writer stops gathering and writes.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_events: usize,
    pub max_delay: Duration,
}

/// The tiers a batch is written to. Any of them may be switched off by configuration.
pub struct TierWriter {
    pub routing: Routing,
    pub store: Option<Arc<dyn DurableStore>>,
    pub hot: Option<Arc<dyn HotTier>>,
    pub files: Option<Arc<RollingFiles>>,
    pub counters: Arc<Counters>,
}

impl TierWriter {
    /// Writes one batch to every tier; `Ok` means it is durable.
    #[tracing::instrument(skip_all, fields(batch.events = events.len()))]
    pub async fn write(&self, events: &[&AuditEvent]) -> Result<(), WriteError> {
        if let Some(store) = &self.store {
            let requests = self.routing.persist_requests(events);
            if !requests.is_empty() {
                let inserted = store.persist(&requests).await?;
                Counters::add(&self.counters.rows_persisted, inserted as u64);
            }
        }
        let files = async {
            let Some(files) = self.files.clone() else { return Ok(()) };
            let owned: Vec<AuditEvent> = events.iter().map(|e| (*e).clone()).collect();
            let written = tokio::task::spawn_blocking(move || {
                let refs: Vec<&AuditEvent> = owned.iter().collect();
                files.append(&refs, Utc::now())
            })
            .await
            .map_err(WriteError::FileTask)??;
            Counters::add(&self.counters.lines_written, written as u64);
            Ok::<(), WriteError>(())
        };
        let hot = async {
            let Some(hot) = &self.hot else { return };
            let entries = self.routing.hot_entries(events);
            if let Err(e) = hot.push(&entries).await {
                Counters::add(&self.counters.redis_misses, entries.len() as u64);
                tracing::warn!(error = %e, events = entries.len(), "hot tier missed a batch");
            }
        };
        let (files_result, ()) = tokio::join!(files, hot);
        files_result
    }
}

/// One writer task: until stopped and drained, take a batch and write it.
pub(super) async fn run(
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    mut stop: watch::Receiver<bool>,
    batching: Batching,
    writer: Arc<TierWriter>,
) {
    loop {
        let jobs = next_batch(&queue, &mut stop, batching).await;
        if jobs.is_empty() {
            return;
        }
        let events: Vec<&AuditEvent> = jobs.iter().flat_map(|job| job.events.iter()).collect();
        let result = writer.write(&events).await.map_err(Arc::new);
        match &result {
            Ok(()) => Counters::add(&writer.counters.batches_written, 1),
            Err(e) => {
                Counters::add(&writer.counters.batches_failed, 1);
                tracing::error!(error = ?e, batch.events = events.len(), "batch not durable; requests refused");
            }
        }
        for job in jobs {
            if result.is_ok() {
                Counters::add(&writer.counters.events_accepted, job.events.len() as u64);
            }
            // The client may have gone away; its events are written all the same.
            let _ = job.done.send(result.clone());
        }
    }
}

/// Waits for a first job, then gathers more until the batch is full or `max_delay`
/// has passed. Returns no jobs once the queue is stopped and empty. The queue lock
/// is held while gathering, so another writer can write its batch meanwhile.
async fn next_batch(
    queue: &Mutex<mpsc::UnboundedReceiver<Job>>,
    stop: &mut watch::Receiver<bool>,
    batching: Batching,
) -> Vec<Job> {
    let mut receiver = queue.lock().await;
    let first = loop {
        if *stop.borrow() {
            // Refuse new jobs; the ones already queued are still received.
            receiver.close();
            break receiver.recv().await;
        }
        tokio::select! {
            job = receiver.recv() => break job,
            changed = stop.changed() => {
                if changed.is_err() {
                    receiver.close();
                }
            }
        }
    };
    let Some(first) = first else { return Vec::new() };
    let mut count = first.events.len();
    let mut jobs = vec![first];
    let deadline = Instant::now() + batching.max_delay;
    while count < batching.max_events {
        let next = match receiver.try_recv() {
            Ok(job) => Some(job),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                tokio::time::timeout_at(deadline, receiver.recv()).await.ok().flatten()
            }
        };
        let Some(job) = next else { break };
        count += job.events.len();
        jobs.push(job);
    }
    jobs
}
