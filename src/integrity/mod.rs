//! Tamper evidence: the canonical encoding of persisted rows and their hash chain.
//! Pure code; the Postgres tier calls it while holding the chain head's lock.

pub mod chain;
pub mod verify;
