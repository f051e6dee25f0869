//! Configuration: built-in defaults (`config/default.toml`), an optional TOML file,
//! `TIERLOG__SECTION__KEY` environment variables, and the variable names existing
//! deployments use (see [`legacy`]). [`Settings::validate`] refuses bad values with a
//! message that names the setting.

mod legacy;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::event::{Category, Level, Limits};
use crate::tiers::Table;

/// The defaults, compiled in so the binary needs no file to start.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// A setting that cannot be used, named as the operator wrote it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] ::config::ConfigError),
    #[error("configuration: {setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

impl ConfigError {
    fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { setting: setting.to_owned(), reason: reason.into() }
    }
}

/// Everything tierlog can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub limits: Limits,
    pub ingest: IngestSettings,
    pub postgres: PostgresSettings,
    pub redis: RedisSettings,
    pub files: FileSettings,
    pub logging: LoggingSettings,
    pub embedded: EmbeddedSettings,
    pub spool: SpoolSettings,
    pub rate_limit: RateLimitSettings,
    pub keys: KeySettings,
    pub integrity: IntegritySettings,
    pub cluster: ClusterSettings,
    pub retention: RetentionSettings,
    pub privacy: PrivacySettings,
    pub masking: MaskingSettings,
    pub stream: StreamSettings,
    pub detection: DetectionSettings,
    pub webhooks: WebhookSettings,
    pub loki: LokiSettings,
    pub categories: BTreeMap<Category, CategoryPolicy>,
}

/// The live tail (`GET /audit/stream`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// How far (in events) a client may fall behind before it is cut off.
    pub client_buffer_events: usize,
    /// How many recent events a node holds for clients resuming with `Last-Event-ID`.
    pub recent_events: usize,
    /// How long (ms) a client's stream gathers events before writing them: what
    /// arrives within it goes out in one write (0: each batch at once).
    pub flush_ms: u64,
}

/// Detection rules on accepted events (see `docs/detection.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionSettings {
    pub enabled: bool,
    /// Rules laid over the built-in ones by name (`enabled = false` switches one off).
    #[serde(default)]
    pub rules: Vec<crate::detect::rules::Rule>,
    /// How often a node reloads the rules saved through `PUT /audit/rules`.
    pub refresh_seconds: u64,
}

/// The direct push of every event to Loki's push API (off while `push_url` is empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiSettings {
    /// Loki's push endpoint, e.g. `http://loki:3100/loki/api/v1/push` (LOKI_PUSH_URL).
    pub push_url: String,
    /// Sent as `X-Scope-OrgID` when set (a multi-tenant Loki).
    pub org_id: String,
    /// Sent as a Bearer token when set (a Loki behind an authenticating proxy).
    pub bearer_token: String,
    /// Lines per push, at most...
    pub batch_lines: usize,
    /// ...and how long the first line of a push waits for the others.
    pub batch_wait_ms: u64,
    /// Lines that may wait for Loki (while it is slow or down) before more are
    /// dropped from the push.
    pub queue_lines: usize,
    pub timeout_ms: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

/// Delivery of alerts to webhook endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub enabled: bool,
    /// Networks (CIDR) that endpoints may reach although private, loopback or
    /// link-local (such as `10.0.0.0/8` or `127.0.0.1/32`).
    pub allow_networks: Vec<String>,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    /// First retry delay; each retry doubles it (with jitter) up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// A message still failing this long after it was written is dead-lettered.
    pub give_up_after_seconds: u64,
    /// How often each node looks for messages due.
    pub poll_interval_ms: u64,
    /// How many messages a node sends at once.
    pub concurrency: usize,
}

/// Where events bound for Postgres wait while it is unreachable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSettings {
    pub enabled: bool,
    pub path: PathBuf,
    pub max_bytes: u64,
    pub replay_batch_events: usize,
    pub retry_interval_ms: u64,
}

/// API keys while the database is unreachable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Keys verified within this many seconds keep working while the database cannot
    /// be asked; 0 refuses every stored key during an outage.
    pub outage_grace_seconds: u64,
}

/// Per-key request rate limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub requests_per_second: f64,
    pub burst: u32,
}

/// Embedded mode (no DATABASE_URL): where the SQLite store and its admin key live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSettings {
    pub data_dir: PathBuf,
}

