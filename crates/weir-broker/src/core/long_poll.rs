//! Long polling: pulls that found nothing wait here until the store dispatches a message to
//! their queue.
//!
//! One [`Notify`] per (topic, queue) that has ever had a waiter. The store's dispatch listener
//! calls [`LongPoll::wake`] with the queue's new maximum offset; every waiter of that queue is
//! woken and reads again. A waiter registers *before* its final read (see
//! [`LongPoll::waiter`]), so a message dispatched between that read and the wait is not missed.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The waiters of every queue.
#[derive(Debug, Default)]
pub struct LongPoll {
    queues: Mutex<HashMap<String, HashMap<u32, Arc<Notify>>>>,
}

impl LongPoll {
    /// An empty registry.
    pub fn new() -> LongPoll {
        LongPoll::default()
    }

    /// The notifier of a queue. Create its `notified()` future and `enable()` it before reading
    /// the queue, then await it.
    pub fn waiter(&self, topic: &str, queue_id: u32) -> Arc<Notify> {
        let mut queues = self.queues.lock();
        if let Some(notify) = queues.get(topic).and_then(|q| q.get(&queue_id)) {
            return notify.clone();
        }
        let notify = Arc::new(Notify::new());
        queues
            .entry(topic.to_owned())
            .or_default()
            .insert(queue_id, notify.clone());
        notify
    }

    /// Wakes every pull waiting on a queue (called by the store's dispatcher: cheap, no I/O).
    pub fn wake(&self, topic: &str, queue_id: u32) {
        let queues = self.queues.lock();
        if let Some(notify) = queues.get(topic).and_then(|q| q.get(&queue_id)) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter of every queue (shutdown).
    pub fn wake_all(&self) {
        for queue in self.queues.lock().values() {
            for notify in queue.values() {
                notify.notify_waiters();
            }
        }
    }

    /// Forgets a deleted topic's queues, waking their waiters.
    pub fn remove_topic(&self, topic: &str) {
        if let Some(queues) = self.queues.lock().remove(topic) {
            for notify in queues.values() {
                notify.notify_waiters();
            }
        }
    }
}
