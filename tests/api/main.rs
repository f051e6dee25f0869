//! tierlog's integration tests: one binary, the real Postgres, Redis, files and HTTP.

mod behaviour;
mod chain;
mod checkpoints;
mod masking;
mod modes;
mod operations;
mod privacy;
mod quickstart;
mod retention;
mod schemathesis;
mod docs;
mod embedded_store;
mod export;
mod faults;
mod helpers;
mod hostile;
mod ingest;
mod insights;
mod isolation;
mod keys;
mod limits;
mod promises;
mod query;
mod rotation;
mod validation;
mod verify;
