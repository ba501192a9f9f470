//! The node's timer table: one liveness deadline per connection, ordered by time.
//!
//! Activity does not touch the table. A deadline that fires early is pushed back to the
//! connection's real deadline, so the table has exactly one entry per connection.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::connection::ConnectionId;

#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    entries: BTreeSet<(Instant, ConnectionId)>,
}

impl TimerTable {
    pub(crate) fn insert(&mut self, at: Instant, connection: ConnectionId) {
        self.entries.insert((at, connection));
    }

    pub(crate) fn remove(&mut self, at: Instant, connection: ConnectionId) {
        self.entries.remove(&(at, connection));
    }

    /// Returns the earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnectionId)> {
        match self.entries.first() {
            Some(&(at, _)) if at <= now => self.entries.pop_first(),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
