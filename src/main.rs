//! The `tierlog` command: `serve`, `migrate`, `keys`, `verify`, `checkpoint`,
//! `retention` and `export-chain`.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{Duration, Utc};
use clap::{Parser, Subcommand};
use tierlog::app::{shutdown_signal, Application, Governance};
use tierlog::integrity::checkpoint::{Checkpoint, Keyring, PublicKey};
use tierlog::retention::job::RetentionJob;
use tierlog::retention::Policies;

/// mimalloc: ingest allocates and frees many small strings and maps per event, where
/// it is measurably faster than the system allocator (see docs/benchmarks.md).
/// Built with `no_thp`: asked for transparent huge pages, it had the kernel zero 2 MiB
/// pages each time freed memory was reused (7% of tierlog's CPU under load) and held
/// 60% more memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tierlog::config::Settings;
use tierlog::event::parse::{is_tenant_id, TENANT_ID_RULE};
use serde_json::{json, Map, Value};
use tierlog::event::access::AccessRecord;
use tierlog::ingest::route::Routing;
use tierlog::keys::{parse_permissions, KeyInfo, NewKey};
use tierlog::tiers::EncodedBatch;
use tierlog::tiers::database::Database;

/// The settings every command reads, shown under each command's `--help`.
const SETTINGS_HELP: &str = "\
Settings (every command reads the same ones as serve; files, then environment):
  TIERLOG_CONFIG         a TOML file (default: config/tierlog.toml when it exists);
                         every setting and its default: config/default.toml
  DATABASE_URL           Postgres, postgres://user@host:5432/db (migrated on start);
                         unset: the embedded SQLite store <embedded.data_dir>/tierlog.db
  DATABASE_READ_URL      a streaming replica of DATABASE_URL for the read endpoints
  REDIS_URL              the hot tier, redis://host:6379; unset: lists in the process
  TIERLOG_LISTEN         where serve listens (default 127.0.0.1:8080)
  TIERLOG_BOOTSTRAP_KEY  the admin API key (16 characters or more)
  LOGGING_FILE           the JSON-lines event file (default logs/audit.jsonl)
  LOGGING_LEVEL          tierlog's own log level; its logs go to standard error
  TIERLOG__SECTION__KEY  any other setting, e.g. TIERLOG__INGEST__WRITERS=4";

