//! A lease in Postgres (`leases`): the node holding it does the deployment's
//! background work; the others stand by and take it once it expires.
//!
//! The holder renews every third of `cluster.lease_seconds`. It counts the lease as
//! held until `lease_seconds` after the start of its last successful renewal, which
//! is no later than the expiry the database recorded (`now()` at the renewal, on the
//! database's clock, plus the same length), so two nodes never both count it held
//! while their clocks run at the same rate. A node that dies or loses its link to
//! Postgres stops renewing; another takes over within `lease_seconds` plus one
//! renewal interval.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

use crate::tiers::database::Database;

/// Where a node stands with the lease.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    /// `held`, `standby`, or `unknown` (Postgres has not answered).
    pub state: &'static str,
    /// This node's name in the lease table.
    pub node: String,
    /// The holder, as last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// This node's hold on one lease.
#[derive(Debug)]
pub struct Lease {
    name: &'static str,
    node: String,
    length: Duration,
    pool: Option<PgPool>,
    /// Until when this node counts the lease as its own.
    held_until: Mutex<Option<Instant>>,
    holder: Mutex<Option<String>>,
}

impl Lease {
    /// The lease `name` for `node`, over `db` (the embedded store has one node, which
    /// always holds it).
    pub fn new(name: &'static str, node: String, length: Duration, db: Option<&Database>) -> Arc<Lease> {
        let pool = match db {
            Some(Database::Postgres(pg)) => Some(pg.pool().clone()),
            _ => None,
        };
        Arc::new(Lease {
            name,
            node,
            length: length.max(Duration::from_secs(1)),
            pool,
            held_until: Mutex::new(None),
            holder: Mutex::new(None),
        })
    }

    /// Whether this node may do the leased work now.
    pub fn is_held(&self) -> bool {
        if self.pool.is_none() {
            return true;
        }
        self.held_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|until| Instant::now() < until)
    }

    pub fn status(&self) -> LeaseStatus {
        let holder = self.holder.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let state = match (self.is_held(), &holder) {
            (true, _) => "held",
            (false, Some(_)) => "standby",
            (false, None) => "unknown",
        };
        LeaseStatus { state, node: self.node.clone(), holder: if self.pool.is_none() { Some(self.node.clone()) } else { holder } }
    }

    /// Takes or renews the lease once; returns whether this node holds it.
    pub async fn renew(&self) -> bool {
        let Some(pool) = &self.pool else { return true };
        let started = Instant::now();
        let answer: Result<Option<String>, sqlx::Error> = async {
            let won: Option<String> = sqlx::query_scalar(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                 WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
                 RETURNING holder",
            )
            .bind(self.name)
            .bind(&self.node)
            .bind(self.length.as_millis() as f64)
            .fetch_optional(pool)
            .await?;
            match won {
                Some(holder) => Ok(Some(holder)),
                None => sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1").bind(self.name).fetch_optional(pool).await,
            }
        }
        .await;
        let was_held = self.is_held();
        let holds = match answer {
            Ok(holder) => {
                let holds = holder.as_deref() == Some(self.node.as_str());
                *self.holder.lock().unwrap_or_else(|p| p.into_inner()) = holder;
                holds
            }
            Err(e) => {
                tracing::debug!(error = %e, lease = self.name, "cannot renew the lease");
                false
            }
        };
        if holds {
            *self.held_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(started + self.length);
            if !was_held {
                tracing::info!(lease = self.name, node = %self.node, "this node now does the background work");
            }
        } else if was_held && !self.is_held() {
            tracing::warn!(lease = self.name, node = %self.node, "lease lost; another node does the background work");
        }
        holds
    }

    /// Renews every third of the lease's length, until the process ends.
    pub async fn keep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.length / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.renew().await;
        }
    }

    /// Gives the lease up (a clean stop), so another node takes it at once.
    pub async fn release(&self) {
        if let Some(pool) = &self.pool {
            *self.held_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let _ = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2").bind(self.name).bind(&self.node).execute(pool).await;
        }
    }
}
