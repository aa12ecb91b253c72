//! `weir group …`: list and describe consumer groups, reset their offsets.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use weir_client::admin::{GroupMode, GroupQueueInfo};
use weir_client::{Admin, ResetTo};

use super::ServerArgs;
use super::output::print_table;

/// Manage consumer groups.
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List consumer groups and how each consumes (clustering, broadcast, shared).
    List,
    /// Show a group's queues: max offset, committed offset, lag and owner; for a shared
    /// group the acked low-water mark, the cursor, the messages in flight and the lag.
    Describe {
        /// The group.
        group: String,
    },
    /// Move a group's offsets on a topic (the group must have no live member).
    Reset {
        /// The group.
        group: String,
        /// The topic.
        #[arg(long, short = 't')]
        topic: String,
        /// earliest, latest, or an RFC 3339 time (e.g. 2026-01-31T12:00:00Z).
        #[arg(long)]
        to: String,
    },
}

fn parse_reset_to(text: &str) -> Result<ResetTo> {
    match text {
        "earliest" => Ok(ResetTo::Earliest),
        "latest" => Ok(ResetTo::Latest),
        other => {
            let time = OffsetDateTime::parse(other, &Rfc3339).with_context(|| {
                format!("--to must be earliest, latest or an RFC 3339 time, not {other:?}")
            })?;
            let ms = time.unix_timestamp_nanos() / 1_000_000;
            Ok(ResetTo::Timestamp(
                i64::try_from(ms).context("time out of range")?,
            ))
        }
    }
}

/// Modes as the CLI prints them: `clustering`, `shared`, … joined by `,`; `-` for none (a
/// broker that does not say).
fn modes(modes: impl Iterator<Item = GroupMode>) -> String {
    let names: Vec<&str> = modes
        .map(|m| match m {
            GroupMode::Clustering => "clustering",
            GroupMode::Broadcast => "broadcast",
            GroupMode::Shared => "shared",
        })
        .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(",")
    }
}

/// Runs a `weir group` command.
pub async fn run(args: GroupArgs) -> Result<()> {
    let admin = Admin::new(args.server.servers())?;
    match args.command {
        GroupCommand::List => {
            let groups = admin.list_groups_with_modes().await?;
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| vec![g.group.clone(), modes(g.modes())])
                .collect();
            print_table(&["GROUP", "MODE"], &rows);
        }
        GroupCommand::Describe { group } => {
            let description = admin.describe_group(&group).await?;
            println!("group {group} ({})", modes(description.modes()));
            let mut queues = description.queues;
            queues.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
            let (shared, owned): (Vec<GroupQueueInfo>, Vec<GroupQueueInfo>) =
                queues.into_iter().partition(|q| q.shared.is_some());
            if !owned.is_empty() {
                let rows: Vec<Vec<String>> = owned
                    .iter()
                    .map(|q| {
                        vec![
                            q.topic.clone(),
                            q.queue_id.to_string(),
                            q.max_offset.to_string(),
                            q.committed_offset.to_string(),
                            q.lag.to_string(),
                            if q.owner.is_empty() {
                                "-".into()
                            } else {
                                q.owner.clone()
                            },
                        ]
                    })
                    .collect();
                print_table(
                    &["TOPIC", "QUEUE", "MAX OFFSET", "COMMITTED", "LAG", "OWNER"],
                    &rows,
                );
            }
            if !shared.is_empty() {
                if !owned.is_empty() {
                    println!();
                }
                let rows: Vec<Vec<String>> = shared
                    .iter()
                    .filter_map(|q| {
                        let s = q.shared.as_ref()?;
                        Some(vec![
                            q.topic.clone(),
                            q.queue_id.to_string(),
                            q.max_offset.to_string(),
                            s.low_water.to_string(),
                            s.cursor.to_string(),
                            s.in_flight.to_string(),
                            q.lag.to_string(),
                        ])
                    })
                    .collect();
                print_table(
                    &[
                        "TOPIC",
                        "QUEUE",
                        "MAX OFFSET",
                        "LOW WATER",
                        "CURSOR",
                        "IN FLIGHT",
                        "LAG",
                    ],
                    &rows,
                );
            }
        }
        GroupCommand::Reset { group, topic, to } => {
            let to = parse_reset_to(&to)?;
            let offsets = admin.reset_offsets(&group, &topic, to).await?;
            let rows: Vec<Vec<String>> = offsets
                .iter()
                .map(|o| {
                    vec![
                        o.topic.clone(),
                        o.queue_id.to_string(),
                        o.offset.to_string(),
                    ]
                })
                .collect();
            print_table(&["TOPIC", "QUEUE", "OFFSET"], &rows);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_parse() {
        assert_eq!(parse_reset_to("earliest").unwrap(), ResetTo::Earliest);
        assert_eq!(parse_reset_to("latest").unwrap(), ResetTo::Latest);
        assert_eq!(
            parse_reset_to("1970-01-01T00:00:01Z").unwrap(),
            ResetTo::Timestamp(1000)
        );
        assert!(parse_reset_to("yesterday").is_err());
    }

    #[test]
    fn modes_print_by_name() {
        assert_eq!(
            modes([GroupMode::Clustering, GroupMode::Shared].into_iter()),
            "clustering,shared"
        );
        assert_eq!(modes(std::iter::empty()), "-");
    }
}
