//! Many nodes behaving as one. Each tierlog node is stateless apart from its own files
//! and spool; what they share lives in Postgres and Redis:
//!
//! - one checkpoint signing identity ([`crate::integrity::identity`]);
//! - key revocations, announced over Postgres `NOTIFY` ([`crate::keys`]);
//! - one rate-limit budget per key, in Redis ([`crate::http::rate`]);
//! - background work (checkpoints, retention, search-index upkeep) done by the one
//!   node holding the [`lease::Lease`], and taken over when it stops renewing.

pub mod lease;
