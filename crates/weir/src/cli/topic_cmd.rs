//! `weir topic …`: create, list, describe, delete topics and add queues.

use anyhow::Result;
use clap::{Args, Subcommand};
use weir_client::Admin;

use super::ServerArgs;
use super::output::print_table;

/// Manage topics.
#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name (1-127 characters of A-Z a-z 0-9 . _ -).
        name: String,
        /// Number of queues (default: the broker's, 4), in each broker group it is created in.
        #[arg(long, short = 'q')]
        queues: Option<u32>,
        /// Only in these broker groups (through name servers; default: every group). Run again
        /// with a group added to the cluster to grow the topic onto it.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// List topics with their queue counts and message counts.
    List,
    /// Show a topic's queues with their minimum and maximum offsets.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Grow a topic to more queues.
    AddQueues {
        /// Topic name.
        name: String,
        /// The new total number of queues.
        #[arg(long, short = 'q')]
        queues: u32,
    },
}

/// Runs a `weir topic` command.
pub async fn run(args: TopicArgs) -> Result<()> {
    let admin = Admin::new(args.server.servers())?;
    match args.command {
        TopicCommand::Create {
            name,
            queues,
            groups,
        } if !groups.is_empty() => {
            let created = admin
                .create_topic_in(&name, queues.unwrap_or(0), &groups)
                .await?;
            for (group, info) in groups.iter().zip(created) {
                println!(
                    "created topic {} with {} queues in broker group {group}",
                    info.name,
                    info.queues.len()
                );
            }
        }
        TopicCommand::Create { name, queues, .. } => {
            let info = admin.create_topic(&name, queues.unwrap_or(0)).await?;
            println!(
                "created topic {} with {} queues",
                info.name,
                info.queues.len()
            );
        }
        TopicCommand::List => {
            let mut topics = admin.list_topics().await?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            let rows: Vec<Vec<String>> = topics
                .iter()
                .map(|t| {
                    let messages: u64 = t
                        .queues
                        .iter()
                        .map(|q| q.max_offset - q.min_offset.min(q.max_offset))
                        .sum();
                    // Internal topics (`%RETRY%<group>`, `%DLQ%<group>`) are marked.
                    let name = if weir_proto::names::is_internal(&t.name) {
                        format!("{} (internal)", t.name)
                    } else {
                        t.name.clone()
                    };
                    vec![name, t.queues.len().to_string(), messages.to_string()]
                })
                .collect();
            print_table(&["TOPIC", "QUEUES", "MESSAGES"], &rows);
        }
        TopicCommand::Describe { name } => {
            let info = admin.describe_topic(&name).await?;
            // A topic spread over several broker groups: each row names its group.
            let spread = info
                .queues
                .iter()
                .any(|q| q.broker_name != info.queues[0].broker_name);
            let rows: Vec<Vec<String>> = info
                .queues
                .iter()
                .map(|q| {
                    let mut row = vec![
                        q.queue_id.to_string(),
                        q.min_offset.to_string(),
                        q.max_offset.to_string(),
                    ];
                    if spread {
                        row.push(q.broker_name.clone());
                    }
                    row
                })
                .collect();
            println!("topic {} ({} queues)", info.name, info.queues.len());
            if spread {
                print_table(&["QUEUE", "MIN OFFSET", "MAX OFFSET", "GROUP"], &rows);
            } else {
                print_table(&["QUEUE", "MIN OFFSET", "MAX OFFSET"], &rows);
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
        TopicCommand::AddQueues { name, queues } => {
            let info = admin.add_queues(&name, queues).await?;
            println!("topic {} now has {} queues", info.name, info.queues.len());
        }
    }
    Ok(())
}
