//! Bounds on the bytes a broker holds for its clients: requests read but not yet answered, and
//! answers made but not yet written to the socket.
//!
//! Two byte budgets, both counted in the same [`Charge`]s:
//!
//! * one per **broker** (`max_in_flight_bytes`), shared by every connection, and
//! * one per **connection** (`max_connection_in_flight_bytes`), so one client — slow, stuck or
//!   hostile — can hold at most its own share.
//!
//! Who pays what, and what happens when a budget is spent:
//!
//! | what                        | charged                     | when the budget is spent        |
//! |-----------------------------|-----------------------------|---------------------------------|
//! | a produce request           | its frame, on arrival       | answered `busy` at once          |
//! | a pull answer with records  | its size, once made         | answered `busy` instead (a pull  |
//! |                             |                             | only reads: the client pulls again) |
//! | any other request           | its frame, on arrival       | the reader waits (TCP pushes back) |
//! | any other answer            | its size, once made         | the request waits                |
//!
//! A request's charge is given back when its handler is done (the records are in the log or
//! dropped), an answer's once the writer has written it. A frame larger than the connection's
//! budget is charged at the budget, so a legal frame always fits.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budgets bigger than this are clamped (the semaphore's permit count is a `u32` per
/// acquisition and at most `usize::MAX >> 3` in total).
const MAX_BUDGET: u64 = 1 << 40;

/// The broker-wide budget; cloned into each connection's [`ConnectionBudget`].
#[derive(Debug, Clone)]
pub(crate) struct BrokerBudget {
    bytes: Arc<Semaphore>,
    limit: u64,
    per_connection: u64,
}

impl BrokerBudget {
    /// A broker budget of `limit` bytes, and connection budgets of `per_connection` bytes.
    pub(crate) fn new(limit: u64, per_connection: u64) -> BrokerBudget {
        let limit = limit.clamp(1, MAX_BUDGET);
        let per_connection = per_connection.clamp(1, limit);
        BrokerBudget {
            bytes: Arc::new(Semaphore::new(limit as usize)),
            limit,
            per_connection,
        }
    }

    /// A fresh budget for one new connection.
    pub(crate) fn connection(&self) -> ConnectionBudget {
        ConnectionBudget {
            broker: self.clone(),
            bytes: Arc::new(Semaphore::new(self.per_connection as usize)),
        }
    }

    /// Bytes charged now, over every connection.
    #[cfg(test)]
    fn in_use(&self) -> u64 {
        self.limit
            .saturating_sub(self.bytes.available_permits() as u64)
    }
}

/// One connection's budget, backed by the broker's.
#[derive(Debug)]
pub(crate) struct ConnectionBudget {
    broker: BrokerBudget,
    bytes: Arc<Semaphore>,
}

/// Bytes held against both budgets; given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    _connection: Option<OwnedSemaphorePermit>,
    _broker: Option<OwnedSemaphorePermit>,
}

/// Which budget refused a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spent {
    /// This connection's.
    Connection(u64),
    /// The broker's.
    Broker(u64),
}

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spent::Connection(limit) => write!(
                f,
                "this connection has {limit} bytes in flight (max_connection_in_flight_bytes)"
            ),
            Spent::Broker(limit) => write!(
                f,
                "the broker has {limit} bytes in flight (max_in_flight_bytes)"
            ),
        }
    }
}

impl ConnectionBudget {
    /// What `bytes` costs: at most the connection's budget, so that any frame fits; zero-byte
    /// charges hold nothing.
    fn cost(&self, bytes: usize) -> u32 {
        let bytes = (bytes as u64).min(self.broker.per_connection);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Charges `bytes` now, or says which budget is spent.
    pub(crate) fn try_charge(&self, bytes: usize) -> Result<Charge, Spent> {
        let cost = self.cost(bytes);
        if cost == 0 {
            return Ok(Charge::none());
        }
        let connection = self
            .bytes
            .clone()
            .try_acquire_many_owned(cost)
            .map_err(|_| Spent::Connection(self.broker.per_connection))?;
        let broker = self
            .broker
            .bytes
            .clone()
            .try_acquire_many_owned(cost)
            .map_err(|_| Spent::Broker(self.broker.limit))?;
        Ok(Charge {
            _connection: Some(connection),
            _broker: Some(broker),
        })
    }

    /// Charges `bytes`, waiting until both budgets have room.
    pub(crate) async fn charge(&self, bytes: usize) -> Charge {
        let cost = self.cost(bytes);
        if cost == 0 {
            return Charge::none();
        }
        // The semaphores are never closed, so acquiring only fails if they were.
        let connection = self.bytes.clone().acquire_many_owned(cost).await.ok();
        let broker = self
            .broker
            .bytes
            .clone()
            .acquire_many_owned(cost)
            .await
            .ok();
        Charge {
            _connection: connection,
            _broker: broker,
        }
    }

    /// Waits until the connection has at least `bytes` of room (without charging them).
    pub(crate) async fn room_for(&self, bytes: usize) {
        let cost = self.cost(bytes);
        if cost > 0 {
            drop(self.bytes.acquire_many(cost).await);
        }
    }
}

impl Charge {
    /// A charge of nothing.
    pub(crate) fn none() -> Charge {
        Charge {
            _connection: None,
            _broker: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_spends_only_its_share_and_gets_it_back() {
        let broker = BrokerBudget::new(1000, 400);
        let a = broker.connection();
        let b = broker.connection();
        let held = a.try_charge(300).unwrap();
        assert_eq!(a.try_charge(200).unwrap_err(), Spent::Connection(400));
        // Another connection is unaffected by a's spent share.
        let other = b.try_charge(400).unwrap();
        assert_eq!(broker.in_use(), 700);
        let c = broker.connection();
        assert_eq!(c.try_charge(301).unwrap_err(), Spent::Broker(1000));
        drop((held, other));
        assert_eq!(broker.in_use(), 0);
        // A frame over the connection's budget is charged at the budget, so it still fits.
        let big = a.try_charge(10_000).unwrap();
        assert_eq!(broker.in_use(), 400);
        drop(big);
        assert!(a.try_charge(0).is_ok());
    }

    #[tokio::test]
    async fn a_waiting_charge_goes_ahead_once_room_is_given_back() {
        let broker = BrokerBudget::new(100, 100);
        let conn = broker.connection();
        let held = conn.charge(80).await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), conn.charge(50));
        assert!(waiting.await.is_err(), "no room yet");
        drop(held);
        let _now = conn.charge(50).await;
        assert_eq!(broker.in_use(), 50);
    }
}
