//! Building the service apart from serving it, so tests run the real thing on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::{FsyncPolicy, Settings};
use crate::event::mask::Masker;
use crate::http::{self, auth::Authenticator, AppState, Shared};
use crate::integrity::checkpoint::{PublicKey, Signer};
use crate::cluster::lease::Lease;
use crate::integrity::identity::{NotSigning, SigningIdentity};
use crate::retention::{Policies, PolicyHandle};
use crate::tiers::database::Database;
use crate::tiers::sqlite::SqliteStore;
use crate::ingest::route::Routing;
use crate::ingest::{Pipeline, TierWriter, Workers};
use crate::telemetry::Counters;
use crate::tiers::files::RollingFiles;
use crate::tiers::postgres::replica::ReadReplica;
use crate::tiers::postgres::{self, PgStore};
use crate::tiers::memory::MemoryHotTier;
use crate::tiers::redis::{RedisHotTier, RedisLink};
use crate::tiers::spool::Spool;
use crate::tiers::{DurableStore, HotTier};

/// The time-driven parts: the signing key, retention policies and the clock.
pub struct Governance {
    /// The signing key, and whether the deployment lets this node sign with it.
    pub identity: Arc<SigningIdentity>,
    pub policies: PolicyHandle,
    pub clock: Clock,
}

impl Governance {
    /// Loads (or on first start creates, printing the public key) the signing key,
    /// and starts from the configured retention defaults.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Governance> {
        let (signer, created) = Signer::load_or_create(&settings.integrity)
            .map_err(anyhow::Error::msg)
            .context("integrity.signing_key_file")?;
        let public = signer.public().to_base64();
        if created {
            tracing::warn!(
                file = %settings.integrity.signing_key_file.display(),
                public_key = %public,
                "created a new checkpoint signing key; keep the file safe and publish the public key"
            );
            eprintln!("tierlog: new checkpoint signing key in {}", settings.integrity.signing_key_file.display());
            eprintln!("tierlog: checkpoint public key (ed25519, base64): {public}");
        } else {
            tracing::info!(public_key = %public, key_id = signer.public().id(), "checkpoint signing key loaded");
        }
        // Validated with the rest of the settings.
        let configured: Vec<PublicKey> =
            settings.integrity.trusted_public_keys.iter().filter_map(|extra| PublicKey::parse(extra).ok()).collect();
        Ok(Governance {
            identity: Arc::new(SigningIdentity::new(Arc::new(signer), configured)),
            policies: PolicyHandle::new(Policies::from_settings(settings)),
            clock: Clock::default(),
        })
    }
}

/// The opened tiers; any may be absent when configured off.
pub struct Tiers {
    pub store: Option<Arc<dyn DurableStore>>,
    pub database: Option<Database>,
    pub hot: Option<Arc<dyn HotTier>>,
    pub files: Option<Arc<RollingFiles>>,
    /// Where events bound for Postgres wait while it is unreachable.
    pub spool: Option<Arc<Spool>>,
    /// How the live tail reaches the other nodes (Redis), and how soon it tries again.
    pub relay: Option<(Arc<crate::stream::relay::Relay>, Duration)>,
    /// Redis, where detection rules keep their windows (without it, the process).
    pub link: Option<Arc<RedisLink>>,
    /// The webhook client (when webhooks are on).
    pub webhooks: Option<crate::webhooks::deliver::Sender>,
}

/// A built service: listener bound, tiers opened, writers running.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    workers: Workers,
}

