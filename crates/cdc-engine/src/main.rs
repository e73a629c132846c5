//! The `cdc-engine` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use cdc_engine::config::{load_config, LogFormat};

/// Change data capture from PostgreSQL to stdout, files, Kafka, NATS and Elasticsearch.
#[derive(Parser)]
#[command(name = "cdc-engine", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline described by a YAML file until SIGINT/SIGTERM.
    Run {
        /// The pipeline configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a configuration file without connecting anywhere.
    Validate {
        /// The pipeline configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
}

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match load_config(&config) {
            Ok(c) => {
                println!(
                    "{}: valid ({} table(s), {} sink(s))",
                    config.display(),
                    c.source.tables.len(),
                    c.sinks.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid configuration:\n{e}", config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => {
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: invalid configuration:\n{e}", config.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            init_logging(&cfg.log);
            match run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // One line saying what is wrong (logs also go to stderr).
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(log: &cdc_engine::config::LogConfig) {
    let filter = EnvFilter::try_from_env("CDC_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{},sqlx=warn", log.level.as_str())));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(cfg: cdc_engine::config::Config) -> anyhow::Result<()> {
    // Two TLS providers are linked in (ring, and aws-lc through a
    // dependency's default features); pick ring so building a TLS config
    // never panics on the ambiguity. An error means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone(), hard_stop.clone()));
        let outcome = cdc_engine::run::run(cfg, shutdown, hard_stop).await?;
        tracing::info!(acknowledged = %outcome.acknowledged, "stopped");
        Ok(())
    })
}

/// First SIGINT/SIGTERM: stop reading, drain, acknowledge. Second signal,
/// or the drain timeout: stop at once.
async fn watch_signals(shutdown: CancellationToken, hard_stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!(
        "shutting down: draining sinks and acknowledging (signal again to stop at once)"
    );
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = tokio::time::sleep(cdc_engine::run::DRAIN_TIMEOUT) => {
            tracing::warn!("sinks did not drain in time; stopping");
        }
    }
    hard_stop.cancel();
}
