//! `weir message …`: look messages up by id or by key.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use weir_client::{Admin, MessageId};

use super::ServerArgs;
use super::output::{Format, write_message};

/// Look messages up.
#[derive(Debug, Args)]
pub struct MessageArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: MessageCommand,
}

#[derive(Debug, Subcommand)]
enum MessageCommand {
    /// Print the message with an id (as one JSON line).
    Get {
        /// The message id, as printed by `weir produce` or `weir consume --format json`.
        id: String,
    },
    /// Print the messages of a topic with a key (one JSON line each).
    Find {
        /// The topic.
        #[arg(long, short = 't')]
        topic: String,
        /// The key.
        #[arg(long, short = 'k')]
        key: String,
        /// Most messages to return (0: the broker's default, 64).
        #[arg(long, default_value_t = 0)]
        max: u32,
    },
}

/// Runs a `weir message` command.
pub async fn run(args: MessageArgs) -> Result<()> {
    let admin = Admin::new(args.server.servers())?;
    let messages = match args.command {
        MessageCommand::Get { id } => {
            let id: MessageId = id.parse().context("bad message id")?;
            vec![admin.get_message(&id).await?]
        }
        MessageCommand::Find { topic, key, max } => admin.find_by_key(&topic, &key, max).await?,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for message in &messages {
        write_message(&mut out, message, Format::Json)?;
    }
    out.flush()?;
    Ok(())
}
