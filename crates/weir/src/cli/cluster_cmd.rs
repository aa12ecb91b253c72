//! `weir cluster status`: the name servers (answered or not), broker groups and each
//! replica's role, term, commit index, applied index and lag, as a table or JSON.
//! `weir cluster add-replica` / `remove-replica`: change who replicates a broker group.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};
use weir_client::Admin;

use super::ServerArgs;
use super::output::print_table;

/// See the cluster.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Name servers, broker groups and their replicas (role, term, commit index, applied
    /// index, lag in log entries behind the group's leader).
    Status {
        /// Print one JSON object (the shape of `GET /api/cluster`).
        #[arg(long)]
        json: bool,
    },
    /// Adds a replica to a broker group: start it first with `raft_join = true` (and an
    /// empty data directory); it catches up as a learner, then votes. Waits until it votes.
    AddReplica {
        /// The broker group (may be left out when the name servers know only one).
        #[arg(long)]
        group: Option<String>,
        /// The new replica's node id (unique in the group).
        #[arg(long)]
        node_id: u64,
        /// How the group's replicas dial the new replica's Raft listener (`host:port`).
        #[arg(long)]
        raft_addr: String,
        /// Longest to wait for it to catch up, e.g. `10m`.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Removes a replica from a broker group (it may be stopped afterwards, or before).
    RemoveReplica {
        /// The broker group (may be left out when the name servers know only one).
        #[arg(long)]
        group: Option<String>,
        /// The replica's node id.
        #[arg(long)]
        node_id: u64,
    },
}

/// Runs a `weir cluster` command.
pub async fn run(args: ClusterArgs) -> Result<()> {
    let admin = Admin::new(args.server.servers())?;
    match args.command {
        ClusterCommand::AddReplica {
            group,
            node_id,
            raft_addr,
            timeout,
        } => {
            let deadline = Instant::now() + timeout;
            loop {
                let change = admin
                    .add_replica(group.as_deref(), node_id, &raft_addr)
                    .await?;
                if change.done {
                    println!(
                        "node {node_id} is a voter; voters {:?}, learners {:?}",
                        change.voters, change.learners
                    );
                    break;
                }
                eprintln!(
                    "node {node_id} is catching up: log index {} of {}",
                    change.matched_index, change.leader_index
                );
                if Instant::now() >= deadline {
                    anyhow::bail!(
                        "node {node_id} did not catch up within {}; it stays a learner (run this again to keep waiting)",
                        humantime::format_duration(timeout)
                    );
                }
            }
        }
        ClusterCommand::RemoveReplica { group, node_id } => {
            let change = admin.remove_replica(group.as_deref(), node_id).await?;
            println!(
                "node {node_id} removed; voters {:?}, learners {:?}",
                change.voters, change.learners
            );
        }
        ClusterCommand::Status { json } => {
            let status = admin.cluster_status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = status
                .name_servers
                .iter()
                .map(|ns| {
                    vec![
                        ns.addr.clone(),
                        if ns.answered { "answered" } else { "no answer" }.to_owned(),
                        ns.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["NAME SERVER", "STATE", "ERROR"], &rows);
            println!();
            let rows: Vec<Vec<String>> = status
                .groups
                .iter()
                .flat_map(|g| {
                    g.replicas.iter().map(move |r| {
                        vec![
                            g.broker_name.clone(),
                            r.node_id.to_string(),
                            r.addr.clone(),
                            r.role.clone(),
                            r.term.to_string(),
                            r.commit_index.to_string(),
                            r.applied_index.to_string(),
                            r.lag.map_or("-".to_owned(), |l| l.to_string()),
                        ]
                    })
                })
                .collect();
            print_table(
                &[
                    "GROUP", "NODE", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG",
                ],
                &rows,
            );
            if status.name_servers.iter().all(|ns| !ns.answered) {
                anyhow::bail!("no name server answered");
            }
        }
    }
    Ok(())
}
