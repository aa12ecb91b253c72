//! Who this node is: its cluster, its broker group's name, and the addresses it listens on and
//! advertises. Message ids are minted and recognised here.
//!
//! A message id names the broker group, not this machine (`weir_proto::message_id`): every
//! replica of a group serves the same log at the same commit-log offsets, so an id minted here
//! keeps finding its message when another replica of the group answers.

use std::net::SocketAddr;
use std::sync::Arc;

use weir_proto::MessageId;

/// This node's names and addresses (fixed at start).
#[derive(Debug)]
pub(crate) struct Identity {
    /// The cluster it registers in.
    pub cluster_name: String,
    /// Its broker group's name, as put in routes and message ids.
    pub broker_name: Arc<str>,
    /// The native listener's address as put in routes (reachable by clients).
    pub advertised_addr: String,
    /// The native listener's bound address.
    pub local_addr: SocketAddr,
}

impl Identity {
    /// The id of message `index` of the entry stored at `commit_log_offset` of this group's
    /// log.
    pub fn message_id(&self, commit_log_offset: u64, index: u32) -> MessageId {
        MessageId::new(self.broker_name.clone(), commit_log_offset, index)
    }

    /// Whether `id` names a message of this broker group's log.
    pub fn owns(&self, id: &MessageId) -> bool {
        *id.broker == *self.broker_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addr: &str) -> Identity {
        Identity {
            cluster_name: "c".to_owned(),
            broker_name: Arc::from("broker-a"),
            advertised_addr: addr.to_owned(),
            local_addr: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn an_id_minted_by_one_replica_is_owned_by_every_replica_of_the_group() {
        let id = node("127.0.0.1:9876").message_id(4096, 3);
        let text = id.to_string();
        let parsed: MessageId = text.parse().unwrap();
        assert!(node("10.0.0.2:9876").owns(&parsed));
        let other = Identity {
            broker_name: Arc::from("broker-b"),
            ..node("127.0.0.1:9876")
        };
        assert!(!other.owns(&parsed));
    }
}
