//! tierlog's integration tests: one binary, the real Postgres, Redis, files and HTTP.

#[macro_use]
mod behaviour;
mod numbers;
mod partitions;
mod chain;
mod checkpoints;
mod console;
mod masking;
mod modes;
mod nodes;
mod operations;
mod privacy;
mod quickstart;
mod retention;
mod schemathesis;
mod security;
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
mod load;
mod promises;
mod query;
mod redis_cluster;
mod replica;
mod rotation;
mod search_upkeep;
mod validation;
mod verify;
