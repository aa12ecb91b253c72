//! Bounds on the bytes a broker holds for its clients: requests read but not yet answered, and
//! answers made but not yet written to the socket.
//!
//! Every charge is made against two budgets at once:
//!
//! * the **connection's** share of that pool (`max_connection_in_flight_bytes` of requests, and
//!   as much again of answers), so one client — slow, stuck or hostile — can hold at most its
//!   own share, and
//! * one of the **broker's** two pools, shared by every connection: requests
//!   (`max_in_flight_bytes`: what the write path may have queued, so it also bounds how long
//!   an acknowledgement can take) and answers (`max_answer_bytes`). Apart, a flood of
//!   produce requests cannot keep consumers' answers from being made, nor a crowd of
//!   consumers that do not read their answers keep producers out.
//!
//! Who pays what, and what happens when a budget is spent:
//!
//! ```text
//! what                         charged               when a budget is spent
//! a produce request            its frame, on arrival answered `busy` at once
//! any other request            its frame, on arrival the reader waits
//! a pull answer with records   its size, once made   answered `busy` instead (a pull only
//!                                                    reads: the client pulls again)
//! any other answer             its size, once made   the request waits
//! ```
//!
//! A request's charge is given back when its handler is done (the records are in the log or
//! dropped), an answer's once the writer has written it. A frame larger than the connection's
//! budget is charged at the budget, so a legal frame always fits.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budgets bigger than this are clamped (the semaphore's permit count is a `u32` per
/// acquisition and at most `usize::MAX >> 3` in total).
const MAX_BUDGET: u64 = 1 << 40;

/// The broker-wide pools; cloned into each connection's [`ConnectionBudget`].
#[derive(Debug, Clone)]
pub(crate) struct BrokerBudget {
    requests: Arc<Semaphore>,
    answers: Arc<Semaphore>,
    limits: Limits,
}

/// The configured sizes, for error messages.
#[derive(Debug, Clone, Copy)]
struct Limits {
    requests: u64,
    answers: u64,
    per_connection: u64,
}

/// Which broker-wide pool a charge draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    /// Requests read and not yet handled.
    Requests,
    /// Answers made and not yet written.
    Answers,
}

impl BrokerBudget {
    /// Pools of `requests` and `answers` bytes, and connection budgets of `per_connection`.
    pub(crate) fn new(requests: u64, answers: u64, per_connection: u64) -> BrokerBudget {
        let requests = requests.clamp(1, MAX_BUDGET);
        let answers = answers.clamp(1, MAX_BUDGET);
        let per_connection = per_connection.clamp(1, requests.min(answers));
        BrokerBudget {
            requests: Arc::new(Semaphore::new(requests as usize)),
            answers: Arc::new(Semaphore::new(answers as usize)),
            limits: Limits {
                requests,
                answers,
                per_connection,
            },
        }
    }

    /// A fresh budget for one new connection.
    pub(crate) fn connection(&self) -> ConnectionBudget {
        let share = || Arc::new(Semaphore::new(self.limits.per_connection as usize));
        ConnectionBudget {
            broker: self.clone(),
            requests: share(),
            answers: share(),
        }
    }

    fn pool(&self, pool: Pool) -> &Arc<Semaphore> {
        match pool {
            Pool::Requests => &self.requests,
            Pool::Answers => &self.answers,
        }
    }

    /// Bytes charged now to a pool, over every connection.
    #[cfg(test)]
    fn in_use(&self, pool: Pool) -> u64 {
        let limit = match pool {
            Pool::Requests => self.limits.requests,
            Pool::Answers => self.limits.answers,
        };
        limit.saturating_sub(self.pool(pool).available_permits() as u64)
    }
}

/// One connection's shares of the broker's pools. Apart, so that a producer whose requests
/// fill its share is answered `busy` (and keeps being read) while a consumer that does not
/// read its answers stops being read.
#[derive(Debug)]
pub(crate) struct ConnectionBudget {
    broker: BrokerBudget,
    requests: Arc<Semaphore>,
    answers: Arc<Semaphore>,
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
    /// This connection's (its size).
    Connection(u64),
    /// The broker's requests pool (its size).
    Requests(u64),
    /// The broker's answers pool (its size).
    Answers(u64),
}

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spent::Connection(limit) => write!(
                f,
                "this connection has {limit} bytes in flight (max_connection_in_flight_bytes)"
            ),
            Spent::Requests(limit) => write!(
                f,
                "the broker holds {limit} bytes of requests (max_in_flight_bytes)"
            ),
            Spent::Answers(limit) => write!(
                f,
                "the broker holds {limit} bytes of unsent answers (max_answer_bytes)"
            ),
        }
    }
}

