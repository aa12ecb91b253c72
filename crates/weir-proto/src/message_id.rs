//! Message ids: the storing broker group's name, the commit-log offset of the message's batch
//! and its index in that batch, so a message is found by id with one read (RocketMQ's "offset message id"). The id names the
//! broker group, not a machine: every replica of a group serves the same log at the same
//! offsets, so an id minted by one replica keeps working when another one leads.
//!
//! Printed as uppercase hex of:
//!
//! ```text
//! offset  size  field
//!  0      1     name_len u8               1..=255
//!  1      n     broker group name, UTF-8
//!  1+n    8     commit_log_offset u64 BE   (of the entry holding the message)
//!  9+n    4     index u32 BE               (the message's place in the entry's batch)
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

/// Longest broker group name an id can carry, in bytes.
pub const MAX_BROKER_NAME_LEN: usize = 255;

/// Where a message is stored: which broker group, at which commit-log offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// The broker group that stored the message (shared, so ids of one group cost no copy).
    pub broker: Arc<str>,
    /// Byte position in that group's commit log of the entry holding the message.
    pub commit_log_offset: u64,
    /// The message's index in the entry's batch (its offset delta).
    pub index: u32,
}

impl MessageId {
    /// The id of message `index` of the entry at `commit_log_offset` stored by `broker`.
    pub fn new(broker: Arc<str>, commit_log_offset: u64, index: u32) -> MessageId {
        MessageId {
            broker,
            commit_log_offset,
            index,
        }
    }
}

/// The text is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid message id {0:?}: expected the hex form of a broker name and an offset")]
pub struct InvalidMessageId(pub String);

const DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// Writes `bytes` as uppercase hex without allocating, a chunk at a time.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut text = [0u8; 64];
    for chunk in bytes.chunks(32) {
        for (i, byte) in chunk.iter().enumerate() {
            text[2 * i] = DIGITS[usize::from(byte >> 4)];
            text[2 * i + 1] = DIGITS[usize::from(byte & 0xF)];
        }
        f.write_str(std::str::from_utf8(&text[..2 * chunk.len()]).map_err(|_| fmt::Error)?)?;
    }
    Ok(())
}

impl fmt::Display for MessageId {
    /// Writes the hex form without allocating (delivery stamps one on every delayed message).
    /// A name longer than [`MAX_BROKER_NAME_LEN`] cannot be written (brokers refuse such names
    /// at start).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.broker.as_bytes();
        let len = u8::try_from(name.len()).map_err(|_| fmt::Error)?;
        write_hex(f, &[len])?;
        write_hex(f, name)?;
        write_hex(f, &self.commit_log_offset.to_be_bytes())?;
        write_hex(f, &self.index.to_be_bytes())
    }
}

impl FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidMessageId(s.to_owned());
        let bytes = hex::decode(s).map_err(|_| bad())?;
        let (&len, rest) = bytes.split_first().ok_or_else(bad)?;
        let len = usize::from(len);
        if len == 0 || rest.len() != len + 12 {
            return Err(bad());
        }
        let name = std::str::from_utf8(&rest[..len]).map_err(|_| bad())?;
        let offset: [u8; 8] = rest[len..len + 8].try_into().map_err(|_| bad())?;
        let index: [u8; 4] = rest[len + 8..].try_into().map_err(|_| bad())?;
        Ok(MessageId {
            broker: Arc::from(name),
            commit_log_offset: u64::from_be_bytes(offset),
            index: u32::from_be_bytes(index),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(name in "[A-Za-z0-9._-]{1,255}", offset in any::<u64>(), index in any::<u32>()) {
            let id = MessageId::new(Arc::from(name.as_str()), offset, index);
            let text = id.to_string();
            prop_assert_eq!(text.len(), 2 * (1 + name.len() + 12));
            prop_assert!(text.bytes().all(|b| DIGITS.contains(&b)));
            prop_assert_eq!(text.parse::<MessageId>().unwrap(), id);
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "xyz",
            "00",
            "",
            "0161",
            "01610000000000000000FF",
            "016100000000000000000100",
            "02FFFE0000000000000001",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_too_long_for_an_id_is_not_written() {
        let id = MessageId {
            broker: Arc::from("a".repeat(256).as_str()),
            commit_log_offset: 1,
            index: 0,
        };
        assert!(std::fmt::write(&mut String::new(), format_args!("{id}")).is_err());
    }
}
