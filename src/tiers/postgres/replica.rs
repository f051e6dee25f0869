//! Reads from a streaming replica (`postgres.read_url`, DATABASE_READ_URL).
//!
//! The read endpoints (logs, combined, stats, exports) ask [`PgStore::read`]
//! (super::PgStore::read) for a pool: the replica's while it is up and its replay lag
//! is within `postgres.read_max_lag_ms`, the primary's otherwise. Writes, keys,
//! checkpoints, verification and retention never come here.
//!
//! The lag is measured against the primary, not from the replica's last replayed
//! commit time (which stands still while the primary is idle): every check records
//! the primary's WAL position with the time it was seen, and the replica lags by the
//! age of the oldest recorded position it has not replayed yet. A replica that has
//! replayed the position seen just before has no lag worth the name.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::PostgresSettings;

/// The setting named in errors about the replica.
pub const SETTING: &str = "postgres.read_url (DATABASE_READ_URL)";

/// Primary WAL positions kept while the replica is behind them: at one check a
/// second, over two hours; older ones are dropped (the lag then reads as the age of
/// the oldest kept, still far beyond any bound).
const MAX_SAMPLES: usize = 8192;

/// The replica as `/readyz` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// `up`, `lagging` (replay behind by more than `max_lag_ms`), `down` (not
    /// answering), `not_replica` (answers but is not in recovery: promoted), or
    /// `starting` until it has replayed the schema this version migrated to.
    pub status: &'static str,
    /// Whether the read endpoints are served by the replica now; when false they go
    /// to the primary.
    pub serving_reads: bool,
    /// How far its replay is behind the primary, in milliseconds (absent while
    /// either server cannot be asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    pub max_lag_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A streaming replica and what the last check found.
#[derive(Debug)]
pub struct ReadReplica {
    pool: PgPool,
    max_lag: Duration,
    state: Mutex<State>,
    /// Reads the replica answered.
    reads: AtomicU64,
    /// The primary's WAL position when this process had migrated the schema: the
    /// replica serves no read before it has replayed that far (a read would find
    /// tables it does not have yet).
    schema_at: AtomicI64,
}

#[derive(Debug)]
struct State {
    status: ReplicaStatus,
    /// Primary WAL positions (bytes), each with when it was seen; increasing.
    samples: VecDeque<(Instant, i64)>,
}

impl State {
    /// The replica cannot serve reads: `status` (`down`, `not_replica`, `starting`),
    /// and why.
    fn unusable(&mut self, status: &'static str, error: String) {
        // The primary positions seen stay: the replica lags behind those it has not
        // replayed however it fared meanwhile.
        self.status = ReplicaStatus { status, serving_reads: false, lag_ms: None, error: Some(error), ..self.status.clone() };
    }
}

/// The primary's WAL position, in bytes.
const PRIMARY_POSITION: &str = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8";

/// Why the replica cannot be used at all: the start fails with this.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("{SETTING}: {0}")]
    Url(sqlx::Error),
    #[error("{SETTING} points at a primary (pg_is_in_recovery() is false there): give the URL of a streaming replica of postgres.url, or leave it empty")]
    NotAReplica,
    #[error("{SETTING} is a replica of another cluster (system identifier {replica}, postgres.url's is {primary})")]
    OtherCluster { replica: i64, primary: i64 },
}

impl ReadReplica {
    /// The replica of `settings.read_url`, connected lazily (a replica down at start
    /// is a state, reported and rechecked, not a failure).
    pub fn connect_lazy(settings: &PostgresSettings) -> Result<ReadReplica, ReplicaError> {
        let options: PgConnectOptions = settings.read_url.parse::<PgConnectOptions>().map_err(ReplicaError::Url)?;
        // Planned per execution, as on the primary (see `PgStore::connect_lazy`).
        let options = options.application_name("tierlog-read").options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .connect_lazy_with(options);
        Ok(ReadReplica {
            pool,
            max_lag: Duration::from_millis(settings.read_max_lag_ms),
            state: Mutex::new(State {
                status: ReplicaStatus {
                    status: "starting",
                    serving_reads: false,
                    lag_ms: None,
                    max_lag_ms: settings.read_max_lag_ms,
                    error: None,
                },
                samples: VecDeque::new(),
            }),
            reads: AtomicU64::new(0),
            schema_at: AtomicI64::new(0),
        })
    }

    /// The replica's pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// What the last check found.
    pub fn status(&self) -> ReplicaStatus {
        self.lock().status.clone()
    }

    /// Whether reads go to the replica now.
    pub fn serving(&self) -> bool {
        self.lock().status.serving_reads
    }

