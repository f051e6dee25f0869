//! Tamper evidence: the canonical encoding of persisted rows and their hash chain,
//! signed checkpoints of chain heads, and the verifier. Pure code; the Postgres tier
//! calls it while holding the chain head's lock.

pub mod chain;
pub mod checkpoint;
pub mod identity;
mod encode;
pub mod verify;
