//! Operations endpoints: liveness, readiness per tier, and counters.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use super::AppState;
use crate::telemetry::Counters;
use crate::tiers::spool::SpoolStatus;

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "alive")))]
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// One tier's state.
#[derive(Debug, Serialize)]
struct TierState {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl TierState {
    fn from_result<E: std::fmt::Display>(result: Result<(), E>) -> TierState {
        match result {
            Ok(()) => TierState { status: "up", error: None },
            Err(e) => TierState { status: "down", error: Some(e.to_string()) },
        }
    }

    fn is_down(&self) -> bool {
        self.status == "down"
    }
}

#[derive(Debug, Serialize)]
struct Readiness {
    /// `ready`, `degraded` (the hot tier is down: ingest still works) or `down`.
    status: &'static str,
    /// The system of record: `postgres`, or `sqlite` in embedded mode; absent when
    /// none is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'static str>,
    /// The hot tier: `redis`, or `memory` when it lives in this process; absent when
    /// switched off.
    #[serde(skip_serializing_if = "Option::is_none")]
    hot_tier: Option<&'static str>,
    /// Each backend this node has, under its own name (`postgres` or `sqlite`,
    /// `redis` or `memory`, `files`): a backend that is not configured is not named.
    #[serde(flatten)]
    backends: std::collections::BTreeMap<&'static str, TierState>,
    /// Events waiting for Postgres in the spool, and its bound; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    spool: Option<SpoolStatus>,
    redis_misses: u64,
    /// Whether this node signs checkpoints: only when its key is the deployment's.
    signing: crate::integrity::identity::SigningStatus,
    /// Whether this node does the background work (checkpoints, retention, index
    /// upkeep), and which node does.
    background: crate::cluster::lease::LeaseStatus,
    /// The writer shard whose chains this node extends, once its first write claimed
    /// one (absent before, and in embedded mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    writer_shard: Option<i32>,
    /// The read replica (`postgres.read_url`): its state, replay lag, and whether the
    /// read endpoints use it now (else the primary); absent without one. Its state
    /// does not change `status`: reads go to the primary while it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<crate::tiers::postgres::replica::ReplicaStatus>,
}

/// `GET /readyz`: 200 while events can be acknowledged (`ready` or `degraded`), 503
/// when a system of record is down. Postgres down with room in the spool, or a spool
/// still replaying, is `degraded`; a full spool with Postgres down is `down`.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, description = "ready or degraded"), (status = 503, description = "a system of record is down")))]
pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let deadline = Duration::from_secs(2);
    let database = match &state.store {
        None => None,
        Some(store) => Some(TierState::from_result(
            tokio::time::timeout(deadline, store.ping()).await.unwrap_or_else(|_| {
                Err(crate::tiers::StoreError::Unavailable(sqlx::Error::PoolTimedOut))
            }),
        )),
    };
    let hot = match &state.hot {
        None => None,
        Some(hot) => Some(TierState::from_result(hot.ping().await)),
    };
    let files = state.files.as_ref().map(|files| TierState::from_result(files.health()));
    let is_down = |tier: &Option<TierState>| tier.as_ref().is_some_and(TierState::is_down);
    let spool = state.spool.as_ref().map(|spool| spool.status());
    let spool_takes_events = state.spool.as_ref().is_some_and(|spool| !spool.is_full());
    let spool_backlog = spool.is_some_and(|s| s.pending_events > 0);
    let (status, code) = if (is_down(&database) && !spool_takes_events) || is_down(&files) {
        ("down", StatusCode::SERVICE_UNAVAILABLE)
    } else if is_down(&hot) || is_down(&database) || spool_backlog {
        ("degraded", StatusCode::OK)
    } else {
        ("ready", StatusCode::OK)
    };
    let database_name = state.database.as_ref().map(|db| db.name());
    let hot_name = state.hot.as_ref().map(|hot| hot.name());
    let mut backends = std::collections::BTreeMap::new();
    for (name, tier) in [(database_name, database), (hot_name, hot), (Some("files"), files)] {
        if let (Some(name), Some(tier)) = (name, tier) {
            backends.insert(name, tier);
        }
    }
    let readiness = Readiness {
        status,
        database: database_name,
        hot_tier: hot_name,
        backends,
        spool,
        redis_misses: Counters::get(&state.counters.redis_misses),
        signing: state.integrity.status(),
        background: state.lease.status(),
        writer_shard: writer_shard(&state),
        replica: replica(&state).map(|replica| replica.status()),
    };
    (code, Json(readiness))
}

fn writer_shard(state: &AppState) -> Option<i32> {
    match &state.database {
        Some(crate::tiers::database::Database::Postgres(store)) => store.writer_shard(),
        _ => None,
    }
}

fn replica(state: &AppState) -> Option<&std::sync::Arc<crate::tiers::postgres::replica::ReadReplica>> {
    match &state.database {
        Some(crate::tiers::database::Database::Postgres(store)) => store.replica(),
        _ => None,
    }
}

