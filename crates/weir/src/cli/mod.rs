//! The client commands of the `weir` binary, one module per command group, all built on
//! `weir-client`. Shared output formatting lives in [`output`].

pub mod bench;
pub mod cluster_cmd;
pub mod consume_args;
pub mod consume_cmd;
pub mod consume_orderly;
pub mod consume_shared;
pub mod damaged_cmd;
pub mod dlq_cmd;
pub mod group_cmd;
pub mod message_cmd;
pub mod output;
pub mod produce_cmd;
pub mod topic_cmd;
pub mod txn_cmd;

use clap::Args;

/// Where client commands connect.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Addresses of Weir servers (name servers, or a standalone node), HOST:PORT[,HOST:PORT...];
    /// any that answers is used.
    #[arg(
        long,
        short = 's',
        env = "WEIR_SERVER",
        default_value = "127.0.0.1:9876",
        global = true
    )]
    pub server: String,
}

impl ServerArgs {
    /// The servers to configure clients with.
    pub fn servers(&self) -> Vec<String> {
        self.server
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}
