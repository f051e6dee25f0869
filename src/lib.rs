//! tierlog: a tiered audit-logging backend.
//!
//! The life of an event, and the module that handles each step:
//!
//! 1. [`http`] receives `POST /audit/events`, authenticates the key
//!    ([`http::auth`] against [`keys`]) and checks the body's type and size.
//! 2. [`event`] splits the body into items and validates each one into an
//!    [`event::AuditEvent`]; a bad item rejects the whole request.
//! 3. [`ingest`] queues the request's events (bounded: a full queue answers 503) and
//!    its writer tasks gather them into batches.
//! 4. [`ingest::route`] decides each event's tiers from the per-category policy in
//!    [`config`].
//! 5. [`tiers`] write the batch: [`tiers::postgres`] first (hash-chained rows, see
//!    [`integrity`]), then [`tiers::files`] and [`tiers::redis`] side by side.
//! 6. The request is answered only after its events are durable.
//! 7. The durable batch goes on to the live tail ([`stream`]) and to detection
//!    ([`detect`]), whose alerts come back through step 3; the store writes each
//!    alert's [`webhooks`] messages with it, and every node delivers them.
//!
//! Around the flow: [`integrity`] signs chain heads and verifies chains,
//! [`retention`] deletes (and archives) expired rows, [`privacy`] erases and exports
//! a data subject, [`event::mask`] masks secrets before step 3.
//!
//! [`app`] builds and serves the whole; [`telemetry`] holds logs and counters;
//! [`cluster`] is what lets many nodes act as one (see `docs/scale-out.md`).

pub mod app;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod detect;
pub mod event;
pub mod http;
pub mod ingest;
pub mod integrity;
pub mod keys;
pub mod privacy;
pub mod query;
pub mod report;
pub mod retention;
pub mod ship;
pub mod stream;
pub mod telemetry;
pub mod tiers;
pub mod webhooks;