/// `GET /metrics`: counters in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text format", body = String)))]
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        {
            let mut text = state.counters.render_prometheus();
            if let Some(spool) = &state.spool {
                let status = spool.status();
                for (name, help, value) in [
                    ("tierlog_spool_events", "Events waiting in the spool for Postgres.", status.pending_events),
                    ("tierlog_spool_bytes", "Bytes held by the spool's files.", status.bytes),
                    ("tierlog_spool_max_bytes", "The spool's configured bound.", status.max_bytes),
                    ("tierlog_spool_quarantined", "Corrupt spool segment tails moved aside at start.", status.quarantined),
                ] {
                    text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"));
                }
            }
            for (name, kind, help, value) in [
                ("tierlog_tail_clients", "gauge", "Clients following the live tail on this node.", state.tail.clients() as u64),
                (
                    "tierlog_tail_dropped_events_total",
                    "counter",
                    "Acknowledged events left out of the live tail because its queue was full.",
                    state.tail.dropped(),
                ),
            ] {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
            }
            let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
            let mut outward = Vec::new();
            if let Some(detector) = &state.detector {
                let c = &detector.counters;
                outward.extend([
                    ("tierlog_alerts_total", "Alerts written by detection on this node.", load(&c.alerts)),
                    ("tierlog_detection_skipped_events_total", "Acknowledged events left out of detection because its queue was full.", load(&c.skipped)),
                    ("tierlog_detection_faults_total", "Batches whose rules could not be evaluated, or whose alerts could not be written.", load(&c.faults)),
                ]);
            }
            if let Some(loki) = &state.loki {
                let c = &loki.counters;
                outward.extend([
                    ("tierlog_loki_pushed_lines_total", "Lines this node pushed to Loki.", load(&c.pushed)),
                    ("tierlog_loki_retries_total", "Loki pushes of this node that failed and were sent again.", load(&c.retries)),
                    ("tierlog_loki_dropped_lines_total", "Lines left out of the Loki push (queue full, or refused by Loki); the files still hold them.", load(&c.dropped)),
                ]);
            }
            if state.webhooks.is_some() {
                let c = &state.deliveries;
                outward.extend([
                    ("tierlog_webhooks_delivered_total", "Webhook messages this node delivered.", load(&c.delivered)),
                    ("tierlog_webhooks_failed_attempts_total", "Webhook attempts of this node that failed (retried later).", load(&c.failed_attempts)),
                    ("tierlog_webhooks_dead_total", "Webhook messages this node dead-lettered.", load(&c.dead)),
                ]);
            }
            for (name, help, value) in outward {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
            }
            if let Some(unshipped) = state.files.as_ref().and_then(|files| files.unshipped_bytes()) {
                let name = "tierlog_files_unshipped_bytes";
                text.push_str(&format!(
                    "# HELP {name} Bytes of kept files the log shipper has not read yet (from its positions file).\n# TYPE {name} gauge\n{name} {unshipped}\n"
                ));
            }
            if let Some(keys) = state.auth.store() {
                let name = "tierlog_auth_remembered_total";
                text.push_str(&format!(
                    "# HELP {name} Requests let in on a key as last verified while the database could not be asked.\n# TYPE {name} counter\n{name} {}\n",
                    keys.outage_auths()
                ));
                let name = "tierlog_auth_queries_total";
                text.push_str(&format!(
                    "# HELP {name} Database queries made to authenticate keys (lookups and reads of the digest index).\n# TYPE {name} counter\n{name} {}\n",
                    keys.auth_queries()
                ));
            }
            if let Some(limiter) = state.auth.limiter() {
                let name = "tierlog_rate_limit_local_total";
                text.push_str(&format!(
                    "# HELP {name} Rate limit checks made with this node's own budget because Redis could not answer.\n# TYPE {name} counter\n{name} {}\n",
                    limiter.local_fallbacks()
                ));
            }
            if let Some(replica) = replica(&state) {
                let name = "tierlog_replica_reads_total";
                text.push_str(&format!(
                    "# HELP {name} Reads of the read endpoints the read replica answered.\n# TYPE {name} counter\n{name} {}\n",
                    replica.reads()
                ));
                let replica = replica.status();
                let name = "tierlog_replica_serving_reads";
                text.push_str(&format!(
                    "# HELP {name} 1 while the read endpoints use the read replica, 0 while they use the primary.\n# TYPE {name} gauge\n{name} {}\n",
                    u8::from(replica.serving_reads)
                ));
                if let Some(lag) = replica.lag_ms {
                    let name = "tierlog_replica_lag_seconds";
                    text.push_str(&format!(
                        "# HELP {name} How far the read replica's replay is behind the primary.\n# TYPE {name} gauge\n{name} {}\n",
                        lag as f64 / 1000.0
                    ));
                }
            }
            if let Some(shard) = writer_shard(&state) {
                let name = "tierlog_writer_shard";
                text.push_str(&format!(
                    "# HELP {name} The writer shard whose chains this node extends.
# TYPE {name} gauge
{name} {shard}
"
                ));
            }
            text
        },
    )
}
