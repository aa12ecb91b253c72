//! `weir serve`: runs a standalone node (broker and name server in one process) until SIGINT or
//! SIGTERM, then stops accepting, lets in-flight requests finish, flushes and exits 0.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use weir_broker::Broker;

use crate::config::{self, FlagOverrides};

/// Options of `weir serve`. Every configuration key can also be set in the config file or as a
/// `WEIR_<KEY>` environment variable (see docs/operations.md).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); defaults to ./weir.toml when it exists.
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (commit log, consume queues, indexes, offsets, topics).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the native protocol listener (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Address of the HTTP listener: admin API, /metrics, /health, /ready (port 0 picks a free
    /// port; an empty string opens none).
    #[arg(long = "http", value_name = "ADDR")]
    http_listen: Option<String>,
    /// Address of the Kafka protocol listener (port 0 picks a free port; an empty string
    /// opens none).
    #[arg(long = "kafka", value_name = "ADDR")]
    kafka_listen: Option<String>,
    /// Serve the web dashboard at / of the HTTP listener (`--dashboard false` turns it off).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    dashboard: Option<bool>,
    /// Address clients are told to use for this broker (routes and message ids).
    #[arg(long)]
    advertised_addr: Option<String>,
    /// When an acknowledged message is on disk: `sync` acks only after fsync (group commit),
    /// `async` flushes in the background every `flush_interval_ms`.
    #[arg(long, value_parser = ["sync", "async"])]
    flush: Option<String>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WEIR_LOG_FORMAT")]
    log_format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs go to stderr, at `info` unless RUST_LOG says otherwise.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // openraft logs every failed heartbeat to an unreachable replica as a warning: the
        // broker reports role and term changes itself.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the node until a shutdown signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = config::load(
        args.config.as_deref(),
        FlagOverrides {
            data_dir: args.data_dir,
            listen: args.listen,
            flush: args.flush,
            advertised_addr: args.advertised_addr,
            http_listen: args.http_listen,
            kafka_listen: args.kafka_listen,
            dashboard: args.dashboard,
        },
    )?;
    let data_dir = config.data_dir.clone();
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let broker = Broker::start(config).await.with_context(|| {
        format!(
            "cannot start weir with data directory {}",
            data_dir.display()
        )
    })?;
    println!(
        "weir listening on {} (native protocol), data in {}",
        broker.local_addr(),
        data_dir.display()
    );
    if let Some(addr) = broker.http_addr() {
        println!("weir http on {addr}");
    }
    if let Some(addr) = broker.kafka_addr() {
        println!("weir kafka on {addr}");
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = sigterm.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = broker.restart_requested() => return restart(),
    }
    broker.shutdown().await.context("shutting down")?;
    tracing::info!("stopped");
    Ok(())
}

/// Starts this process again in place, with the same arguments (a replica installing a
/// snapshot from its leader: see `Broker::restart_requested`). Returns only on failure.
fn restart() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    tracing::warn!("starting again to install the snapshot received from the leader");
    let exe = std::env::current_exe().context("finding this executable")?;
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(err).with_context(|| format!("re-executing {}", exe.display()))
}
