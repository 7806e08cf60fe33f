//! `sora-bench run [--smoke]`: the benchmark; `sora-bench ws-baseline`: the bare WebSocket server
//! it compares the fan-out with.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sora_bench::{report, run, ws};

/// Benchmarks sora-server against the physical limits of the machine.
#[derive(Debug, Parser)]
#[command(name = "sora-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scenarios and print the table (also written under --out).
    Run {
        /// A few seconds per scenario, budgets not judged (what CI runs).
        #[arg(long)]
        smoke: bool,
        /// The sora-server binary.
        #[arg(long, default_value = "target/release/sora-server")]
        server_bin: PathBuf,
        /// The repository root.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Where the report, logs and files go.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// The PostgreSQL server, without a database name.
        #[arg(
            long,
            env = "BENCH_PG_URL",
            default_value = "postgres://postgres@127.0.0.1:5432"
        )]
        pg_url: String,
        /// The database to create afresh (it is dropped first).
        #[arg(long, default_value = "sora_bench")]
        database: String,
        /// Only these scenarios (comma separated): create, webhook, fanout, download, startup.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Read a local file through object_store's stream and in 1 MiB chunks; print MB/s of each.
    BlobProbe {
        /// The file.
        file: PathBuf,
        /// How many times to read it each way.
        #[arg(long, default_value_t = 10)]
        rounds: u32,
    },
    /// Serve the files of a directory with actix-files (the download scenario's second
    /// baseline: the best the server's HTTP stack does for a file).
    FileBaseline {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
        /// The directory to serve at `/`.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Serve the bare WebSocket broadcast baseline.
    WsBaseline {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
        /// `tungstenite` (the bare server) or `actix` (the same on actix-web + actix-ws).
        #[arg(long, default_value = "tungstenite")]
        stack: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BlobProbe { file, rounds } => {
            let p = sora_bench::blob_probe::probe(&file, rounds).await?;
            println!(
                "object_store stream: {:.0} MB/s in chunks of {} bytes; BlobStore (ChunkedStore) stream: {:.0} MB/s in chunks of {} bytes; 1 MiB reads: {:.0} MB/s",
                p.object_store_mb_s,
                p.object_store_chunk,
                p.blob_store_mb_s,
                p.blob_store_chunk,
                p.chunked_1mib_mb_s
            );
            Ok(())
        }
        Command::FileBaseline { bind, dir } => {
            let listener = std::net::TcpListener::bind(&bind)
                .with_context(|| format!("cannot listen on {bind}"))?;
            println!("listening on {} (actix-files)", listener.local_addr()?);
            tokio::task::spawn_blocking(move || sora_bench::files::serve(listener, dir)).await??;
            Ok(())
        }
        Command::WsBaseline { bind, stack } if stack == "actix" => {
            let listener = std::net::TcpListener::bind(&bind)
                .with_context(|| format!("cannot listen on {bind}"))?;
            println!("listening on {} (actix-ws)", listener.local_addr()?);
            // actix runs its own runtimes: off this one's worker threads.
            tokio::task::spawn_blocking(move || ws::serve_actix_baseline(listener)).await??;
            Ok(())
        }
        Command::WsBaseline { bind, stack } => {
            anyhow::ensure!(
                stack == "tungstenite",
                "unknown stack `{stack}`; tungstenite or actix"
            );
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .with_context(|| format!("cannot listen on {bind}"))?;
            println!("listening on {}", listener.local_addr()?);
            ws::serve_baseline(listener).await?;
            Ok(())
        }
        Command::Run {
            smoke,
            server_bin,
            repo,
            out,
            pg_url,
            database,
            only,
        } => {
            for o in &only {
                anyhow::ensure!(
                    run::SCENARIOS.contains(&o.as_str()),
                    "unknown scenario `{o}`; one of {:?}",
                    run::SCENARIOS
                );
            }
            let opts = run::Options {
                smoke,
                server_bin: std::fs::canonicalize(&server_bin)
                    .with_context(|| format!("no server binary at {}", server_bin.display()))?,
                bench_bin: std::env::current_exe()?,
                repo: std::fs::canonicalize(&repo)?,
                out_dir: out.clone(),
                pg_url: pg_url.trim_end_matches('/').to_owned(),
                database,
                only,
            };
            let report = run::run(opts).await?;
            println!("{}", report.machine);
            println!("{}", report::table(&report.rows));
            for f in &report.failures {
                eprintln!("scenario could not run: {f}");
            }
            println!("written under {}", out.display());
            if !report.failures.is_empty() {
                anyhow::bail!("{} scenario(s) could not run", report.failures.len());
            }
            Ok(())
        }
    }
}
