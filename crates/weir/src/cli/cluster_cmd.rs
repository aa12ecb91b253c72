//! `weir cluster status`: the name servers (answered or not), broker groups and each
//! replica's role, term, commit index, applied index and lag, as a table or JSON.

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
}

/// Runs a `weir cluster` command.
pub async fn run(args: ClusterArgs) -> Result<()> {
    let admin = Admin::new(args.server.servers())?;
    match args.command {
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
