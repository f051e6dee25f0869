//! The live tail behind `GET /audit/stream`: events as they are acknowledged, for
//! the people watching.
//!
//! A writer hands each batch to [`Tail::offer`] once the batch is durable. That never
//! waits: when the tail's queue is full the batch is left out of the tail (counted in
//! [`Tail::dropped`]), so a tail never slows ingest. The tail's own task keeps the
//! last `recent` events (so a client that reconnects with `Last-Event-ID` gets what
//! it missed, for a short while) and broadcasts each one to the connected clients.
//! Each client reads from a bounded broadcast: a client that falls more than
//! `buffer` events behind is cut off with a final notice instead of making anything
//! wait or grow. With Redis, the nodes share their events through it ([`relay`]).

pub mod follow;
pub mod relay;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use crate::event::Category;
use crate::tiers::EncodedBatch;

/// How many acknowledged batches may wait for the tail's task before batches are
/// left out of the tail. Each holds its whole batch (events and lines), so this
/// bounds the tail's memory: 256 held up to 200 MB under load.
const QUEUE_BATCHES: usize = 8;

/// One event of the tail: its id and JSON line, parsed when a client first needs it.
#[derive(Debug)]
pub struct TailEvent {
    pub id: Uuid,
    line: Box<[u8]>,
    /// The tenant and category, when the node knew them without parsing (its own
    /// events).
    known: Option<(Box<str>, Category)>,
    item: OnceLock<Value>,
}

impl TailEvent {
    fn new(id: Uuid, known: Option<(&str, Category)>, line: &[u8]) -> TailEvent {
        TailEvent { id, line: line.into(), known: known.map(|(tenant, category)| (tenant.into(), category)), item: OnceLock::new() }
    }

    /// The event's tenant: most clients follow one, so most events are turned away
    /// by this alone, without parsing.
    pub fn tenant(&self) -> &str {
        match &self.known {
            Some((tenant, _)) => tenant,
            None => self.item()["tenant_id"].as_str().unwrap_or_default(),
        }
    }

    /// The event's category: a client whose only filters are tenant and category
    /// decides with this and [`TailEvent::tenant`] alone, without parsing the event.
    pub fn category(&self) -> Option<Category> {
        match &self.known {
            Some((_, category)) => Some(*category),
            None => self.item()["category"].as_str().and_then(Category::parse),
        }
    }

    /// The event's JSON line, as the files and Redis hold it.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The event as JSON, parsed once for all clients (`Null` if the line is not JSON).
    pub fn item(&self) -> &Value {
        self.item.get_or_init(|| serde_json::from_slice(&self.line).unwrap_or(Value::Null))
    }
}

/// Where a subscription starts.
#[derive(Debug)]
pub struct Subscription {
    /// Batches of events from now on.
    pub live: broadcast::Receiver<TailBatch>,
    /// The held events after the client's `Last-Event-ID`, oldest first.
    pub missed: Vec<Arc<TailEvent>>,
    /// False when the client named a `Last-Event-ID` that is no longer held, so
    /// events may have been missed.
    pub resumed: bool,
    /// Turns true when the node shuts down: the stream then ends (a stream never
    /// ends by itself, and a graceful shutdown waits for every response).
    pub closing: watch::Receiver<bool>,
}

/// The live tail of one node.
#[derive(Debug)]
pub struct Tail {
    queue: mpsc::Sender<Arc<EncodedBatch>>,
    /// The recent events and the broadcast, under one lock, so that a subscriber
    /// gets every event exactly once: held before it subscribed, or sent after.
    state: Mutex<Recent>,
    dropped: AtomicU64,
    closing: watch::Sender<bool>,
}

#[derive(Debug)]
struct Recent {
    events: VecDeque<Arc<TailEvent>>,
    capacity: usize,
    sender: broadcast::Sender<TailBatch>,
    /// Per tenant, for the clients that follow one tenant: they get that tenant's
    /// events of each batch only, instead of looking at every event. A channel goes
    /// once its last client has.
    tenants: HashMap<Box<str>, broadcast::Sender<TailBatch>>,
    /// Each channel's bound, in batches.
    batches: usize,
}

/// The events of one acknowledged batch, sent to the clients at once: a client
/// wakes once per batch, not once per event.
pub type TailBatch = Arc<[Arc<TailEvent>]>;

/// How many events a batch is taken to hold when `client_buffer_events` is turned
/// into the number of batches a client may fall behind.
pub const EVENTS_PER_BATCH: usize = 32;