impl ConnectionBudget {
    /// What `bytes` costs: at most the connection's budget, so that any frame fits; zero-byte
    /// charges hold nothing.
    fn cost(&self, bytes: usize) -> u32 {
        let bytes = (bytes as u64).min(self.broker.limits.per_connection);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Charges `bytes` to this connection and to `pool` now, or says which budget is spent.
    pub(crate) fn try_charge(&self, pool: Pool, bytes: usize) -> Result<Charge, Spent> {
        let cost = self.cost(bytes);
        if cost == 0 {
            return Ok(Charge::none());
        }
        let connection = self
            .share(pool)
            .clone()
            .try_acquire_many_owned(cost)
            .map_err(|_| Spent::Connection(self.broker.limits.per_connection))?;
        let broker = self
            .broker
            .pool(pool)
            .clone()
            .try_acquire_many_owned(cost)
            .map_err(|_| match pool {
                Pool::Requests => Spent::Requests(self.broker.limits.requests),
                Pool::Answers => Spent::Answers(self.broker.limits.answers),
            })?;
        Ok(Charge {
            _connection: Some(connection),
            _broker: Some(broker),
        })
    }

    /// Charges `bytes` to this connection and to `pool`, waiting until both have room.
    pub(crate) async fn charge(&self, pool: Pool, bytes: usize) -> Charge {
        let cost = self.cost(bytes);
        if cost == 0 {
            return Charge::none();
        }
        // The semaphores are never closed, so acquiring only fails if they were.
        let connection = self.share(pool).clone().acquire_many_owned(cost).await.ok();
        let broker = self
            .broker
            .pool(pool)
            .clone()
            .acquire_many_owned(cost)
            .await
            .ok();
        Charge {
            _connection: connection,
            _broker: broker,
        }
    }

    /// Waits until the connection's answers have at least `bytes` of room (without charging
    /// them): the peer is taking its answers.
    pub(crate) async fn answer_room_for(&self, bytes: usize) {
        let cost = self.cost(bytes);
        if cost > 0 {
            drop(self.answers.acquire_many(cost).await);
        }
    }

    fn share(&self, pool: Pool) -> &Arc<Semaphore> {
        match pool {
            Pool::Requests => &self.requests,
            Pool::Answers => &self.answers,
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
        let broker = BrokerBudget::new(1000, 500, 400);
        let a = broker.connection();
        let b = broker.connection();
        let held = a.try_charge(Pool::Requests, 300).unwrap();
        assert_eq!(
            a.try_charge(Pool::Requests, 200).unwrap_err(),
            Spent::Connection(400)
        );
        // Another connection is unaffected by a's spent share.
        let other = b.try_charge(Pool::Requests, 400).unwrap();
        assert_eq!(broker.in_use(Pool::Requests), 700);
        let c = broker.connection();
        assert_eq!(
            c.try_charge(Pool::Requests, 301).unwrap_err(),
            Spent::Requests(1000)
        );
        // Answers draw on their own pool.
        let answer = c.try_charge(Pool::Answers, 400).unwrap();
        let d = broker.connection();
        assert_eq!(
            d.try_charge(Pool::Answers, 101).unwrap_err(),
            Spent::Answers(500)
        );
        drop((held, other, answer));
        assert_eq!(broker.in_use(Pool::Requests), 0);
        assert_eq!(broker.in_use(Pool::Answers), 0);
        // A frame over the connection's budget is charged at the budget, so it still fits.
        let big = a.try_charge(Pool::Requests, 10_000).unwrap();
        assert_eq!(broker.in_use(Pool::Requests), 400);
        drop(big);
        assert!(a.try_charge(Pool::Requests, 0).is_ok());
    }

    #[tokio::test]
    async fn a_waiting_charge_goes_ahead_once_room_is_given_back() {
        let broker = BrokerBudget::new(100, 100, 100);
        let conn = broker.connection();
        let held = conn.charge(Pool::Answers, 80).await;
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            conn.charge(Pool::Answers, 50),
        );
        assert!(waiting.await.is_err(), "no room yet");
        drop(held);
        let _now = conn.charge(Pool::Answers, 50).await;
        assert_eq!(broker.in_use(Pool::Answers), 50);
    }
}
