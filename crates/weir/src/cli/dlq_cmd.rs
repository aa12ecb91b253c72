//! `weir dlq …`: a consumer group's dead letters: list, show, resend.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use weir_client::{Admin, MessageId};

use super::ServerArgs;
use super::output::{Format, print_table, write_message};

/// Characters of the body shown by `weir dlq list`.
const PREVIEW_CHARS: usize = 40;

/// Inspect and resend a consumer group's dead letters (`%DLQ%<group>`).
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// One line per dead letter: id, original topic, failures, stored time, body preview.
    List {
        /// The consumer group.
        #[arg(long, short = 'g')]
        group: String,
        /// Most dead letters to list.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
    /// Print one dead letter with every field (one JSON line).
    Show {
        /// The consumer group.
        #[arg(long, short = 'g')]
        group: String,
        /// The dead letter's id, as listed.
        id: String,
    },
    /// Send a dead letter back to its group (through `%RETRY%<group>`, failures reset), so
    /// the group's consumers get it again now.
    Resend {
        /// The consumer group.
        #[arg(long, short = 'g')]
        group: String,
        /// The dead letter's id, as listed.
        id: String,
    },
}

/// Runs a `weir dlq` command.
pub async fn run(args: DlqArgs) -> Result<()> {
    let admin = Admin::new(args.server.servers())?;
    match args.command {
        DlqCommand::List { group, max } => {
            let letters = admin.dead_letters(&group, max).await?;
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|m| {
                    let body = String::from_utf8_lossy(&m.body);
                    let mut preview: String = body.chars().take(PREVIEW_CHARS).collect();
                    if body.chars().count() > PREVIEW_CHARS {
                        preview.push('…');
                    }
                    vec![
                        m.id.as_ref().map(ToString::to_string).unwrap_or_default(),
                        m.origin_topic().to_owned(),
                        m.reconsume_times().to_string(),
                        format_ms(m.store_timestamp),
                        preview.replace('\n', " "),
                    ]
                })
                .collect();
            print_table(&["ID", "TOPIC", "FAILURES", "STORED", "BODY"], &rows);
        }
        DlqCommand::Show { group, id } => {
            let id: MessageId = id.parse().context("bad message id")?;
            let message = admin.dead_letter(&group, &id).await?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            write_message(&mut out, &message, Format::Json)?;
            out.flush()?;
        }
        DlqCommand::Resend { group, id } => {
            let id: MessageId = id.parse().context("bad message id")?;
            let copy = admin.resend_dead_letter(&group, &id).await?;
            println!("resent {id} to group {group} as {copy}");
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC, milliseconds).
fn format_ms(ms: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}
