//! Message ids: the storing broker's address and the message's commit-log offset, so a message
//! is found by id with one read (RocketMQ's "offset message id").
//!
//! Printed as uppercase hex of:
//!
//! ```text
//! IPv4: ip (4 bytes) | port u16 BE | commit_log_offset u64 BE   -> 28 hex digits
//! IPv6: ip (16 bytes) | port u16 BE | commit_log_offset u64 BE  -> 52 hex digits
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use thiserror::Error;

/// Where a message is stored: which broker, at which commit-log offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// The broker that stored the message.
    pub broker_addr: SocketAddr,
    /// The message's byte position in that broker's commit log.
    pub commit_log_offset: u64,
}

/// The text is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid message id {0:?}: expected 28 or 52 hex digits")]
pub struct InvalidMessageId(pub String);

impl fmt::Display for MessageId {
    /// Writes the hex form without allocating (delivery stamps one on every delayed message).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        let mut raw = [0u8; 26];
        let ip_len = match self.broker_addr.ip() {
            IpAddr::V4(ip) => {
                raw[..4].copy_from_slice(&ip.octets());
                4
            }
            IpAddr::V6(ip) => {
                raw[..16].copy_from_slice(&ip.octets());
                16
            }
        };
        raw[ip_len..ip_len + 2].copy_from_slice(&self.broker_addr.port().to_be_bytes());
        raw[ip_len + 2..ip_len + 10].copy_from_slice(&self.commit_log_offset.to_be_bytes());
        let raw = &raw[..ip_len + 10];
        let mut text = [0u8; 52];
        for (i, byte) in raw.iter().enumerate() {
            text[2 * i] = DIGITS[usize::from(byte >> 4)];
            text[2 * i + 1] = DIGITS[usize::from(byte & 0xF)];
        }
        f.write_str(std::str::from_utf8(&text[..2 * raw.len()]).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidMessageId(s.to_owned());
        let bytes = hex::decode(s).map_err(|_| bad())?;
        let ip_len = match bytes.len() {
            14 => 4,
            26 => 16,
            _ => return Err(bad()),
        };
        let ip = if ip_len == 4 {
            let octets: [u8; 4] = bytes[..4].try_into().map_err(|_| bad())?;
            IpAddr::V4(Ipv4Addr::from(octets))
        } else {
            let octets: [u8; 16] = bytes[..16].try_into().map_err(|_| bad())?;
            IpAddr::V6(Ipv6Addr::from(octets))
        };
        let port = u16::from_be_bytes([bytes[ip_len], bytes[ip_len + 1]]);
        let offset: [u8; 8] = bytes[ip_len + 2..].try_into().map_err(|_| bad())?;
        Ok(MessageId {
            broker_addr: SocketAddr::new(ip, port),
            commit_log_offset: u64::from_be_bytes(offset),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip_v4(ip in any::<[u8; 4]>(), port in any::<u16>(), offset in any::<u64>()) {
            let id = MessageId { broker_addr: SocketAddr::new(IpAddr::V4(ip.into()), port), commit_log_offset: offset };
            let text = id.to_string();
            prop_assert_eq!(text.len(), 28);
            prop_assert_eq!(text.parse::<MessageId>().unwrap(), id);
        }

        #[test]
        fn round_trip_v6(ip in any::<[u8; 16]>(), port in any::<u16>(), offset in any::<u64>()) {
            let id = MessageId { broker_addr: SocketAddr::new(IpAddr::V6(ip.into()), port), commit_log_offset: offset };
            prop_assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!("xyz".parse::<MessageId>().is_err());
        assert!("00".parse::<MessageId>().is_err());
    }
}