    /// How many reads the replica has answered.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub(super) fn answered(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A read on the replica failed as a server down does: reads go to the primary
    /// until a check finds it back.
    pub fn failed(&self, error: &sqlx::Error) {
        self.lock().unusable("down", error.to_string());
    }

    /// The start's check: fails when the URL answers as a primary or as a replica of
    /// another cluster; a replica not answering is only reported.
    /// Run once the schema is migrated: the replica serves reads only once it has
    /// replayed the primary's position of now.
    pub async fn check_at_start(&self, primary: &PgPool) -> Result<(), ReplicaError> {
        let deadline = Duration::from_secs(5);
        if let Ok(Ok(position)) = tokio::time::timeout(deadline, sqlx::query_scalar::<_, i64>(PRIMARY_POSITION).fetch_one(primary)).await {
            self.schema_at.store(position, Ordering::Relaxed);
        }
        let recovering = tokio::time::timeout(deadline, sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&self.pool)).await;
        match recovering {
            Ok(Ok(false)) => return Err(ReplicaError::NotAReplica),
            Ok(Ok(true)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the read replica ({SETTING}) does not answer; reads go to the primary until it does");
                return Ok(());
            }
            Err(_) => {
                tracing::warn!("the read replica ({SETTING}) does not answer within 5 s; reads go to the primary until it does");
                return Ok(());
            }
        }
        // Both answer: the same cluster? (pg_control_system() may be refused to a
        // role without the right; then this is not checked.)
        let identifier = "SELECT system_identifier FROM pg_control_system()";
        if let (Ok(replica), Ok(primary)) = (
            sqlx::query_scalar::<_, i64>(identifier).fetch_one(&self.pool).await,
            sqlx::query_scalar::<_, i64>(identifier).fetch_one(primary).await,
        ) {
            if replica != primary {
                return Err(ReplicaError::OtherCluster { replica, primary });
            }
        }
        Ok(())
    }

    /// Asks both servers where they are and updates the state: the primary's WAL
    /// position first, then the replica's replay position.
    pub async fn check(&self, primary: &PgPool) {
        let deadline = Duration::from_secs(2);
        let primary_at = match tokio::time::timeout(deadline, sqlx::query_scalar::<_, i64>(PRIMARY_POSITION).fetch_one(primary)).await {
            Ok(Ok(lsn)) => Some((Instant::now(), lsn)),
            _ => None,
        };
        let replica = tokio::time::timeout(
            deadline,
            sqlx::query_as::<_, (bool, Option<i64>)>(
                "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8",
            )
            .fetch_one(&self.pool),
        )
        .await;
        let mut state = self.lock();
        let replayed = match replica {
            Err(_) => return state.unusable("down", "no answer within 2 s".into()),
            Ok(Err(e)) => return state.unusable("down", e.to_string()),
            Ok(Ok((false, _))) => {
                return state.unusable("not_replica", "the server is no longer in recovery (promoted?): reads go to the primary".into())
            }
            Ok(Ok((true, replayed))) => replayed,
        };
        let replayed = replayed.unwrap_or(0);
        if replayed < self.schema_at.load(Ordering::Relaxed) {
            return state.unusable("starting", "replaying up to the schema this version migrated to".into());
        }
        let State { status, samples } = &mut *state;
        // The primary does not answer: the replica is the only server that can serve
        // reads, at a lag no one can measure.
        let Some(sample) = primary_at else {
            *status = ReplicaStatus {
                status: "up",
                serving_reads: true,
                lag_ms: None,
                error: Some("the primary does not answer: lag unknown".into()),
                ..status.clone()
            };
            return;
        };
        if samples.back().is_none_or(|(_, lsn)| *lsn < sample.1) {
            samples.push_back(sample);
        }
        while samples.front().is_some_and(|(_, lsn)| *lsn <= replayed) {
            samples.pop_front();
        }
        while samples.len() > MAX_SAMPLES {
            samples.pop_front();
        }
        let lag = samples.front().map_or(Duration::ZERO, |(seen, _)| seen.elapsed());
        let within = lag <= self.max_lag;
        *status = ReplicaStatus {
            status: if within { "up" } else { "lagging" },
            serving_reads: within,
            lag_ms: Some(lag.as_millis() as u64),
            error: None,
            ..status.clone()
        };
    }
}

/// Whether a failed read on the replica should be run again on the primary: the
/// replica is unreachable, or cancelled the query for a conflict with recovery
/// (SQLSTATE 40001 on a standby).
pub fn retry_on_primary(error: &sqlx::Error) -> bool {
    let conflict = matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("40001"));
    conflict || super::super::is_unreachable(error)
}