impl Application {
    /// Opens every tier of `settings` and binds its listen address.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let addr = settings.listen_addr()?;
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        Application::build_with_listener(settings, listener).await
    }

    /// Like [`Application::build`] on a listener the caller bound.
    pub async fn build_with_listener(settings: Settings, listener: TcpListener) -> anyhow::Result<Application> {
        let counters = Arc::new(Counters::default());
        let mut settings = settings;
        let database = if settings.postgres.url.is_empty() {
            let path = settings.embedded_store_path();
            let store = SqliteStore::open(&path).await.with_context(|| format!("cannot open the embedded store {}", path.display()))?;
            tracing::info!(path = %path.display(), "embedded mode: SQLite store");
            // SQLite has one writer at a time: more writer tasks would only queue on
            // its lock.
            settings.ingest.writers = 1;
            Database::Sqlite(store)
        } else {
            let mut pg = PgStore::connect_lazy(&settings.postgres).context("postgres.url (DATABASE_URL)")?;
            if settings.postgres.migrate_on_start {
                let retry = Duration::from_millis(settings.spool.retry_interval_ms.max(100));
                pg.migrate_or_defer(retry).await.context("cannot migrate the database")?;
            }
            if !settings.postgres.read_url.is_empty() {
                let replica = read_replica(&pg, &settings).await?;
                pg = pg.with_replica(replica);
            }
            tokio::spawn({
                let (pg, writers) = (pg.clone(), settings.ingest.writers);
                async move { pg.warm_up(writers).await }
            });
            Database::Postgres(pg)
        };
        if settings.server.bootstrap_key.is_empty() && matches!(database, Database::Sqlite(_)) {
            settings.server.bootstrap_key = embedded_bootstrap_key(&settings)?;
        }
        if settings.bootstrap_key_is_a_placeholder() {
            tracing::warn!(
                "TIERLOG_BOOTSTRAP_KEY (server.bootstrap_key) is a placeholder printed in tierlog's documentation: \
                 anyone who has read it holds this node's admin key. Set a long random secret \
                 (openssl rand -hex 24) and restart"
            );
        }
        let verified_keys_file = (matches!(database, Database::Postgres(_)) && settings.spool.enabled)
            .then(|| settings.spool.path.join("verified-keys.json"));
        let grace = Duration::from_secs(settings.keys.outage_grace_seconds);
        let keys = Arc::new(database.key_store().with_outage_grace(grace, verified_keys_file));
        let store = database.durable();
        let governance = Governance::from_settings(&settings)?;
        match governance.identity.enroll(&database).await {
            Ok(()) => {}
            Err(e @ NotSigning::ForeignKey { .. }) => {
                return Err(anyhow::Error::msg(e).context("integrity.signing_key / integrity.signing_key_file"));
            }
            Err(NotSigning::Unreachable(e)) => {
                tracing::warn!(error = %e, "the deployment's signing key cannot be checked yet; checking again before each signing");
            }
        }
        let link = match settings.redis.enabled && !settings.redis.url.is_empty() {
            true => Some(Arc::new(RedisLink::new(&settings.redis).context("redis.url (REDIS_URL)")?)),
            false => None,
        };
        if let Some(link) = &link {
            match link.check_mode().await {
                Ok(Some(())) => {}
                Ok(None) => tracing::warn!("Redis cannot be reached yet; its mode (redis.cluster) is not checked"),
                Err(reason) => anyhow::bail!("redis.url (REDIS_URL) / redis.cluster (REDIS_CLUSTER): {reason}"),
            }
        }
        let hot: Option<Arc<dyn HotTier>> = match (settings.redis.enabled, &link) {
            (false, _) => None,
            (true, Some(link)) => Some(Arc::new(RedisHotTier::over(link.clone(), &settings.redis))),
            (true, None) => {
                tracing::warn!("no REDIS_URL: the hot tier lives in this process and is lost on restart");
                Some(Arc::new(MemoryHotTier::new(governance.clock.clone())))
            }
        };
        let files = if settings.files.enabled {
            let files = RollingFiles::open(&settings.files).context("cannot open the file tier (LOGGING_FILE)")?;
            Some(Arc::new(files))
        } else {
            None
        };
        let mut auth = Authenticator::new(&settings.server.bootstrap_key, Some(keys));
        if settings.rate_limit.enabled {
            let shared = link.clone().map(|link| (link, settings.redis.key_prefix.as_str()));
            auth = auth.with_rate_limit(settings.rate_limit.requests_per_second, settings.rate_limit.burst, shared);
        }
        match database.load_policies(&Policies::from_settings(&settings)).await {
            Ok(policies) => governance.policies.replace(policies),
            Err(e) => tracing::warn!(error = %e, "retention policies not loaded yet; using the configured defaults"),
        }
        // The time partitions the first rows need, before they arrive.
        if let Database::Postgres(pg) = &database {
            partition_upkeep(pg, &settings, &governance.policies, &counters, governance.clock.now()).await;
        }
        let spool = match &database {
            Database::Postgres(_) if settings.spool.enabled => {
                let spool = Spool::open(&settings.spool).context("cannot open the spool (spool.path)")?;
                Some(Arc::new(spool))
            }
            _ => None,
        };
        let webhooks = match settings.webhooks.enabled {
            true => Some(crate::webhooks::deliver::Sender::new(&settings.webhooks).map_err(anyhow::Error::msg).context("webhooks")?),
            false => None,
        };
        let relay = link.clone().map(|link| {
            // Named apart from every other running tail (two services in one process
            // share a node name).
            let name = format!("{}/{}", settings.cluster.node(), uuid::Uuid::new_v4().simple());
            let relay = crate::stream::relay::Relay::new(link, &settings.redis.key_prefix, name);
            (Arc::new(relay), Duration::from_millis(settings.redis.retry_interval_ms.max(100)))
        });
        let tiers = Tiers { store: Some(store), database: Some(database), hot, files, spool, relay, link, webhooks };
        Ok(Application::assemble(settings, listener, counters, auth, tiers, governance))
    }

    /// Wires opened tiers into the pipeline and the router.
    pub fn assemble(
        settings: Settings,
        listener: TcpListener,
        counters: Arc<Counters>,
        auth: Authenticator,
        tiers: Tiers,
        governance: Governance,
    ) -> Application {
        let Tiers { store, database, hot, files, spool, relay, link, webhooks } = tiers;
        let Governance { identity, policies, clock } = governance;
        let tail = crate::stream::Tail::start(settings.stream.client_buffer_events, settings.stream.recent_events, relay);
        let detection = settings.detection.enabled.then(|| {
            crate::detect::Detector::new(Arc::new(crate::detect::RuleBook::new(&settings.detection.rules)))
        });
        let loki = (!settings.loki.push_url.is_empty()).then(|| crate::ship::loki::LokiPush::start(settings.loki.clone()));
        let writer = Arc::new(TierWriter {
            loki: loki.clone(),
            detector: detection.as_ref().map(|(detector, _)| detector.clone()),
            tail: tail.clone(),
            routing: Routing::with_policies(&settings, policies.clone()),
            store: store.clone(),
            hot: hot.clone(),
            files: files.clone(),
            spool: spool.clone(),
            counters: counters.clone(),
        });
        let (pipeline, workers) = Pipeline::start(&settings, writer, counters.clone());
        let detector = detection.map(|(detector, batches)| {
            let state: Arc<dyn crate::detect::state::WindowState> = match link {
                Some(link) => Arc::new(crate::detect::state::RedisState::new(link)),
                None => Arc::new(crate::detect::state::MemoryState::default()),
            };
            let engine = crate::detect::Engine {
                book: detector.book.clone(),
                state,
                prefix: settings.redis.key_prefix.clone(),
                clock: clock.clone(),
                counters: detector.counters.clone(),
            };
            tokio::spawn(engine.run(batches, pipeline.clone()));
            detector
        });
        // Validated with the rest of the settings.
        let trusted_proxies = settings.trusted_proxies().unwrap_or_default().into();
        let masker = Arc::new(Masker::new(&settings.masking).unwrap_or_else(|_| Masker::disabled()));
        let lease = Lease::new(
            "background",
            settings.cluster.node(),
            Duration::from_secs(settings.cluster.lease_seconds),
            database.as_ref(),
        );
        let state = AppState::new(Shared {
            auth,
            trusted_proxies,
            settings: Arc::new(settings),
            pipeline,
            counters,
            store,
            database,
            hot,
            files,
            spool,
            integrity: identity,
            policies,
            clock,
            masker,
            lease,
            tail,
            detector,
            loki,
            webhooks,
            deliveries: Arc::default(),
        });
        Application { listener, state, workers }
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The service's clock (tests move it forward).
    pub fn clock(&self) -> Clock {
        self.state.clock.clone()
    }

    /// The service's counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.state.counters.clone()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests, drains the
    /// queue through the writers and fsyncs the files.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, state, workers } = self;
        let files = state.files.clone();
        let lease = state.lease.clone();
        let interval_sync = spawn_interval_fsync(&state);
        let background = spawn_background(&state);
        tracing::info!(listen = %listener.local_addr()?, "tierlog serving");
        let header_timeout = Duration::from_millis(state.settings.server.header_timeout_ms);
        // Live-tail streams never end by themselves: end them when shutdown begins, or
        // the graceful shutdown would wait for them forever.
        let tail = state.tail.clone();
        let shutdown = async move {
            shutdown.await;
            tail.close();
        };
        http::serve::serve(listener, http::router(state), header_timeout, shutdown).await.context("http server failed")?;
        tracing::info!("draining the ingest queue");
        workers.stop().await;
        if let Some(task) = interval_sync {
            task.abort();
        }
        for task in background {
            task.abort();
        }
        lease.release().await;
        if let Some(files) = files {
            tokio::task::spawn_blocking(move || files.sync()).await?.context("final fsync of the file tier")?;
        }
        tracing::info!("tierlog stopped");
        Ok(())
    }
}

