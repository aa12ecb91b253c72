//! `weir nameserver`: runs a process that is only the name-server role (routes and broker
//! registrations, nothing on disk) until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use weir_broker::{NameServerConfig, NameServerProcess};

use crate::serve::{LogFormat, init_logging};

/// Options of `weir nameserver`.
#[derive(Debug, Args)]
pub struct NameServerArgs {
    /// Address of the native protocol listener (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9876")]
    listen: String,
    /// Address of an HTTP listener serving `/health` and `/api/cluster` (none by default).
    #[arg(long = "http", value_name = "ADDR")]
    http_listen: Option<String>,
    /// A broker replica that has not registered for this long is left out of routes, ms.
    #[arg(long, default_value_t = 120_000)]
    broker_expiry_ms: u64,
    /// The heartbeat interval told to registering brokers, ms.
    #[arg(long, default_value_t = 30_000)]
    heartbeat_interval_ms: u64,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WEIR_LOG_FORMAT")]
    log_format: LogFormat,
}

/// Runs the name server until a shutdown signal.
pub async fn run(args: NameServerArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let config = NameServerConfig {
        listen: args.listen,
        http_listen: args.http_listen,
        broker_expiry_ms: args.broker_expiry_ms,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        ..NameServerConfig::default()
    };
    let server = NameServerProcess::start(config)
        .await
        .context("cannot start the name server")?;
    println!("weir nameserver on {}", server.local_addr());
    if let Some(addr) = server.http_addr() {
        println!("weir http on {addr}");
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = sigterm.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
