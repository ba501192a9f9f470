//! A connection's outbound queue: the driver pushes, the socket task pops.
//!
//! It allocates nothing while empty and little while short, because every idle connection
//! keeps one. The driver bounds its length, so it needs no capacity of its own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use event_listener::Event;

use crate::driver::Outbound;

/// One connection's queue, shared by the driver and the socket task.
#[derive(Default)]
pub struct Mailbox {
    queue: Mutex<VecDeque<Outbound>>,
    ready: Event,
}

impl Mailbox {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Appends an item and wakes the socket task.
    pub fn push(&self, item: Outbound) {
        self.lock().push_back(item);
        self.ready.notify(1);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drops every queued item, releasing a slow connection's backlog.
    pub fn clear(&self) {
        let mut queue = self.lock();
        queue.clear();
        queue.shrink_to_fit();
    }

    /// Waits for the next item.
    pub async fn pop(&self) -> Outbound {
        loop {
            if let Some(item) = self.lock().pop_front() {
                return item;
            }
            let listener = self.ready.listen();
            // An item pushed between the check above and `listen` would otherwise be missed.
            if let Some(item) = self.lock().pop_front() {
                return item;
            }
            listener.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outbound>> {
        // A panic while holding the lock leaves the queue itself intact.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