fn spawn_interval_fsync(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    let files = state.files.clone()?;
    if state.settings.files.fsync != FsyncPolicy::Interval {
        return None;
    }
    let every = Duration::from_millis(state.settings.files.fsync_interval_ms.max(1));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let files = files.clone();
            match tokio::task::spawn_blocking(move || files.sync()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = ?e, "interval fsync failed"),
                Err(e) => tracing::error!(error = %e, "interval fsync task failed"),
            }
        }
    }))
}

/// The periodic work: reloading retention policies, signing checkpoints, running
/// retention. Each loop's first turn comes one interval after start.
fn spawn_background(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let (Some(spool), Some(store)) = (state.spool.clone(), state.store.clone()) {
        let settings = &state.settings.spool;
        tasks.push(tokio::spawn(crate::ingest::replay::run(
            spool,
            store,
            state.counters.clone(),
            settings.replay_batch_events,
            Duration::from_millis(settings.retry_interval_ms),
        )));
    }
    if let Some(keys) = state.auth.store() {
        tasks.push(tokio::spawn(keys.clone().follow_revocations()));
    }
    let Some(pg) = state.database.clone() else { return tasks };
    let settings = state.settings.clone();
    if let Some(detector) = state.detector.clone() {
        let (db, seconds) = (pg.clone(), settings.detection.refresh_seconds);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(seconds.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = crate::http::rules::reload(&db, &detector.book).await {
                    tracing::warn!(error = %e, "cannot reload the saved detection rules");
                }
            }
        }));
    }
    if let Some(sender) = state.webhooks.clone() {
        let dispatcher = crate::webhooks::deliver::Dispatcher {
            db: pg.clone(),
            sender,
            settings: settings.webhooks.clone(),
            clock: state.clock.clone(),
            counters: state.deliveries.clone(),
        };
        tasks.push(tokio::spawn(dispatcher.run()));
    }
    // Checkpoints, retention and index upkeep: on the lease holder only.
    let lease = state.lease.clone();
    tasks.push(tokio::spawn(lease.clone().keep()));
    let merge_every = settings.postgres.search_merge_interval_ms;
    if let (Database::Postgres(store), true) = (&pg, merge_every > 0) {
        let every = Duration::from_millis(merge_every);
        tasks.push(tokio::spawn(postgres::search::run_merges(store.clone(), every, lease.clone())));
    }
    let every = |seconds: u64| {
        let mut tick = tokio::time::interval(Duration::from_secs(seconds.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    };
    {
        let (pg, policies, settings, clock) = (pg.clone(), state.policies.clone(), settings.clone(), state.clock.clone());
        let counters = state.counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = every(settings.retention.policy_refresh_seconds);
            tick.tick().await;
            loop {
                tick.tick().await;
                match pg.load_policies(&Policies::from_settings(&settings)).await {
                    Ok(loaded) => {
                        let changed = *policies.snapshot() != loaded;
                        policies.replace(loaded);
                        // New retention lengths need their partitions (any node may
                        // see the change first; the upkeep is made once).
                        if let (true, Database::Postgres(store)) = (changed, &pg) {
                            partition_upkeep(store, &settings, &policies, &counters, clock.now()).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot reload retention policies"),
                }
            }
        }));
    }
    if let Database::Postgres(store) = &pg {
        // Time partitions ahead of the rows, hourly: an interval is at least a day,
        // and each upkeep makes two intervals beyond the furthest expiry in use.
        let (store, policies, settings, clock) = (store.clone(), state.policies.clone(), settings.clone(), state.clock.clone());
        let counters = state.counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = every(3600);
            tick.tick().await;
            loop {
                tick.tick().await;
                partition_upkeep(&store, &settings, &policies, &counters, clock.now()).await;
            }
        }));
    }
    if settings.integrity.checkpoint_interval_seconds > 0 {
        let (pg, identity, clock, lease) = (pg.clone(), state.integrity.clone(), state.clock.clone(), lease.clone());
        let seconds = settings.integrity.checkpoint_interval_seconds;
        let counters = state.counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = every(seconds);
            tick.tick().await;
            loop {
                tick.tick().await;
                if !lease.is_held() {
                    continue;
                }
                Counters::add(&counters.checkpoint_runs, 1);
                // Logged by the identity when it changes.
                let Ok(signer) = identity.signer_for(&pg).await else { continue };
                match pg.checkpoint_heads(signer, None, "periodic", clock.now()).await {
                    Ok(made) => tracing::info!(checkpoints = made.len(), "periodic checkpoints signed"),
                    Err(e) => tracing::error!(error = %e, "periodic checkpoints failed"),
                }
            }
        }));
    }
    if settings.retention.enabled {
        let (state, lease) = (state.clone(), lease.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = every(state.settings.retention.interval_seconds);
            tick.tick().await;
            loop {
                tick.tick().await;
                if !lease.is_held() {
                    continue;
                }
                Counters::add(&state.counters.retention_runs, 1);
                match http::retention::run_job(&state).await {
                    Ok(report) => tracing::info!(run_id = %report.run_id, deleted = ?report.deleted, "retention run finished"),
                    Err(e) => tracing::error!(status = %e.status(), "retention run failed"),
                }
            }
        }));
    }
    tasks
}

