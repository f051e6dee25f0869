//! Ingest: the bounded queue between the HTTP handlers and the tier writers.
//!
//! The queue's capacity is counted in events by a semaphore: a request that does not
//! fit is refused at once (503 with `Retry-After`) instead of waiting or growing
//! memory. Each writer task owns a lane of the tenants (by a stable hash of the
//! tenant id), so writers never contend for the same hash-chain heads and each
//! tenant's events keep their order. A request's events are split by lane; the
//! request is answered when every lane has written its part (see [`writer`]).

pub mod replay;
pub mod route;
pub mod writer;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::event::AuditEvent;
use crate::telemetry::Counters;
pub use writer::{TierWriter, WriteError};

/// A part of one request's events, all of one lane, on their way to the tiers.
pub struct Job {
    events: Vec<AuditEvent>,
    done: oneshot::Sender<Result<(), Arc<WriteError>>>,
    /// Held until the job is finished: its events' share of the queue capacity.
    _permit: OwnedSemaphorePermit,
}

/// Why a submission was not acknowledged. None of these acknowledges anything.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the ingest queue is full")]
    QueueFull,
    #[error("tierlog is shutting down")]
    ShuttingDown,
    #[error("the batch could not be made durable")]
    Failed(#[source] Arc<WriteError>),
}

/// The sending side of the pipeline, cloned into every handler.
#[derive(Clone)]
pub struct Pipeline {
    lanes: Arc<[mpsc::UnboundedSender<Job>]>,
    capacity: Arc<Semaphore>,
    counters: Arc<Counters>,
}

/// The writer tasks; [`Workers::stop`] drains what was queued and waits for them.
pub struct Workers {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

/// The writer lane that writes `tenant`'s events; stable across restarts.
pub fn lane_of(tenant: &str, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    tenant.hash(&mut hasher);
    (hasher.finish() % lanes.max(1) as u64) as usize
}

impl Pipeline {
    /// Starts one writer task per lane (`settings.ingest.writers`) over `writer`.
    pub fn start(settings: &Settings, writer: Arc<TierWriter>, counters: Arc<Counters>) -> (Pipeline, Workers) {
        let (stop, stop_rx) = watch::channel(false);
        let batching = writer::Batching {
            max_events: settings.ingest.batch_max_events,
            max_delay: settings.batch_max_delay(),
        };
        let mut lanes = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..settings.ingest.writers.max(1) {
            let (jobs, receiver) = mpsc::unbounded_channel();
            lanes.push(jobs);
            handles.push(tokio::spawn(writer::run(receiver, stop_rx.clone(), batching, writer.clone())));
        }
        let pipeline = Pipeline {
            lanes: lanes.into(),
            capacity: Arc::new(Semaphore::new(settings.ingest.queue_capacity)),
            counters,
        };
        (pipeline, Workers { stop, handles })
    }

    /// Queues `events` and waits until every tier that must hold them has them.
    pub async fn submit(&self, events: Vec<AuditEvent>) -> Result<(), SubmitError> {
        let count = events.len() as u32;
        let mut permit = match self.capacity.clone().try_acquire_many_owned(count) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(SubmitError::ShuttingDown),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                Counters::add(&self.counters.queue_full, 1);
                return Err(SubmitError::QueueFull);
            }
        };
        let mut parts: Vec<Vec<AuditEvent>> = (0..self.lanes.len()).map(|_| Vec::new()).collect();
        for event in events {
            parts[lane_of(&event.tenant_id, self.lanes.len())].push(event);
        }
        Counters::add(&self.counters.queue_depth, u64::from(count));
        let mut waiting = Vec::new();
        let mut outcome = Ok(());
        for (lane, part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let Some(part_permit) = permit.split(part.len()) else {
                outcome = Err(SubmitError::ShuttingDown);
                break;
            };
            let (done, finished) = oneshot::channel();
            if self.lanes[lane].send(Job { events: part, done, _permit: part_permit }).is_err() {
                outcome = Err(SubmitError::ShuttingDown);
                break;
            }
            waiting.push(finished);
        }
        for finished in waiting {
            let result = match finished.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SubmitError::Failed(e)),
                Err(_) => Err(SubmitError::ShuttingDown),
            };
            if outcome.is_ok() {
                outcome = result;
            }
        }
        self.counters.queue_depth.fetch_sub(u64::from(count), std::sync::atomic::Ordering::Relaxed);
        outcome
    }
}

impl Workers {
    /// Stops taking new jobs, finishes every queued one, and waits for the writers.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for handle in self.handles {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "writer task failed");
            }
        }
    }
}
