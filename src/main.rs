//! The `tierlog` command: `serve`, `migrate` and `keys`.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{Duration, Utc};
use clap::{Parser, Subcommand};
use tierlog::app::{shutdown_signal, Application};
use tierlog::config::Settings;
use tierlog::event::parse::is_tenant_id;
use serde_json::{json, Map, Value};
use tierlog::event::access::AccessRecord;
use tierlog::ingest::route::Routing;
use tierlog::keys::{parse_permissions, KeyInfo, KeyStore, NewKey};
use tierlog::tiers::{DurableStore, EncodedBatch};
use tierlog::tiers::postgres::{migrate, PgStore};

#[derive(Parser)]
#[command(name = "tierlog", version, about = "Tiered audit-logging backend")]
struct Cli {
    /// TOML configuration file (default: config/tierlog.toml when it exists).
    #[arg(long, global = true, env = "TIERLOG_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Verify the hash chains in the database; exits 1 when a chain is broken.
    Verify {
        /// Only this tenant's chains.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this table's chains (audit_logs, security_events, financial_audit_logs).
        #[arg(long)]
        table: Option<String>,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
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
    Revoke { id: uuid::Uuid },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    tierlog::telemetry::init(settings.log_filter()?, &settings.logging.format);
    match cli.command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate => {
            let store = connect(&settings).await?;
            drop(store);
            println!("migrations applied");
            Ok(())
        }
        Command::Verify { tenant, table } => verify(&connect(&settings).await?, tenant, table).await,
        Command::Keys(command) => {
            let pg = connect(&settings).await?;
            keys(command, &pg, &Routing::new(&settings)).await
        }
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<PgStore> {
    let store = PgStore::connect_lazy(&settings.postgres).context("postgres.url (DATABASE_URL)")?;
    migrate(store.pool()).await.context("cannot migrate the database")?;
    Ok(store)
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
async fn record(pg: &PgStore, routing: &Routing, action: &str, key: &KeyInfo) -> anyhow::Result<()> {
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
    pg.persist(&requests).await.context("cannot record the key change")?;
    Ok(())
}

async fn keys(command: KeysCommand, pg: &PgStore, routing: &Routing) -> anyhow::Result<()> {
    let store = KeyStore::new(pg.pool().clone());
    match command {
        KeysCommand::Create { name, tenant, permissions, expires_in_days } => {
            let permissions = parse_permissions(&permissions).map_err(anyhow::Error::msg)?;
            if let Some(tenant) = &tenant {
                anyhow::ensure!(is_tenant_id(tenant), "--tenant must be 1-64 characters of letters, digits, '.', '_' or '-'");
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

async fn verify(pg: &PgStore, tenant: Option<String>, table: Option<String>) -> anyhow::Result<()> {
    use tierlog::tiers::postgres::verify::{chains, verify_chain};
    let table = match table {
        Some(name) => Some(tierlog::tiers::Table::parse(&name).ok_or_else(|| anyhow::anyhow!("--table: unknown table {name:?}"))?),
        None => None,
    };
    let mut broken = 0;
    let mut checked = 0u64;
    for (chain_tenant, chain_table, head) in chains(pg.pool(), tenant.as_deref(), table).await? {
        let report = verify_chain(pg.pool(), &chain_tenant, chain_table, head).await?;
        checked += report.rows_checked;
        match &report.first_break {
            None => println!("ok      {chain_tenant} {chain_table}: {} rows, head {}", report.rows_checked, head),
            Some(first) => {
                broken += 1;
                println!("BROKEN  {chain_tenant} {chain_table}: {}", serde_json::to_string(first)?);
            }
        }
    }
    println!("{checked} rows checked, {broken} broken chain(s)");
    if broken > 0 {
        std::process::exit(1);
    }
    Ok(())
}
