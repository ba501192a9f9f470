//! The driver task: the single owner of the [`Node`], fed by a bounded channel of events.
//!
//! Socket and HTTP tasks send [`Event`]s; the driver feeds them to the node, routes the
//! node's outputs into per-connection mailboxes and arms one timer for `poll_timeout`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_channel::{Receiver, Sender};
use async_tungstenite::tungstenite::Utf8Bytes;
use crier_core::{
    ApiRequest, ApiResponse, ConnectError, ConnectRequest, ConnectionId, Node, Output,
};
use futures_lite::future;
use log::{debug, info, warn};
use smol::Timer;

use crate::mailbox::Mailbox;

/// Frames a connection may have queued before it counts as too slow and is closed.
pub const MAILBOX_CAPACITY: usize = 1024;

/// Bytes of frames a connection may have queued before it counts as too slow. Frames shared
/// by a broadcast count in full, so this is an upper bound on the memory one client holds.
pub const MAILBOX_MAX_BYTES: usize = 1024 * 1024;

/// Capacity of the channel into the driver; senders wait while it is full.
pub const EVENT_CAPACITY: usize = 4096;

/// The next action of a socket task, queued by the driver.
#[derive(Debug)]
pub enum Outbound {
    Text(Arc<str>),
    Ping,
    Close(u16, &'static str),
}

/// An HTTP API request with owned parts, so it can cross tasks.
#[derive(Debug)]
pub struct OwnedApiRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

/// An input for the node.
pub enum Event {
    Open {
        request: ConnectRequest,
        reply: Sender<Result<(ConnectionId, Arc<Mailbox>), ConnectError>>,
    },
    Text(ConnectionId, Utf8Bytes),
    Binary(ConnectionId, usize),
    Activity(ConnectionId),
    Oversized(ConnectionId),
    Disconnect(ConnectionId),
    Api {
        request: OwnedApiRequest,
        reply: Sender<ApiResponse>,
    },
    Shutdown {
        done: Sender<()>,
    },
    /// A message from another node of the cluster.
    Cluster(String),
    /// The cluster subscription is (again) in place.
    ClusterConnected,
}

/// The node and where its outputs go.
struct Driver {
    node: Node,
    mailboxes: HashMap<ConnectionId, Arc<Mailbox>>,
    /// Queue of cluster messages to publish; `None` in single-node mode.
    publish: Option<Sender<Arc<str>>>,
    dropped_publishes: u64,
    /// Connections rejected with 4100 because the node was full.
    over_capacity: u64,
}

/// Runs the node until every event sender is dropped. `publish` receives the node's cluster
/// messages in cluster mode.
pub async fn run(node: Node, events: Receiver<Event>, publish: Option<Sender<Arc<str>>>) {
    let mut driver = Driver {
        node,
        mailboxes: HashMap::new(),
        publish,
        dropped_publishes: 0,
        over_capacity: 0,
    };
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    loop {
        let next = future::or(async { Some(events.recv().await) }, async {
            (&mut timer).await;
            None
        });
        match next.await {
            Some(Ok(event)) => driver.handle_event(event),
            Some(Err(_)) => break,
            None => {
                armed = None;
                driver.node.handle_timeout(Instant::now());
            }
        }
        driver.route_outputs();

        // Re-arm the timer only when the deadline moved.
        let deadline = driver.node.poll_timeout();
        if deadline != armed {
            match deadline {
                Some(at) => timer.set_at(at),
                None => timer = Timer::never(),
            }
            armed = deadline;
        }
    }
    debug!("driver stopped");
}

impl Driver {
    fn handle_event(&mut self, event: Event) {
        let now = Instant::now();
        let node = &mut self.node;
        match event {
            Event::Open { request, reply } => {
                let result = node.open(now, &request).map(|id| {
                    let mailbox = Mailbox::new();
                    self.mailboxes.insert(id, mailbox.clone());
                    (id, mailbox)
                });
                match &result {
                    Err(ConnectError::OverCapacity) => {
                        self.over_capacity += 1;
                        if self.over_capacity.is_power_of_two() {
                            warn!(
                                "connection limit reached, rejected {} connections so far",
                                self.over_capacity
                            );
                        }
                    }
                    Err(error) => debug!("connection rejected: {error}"),
                    Ok(_) => {}
                }
                // A failed reply means the socket task is gone; its disconnect follows.
                let _ = reply.try_send(result);
            }
            Event::Text(id, text) => node.handle_text(now, id, &text),
            Event::Binary(id, len) => node.handle_binary(now, id, len),
            Event::Activity(id) => node.handle_activity(now, id),
            Event::Oversized(id) => node.handle_oversized_frame(now, id),
            Event::Disconnect(id) => {
                self.mailboxes.remove(&id);
                node.handle_disconnect(now, id);
            }
            Event::Api { request, reply } => {
                let response = node.handle_api(now, unix_secs(), &request.as_api_request());
                let _ = reply.try_send(response);
            }
            Event::Cluster(payload) => node.handle_cluster(now, &payload),
            Event::ClusterConnected => node.handle_cluster_connected(now),
            Event::Shutdown { done } => {
                info!("closing {} connections with 4200", node.stats().connections);
                node.shutdown(now);
                self.route_outputs();
                let _ = done.try_send(());
            }
        }
    }

    /// Delivers every queued output to its connection's mailbox or to the cluster.
    fn route_outputs(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Send { connection, frame } => {
                    let Some(mailbox) = self.mailboxes.get(&connection) else {
                        continue;
                    };
                    let (frames, bytes) = mailbox.size();
                    if frames >= MAILBOX_CAPACITY || bytes + frame.len() > MAILBOX_MAX_BYTES {
                        // Too slow: drop its backlog so the memory is released now.
                        mailbox.clear();
                        self.node.handle_backpressure(Instant::now(), connection);
                        continue;
                    }
                    mailbox.push(Outbound::Text(frame));
                }
                Output::Ping { connection } => {
                    if let Some(mailbox) = self.mailboxes.get(&connection) {
                        mailbox.push(Outbound::Ping);
                    }
                }
                Output::Close {
                    connection,
                    code,
                    reason,
                } => {
                    if let Some(mailbox) = self.mailboxes.remove(&connection) {
                        mailbox.push(Outbound::Close(code, reason));
                    }
                }
                Output::Publish { payload } => self.publish(payload),
            }
        }
    }

    fn publish(&mut self, payload: Arc<str>) {
        let Some(publish) = &self.publish else {
            return;
        };
        if publish.try_send(payload).is_err() {
            self.dropped_publishes += 1;
            if self.dropped_publishes.is_power_of_two() {
                warn!(
                    "cluster messages dropped because redis is slow or away: {} so far",
                    self.dropped_publishes
                );
            }
        }
    }
}

impl OwnedApiRequest {
    fn as_api_request(&self) -> ApiRequest<'_> {
        ApiRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            body: &self.body,
        }
    }
}

fn unix_secs() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => elapsed.as_secs(),
        Err(_) => {
            warn!("system clock is before 1970; API timestamps will be rejected");
            0
        }
    }
}
