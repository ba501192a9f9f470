//! A connection's outbound queue: the driver pushes, the socket task pops.
//!
//! It allocates nothing while empty and little while short, because every idle connection
//! keeps one. The driver bounds its length and bytes, so it needs no capacity of its own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use event_listener::Event;

use crate::driver::Outbound;

/// One connection's queue, shared by the driver and the socket task.
#[derive(Default)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    ready: Event,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outbound>,
    /// Text bytes queued, counting a frame shared with other connections in full.
    bytes: usize,
}

impl Mailbox {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Appends an item and wakes the socket task.
    pub fn push(&self, item: Outbound) {
        let mut queue = self.lock();
        queue.bytes += item.text_len();
        queue.items.push_back(item);
        drop(queue);
        self.ready.notify(1);
    }

    /// Returns the number of queued items and their text bytes.
    pub fn size(&self) -> (usize, usize) {
        let queue = self.lock();
        (queue.items.len(), queue.bytes)
    }

    /// Drops every queued item, releasing a slow connection's backlog.
    pub fn clear(&self) {
        let mut queue = self.lock();
        queue.items = VecDeque::new();
        queue.bytes = 0;
    }

    /// Waits for the next item.
    pub async fn pop(&self) -> Outbound {
        loop {
            if let Some(item) = self.try_pop() {
                return item;
            }
            let listener = self.ready.listen();
            // An item pushed between the check above and `listen` would otherwise be missed.
            if let Some(item) = self.try_pop() {
                return item;
            }
            listener.await;
        }
    }

    fn try_pop(&self) -> Option<Outbound> {
        let mut queue = self.lock();
        let item = queue.items.pop_front()?;
        queue.bytes -= item.text_len();
        Some(item)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue itself intact.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Outbound {
    fn text_len(&self) -> usize {
        match self {
            Self::Text(frame) => frame.len(),
            Self::Ping | Self::Close(..) => 0,
        }
    }
}
