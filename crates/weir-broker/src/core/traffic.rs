//! Running totals of the broker's traffic — messages and bytes produced and sent to consumers —
//! kept as plain atomics so the dashboard's sampler ([`crate::protocols::http::history`]) can read them
//! each second without going through the Prometheus recorder. Bumped once per produce or pull
//! request, next to the matching `weir_*_total` counters, never per message.

use std::sync::atomic::{AtomicU64, Ordering};

/// The broker's traffic totals since start.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
}

/// A reading of [`Traffic`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrafficTotals {
    /// Messages stored by produce requests.
    pub messages_in: u64,
    /// Record bytes stored by produce requests.
    pub bytes_in: u64,
    /// Messages sent to consumers.
    pub messages_out: u64,
    /// Record bytes sent to consumers.
    pub bytes_out: u64,
}

impl Traffic {
    /// Counts a stored produce request.
    pub fn produced(&self, messages: u64, bytes: u64) {
        self.messages_in.fetch_add(messages, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts records sent to a consumer.
    pub fn consumed(&self, messages: u64, bytes: u64) {
        self.messages_out.fetch_add(messages, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The totals now.
    pub fn totals(&self) -> TrafficTotals {
        TrafficTotals {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up() {
        let traffic = Traffic::default();
        traffic.produced(3, 300);
        traffic.produced(1, 50);
        traffic.consumed(2, 120);
        assert_eq!(
            traffic.totals(),
            TrafficTotals {
                messages_in: 4,
                bytes_in: 350,
                messages_out: 2,
                bytes_out: 120
            }
        );
    }
}