/// Running several nodes on one Postgres and Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's name in the lease table and logs; empty: host name and process id.
    pub node_name: String,
    /// How long the background-work lease lasts without renewal: the longest a dead
    /// holder's work waits before another node takes it over.
    pub lease_seconds: u64,
}

impl ClusterSettings {
    /// `node_name`, or one made from the host name and process id.
    pub fn node(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        format!("{}-{}", if host.is_empty() { "tierlog" } else { &host }, std::process::id())
    }
}

/// Checkpoint signing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegritySettings {
    /// The Ed25519 signing key's 32-byte seed, base64; empty: use `signing_key_file`.
    pub signing_key: String,
    /// Where the key is kept (created, mode 0600, on first start when absent).
    pub signing_key_file: PathBuf,
    /// Public keys (base64) of earlier signing keys whose checkpoints still count.
    pub trusted_public_keys: Vec<String>,
    /// Seconds between periodic checkpoints of every chain that moved; 0: none.
    pub checkpoint_interval_seconds: u64,
}

/// The retention job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub enabled: bool,
    /// Seconds between runs.
    pub interval_seconds: u64,
    /// Rows deleted per transaction.
    pub batch_size: u32,
    /// Write expiring rows to compressed NDJSON archives before deleting them.
    pub archive: bool,
    pub archive_path: PathBuf,
    /// How long tenant and plan policies are cached by each node.
    pub policy_refresh_seconds: u64,
    /// Delete each Postgres row as soon as it expires, row by row (with a tombstone),
    /// instead of with its time partition once the partition's whole range has
    /// passed. Exact, at the cost of a delete and a tombstone per row.
    pub exact_expiry: bool,
}

/// Personal data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySettings {
    /// Paths of personal values inside `details` and `changes` (dotted, `*` for any
    /// key): sealed apart in the hash chain and erased with the subject.
    pub personal_paths: Vec<String>,
}

/// Masking of secrets at ingest, before any tier sees the event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingSettings {
    pub enabled: bool,
    /// Keys (any depth of `details` and `changes`, case and separator insensitive)
    /// whose values are replaced with "[MASKED]".
    pub mask_keys: Vec<String>,
    /// Keys removed together with their values.
    pub drop_keys: Vec<String>,
    /// Exact dotted paths (from `details.` or `changes.`) to mask or remove.
    pub mask_paths: Vec<String>,
    pub drop_paths: Vec<String>,
    /// Built-in value patterns applied to every string of `message`, `details` and
    /// `changes`: card_number, bearer_token, jwt, api_key, password_assignment.
    pub patterns: Vec<String>,
    /// Further patterns: regular expression and replacement.
    pub custom_patterns: Vec<CustomPattern>,
}

/// An operator's value pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    pub name: String,
    pub regex: String,
    pub replacement: String,
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub bootstrap_key: String,
    /// Addresses or networks of reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<String>,
    /// A connection that has not sent a whole request head within this is closed.
    pub header_timeout_ms: u64,
    /// An ingest body not received whole within this is refused (408).
    pub body_timeout_ms: u64,
}

/// The queue and batching between HTTP and the writers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub queue_capacity: usize,
    pub batch_max_events: usize,
    pub batch_max_delay_ms: u64,
    pub writers: usize,
    pub retry_after_seconds: u64,
}

/// The durable store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
    /// A batch write not done within this counts as Postgres unreachable (spooled).
    pub write_timeout_ms: u64,
    pub migrate_on_start: bool,
    /// How often the search indexes' pending lists are merged in the background
    /// (milliseconds; 0: never, Postgres merges them inside inserts).
    pub search_merge_interval_ms: u64,
    /// How long after its first attempt a retried event (same id) is still found
    /// and skipped (hours). A batch replayed from the spool is found at any age.
    pub retry_window_hours: u64,
    /// The width of the event tables' time partitions: `day`, `week` or `month`.
    pub partition_interval: String,
    /// A streaming replica for the read endpoints (DATABASE_READ_URL); empty: reads
    /// go to the primary.
    pub read_url: String,
    /// Reads go back to the primary while the replica's replay lags more than this
    /// (milliseconds).
    pub read_max_lag_ms: u64,
    /// How often the replica's state and lag are checked (milliseconds).
    pub read_check_interval_ms: u64,
}

