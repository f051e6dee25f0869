//! The `tierlog` command: `serve` and `migrate`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tierlog::app::{shutdown_signal, Application};
use tierlog::config::Settings;
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
            let store = PgStore::connect_lazy(&settings.postgres).context("postgres.url (DATABASE_URL)")?;
            migrate(store.pool()).await.context("migration failed")?;
            println!("migrations applied");
            Ok(())
        }
    }
}
