//! `sora-server`: serve (the default), apply migrations, manage API keys.

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use sora_core::OwnerId;
use sora_server::config::{Config, LogFormat};
use sora_server::{StartOptions, start};

/// The Sora job service. With no command, serves the API configured by environment variables
/// (SORA_BIND, DATABASE_URL, SORA_STORAGE_URL, OPENAI_API_KEY, OPENAI_BASE_URL,
/// OPENAI_WEBHOOK_SECRET, SORA_POLL_INTERVAL_MS, SORA_PUBLIC_URL, SORA_CORS_ORIGINS...; see
/// docs/operations.md).
#[derive(Debug, Parser)]
#[command(name = "sora-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve {
        /// Do not run the background workers in this process (run them elsewhere).
        #[arg(long)]
        no_workers: bool,
    },
    /// Apply the database migrations of DATABASE_URL and exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key for an owner. The key is printed once, alone on the last line of standard
    /// output; only its hash is stored.
    Create {
        /// The owner whose jobs the key reaches.
        #[arg(long)]
        owner: String,
        /// A label to recognise the key by.
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke a key by its id (printed by `keys create`).
    Revoke {
        /// The key's id.
        id: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    init_logging(config.log_format);
    match cli.command.unwrap_or(Command::Serve { no_workers: false }) {
        Command::Serve { no_workers } => serve(config, no_workers).await,
        Command::Migrate => {
            // Connecting applies the migrations.
            sora_store::connect(config.database_url.expose_secret())
                .await
                .context("cannot migrate the database")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Keys { command } => keys(config, command).await,
    }
}

async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = sora_store::connect(config.database_url.expose_secret())
        .await
        .context("cannot open the database")?;
    match command {
        KeysCommand::Create { owner, label } => {
            let owner: OwnerId = owner.parse().context("invalid --owner")?;
            let key = sora_service::generate_api_key();
            let record = store
                .create_api_key(&owner, &sora_service::hash_api_key(&key), label.as_deref())
                .await?;
            println!("created API key {} for owner {}", record.id, record.owner);
            println!("store it now: it is shown once and cannot be recovered");
            println!("{key}");
        }
        KeysCommand::Revoke { id } => {
            if store.revoke_api_key(&id).await? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no active key {id}");
            }
        }
    }
    Ok(())
}

async fn serve(config: Config, no_workers: bool) -> anyhow::Result<()> {
    tracing::info!(?config, "starting");
    let mut server = start(
        config,
        StartOptions {
            no_workers,
            ..Default::default()
        },
    )
    .await?;
    let stop = shutdown_signal();
    tokio::select! {
        r = server.wait() => {
            r.context("the HTTP server stopped")?;
            return Ok(());
        }
        _ = stop => {}
    }
    server.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("can install a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