/// The hot tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub enabled: bool,
    /// One `redis://` URL, or with `cluster` the seed nodes, comma-separated.
    pub url: String,
    /// `url` names a Redis Cluster (REDIS_CLUSTER).
    pub cluster: bool,
    pub db: Option<i64>,
    pub key_prefix: String,
    pub ttl_seconds: u64,
    pub max_len: u64,
    pub timeout_ms: u64,
    pub retry_interval_ms: u64,
}

impl RedisSettings {
    /// The URLs in `url`, trimmed.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty())
    }
}

/// When the file tier calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every batch, before the acknowledgement.
    Batch,
    /// Every `fsync_interval_ms`; an acknowledgement may precede it.
    Interval,
    /// Never explicitly.
    Never,
}

/// The rolling JSON-lines files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub enabled: bool,
    pub path: PathBuf,
    pub max_size_mb: u64,
    pub backup_count: usize,
    pub daily: bool,
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    /// The log shipper's positions file (Promtail or Alloy); empty for none.
    pub shipper_positions: PathBuf,
    /// With a positions file: the most bytes of rotated files kept beyond
    /// `backup_count` for a shipper that has not read them yet.
    pub unshipped_cap_mb: u64,
}

/// tierlog's own logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    pub level: String,
    pub format: String,
}

/// Where a category's events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableChoice {
    AuditLogs,
    SecurityEvents,
    FinancialAuditLogs,
    /// Not persisted: Redis and files only.
    None,
}

/// One category's routing and retention.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryPolicy {
    pub table: TableChoice,
    pub persist_min_level: Level,
    pub retention_days: u32,
    pub redis_ttl_seconds: Option<u64>,
    pub redis_max_len: Option<u64>,
}

impl CategoryPolicy {
    /// The table an event of this category and `level` is persisted to, if any.
    pub fn table_for(&self, level: Level) -> Option<Table> {
        if level < self.persist_min_level {
            return None;
        }
        match self.table {
            TableChoice::AuditLogs => Some(Table::AuditLogs),
            TableChoice::SecurityEvents => Some(Table::SecurityEvents),
            TableChoice::FinancialAuditLogs => Some(Table::FinancialAuditLogs),
            TableChoice::None => None,
        }
    }
}