/// Creates the time partitions the retention lengths in force need (see
/// [`crate::tiers::postgres::partitions`]); failures are logged, and the next upkeep
/// tries again (rows meanwhile land in the default partition, and are moved later).
pub(crate) async fn partition_upkeep(
    store: &PgStore,
    settings: &Settings,
    policies: &PolicyHandle,
    counters: &Counters,
    now: chrono::DateTime<chrono::Utc>,
) {
    let lengths = Routing::with_policies(settings, policies.clone()).retention_lengths();
    if let Err(e) = store.upkeep_partitions(&lengths, now, Some(&counters.metrics)).await {
        tracing::warn!(error = %e, "time partition upkeep failed; trying again later");
    }
}

/// The embedded mode's admin key when none is configured: read from
/// `<data_dir>/bootstrap.key`, or created there (mode 0600) and printed once.
fn embedded_bootstrap_key(settings: &Settings) -> anyhow::Result<String> {
    let path = settings.embedded.data_dir.join("bootstrap.key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_owned());
    }
    let key = crate::keys::Secret::generate().plaintext;
    std::fs::create_dir_all(&settings.embedded.data_dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    eprintln!("tierlog: embedded mode; data in {}", settings.embedded.data_dir.display());
    eprintln!("tierlog: listening on http://{}", settings.server.listen);
    eprintln!("tierlog: admin key (also in {}): {key}", path.display());
    Ok(key)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

/// The read replica of `settings.postgres.read_url`, checked (a primary or another
/// cluster's server there fails the start), with its checks running every
/// `postgres.read_check_interval_ms`.
async fn read_replica(pg: &PgStore, settings: &Settings) -> anyhow::Result<Arc<ReadReplica>> {
    let replica = Arc::new(ReadReplica::connect_lazy(&settings.postgres)?);
    replica.check_at_start(pg.pool()).await?;
    replica.check(pg.pool()).await;
    tracing::info!(replica = ?replica.status(), "read replica configured");
    let interval = Duration::from_millis(settings.postgres.read_check_interval_ms);
    let (checked, primary) = (Arc::downgrade(&replica), pg.pool().clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(replica) = checked.upgrade() else { return };
            replica.check(&primary).await;
        }
    });
    Ok(replica)
}
