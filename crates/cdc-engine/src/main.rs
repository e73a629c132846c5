//! The `cdc-engine` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use cdc_engine::config::{load_config, LogFormat};
use cdc_engine::secrets::{ScrubbingStderr, Secrets};

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
    /// Connect to the source and report everything the server lacks for
    /// this pipeline, one line each with its fix (exit 1 when something
    /// blocks it, 2 for an invalid config or an unreachable server).
    Check {
        /// The pipeline configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Print one JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file without connecting anywhere.
    Validate {
        /// The pipeline configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// After the server invalidated the pipeline's replication slot: drop
    /// it, so that the next `run` creates a new slot and copies the tables
    /// anew (snapshot.mode: initial). Refuses a healthy slot (unless
    /// --force) and a slot in use. Exit status: 0 dropped (or no slot), 1
    /// refused, 2 invalid configuration or unreachable server.
    Resnapshot {
        /// The pipeline configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Drop the slot even when it is healthy (to copy the tables anew).
        #[arg(long)]
        force: bool,
    },
    /// Show the pipeline's slot, publication and snapshot job as the
    /// database holds them. Exit status: 0 healthy, 1 degraded, 2 cannot
    /// tell (unreachable database, invalid configuration).
    Status {
        /// The pipeline configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// A slot further behind the server than this is degraded
        /// (bytes, or with a unit: 512MiB, 1GiB).
        #[arg(long, default_value = "1GiB", value_parser = cdc_engine::status_report::parse_bytes)]
        max_lag: u64,
    },
    /// Ask the pipeline for an incremental snapshot of tables while it
    /// streams: writes a signal row, which the engine streaming from the
    /// slot reads wherever it runs. Exit status: 0 queued, 1 refused (the
    /// message says why), 2 invalid configuration or database unreachable.
    Snapshot {
        /// The pipeline configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// A table to snapshot (`schema.table`, as in source.tables);
        /// repeat for several, read in this order.
        #[arg(long = "table", required = true, value_parser = parse_table)]
        tables: Vec<cdc_core::TableName>,
        /// Only rows matching this SQL condition on the table's columns,
        /// e.g. `updated_at > now() - interval '1 day'`.
        #[arg(long = "where")]
        filter: Option<String>,
        /// Print one JSON document instead of a line.
        #[arg(long)]
        json: bool,
    },
}

fn parse_table(text: &str) -> Result<cdc_core::TableName, String> {
    cdc_engine::config::parse_table_name(text).map_err(|e| e.to_string())
}

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

/// Writes one line, ignoring errors: a closed pipe (`cdc-engine … | head`)
/// must not turn into a panic (`println!` panics on a write error).
fn say(out: &mut dyn std::io::Write, line: &str) {
    let _ = writeln!(out, "{line}");
}

fn main() -> ExitCode {
    // The test build reads FAILPOINTS (see the failpoint modules of
    // cdc_postgres and cdc_pipeline).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match load_config(&config) {
            Ok(c) => {
                say(
                    &mut std::io::stdout(),
                    &format!(
                        "{}: valid ({} table(s), {} sink(s))",
                        config.display(),
                        c.source.tables.len(),
                        c.sinks.len()
                    ),
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                say(
                    &mut std::io::stderr(),
                    &format!("{}: invalid configuration:\n{e}", config.display()),
                );
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Check { config, json } => ExitCode::from(cdc_engine::check::main(&config, json)),
        Command::Resnapshot { config, force } => {
            ExitCode::from(cdc_engine::resnapshot::main(&config, force))
        }
        Command::Status {
            config,
            json,
            max_lag,
        } => status(&config, json, max_lag),
        Command::Snapshot {
            config,
            tables,
            filter,
            json,
        } => snapshot(&config, &tables, filter.as_deref(), json),
        Command::Run { config } => {
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(e) => {
                    say(
                        &mut std::io::stderr(),
                        &format!("{}: invalid configuration:\n{e}", config.display()),
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let secrets = Secrets::from_config(&cfg);
            init_logging(&cfg.log, secrets.clone());
            match run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // One line saying what is wrong (logs also go to stderr),
                    // each cause once.
                    let text = cdc_core::error_chain(e.as_ref());
                    say(
                        &mut std::io::stderr(),
                        &format!("error: {}", secrets.scrub(&text)),
                    );
                    if matches!(
                        e.downcast_ref::<cdc_engine::run::RunError>(),
                        Some(cdc_engine::run::RunError::SlotInvalidated { .. })
                    ) {
                        say(
                            &mut std::io::stderr(),
                            &format!(
                                "to re-snapshot: cdc-engine resnapshot --config {}, then start the engine again",
                                config.display()
                            ),
                        );
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `cdc-engine status`: the report on stdout, the verdict as exit status.
fn status(config: &std::path::Path, json: bool, max_lag: u64) -> ExitCode {
    use cdc_engine::status_report::{Health, StatusOptions};
    let (cfg, runtime) = match cdc_engine::one_shot::prepare(config) {
        Ok(prepared) => prepared,
        Err(message) => {
            say(&mut std::io::stderr(), &message);
            return ExitCode::from(Health::Unknown.exit_code());
        }
    };
    let mut options = StatusOptions::default();
    options.max_lag_bytes = max_lag;
    let report = runtime.block_on(cdc_engine::status_report::status(&cfg, options));
    let secrets = Secrets::from_config(&cfg);
    let text = if json {
        report.to_json().to_string()
    } else {
        report.to_text().trim_end().to_owned()
    };
    say(&mut std::io::stdout(), &secrets.scrub(&text));
    ExitCode::from(report.health.exit_code())
}

/// `cdc-engine snapshot`: what was queued on stdout, or why not on stderr.
fn snapshot(
    config: &std::path::Path,
    tables: &[cdc_core::TableName],
    filter: Option<&str>,
    json: bool,
) -> ExitCode {
    use cdc_engine::snapshot_request::{request_snapshot, RequestError};
    let (cfg, runtime) = match cdc_engine::one_shot::prepare(config) {
        Ok(prepared) => prepared,
        Err(message) => {
            say(&mut std::io::stderr(), &message);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let secrets = Secrets::from_config(&cfg);
    match runtime.block_on(request_snapshot(&cfg, tables, filter)) {
        Ok(queued) => {
            let text = if json {
                queued.to_json().to_string()
            } else {
                queued.to_text()
            };
            say(&mut std::io::stdout(), &text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(
                &mut std::io::stderr(),
                &format!("error: {}", secrets.scrub(&e.to_string())),
            );
            match e {
                RequestError::Unavailable(_) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Logs go to standard error, secrets masked. The filter is the first of:
/// `CDC_LOG`, `RUST_LOG` (both in `tracing`'s `EnvFilter` syntax, e.g.
/// `debug,cdc_postgres=trace`), then `log.level` of the file (with sqlx's
/// own logs at `warn`). An unset, empty or invalid variable is skipped.
fn init_logging(log: &cdc_engine::config::LogConfig, secrets: Secrets) {
    let from_env = |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .and_then(|v| EnvFilter::try_new(v).ok())
    };
    let filter = from_env("CDC_LOG")
        .or_else(|| from_env("RUST_LOG"))
        .unwrap_or_else(|| EnvFilter::new(format!("{},sqlx=warn", log.level.as_str())));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbingStderr::new(secrets))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match log.format {
        LogFormat::Json => builder.json().init(),
        // `text`; `LogFormat` is non-exhaustive, and lines are the default.
        _ => builder.init(),
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
        tokio::spawn(watch_signals(
            shutdown.clone(),
            hard_stop.clone(),
            cfg.pipeline.shutdown_timeout,
        ));
        let outcome = cdc_engine::run::run(cfg, shutdown, hard_stop).await?;
        tracing::info!(acknowledged = %outcome.acknowledged, "stopped");
        Ok(())
    })
}

/// First SIGINT/SIGTERM: stop reading, drain, acknowledge. Second signal,
/// or `pipeline.shutdown_timeout` later: stop at once.
async fn watch_signals(
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    shutdown_timeout: std::time::Duration,
) {
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
        _ = tokio::time::sleep(shutdown_timeout) => {
            tracing::warn!(timeout = ?shutdown_timeout, "sinks did not drain within pipeline.shutdown_timeout; stopping");
        }
    }
    hard_stop.cancel();
}
