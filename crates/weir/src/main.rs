//! `weir`: the message broker and its command-line tools in one binary.

mod cli;
mod config;
mod nameserver;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the message path's remaining per-message
/// allocations (message, topic and result strings) are cheaper; about +12 % produce
/// throughput measured A/B (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Weir: a message queue broker.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a standalone node: broker and name server in one process.
    Serve(serve::ServeArgs),
    /// Run a name server only: routes and broker registrations, nothing on disk.
    Nameserver(nameserver::NameServerArgs),
    /// See the cluster: name servers, broker groups, replicas' roles, terms and lag.
    Cluster(cli::cluster_cmd::ClusterArgs),
    /// Manage topics: create, list, describe, delete, add queues.
    Topic(cli::topic_cmd::TopicArgs),
    /// Send messages to a topic (one per stdin line, or --body; --transaction for one in a
    /// transaction).
    Produce(cli::produce_cmd::ProduceArgs),
    /// Consume messages from a topic as a member of a consumer group.
    Consume(cli::consume_args::ConsumeArgs),
    /// Manage consumer groups: list, describe, reset offsets.
    Group(cli::group_cmd::GroupArgs),
    /// Look messages up by id or key.
    Message(cli::message_cmd::MessageArgs),
    /// A consumer group's dead letters: list, show, resend.
    Dlq(cli::dlq_cmd::DlqArgs),
    /// Transactions: answer the check-backs of a producer group.
    Txn(cli::txn_cmd::TxnArgs),
    /// List the data a broker found damaged on disk (isolated, never served).
    Damaged(cli::damaged_cmd::DamagedArgs),
    /// Load-test a server: produce, consume or end-to-end throughput and latency.
    Bench(cli::bench::BenchArgs),
}

/// Logs of client commands go to stderr, at `warn` unless RUST_LOG says otherwise.
fn init_client_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Nameserver(_)) {
        init_client_logging();
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Nameserver(args) => nameserver::run(args).await,
        Command::Cluster(args) => cli::cluster_cmd::run(args).await,
        Command::Topic(args) => cli::topic_cmd::run(args).await,
        Command::Produce(args) => cli::produce_cmd::run(args).await,
        Command::Consume(args) => cli::consume_cmd::run(args).await,
        Command::Group(args) => cli::group_cmd::run(args).await,
        Command::Message(args) => cli::message_cmd::run(args).await,
        Command::Dlq(args) => cli::dlq_cmd::run(args).await,
        Command::Txn(args) => cli::txn_cmd::run(args).await,
        Command::Bench(args) => cli::bench::run(args).await,
        Command::Damaged(args) => cli::damaged_cmd::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