impl Tail {
    /// A tail keeping the last `recent` events, letting each client fall at most
    /// `buffer` events behind. Its task ends when the tail is dropped.
    pub fn start(buffer: usize, recent: usize, relay: Option<(Arc<relay::Relay>, std::time::Duration)>) -> Arc<Tail> {
        let (queue, mut batches) = mpsc::channel::<Arc<EncodedBatch>>(QUEUE_BATCHES);
        let bound = buffer.div_ceil(EVENTS_PER_BATCH).max(2);
        let (sender, _) = broadcast::channel(bound);
        let recent_events = VecDeque::with_capacity(recent);
        let tail = Arc::new(Tail {
            queue,
            state: Mutex::new(Recent { events: recent_events, capacity: recent, sender, tenants: HashMap::new(), batches: bound }),
            dropped: AtomicU64::new(0),
            closing: watch::channel(false).0,
        });
        let weak = Arc::downgrade(&tail);
        let publisher = relay.as_ref().map(|(relay, _)| relay.clone());
        tokio::spawn(async move {
            while let Some(batch) = batches.recv().await {
                let Some(tail) = weak.upgrade() else { return };
                tail.take(batch.iter().map(|(event, line)| (event.id, Some((event.tenant_id.as_str(), event.category)), line)));
                drop(tail);
                if let Some(relay) = &publisher {
                    if let Err(e) = relay.publish(relay.message(&batch)).await {
                        tracing::debug!(error = %e, "the tail's batch reached this node's clients only");
                    }
                }
            }
        });
        if let Some((relay, retry)) = relay {
            tokio::spawn(relay.listen(Arc::downgrade(&tail), retry));
        }
        tail
    }

    /// Hands a durable batch to the tail, without waiting.
    pub fn offer(&self, batch: &Arc<EncodedBatch>) {
        if self.queue.try_send(batch.clone()).is_err() {
            self.dropped.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        }
    }

    /// How many events were left out of the tail because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// How many clients are following the tail.
    pub fn clients(&self) -> usize {
        let state = self.lock();
        state.sender.receiver_count() + state.tenants.values().map(broadcast::Sender::receiver_count).sum::<usize>()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take<'l>(&self, events: impl Iterator<Item = (Uuid, Option<(&'l str, Category)>, &'l [u8])>) {
        let batch: TailBatch = events.map(|(id, known, line)| Arc::new(TailEvent::new(id, known, line))).collect();
        if batch.is_empty() {
            return;
        }
        let mut state = self.lock();
        if state.capacity > 0 {
            for event in batch.iter() {
                if state.events.len() == state.capacity {
                    state.events.pop_front();
                }
                state.events.push_back(event.clone());
            }
        }
        if !state.tenants.is_empty() {
            state.tenants.retain(|_, sender| sender.receiver_count() > 0);
            let mut shares: HashMap<&str, Vec<Arc<TailEvent>>> = HashMap::new();
            for event in batch.iter() {
                if state.tenants.contains_key(event.tenant()) {
                    shares.entry(event.tenant()).or_default().push(event.clone());
                }
            }
            for (tenant, share) in shares {
                if let Some(sender) = state.tenants.get(tenant) {
                    let _ = sender.send(share.into());
                }
            }
        }
        // No receiver is not an error: nobody is watching.
        let _ = state.sender.send(batch);
    }

    /// Follows the tail (of `tenant` only, when given) from now, after the held
    /// events that came after `last`.
    pub fn subscribe(&self, last: Option<Uuid>, tenant: Option<&str>) -> Subscription {
        let mut state = self.lock();
        let live = match tenant {
            None => state.sender.subscribe(),
            Some(tenant) => {
                let batches = state.batches;
                state.tenants.entry(tenant.into()).or_insert_with(|| broadcast::channel(batches).0).subscribe()
            }
        };
        let closing = self.closing.subscribe();
        let Some(last) = last else { return Subscription { live, missed: Vec::new(), resumed: true, closing } };
        match state.events.iter().rposition(|e| e.id == last) {
            Some(at) => {
                Subscription { live, missed: state.events.iter().skip(at + 1).cloned().collect(), resumed: true, closing }
            }
            None => Subscription { live, missed: Vec::new(), resumed: false, closing },
        }
    }

    /// Ends every stream (the node is shutting down) and refuses none: a stream
    /// opened after this ends at once.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}
