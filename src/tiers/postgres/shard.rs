//! Writer shards: which chains this process extends.
//!
//! Every (tenant, table) has one chain per writer shard ([`crate::integrity::chain`]).
//! A process claims a shard on its first write: the lowest number whose session
//! advisory lock it can take, held on a connection of its own for as long as the
//! store lives. Several nodes writing one tenant thus extend different chains and
//! never wait on one another's chain heads; a node that dies (its connection closes)
//! frees its number for the next node to start, so a tenant has as many chains as
//! nodes ever wrote at once, not as many as were ever started.
//!
//! The claim is for speed, not for safety: heads are row-locked whatever the shard,
//! so two processes on one shard (a claim lost with its connection and taken by a
//! node started meanwhile) only wait on each other. A lost claim is taken back as
//! soon as the number is free again.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{oneshot, OnceCell};

use crate::integrity::chain::MAX_WRITERS;

/// The advisory lock class of writer shards (`tlog`).
const LOCK_CLASS: i32 = 0x746c_6f67;

/// How often the claim's connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// This process's writer shard, claimed on first use.
#[derive(Debug, Default)]
pub(super) struct WriterShard {
    claimed: OnceCell<i32>,
    /// Dropped with the store: the claim's connection then closes and frees the shard.
    release: Mutex<Option<oneshot::Sender<()>>>,
}

impl WriterShard {
    /// Shard `shard`, taken without a claim.
    pub(super) fn pinned(shard: i32) -> WriterShard {
        WriterShard { claimed: OnceCell::new_with(Some(shard)), release: Mutex::default() }
    }

    /// The shard, if claimed yet.
    pub(super) fn get(&self) -> Option<i32> {
        self.claimed.get().copied()
    }

    /// The shard, claimed now (from `pool`) if it is not yet. Fails only when
    /// Postgres does not answer; the next write tries again.
    pub(super) async fn claim(&self, pool: &PgPool) -> Result<i32, sqlx::Error> {
        self.claimed
            .get_or_try_init(|| async {
                let mut conn = pool.acquire().await?.detach();
                let shard = match take_lowest_free(&mut conn).await? {
                    Some(shard) => shard,
                    None => {
                        tracing::warn!(max = MAX_WRITERS, "every writer shard is claimed; writing shard 0's chains, shared");
                        0
                    }
                };
                tracing::info!(shard, "writer shard claimed");
                let (release, released) = oneshot::channel();
                *self.release.lock().unwrap_or_else(|p| p.into_inner()) = Some(release);
                tokio::spawn(hold(released, shard, conn, pool.clone()));
                Ok(shard)
            })
            .await
            .copied()
    }
}

async fn take_lowest_free(conn: &mut PgConnection) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar("SELECT n FROM generate_series(0, $2 - 1) AS n WHERE pg_try_advisory_lock($1, n) LIMIT 1")
        .bind(LOCK_CLASS)
        .bind(MAX_WRITERS)
        .fetch_optional(conn)
        .await
}

async fn try_take(conn: &mut PgConnection, shard: i32) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)").bind(LOCK_CLASS).bind(shard).fetch_one(conn).await
}

/// Keeps the claim's connection until the store is dropped (`released`); when it
/// breaks, reconnects and takes the same shard back once it is free.
async fn hold(mut released: oneshot::Receiver<()>, shard: i32, conn: PgConnection, pool: PgPool) {
    let mut held = Some(conn);
    let mut shared_warned = false;
    loop {
        tokio::select! {
            _ = &mut released => {
                if let Some(conn) = held.take() {
                    let _ = conn.close().await;
                }
                return;
            }
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if let Some(conn) = held.as_mut() {
            if conn.ping().await.is_ok() {
                continue;
            }
            tracing::warn!(shard, "lost the connection holding this node's writer shard; claiming it again");
            held = None;
        }
        let Ok(pooled) = pool.acquire().await else { continue };
        let mut conn = pooled.detach();
        match try_take(&mut conn, shard).await {
            Ok(true) => {
                tracing::info!(shard, "writer shard claimed again");
                held = Some(conn);
                shared_warned = false;
            }
            Ok(false) if !shared_warned => {
                tracing::warn!(shard, "another node claimed this node's writer shard meanwhile: both extend its chains, which stay correct but wait on each other");
                shared_warned = true;
            }
            _ => {}
        }
    }
}
