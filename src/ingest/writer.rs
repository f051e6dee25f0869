//! The writer tasks: gather queued jobs into a batch and write it to every tier.
//!
//! Order per batch: the durable store first (Postgres, the system of record for
//! persisted categories; or the spool while Postgres is unreachable or the spool
//! still holds a backlog, see [`crate::tiers::spool`]), then the files (the system of
//! record for the rest) and the hot tier side by side. Jobs complete only when the
//! store (or the spool) and the files succeeded;
//! a hot-tier failure is counted as a miss and does not fail the batch. A writer
//! runs the next batch's store write while the previous batch's files and hot tier
//! are written (see [`run`]). Every tier
//! skips ids it already holds, so a client retrying a failed request cannot create
//! a second copy anywhere.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::route::Routing;
use super::Job;
use crate::event::{AuditEvent, Category};
use crate::telemetry::{Counters, Tier};
use crate::tiers::files::{FileError, RollingFiles};
use crate::tiers::spool::{self, Spool, SpoolError};
use crate::tiers::{DurableStore, EncodedBatch, HotTier, PersistRequest, StoreError};

/// Why a batch was not made durable.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("durable store")]
    Store(#[from] StoreError),
    #[error("file tier")]
    Files(#[from] FileError),
    #[error("file writer task failed")]
    FileTask(#[source] tokio::task::JoinError),
    #[error("spool")]
    Spool(#[from] SpoolError),
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
    /// Where events for the store wait while it is unreachable.
    pub spool: Option<Arc<Spool>>,
    pub counters: Arc<Counters>,
    /// The live tail, handed each batch once it is durable.
    pub tail: Arc<crate::stream::Tail>,
    /// Detection, handed each batch once it is durable (when on).
    pub detector: Option<Arc<crate::detect::Detector>>,
    /// The direct push to Loki, handed each batch once it is durable (when on).
    pub loki: Option<Arc<crate::ship::loki::LokiPush>>,
}

impl TierWriter {
    /// The first stage of a batch: its persisted events into Postgres (or the spool).
    #[tracing::instrument(skip_all, fields(batch.events = batch.events.len()))]
    pub async fn write_store(&self, batch: &EncodedBatch) -> Result<(), WriteError> {
        self.counters.metrics.batch_events.record(batch.events.len() as f64);
        if let Some(store) = &self.store {
            let requests = self.routing.persist_requests(batch);
            if !requests.is_empty() {
                self.write_durable(store.as_ref(), &requests).await?;
            }
        }
        Ok(())
    }

    /// The second stage, once the first succeeded: the files and the hot tier side
    /// by side. `Ok` means the files hold the batch.
    #[tracing::instrument(skip_all, fields(batch.events = batch.events.len()))]
    pub async fn write_files_and_hot(&self, batch: Arc<EncodedBatch>) -> Result<(), WriteError> {
        let started = std::time::Instant::now();
        let metrics = &self.counters.metrics;
        let files = async {
            let Some(files) = self.files.clone() else { return Ok(()) };
            let batch = batch.clone();
            let began = std::time::Instant::now();
            let written = tokio::task::spawn_blocking(move || files.append(&batch, Utc::now()))
                .await
                .map_err(WriteError::FileTask)?
                .inspect_err(|_| metrics.tier_errors(Tier::Files).increment(1))?;
            metrics.tier_write(Tier::Files).record(began.elapsed().as_secs_f64());
            Counters::add(&self.counters.lines_written, written as u64);
            Ok::<(), WriteError>(())
        };
        let hot = async {
            let Some(hot) = &self.hot else { return };
            let entries = self.routing.hot_entries(&batch);
            let began = std::time::Instant::now();
            match hot.push(&entries).await {
                Ok(()) => metrics.tier_write(Tier::Redis).record(began.elapsed().as_secs_f64()),
                Err(e) => {
                    metrics.tier_errors(Tier::Redis).increment(1);
                    Counters::add(&self.counters.redis_misses, entries.len() as u64);
                    tracing::warn!(error = %e, events = entries.len(), "hot tier missed a batch");
                }
            }
        };
        let (files_result, ()) = tokio::join!(files, hot);
        tracing::debug!(files_and_hot_ms = started.elapsed().as_secs_f64() * 1e3, "batch written");
        if files_result.is_ok() {
            self.tail.offer(&batch);
            if let Some(detector) = &self.detector {
                detector.offer(&batch);
            }
            if let Some(loki) = &self.loki {
                loki.offer(&batch);
            }
        }
        files_result
    }
}

impl TierWriter {
    /// Persists `requests`, or spools them: behind events already waiting in the
    /// spool (so every chain keeps its order), or when the store is unreachable.
    async fn write_durable(&self, store: &dyn DurableStore, requests: &[PersistRequest<'_>]) -> Result<(), WriteError> {
        let metrics = &self.counters.metrics;
        if let Some(spool) = self.spool.as_ref().filter(|s| s.has_backlog()) {
            return self.spool(spool, requests).await;
        }
        let started = std::time::Instant::now();
        match store.persist(requests).await {
            Ok(inserted) => {
                metrics.tier_write(Tier::Postgres).record(started.elapsed().as_secs_f64());
                Counters::add(&self.counters.rows_persisted, inserted as u64);
                Ok(())
            }
            Err(e) => {
                metrics.tier_errors(Tier::Postgres).increment(1);
                match &self.spool {
                    Some(spool) if e.is_unreachable() => {
                        tracing::warn!(error = ?e, events = requests.len(), "Postgres unreachable; spooling the batch");
                        self.spool(spool, requests).await
                    }
                    _ => Err(e.into()),
                }
            }
        }
    }

    /// Appends `requests` to the spool and waits for its fsync.
    async fn spool(&self, spool: &Arc<Spool>, requests: &[PersistRequest<'_>]) -> Result<(), WriteError> {
        let started = std::time::Instant::now();
        let records = spool::encode(requests);
        let count = requests.len() as u64;
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || spool.append(&records, count))
            .await
            .map_err(WriteError::FileTask)?
            .inspect_err(|_| self.counters.metrics.tier_errors(Tier::Spool).increment(1))?;
        self.counters.metrics.tier_write(Tier::Spool).record(started.elapsed().as_secs_f64());
        Counters::add(&self.counters.events_spooled, count);
        Ok(())
    }
}

/// One writer task: until stopped and drained, take a batch and write it.
///
/// Two stages overlap: while one batch's files and hot tier are written (and its
/// requests answered), the next batch's Postgres statement already runs. The second
/// stages run one at a time, in batch order, so the files keep the order of the
/// batches; a batch whose first stage failed writes nothing else.
pub(super) async fn run(
    mut queue: mpsc::UnboundedReceiver<Job>,
    mut stop: watch::Receiver<bool>,
    batching: Batching,
    writer: Arc<TierWriter>,
) {
    let mut finishing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let mut jobs = next_batch(&mut queue, &mut stop, batching).await;
        if jobs.is_empty() {
            break;
        }
        let mut events: Vec<AuditEvent> = Vec::with_capacity(jobs.iter().map(|job| job.events.len()).sum());
        for job in &mut jobs {
            events.append(&mut job.events);
        }
        let batch = Arc::new(EncodedBatch::new(events));
        let stored = writer.write_store(&batch).await;
        // The previous batch's second stage ends before this one's begins.
        if let Some(previous) = finishing.take() {
            if let Err(e) = previous.await {
                tracing::error!(error = %e, "writer stage failed");
            }
        }
        let writer = writer.clone();
        finishing = Some(tokio::spawn(async move {
            let result = match stored {
                Ok(()) => writer.write_files_and_hot(batch.clone()).await,
                Err(e) => Err(e),
            };
            finish(&writer, &batch, jobs, result.map_err(Arc::new));
        }));
    }
    if let Some(previous) = finishing {
        if let Err(e) = previous.await {
            tracing::error!(error = %e, "writer stage failed");
        }
    }
}

/// Counts a written (or refused) batch and answers its requests.
fn finish(writer: &TierWriter, batch: &EncodedBatch, jobs: Vec<Job>, result: Result<(), Arc<WriteError>>) {
    let count = batch.events.len();
    match &result {
        Ok(()) => {
            let mut per_category = [0u64; Category::ALL.len()];
            for event in &batch.events {
                if let Some(i) = Category::ALL.iter().position(|c| *c == event.category) {
                    per_category[i] += 1;
                }
            }
            Counters::add(&writer.counters.batches_written, 1);
            Counters::add(&writer.counters.events_accepted, count as u64);
            for (category, n) in Category::ALL.iter().zip(per_category) {
                if n > 0 {
                    writer.counters.metrics.category(category.as_str()).increment(n);
                }
            }
        }
        Err(e) => {
            Counters::add(&writer.counters.batches_failed, 1);
            tracing::error!(error = ?e, batch.events = count, "batch not durable; requests refused");
        }
    }
    for job in jobs {
        // The client may have gone away; its events are written all the same.
        let _ = job.done.send(result.clone());
    }
}

/// Waits for a first job, then gathers more until the batch is full or `max_delay`
/// has passed. Returns no jobs once the queue is stopped and empty.
async fn next_batch(
    receiver: &mut mpsc::UnboundedReceiver<Job>,
    stop: &mut watch::Receiver<bool>,
    batching: Batching,
) -> Vec<Job> {
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
