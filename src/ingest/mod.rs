//! Ingest: the bounded queue between the HTTP handlers and the tier writers.
//!
//! A request's validated events become one [`Job`]. The queue's capacity is counted in
//! events by a semaphore: a request that does not fit is refused at once (503 with
//! `Retry-After`) instead of waiting or growing memory. Writer tasks take jobs off
//! the queue, gather them into batches (by count and by delay), write each batch to
//! every tier (see [`writer`]), and only then complete the jobs, which releases the
//! HTTP responses.

pub mod route;
pub mod writer;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::event::AuditEvent;
use crate::telemetry::Counters;
pub use writer::{TierWriter, WriteError};

/// One request's events on their way to the tiers.
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
    jobs: mpsc::UnboundedSender<Job>,
    capacity: Arc<Semaphore>,
    counters: Arc<Counters>,
}

/// The writer tasks; [`Workers::stop`] drains what was queued and waits for them.
pub struct Workers {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts `settings.ingest.writers` writer tasks over `writer`.
    pub fn start(settings: &Settings, writer: Arc<TierWriter>, counters: Arc<Counters>) -> (Pipeline, Workers) {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let (stop, stop_rx) = watch::channel(false);
        let batching = writer::Batching {
            max_events: settings.ingest.batch_max_events,
            max_delay: settings.batch_max_delay(),
        };
        let handles = (0..settings.ingest.writers)
            .map(|_| {
                tokio::spawn(writer::run(
                    receiver.clone(),
                    stop_rx.clone(),
                    batching,
                    writer.clone(),
                ))
            })
            .collect();
        let pipeline = Pipeline {
            jobs,
            capacity: Arc::new(Semaphore::new(settings.ingest.queue_capacity)),
            counters,
        };
        (pipeline, Workers { stop, handles })
    }

    /// Queues `events` and waits until every tier that must hold them has them.
    pub async fn submit(&self, events: Vec<AuditEvent>) -> Result<(), SubmitError> {
        let count = events.len() as u32;
        let permit = match self.capacity.clone().try_acquire_many_owned(count) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(SubmitError::ShuttingDown),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                Counters::add(&self.counters.queue_full, 1);
                return Err(SubmitError::QueueFull);
            }
        };
        let (done, finished) = oneshot::channel();
        Counters::add(&self.counters.queue_depth, u64::from(count));
        let sent = self.jobs.send(Job { events, done, _permit: permit });
        let outcome = match sent {
            Err(_) => Err(SubmitError::ShuttingDown),
            Ok(()) => match finished.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SubmitError::Failed(e)),
                Err(_) => Err(SubmitError::ShuttingDown),
            },
        };
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