#[derive(Parser)]
#[command(name = "tierlog", version, about = "Tiered audit-logging backend")]
struct Cli {
    /// TOML configuration file (default: config/tierlog.toml when it exists).
    #[arg(long, global = true, env = "TIERLOG_CONFIG")]
    config: Option<PathBuf>,
    /// Let a command other than serve create a new embedded store when DATABASE_URL
    /// is unset and embedded.data_dir holds none (otherwise it refuses).
    #[arg(long, global = true)]
    embedded: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (embedded SQLite and in-process lists unless DATABASE_URL
    /// and REDIS_URL are set).
    Serve {
        /// Listen on this port of the configured address (TIERLOG_LISTEN's host).
        #[arg(long, conflicts_with = "listen")]
        port: Option<u16>,
        /// Listen on this host:port (overrides TIERLOG_LISTEN).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Verify the hash chains in the database, or (with --archive) archived or
    /// exported rows with nothing but the public key; exits 1 when anything is broken.
    Verify {
        /// Only this tenant's chains.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this table's chains (audit_logs, security_events, financial_audit_logs).
        #[arg(long)]
        table: Option<String>,
        /// Verify the archive (or chain export) under this directory, offline: no
        /// database and no configuration are needed.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// The checkpoint public key (base64), or a file holding it; default: the one
        /// derived from the configured signing key.
        #[arg(long)]
        public_key: Option<String>,
        /// A checkpoint export (the JSON of GET /audit/checkpoints) to match against
        /// the archived rows.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
    /// Sign a checkpoint of every chain head that moved since its last one.
    Checkpoint {
        /// Only this tenant's chains.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Run the retention job once (deleting, and archiving when configured, every
    /// expired row of tenants not on legal hold).
    Retention,
    /// Write a tenant's chains, as they are now, in the archive format (gzip NDJSON
    /// with signed manifests) for offline verification with `verify --archive`.
    ExportChain {
        /// The tenant whose chains are written.
        #[arg(long)]
        tenant: String,
        /// Only this table.
        #[arg(long)]
        table: Option<String>,
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The deployment's checkpoint signing keys (one identity for every node).
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
    /// Follow the live tail of a running tierlog (GET /audit/stream), printing each
    /// new event's JSON line as it is accepted (reads no settings).
    Tail {
        /// The tierlog to follow.
        #[arg(long, env = "TIERLOG_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API key that may read the events to follow.
        #[arg(long, env = "TIERLOG_API_KEY", hide_env_values = true)]
        key: String,
        /// Filters, as for /audit/combined: tenant_id=acme category=auth
        /// status=failure user_id=… action=… ip_address=10.0.0.0/8 q=words …
        filters: Vec<String>,
    },
    /// Fetch a signed compliance report of one tenant and period from a running
    /// tierlog (GET /audit/reports) into a file (reads no settings).
    Report {
        #[arg(long, env = "TIERLOG_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API key with logs.export.
        #[arg(long, env = "TIERLOG_API_KEY", hide_env_values = true)]
        key: String,
        #[arg(long)]
        tenant: String,
        /// RFC 3339, e.g. 2026-11-01T00:00:00Z (default: 30 days before --to).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 (default: now).
        #[arg(long)]
        to: Option<String>,
        /// json (signed), html (printable) or pdf.
        #[arg(long, default_value = "json")]
        format: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a report's signature offline (no settings, no database).
    VerifyReport {
        /// The report (JSON) written by `tierlog report` or GET /audit/reports.
        file: PathBuf,
        /// The deployment's public key (base64), as GET /audit/checkpoints/public-key
        /// or `tierlog signing-key show` print it.
        #[arg(long)]
        public_key: String,
    },
    /// Health probe for container health checks: GET the URL, exit 0 on a 2xx answer
    /// (reads no settings).
    Probe {
        /// e.g. http://127.0.0.1:8080/readyz
        url: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; the key itself is printed alone on the last line, once.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Bind the key to this tenant (default: all tenants).
        #[arg(long)]
        tenant: Option<String>,
        /// Comma-separated permissions, e.g. events.write,logs.auth.view.
        #[arg(long)]
        permissions: String,
        /// Let the key expire after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys (never their secrets).
    List {
        /// Only keys of this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key's id, as `keys list` prints it.
        id: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum SigningKeyCommand {
    /// Print a new signing key (base64 seed, for integrity.signing_key or the key
    /// file) and its public key. Nothing is stored.
    Generate,
    /// List the deployment's keys: the current one and the retired ones whose
    /// checkpoints still count; and this configuration's key.
    Show,
    /// Make a key the deployment's current signing key (the current one is retired;
    /// its checkpoints keep counting). Nodes still holding the old key stop signing
    /// at their next checkpoint; restart them with the new key.
    Promote {
        /// The new key's public half (base64, or a file holding it); default: the
        /// configured signing key's.
        #[arg(long)]
        public_key: Option<String>,
    },
}

impl Command {
    /// Whether the command opens the database.
    fn uses_store(&self) -> bool {
        !matches!(
            self,
            Command::Serve { .. }
                | Command::Probe { .. }
                | Command::Tail { .. }
                | Command::Report { .. }
                | Command::VerifyReport { .. }
                | Command::Verify { archive: Some(_), .. }
                | Command::SigningKey(SigningKeyCommand::Generate)
        )
    }
}

/// The command line, with the settings' environment variables under every command's
/// `--help`.
fn parse_command_line() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    fn with_settings_help(command: clap::Command) -> clap::Command {
        command.after_help(SETTINGS_HELP).mut_subcommands(with_settings_help)
    }
    let matches = with_settings_help(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Where a command's data lives, said on standard error before it runs.
fn announce_store(settings: &Settings) {
    let store = if settings.postgres.url.is_empty() {
        format!("embedded SQLite {}", settings.embedded_store_path().display())
    } else {
        format!("Postgres {}", without_credentials(&settings.postgres.url))
    };
    let hot = if !settings.redis.enabled {
        "off".to_owned()
    } else if settings.redis.url.is_empty() {
        "in-process lists".to_owned()
    } else {
        format!("Redis {}", settings.redis.urls().map(without_credentials).collect::<Vec<_>>().join(","))
    };
    eprintln!("tierlog: store: {store}; hot tier: {hot}");
}

/// A URL with any user, password and query (which may hold a password) left out.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            // Everything up to the last `@` is credentials, even a password holding an
            // unescaped `/` or `@`.
            let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
            let rest = rest.split('?').next().unwrap_or("");
            format!("{scheme}://{rest}")
        }
        None => "(not a URL)".to_owned(),
    }
}


/// Refuses to create a new embedded store from a command other than serve unless
/// `--embedded` asks for one.
fn check_embedded_store(settings: &Settings, embedded: bool) -> anyhow::Result<()> {
    let path = settings.embedded_store_path();
    if settings.postgres.url.is_empty() && !embedded && !path.exists() {
        anyhow::bail!(
            "DATABASE_URL is not set and there is no embedded store at {}: this command would create a new, \
             empty one. Set DATABASE_URL (and the rest of the server's settings) to work on the server's \
             database, or pass --embedded to create an embedded store here.",
            path.display()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = parse_command_line();
    if let Command::Tail { url, key, filters } = &cli.command {
        let mut query = Vec::new();
        for filter in filters {
            let (name, value) = filter.split_once('=').with_context(|| format!("a filter is name=value, not {filter:?}"))?;
            query.push((name, value));
        }
        let query = serde_urlencoded::to_string(&query)?;
        return tierlog::stream::follow::follow(url, key, &query).await;
    }
    if let Command::Probe { url } = &cli.command {
        return probe(url);
    }
    if let Command::Report { url, key, tenant, from, to, format, out } = &cli.command {
        return fetch_report(url, key, tenant, from.as_deref(), to.as_deref(), format, out).await;
    }
    if let Command::VerifyReport { file, public_key } = &cli.command {
        let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let report: serde_json::Value = serde_json::from_slice(&text).context("the report is not JSON")?;
        return match tierlog::report::verify(&report, public_key) {
            Ok(()) => {
                println!("the report's signature holds (key {})", report["key_id"].as_str().unwrap_or("?"));
                Ok(())
            }
            Err(why) => anyhow::bail!("{}: {why}", file.display()),
        };
    }
    if let Command::Verify { archive: Some(dir), public_key, checkpoints, .. } = &cli.command {
        // Offline: no configuration, no database.
        tierlog::telemetry::init("warn", "pretty");
        return verify_archive(dir, public_key.as_deref(), checkpoints.as_deref());
    }
    let mut settings = Settings::load(cli.config.as_deref())?;
    tierlog::telemetry::init(settings.log_filter()?, &settings.logging.format);
    if cli.command.uses_store() {
        check_embedded_store(&settings, cli.embedded)?;
        announce_store(&settings);
    }
    match cli.command {
        Command::Serve { port, listen } => {
            if let Some(listen) = listen {
                settings.server.listen = listen;
            } else if let Some(port) = port {
                let mut addr = settings.listen_addr()?;
                addr.set_port(port);
                settings.server.listen = addr.to_string();
            }
            settings.listen_addr().context("--listen must be host:port, e.g. 127.0.0.1:8080")?;
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate => {
            let store = connect(&settings).await?;
            drop(store);
            println!("migrations applied");
            Ok(())
        }
        Command::Verify { tenant, table, public_key, .. } => {
            let db = connect(&settings).await?;
            let keys = keyring(&settings, &db, public_key.as_deref()).await?;
            verify(&db, &keys, tenant, table).await
        }
        Command::Checkpoint { tenant } => {
            let db = connect(&settings).await?;
            let governance = Governance::from_settings(&settings)?;
            let signer = governance.identity.signer_for(&db).await.context("integrity.signing_key / integrity.signing_key_file")?;
            let made = db.checkpoint_heads(signer, tenant.as_deref(), "on_demand", Utc::now()).await?;
            for checkpoint in &made {
                println!("{}", serde_json::to_string(checkpoint)?);
            }
            println!("{} checkpoint(s) signed with key {}", made.len(), governance.identity.signer().public().id());
            Ok(())
        }
        Command::Retention => retention(&settings).await,
        Command::SigningKey(command) => signing_key(&settings, command).await,
        Command::Probe { url } => probe(&url),
        Command::Tail { .. } | Command::Report { .. } | Command::VerifyReport { .. } => {
            unreachable!("run above, before the settings are read")
        }
        Command::ExportChain { tenant, table, out } => export_chain(&settings, &tenant, table.as_deref(), &out).await,
        Command::Keys(command) => {
            let pg = connect(&settings).await?;
            keys(command, &pg, &Routing::new(&settings)).await
        }
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<Database> {
    Database::open(settings).await.context("cannot open the database (DATABASE_URL, or the embedded store in embedded.data_dir)")
}

fn describe(key: &KeyInfo) -> String {
    let permissions: Vec<&str> = key.permissions.iter().map(|p| p.as_str()).collect();
    let state = match (key.revoked_at, key.expires_at) {
        (Some(at), _) => format!("revoked {at}"),
        (None, Some(at)) if at <= Utc::now() => format!("expired {at}"),
        (None, Some(at)) => format!("expires {at}"),
        (None, None) => "active".into(),
    };
    format!(
        "{}  {}  {}…  tenant={}  [{}]  {}",
        key.id,
        key.name,
        key.prefix,
        key.tenant_id.as_deref().unwrap_or("*"),
        permissions.join(","),
        state
    )
}

/// Records a key change made from the command line straight into Postgres (the CLI
/// runs no pipeline; the file and Redis tiers do not see these records).
async fn record(db: &Database, routing: &Routing, action: &str, key: &KeyInfo) -> anyhow::Result<()> {
    let details: Map<String, Value> = json!({
        "target_key_id": key.id, "name": key.name, "tenant_id": key.tenant_id, "permissions": key.permissions,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let record = AccessRecord {
        actor: "cli",
        action,
        tenant: key.tenant_id.as_deref(),
        endpoint: "tierlog keys",
        request_id: None,
        details,
    };
    let batch = EncodedBatch::new(vec![record.to_event()]);
    let requests = routing.persist_requests(&batch);
    db.durable().persist(&requests).await.context("cannot record the key change")?;
    Ok(())
}

async fn keys(command: KeysCommand, pg: &Database, routing: &Routing) -> anyhow::Result<()> {
    let store = pg.key_store();
    match command {
        KeysCommand::Create { name, tenant, permissions, expires_in_days } => {
            let permissions = parse_permissions(&permissions).map_err(anyhow::Error::msg)?;
            if let Some(tenant) = &tenant {
                anyhow::ensure!(is_tenant_id(tenant), "--tenant {TENANT_ID_RULE}");
            }
            let expires_at = expires_in_days.map(|days| Utc::now() + Duration::days(i64::from(days)));
            let (key, secret) = store
                .create(NewKey { name, tenant_id: tenant, permissions, expires_at, created_by: "cli".into() })
                .await?;
            record(pg, routing, "keys.created", &key).await?;
            println!("{}", describe(&key));
            println!("{}", secret.plaintext);
        }
        KeysCommand::List { tenant } => {
            for key in store.list(tenant.as_deref()).await? {
                println!("{}", describe(&key));
            }
        }
        KeysCommand::Revoke { id } => match store.revoke(id, None).await? {
            Some(key) => {
                record(pg, routing, "keys.revoked", &key).await?;
                println!("{}", describe(&key));
            }
            None => anyhow::bail!("no key with id {id}"),
        },
    }
    Ok(())
}

/// A plain HTTP/1.1 GET with a 3-second budget; no configuration, no TLS (the probe
/// runs beside the service).
fn probe(url: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url.strip_prefix("http://").context("the probe URL must start with http://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = authority.to_socket_addrs()?.next().context("the probe URL names no address")?;
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(status.starts_with('2'), "{url} answered {status}");
    Ok(())
}

/// The public key given on the command line (base64 or a file), else the configured
/// signing key's (which must exist: verification never creates one) with the
/// deployment's registered keys.
async fn keyring(settings: &Settings, db: &Database, public_key: Option<&str>) -> anyhow::Result<Keyring> {
    if let Some(given) = public_key {
        return Ok(Keyring::new(vec![parse_public_key(given)?]));
    }
    let integrity = &settings.integrity;
    anyhow::ensure!(
        !integrity.signing_key.is_empty() || integrity.signing_key_file.exists(),
        "no signing key at {} (integrity.signing_key_file); pass --public-key",
        integrity.signing_key_file.display()
    );
    let governance = Governance::from_settings(settings)?;
    Ok(governance.identity.keyring(db).await)
}

async fn signing_key(settings: &Settings, command: SigningKeyCommand) -> anyhow::Result<()> {
    use tierlog::integrity::checkpoint::Signer;
    use tierlog::tiers::postgres::signing_keys;
    if let SigningKeyCommand::Generate = command {
        let (signer, seed) = Signer::generate_with_seed();
        println!("public key (ed25519, base64): {}", signer.public().to_base64());
        println!("key id: {}", signer.public().id());
        println!("{seed}");
        return Ok(());
    }
    let Database::Postgres(pg) = connect(settings).await? else {
        anyhow::bail!("signing keys are registered in Postgres; set DATABASE_URL");
    };
    match command {
        SigningKeyCommand::Generate => unreachable!("handled above"),
        SigningKeyCommand::Show => {
            for row in signing_keys::all(pg.pool()).await? {
                let state = if row.current { "current" } else { "retired" };
                println!("{state:8} {} {}", row.key.id(), row.key.to_base64());
            }
            if !settings.integrity.signing_key.is_empty() || settings.integrity.signing_key_file.exists() {
                let governance = Governance::from_settings(settings)?;
                println!("this configuration's key: {}", governance.identity.signer().public().id());
            }
            Ok(())
        }
        SigningKeyCommand::Promote { public_key } => {
            let key = match public_key {
                Some(given) => parse_public_key(&given)?,
                None => Governance::from_settings(settings)?.identity.signer().public().clone(),
            };
            let retired = signing_keys::promote(pg.pool(), &key).await?;
            println!("current signing key: {}", key.id());
            if let Some(old) = retired {
                println!("retired: {old} (its checkpoints still verify)");
            }
            Ok(())
        }
    }
}

fn parse_public_key(given: &str) -> anyhow::Result<PublicKey> {
    let text = match std::fs::read_to_string(given) {
        Ok(text) => text,
        Err(_) => given.to_owned(),
    };
    PublicKey::parse(&text).map_err(|e| anyhow::anyhow!("--public-key: {e}"))
}

fn verify_archive(dir: &std::path::Path, public_key: Option<&str>, checkpoints: Option<&std::path::Path>) -> anyhow::Result<()> {
    let key = parse_public_key(public_key.context("--public-key is required with --archive")?)?;
    let keys = Keyring::new(vec![key]);
    let checkpoints: Vec<Checkpoint> = match checkpoints {
        Some(path) => {
            let export: Value = serde_json::from_slice(&std::fs::read(path).with_context(|| format!("{}", path.display()))?)?;
            serde_json::from_value(export.get("checkpoints").cloned().unwrap_or(export)).context("--checkpoints: not a checkpoint export")?
        }
        None => Vec::new(),
    };
    let reports = tierlog::retention::archive::verify(dir, &keys, &checkpoints)?;
    anyhow::ensure!(!reports.is_empty(), "no archive manifests under {}", dir.display());
    let mut broken = 0;
    for report in &reports {
        if report.ok {
            let ranges: Vec<String> =
                report.shards.iter().map(|r| format!("shard {} seq {}..{}", r.shard, r.first_seq, r.last_seq)).collect();
            println!(
                "ok      {} {}: {} rows in {} file(s), {}, {} checkpoint(s) matched",
                report.tenant_id,
                report.table,
                report.rows,
                report.files,
                ranges.join(", "),
                report.checkpoints_matched
            );
        } else {
            broken += 1;
            println!("BROKEN  {} {}:", report.tenant_id, report.table);
            for problem in &report.problems {
                println!("        {problem}");
            }
        }
    }
    println!("{} chain(s) checked, {broken} broken", reports.len());
    if broken > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn retention(settings: &Settings) -> anyhow::Result<()> {
    let pg = connect(settings).await?;
    let governance = Governance::from_settings(settings)?;
    governance.policies.replace(pg.load_policies(&Policies::from_settings(settings)).await?);
    let signer = governance.identity.signer_for(&pg).await.context("integrity.signing_key / integrity.signing_key_file")?;
    let job = RetentionJob::new(
        pg.retention_db(),
        signer.clone(),
        governance.identity.keyring(&pg).await,
        governance.policies.clone(),
        &settings.retention,
    );
    let report = job.run_once(Utc::now()).await?;
    let batch = EncodedBatch::new(report.events());
    let routing = Routing::with_policies(settings, governance.policies.clone());
    pg.durable().persist(&routing.persist_requests(&batch)).await.context("cannot record the retention run")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn export_chain(settings: &Settings, tenant: &str, table: Option<&str>, out: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(is_tenant_id(tenant), "--tenant {TENANT_ID_RULE}");
    let table = match table {
        Some(name) => Some(tierlog::tiers::Table::parse(name).ok_or_else(|| anyhow::anyhow!("--table: unknown table {name:?}"))?),
        None => None,
    };
    let pg = connect(settings).await?;
    let governance = Governance::from_settings(settings)?;
    // The manifests are signed: only with the deployment's key.
    let signer = governance.identity.signer_for(&pg).await.context("integrity.signing_key / integrity.signing_key_file")?;
    let run = uuid::Uuid::now_v7();
    let mut rows_written = 0usize;
    let mut part = 0usize;
    for (chain, _) in pg.chains(Some(tenant), table).await? {
        let mut after = chain.base();
        loop {
            let rows = pg.read_chain_after(&chain, after, 5000).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            part += 1;
            tierlog::retention::archive::write(out, signer, chain.table, &rows, run, part, Utc::now())?;
            rows_written += rows.len();
        }
    }
    println!("{rows_written} rows written under {}; public key {}", out.display(), signer.public().to_base64());
    Ok(())
}

async fn verify(pg: &Database, keys: &Keyring, tenant: Option<String>, table: Option<String>) -> anyhow::Result<()> {
    let table = match table {
        Some(name) => Some(tierlog::tiers::Table::parse(&name).ok_or_else(|| anyhow::anyhow!("--table: unknown table {name:?}"))?),
        None => None,
    };
    let mut broken = 0;
    let mut checked = 0u64;
    for (chain, _) in pg.chains(tenant.as_deref(), table).await? {
        let report = pg.verify_chain(keys, &chain).await?;
        checked += report.rows_checked;
        if report.ok {
            println!("ok      {chain}: {} rows, head {}", report.rows_checked, report.head_seq);
            continue;
        }
        broken += 1;
        println!(
            "BROKEN  {chain}: {} break(s) in {} rows, head {}",
            report.break_count, report.rows_checked, report.head_seq
        );
        for each in &report.breaks {
            println!("        {}", serde_json::to_string(each)?);
        }
        if report.break_count > report.breaks.len() as u64 {
            println!("        ... and {} more", report.break_count - report.breaks.len() as u64);
        }
    }
    println!("{checked} rows checked, {broken} broken chain(s)");
    if broken > 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn urls_are_shown_without_their_credentials() {
        assert_eq!(without_credentials("postgres://u:secret@db:5432/tierlog"), "postgres://db:5432/tierlog");
        assert_eq!(without_credentials("postgres://u:se/cr@et@db/tierlog?sslmode=require"), "postgres://db/tierlog");
        assert_eq!(without_credentials("postgres://db/tierlog?password=secret"), "postgres://db/tierlog");
        assert_eq!(without_credentials("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(without_credentials("secret"), "(not a URL)");
    }
}

/// `tierlog report`: GET /audit/reports into `out`.
async fn fetch_report(
    url: &str,
    key: &str,
    tenant: &str,
    from: Option<&str>,
    to: Option<&str>,
    format: &str,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let mut query = vec![("tenant_id", tenant), ("format", format)];
    query.extend(from.map(|f| ("from", f)));
    query.extend(to.map(|t| ("to", t)));
    let response = reqwest::Client::new()
        .get(format!("{}/audit/reports?{}", url.trim_end_matches('/'), serde_urlencoded::to_string(&query)?))
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        anyhow::bail!("the service answered {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    std::fs::write(out, &body).with_context(|| format!("cannot write {}", out.display()))?;
    println!("{} bytes written to {}", body.len(), out.display());
    Ok(())
}