impl Settings {
    /// Loads defaults, then `file` (required when given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Settings::load_from(file, &env)
    }

    /// Like [`Settings::load`] with an explicit environment, for tests.
    pub fn load_from(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
        let default_file = Path::new("config/tierlog.toml");
        let mut builder = ::config::Config::builder()
            .add_source(::config::File::from_str(DEFAULT_TOML, ::config::FileFormat::Toml));
        builder = match file {
            Some(path) => builder.add_source(::config::File::from(path).required(true)),
            None => builder.add_source(::config::File::from(default_file).required(false)),
        };
        let prefixed: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("TIERLOG__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            ::config::Environment::with_prefix("TIERLOG")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("webhooks.allow_networks")
                .source(Some(prefixed)),
        );
        builder = legacy::apply(builder, env)?;
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults alone (no file, no environment, not validated: the URLs
    /// are empty): a base for tests and tools.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Ok(::config::Config::builder()
            .add_source(::config::File::from_str(DEFAULT_TOML, ::config::FileFormat::Toml))
            .build()?
            .try_deserialize::<Settings>()?)
    }

    /// Whether the bootstrap key is one of the placeholders the documentation and
    /// earlier compose files printed, or otherwise plainly not a secret.
    pub fn bootstrap_key_is_a_placeholder(&self) -> bool {
        let key = self.server.bootstrap_key.to_ascii_lowercase().replace(['-', '_', ' '], "");
        ["changeme", "alongrandomsecret"].iter().any(|p| key.contains(p))
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.trusted_proxies()?;
        if !self.server.bootstrap_key.is_empty() && self.server.bootstrap_key.len() < 16 {
            return Err(ConfigError::invalid(
                "server.bootstrap_key (TIERLOG_BOOTSTRAP_KEY)",
                "must be at least 16 characters",
            ));
        }
        if self.server.header_timeout_ms == 0 || self.server.body_timeout_ms == 0 {
            return Err(ConfigError::invalid("server.header_timeout_ms / server.body_timeout_ms", "must be greater than 0"));
        }
        let limits = &self.limits;
        for (name, value) in [
            ("limits.max_event_bytes", limits.max_event_bytes),
            ("limits.max_request_bytes", limits.max_request_bytes),
            ("limits.max_batch_events", limits.max_batch_events),
            ("limits.max_field_chars", limits.max_field_chars),
            ("limits.max_message_chars", limits.max_message_chars),
            ("ingest.batch_max_events", self.ingest.batch_max_events),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(name, "must be greater than 0"));
            }
        }
        crate::detect::rules::validate_list(&self.detection.rules, "detection.rules")
            .map_err(|e| ConfigError::invalid(e.split(':').next().unwrap_or("detection.rules"), e.split_once(": ").map_or(e.as_str(), |(_, why)| why)))?;
        if let Err((i, why)) = crate::webhooks::guard::parse_networks(&self.webhooks.allow_networks) {
            return Err(ConfigError::invalid(&format!("webhooks.allow_networks[{i}]"), why));
        }
        for (name, value) in [
            ("webhooks.connect_timeout_ms", self.webhooks.connect_timeout_ms),
            ("webhooks.timeout_ms", self.webhooks.timeout_ms),
            ("webhooks.retry_base_ms", self.webhooks.retry_base_ms),
            ("webhooks.poll_interval_ms", self.webhooks.poll_interval_ms),
            ("loki.batch_lines", self.loki.batch_lines as u64),
            ("loki.batch_wait_ms", self.loki.batch_wait_ms),
            ("loki.queue_lines", self.loki.queue_lines as u64),
            ("loki.timeout_ms", self.loki.timeout_ms),
            ("loki.retry_base_ms", self.loki.retry_base_ms),
            ("webhooks.concurrency", self.webhooks.concurrency as u64),
            ("detection.refresh_seconds", self.detection.refresh_seconds),
            ("stream.client_buffer_events", self.stream.client_buffer_events as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(name, "must be greater than 0"));
            }
        }
        if self.stream.flush_ms > 10_000 {
            return Err(ConfigError::invalid("stream.flush_ms", "at most 10000 (a live tail that waits longer is not live)"));
        }
        if self.loki.retry_max_ms < self.loki.retry_base_ms {
            return Err(ConfigError::invalid("loki.retry_max_ms", "must be at least loki.retry_base_ms"));
        }
        if !self.loki.push_url.is_empty() {
            match url::Url::parse(&self.loki.push_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => return Err(ConfigError::invalid("loki.push_url (LOKI_PUSH_URL)", "must be an http(s) URL such as http://loki:3100/loki/api/v1/push")),
            }
        }
        if self.webhooks.retry_max_ms < self.webhooks.retry_base_ms {
            return Err(ConfigError::invalid("webhooks.retry_max_ms", "must be at least webhooks.retry_base_ms"));
        }
        if self.spool.max_bytes < limits.max_event_bytes as u64 * 2 {
            return Err(ConfigError::invalid(
                "spool.max_bytes",
                format!("must be at least twice limits.max_event_bytes ({})", limits.max_event_bytes),
            ));
        }
        if self.spool.replay_batch_events == 0 || self.spool.retry_interval_ms == 0 {
            return Err(ConfigError::invalid("spool.replay_batch_events / spool.retry_interval_ms", "must be greater than 0"));
        }
        if self.ingest.queue_capacity < limits.max_batch_events {
            return Err(ConfigError::invalid(
                "ingest.queue_capacity",
                format!("must be at least limits.max_batch_events ({})", limits.max_batch_events),
            ));
        }
        if !(1..=64).contains(&self.ingest.writers) {
            return Err(ConfigError::invalid("ingest.writers", "must be between 1 and 64"));
        }
        // An empty URL means the embedded SQLite store.
        if !self.postgres.url.is_empty()
            && !self.postgres.url.starts_with("postgres://")
            && !self.postgres.url.starts_with("postgresql://")
        {
            return Err(ConfigError::invalid("postgres.url (DATABASE_URL)", "must be a postgres:// URL"));
        }
        if !self.postgres.read_url.is_empty() {
            if self.postgres.url.is_empty() {
                return Err(ConfigError::invalid("postgres.read_url (DATABASE_READ_URL)", "needs postgres.url (DATABASE_URL): a replica of which primary?"));
            }
            if !self.postgres.read_url.starts_with("postgres://") && !self.postgres.read_url.starts_with("postgresql://") {
                return Err(ConfigError::invalid("postgres.read_url (DATABASE_READ_URL)", "must be a postgres:// URL"));
            }
        }
        if self.postgres.read_check_interval_ms == 0 {
            return Err(ConfigError::invalid("postgres.read_check_interval_ms", "must be at least 1"));
        }
        if let Err(e) = self.postgres.partition_interval.parse::<crate::tiers::postgres::partitions::PartitionInterval>() {
            return Err(ConfigError::invalid("postgres.partition_interval", e));
        }
        if self.postgres.retry_window_hours > 24 * 366 {
            return Err(ConfigError::invalid("postgres.retry_window_hours", "must be at most 8784 (a year)"));
        }
        if self.postgres.max_connections < self.ingest.writers as u32 + 1 {
            return Err(ConfigError::invalid(
                "postgres.max_connections",
                format!("must exceed ingest.writers ({})", self.ingest.writers),
            ));
        }
        // An empty URL means the in-process hot tier.
        if self.redis.enabled && !self.redis.url.is_empty() {
            for url in self.redis.urls() {
                ::redis::parse_redis_url(url).ok_or_else(|| {
                    ConfigError::invalid("redis.url (REDIS_URL)", "must be a redis:// URL (with redis.cluster, several, comma-separated)")
                })?;
            }
            if !self.redis.cluster && self.redis.urls().count() > 1 {
                return Err(ConfigError::invalid(
                    "redis.url (REDIS_URL)",
                    "names several servers; set redis.cluster (REDIS_CLUSTER=true) if they form a Redis Cluster",
                ));
            }
            if self.redis.cluster && self.redis.db.is_some_and(|db| db != 0) {
                return Err(ConfigError::invalid("redis.db (REDIS_LOG_DB)", "a Redis Cluster has only database 0"));
            }
        }
        if self.cluster.lease_seconds == 0 {
            return Err(ConfigError::invalid("cluster.lease_seconds", "must be at least 1"));
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must be non-empty without braces or spaces",
            ));
        }
        if self.redis.ttl_seconds == 0 || self.redis.max_len == 0 {
            return Err(ConfigError::invalid(
                "redis.ttl_seconds / redis.max_len (REDIS_LOG_TTL / REDIS_MAX_LOGS)",
                "must be greater than 0",
            ));
        }
        if self.files.max_size_mb == 0 {
            return Err(ConfigError::invalid("files.max_size_mb (LOGGING_MAX_SIZE_MB)", "must be greater than 0"));
        }
        if self.files.path.file_name().is_none() {
            return Err(ConfigError::invalid("files.path (LOGGING_FILE)", "must name a file"));
        }
        self.log_filter()?;
        if !matches!(self.logging.format.as_str(), "json" | "pretty") {
            return Err(ConfigError::invalid("logging.format", "must be \"json\" or \"pretty\""));
        }
        for category in Category::ALL {
            let Some(policy) = self.categories.get(&category) else {
                return Err(ConfigError::invalid(&format!("categories.{category}"), "is missing"));
            };
            if policy.retention_days == 0 {
                return Err(ConfigError::invalid(
                    &format!("categories.{category}.retention_days"),
                    "must be greater than 0",
                ));
            }
            if policy.redis_ttl_seconds == Some(0) || policy.redis_max_len == Some(0) {
                return Err(ConfigError::invalid(
                    &format!("categories.{category}"),
                    "redis_ttl_seconds and redis_max_len must be greater than 0",
                ));
            }
        }
        let rate = self.rate_limit.requests_per_second;
        if self.rate_limit.enabled && (rate.is_nan() || rate <= 0.0 || self.rate_limit.burst == 0) {
            return Err(ConfigError::invalid(
                "rate_limit.requests_per_second / rate_limit.burst",
                "must be greater than 0",
            ));
        }
        if self.retention.interval_seconds == 0 || self.retention.batch_size == 0 {
            return Err(ConfigError::invalid(
                "retention.interval_seconds / retention.batch_size",
                "must be greater than 0",
            ));
        }
        crate::integrity::chain::PersonalPaths::parse(&self.privacy.personal_paths)
            .map_err(|reason| ConfigError::invalid("privacy.personal_paths", reason))?;
        crate::event::mask::Masker::new(&self.masking).map_err(|(setting, reason)| ConfigError::invalid(&setting, reason))?;
        if !self.integrity.signing_key.is_empty() {
            crate::integrity::checkpoint::Signer::from_seed_base64(&self.integrity.signing_key)
                .map_err(|reason| ConfigError::invalid("integrity.signing_key (TIERLOG__INTEGRITY__SIGNING_KEY)", reason))?;
        }
        for key in &self.integrity.trusted_public_keys {
            crate::integrity::checkpoint::PublicKey::parse(key)
                .map_err(|reason| ConfigError::invalid("integrity.trusted_public_keys", reason))?;
        }
        Ok(())
    }

    /// The parsed trusted proxies.
    pub fn trusted_proxies(&self) -> Result<Vec<crate::query::IpFilter>, ConfigError> {
        self.server
            .trusted_proxies
            .iter()
            .map(|raw| {
                crate::query::IpFilter::parse(raw).map_err(|_| {
                    ConfigError::invalid("server.trusted_proxies", format!("{raw:?} is not an address or CIDR network"))
                })
            })
            .collect()
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::invalid("server.listen (TIERLOG_LISTEN)", format!("{:?} is not host:port", self.server.listen))
        })
    }

    /// The tracing filter directive for `logging.level`.
    pub fn log_filter(&self) -> Result<&'static str, ConfigError> {
        match self.logging.level.to_ascii_uppercase().as_str() {
            "TRACE" => Ok("trace"),
            "DEBUG" => Ok("debug"),
            "INFO" => Ok("info"),
            "WARNING" | "WARN" => Ok("warn"),
            "ERROR" | "CRITICAL" => Ok("error"),
            _ => Err(ConfigError::invalid(
                "logging.level (LOGGING_LEVEL)",
                "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
            )),
        }
    }

    /// The policy of `category` (validated to exist).
    pub fn category(&self, category: Category) -> &CategoryPolicy {
        &self.categories[&category]
    }

    /// The categories persisted to `table` (at some level).
    pub fn categories_in(&self, table: Table) -> Vec<Category> {
        Category::ALL.into_iter().filter(|c| self.category(*c).table_for(Level::Critical) == Some(table)).collect()
    }

    /// Redis TTL of `category`'s lists.
    pub fn redis_ttl(&self, category: Category) -> u64 {
        self.category(category).redis_ttl_seconds.unwrap_or(self.redis.ttl_seconds)
    }

    /// Redis length cap of `category`'s lists.
    pub fn redis_max_len(&self, category: Category) -> u64 {
        self.category(category).redis_max_len.unwrap_or(self.redis.max_len)
    }

    /// The embedded SQLite store, used when `postgres.url` is empty.
    pub fn embedded_store_path(&self) -> PathBuf {
        self.embedded.data_dir.join("tierlog.db")
    }

    /// The longest a batch waits for more events.
    pub fn batch_max_delay(&self) -> Duration {
        Duration::from_millis(self.ingest.batch_max_delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = [
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/tierlog"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        map.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        map
    }

    fn load_error(pairs: &[(&str, &str)]) -> String {
        match Settings::load_from(None, &env(pairs)) {
            Ok(_) => String::from("loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn built_in_defaults_follow_the_product_tiers() {
        let settings = Settings::load_from(None, &env(&[])).expect("defaults load");
        let table = |c, l| settings.category(c).table_for(l);
        assert_eq!(table(Category::Auth, Level::Debug), Some(Table::AuditLogs));
        assert_eq!(table(Category::Security, Level::Info), Some(Table::SecurityEvents));
        assert_eq!(table(Category::Financial, Level::Info), Some(Table::FinancialAuditLogs));
        assert_eq!(table(Category::Audit, Level::Info), Some(Table::AuditLogs));
        assert_eq!(table(Category::Api, Level::Warning), None);
        assert_eq!(table(Category::Api, Level::Error), Some(Table::AuditLogs));
        assert_eq!(table(Category::Error, Level::Critical), Some(Table::AuditLogs));
        assert_eq!(settings.redis_ttl(Category::Auth), 7 * 24 * 3600);
        assert_eq!(settings.redis_max_len(Category::Financial), 10_000);
        assert_eq!(settings.files.backup_count, 5);
        assert_eq!(settings.category(Category::Financial).retention_days, 2557);
    }

    #[test]
    fn deployment_variable_names_override_the_file() {
        let settings = Settings::load_from(
            None,
            &env(&[
                ("REDIS_LOG_DB", "3"),
                ("REDIS_LOG_TTL", "60"),
                ("REDIS_MAX_LOGS", "5"),
                ("REDIS_LOG_ENABLED", "false"),
                ("LOGGING_ENABLED", "False"),
                ("LOGGING_LEVEL", "WARNING"),
                ("LOGGING_FILE", "/var/log/tierlog/events.log"),
                ("LOGGING_MAX_SIZE_MB", "2"),
                ("LOGGING_BACKUP_COUNT", "9"),
                ("TIERLOG_LISTEN", "0.0.0.0:9000"),
                ("TIERLOG_BOOTSTRAP_KEY", "0123456789abcdef0123"),
                ("TIERLOG__CATEGORIES__API__REDIS_MAX_LEN", "7"),
                ("TIERLOG__INGEST__WRITERS", "3"),
            ]),
        )
        .expect("loads");
        assert_eq!(settings.redis.db, Some(3));
        assert_eq!(settings.redis_ttl(Category::Auth), 60);
        assert_eq!(settings.redis_max_len(Category::Auth), 5);
        assert_eq!(settings.redis_max_len(Category::Api), 7);
        assert!(!settings.redis.enabled);
        assert!(!settings.files.enabled);
        assert_eq!(settings.log_filter().expect("level"), "warn");
        assert_eq!(settings.files.path, PathBuf::from("/var/log/tierlog/events.log"));
        assert_eq!(settings.files.max_size_mb, 2);
        assert_eq!(settings.files.backup_count, 9);
        assert_eq!(settings.listen_addr().expect("addr").port(), 9000);
        assert_eq!(settings.server.bootstrap_key, "0123456789abcdef0123");
        assert_eq!(settings.ingest.writers, 3);
    }

    #[test]
    fn documented_placeholder_bootstrap_keys_are_recognised() {
        let with = |key: &str| {
            let settings = Settings::load_from(None, &env(&[("TIERLOG_BOOTSTRAP_KEY", key)])).expect("loads");
            settings.bootstrap_key_is_a_placeholder()
        };
        assert!(with("change-me-to-a-long-random-secret"));
        assert!(with("CHANGEME_CHANGEME_1234"));
        assert!(!with("9f2c41d07be3a86e5d1f0c2b7a94e6d3"));
        assert!(!Settings::load_from(None, &env(&[])).expect("loads").bootstrap_key_is_a_placeholder(), "no key at all");
    }

    #[test]
    fn a_bad_setting_is_named_in_the_error() {
        assert!(load_error(&[("REDIS_LOG_TTL", "soon")]).contains("REDIS_LOG_TTL"));
        assert!(load_error(&[("REDIS_LOG_ENABLED", "maybe")]).contains("REDIS_LOG_ENABLED"));
        assert!(load_error(&[("TIERLOG_LISTEN", "nowhere")]).contains("TIERLOG_LISTEN"));
        let interval = load_error(&[("TIERLOG__POSTGRES__PARTITION_INTERVAL", "fortnight")]);
        assert!(interval.contains("postgres.partition_interval") && interval.contains("day, week or month"), "{interval}");
        assert!(load_error(&[("TIERLOG__POSTGRES__RETRY_WINDOW_HOURS", "100000")]).contains("postgres.retry_window_hours"));
        assert!(load_error(&[("LOGGING_LEVEL", "LOUD")]).contains("LOGGING_LEVEL"));
        assert!(load_error(&[("DATABASE_URL", "mysql://db")]).contains("DATABASE_URL"));
        let read = [("DATABASE_URL", "postgres://db/tierlog"), ("DATABASE_READ_URL", "mysql://replica")];
        assert!(load_error(&read).contains("DATABASE_READ_URL"));
        let without_primary = [("DATABASE_URL", ""), ("DATABASE_READ_URL", "postgres://replica/tierlog")];
        assert!(load_error(&without_primary).contains("DATABASE_READ_URL"));
        assert!(load_error(&[("TIERLOG__INGEST__QUEUE_CAPACITY", "10")]).contains("ingest.queue_capacity"));
        assert!(load_error(&[("TIERLOG__INGEST__WRITERZ", "1")]).contains("writerz"));
        assert!(load_error(&[("TIERLOG__CATEGORIES__AUTH__TABLE", "nowhere")]).contains("table"));
    }
}
