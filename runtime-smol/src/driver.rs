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

/// Frames a connection may have queued before it counts as too slow and is closed.
pub const MAILBOX_CAPACITY: usize = 1024;

/// Capacity of the channel into the driver; senders wait while it is full.
pub const EVENT_CAPACITY: usize = 4096;

/// What a socket task is told to do next.
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
        reply: Sender<Result<(ConnectionId, Receiver<Outbound>), ConnectError>>,
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
}

/// The sending half of a connection's mailbox; the driver also keeps a receiver, so it can
/// drop the queued frames of a connection it closes for being too slow.
struct Mailbox {
    sender: Sender<Outbound>,
    receiver: Receiver<Outbound>,
}

/// Runs the node until every event sender is dropped.
pub async fn run(mut node: Node, events: Receiver<Event>) {
    let mut mailboxes: HashMap<ConnectionId, Mailbox> = HashMap::new();
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    loop {
        let next = future::or(async { Some(events.recv().await) }, async {
            (&mut timer).await;
            None
        });
        match next.await {
            Some(Ok(event)) => handle_event(&mut node, &mut mailboxes, event),
            Some(Err(_)) => break,
            None => {
                armed = None;
                node.handle_timeout(Instant::now());
            }
        }
        route_outputs(&mut node, &mut mailboxes);

        let deadline = node.poll_timeout();
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

fn handle_event(node: &mut Node, mailboxes: &mut HashMap<ConnectionId, Mailbox>, event: Event) {
    let now = Instant::now();
    match event {
        Event::Open { request, reply } => {
            let result = node.open(now, &request).map(|id| {
                let (sender, receiver) = async_channel::unbounded();
                let mailbox = Mailbox {
                    sender,
                    receiver: receiver.clone(),
                };
                mailboxes.insert(id, mailbox);
                (id, receiver)
            });
            if let Err(error) = &result {
                debug!("connection rejected: {error}");
            }
            // A failed reply means the socket task is gone; its disconnect follows.
            let _ = reply.try_send(result);
        }
        Event::Text(id, text) => node.handle_text(now, id, &text),
        Event::Binary(id, len) => node.handle_binary(now, id, len),
        Event::Activity(id) => node.handle_activity(now, id),
        Event::Oversized(id) => node.handle_oversized_frame(now, id),
        Event::Disconnect(id) => {
            mailboxes.remove(&id);
            node.handle_disconnect(now, id);
        }
        Event::Api { request, reply } => {
            let response = node.handle_api(now, unix_secs(), &request.as_api_request());
            let _ = reply.try_send(response);
        }
        Event::Shutdown { done } => {
            info!("closing {} connections with 4200", node.stats().connections);
            node.shutdown(now);
            route_outputs(node, mailboxes);
            let _ = done.try_send(());
        }
    }
}

/// Delivers every queued output to its connection's mailbox.
fn route_outputs(node: &mut Node, mailboxes: &mut HashMap<ConnectionId, Mailbox>) {
    while let Some(output) = node.poll_output() {
        match output {
            Output::Send { connection, frame } => {
                let Some(mailbox) = mailboxes.get(&connection) else {
                    continue;
                };
                if mailbox.sender.len() >= MAILBOX_CAPACITY {
                    // Too slow: drop its backlog so the memory is released now.
                    while mailbox.receiver.try_recv().is_ok() {}
                    node.handle_backpressure(Instant::now(), connection);
                    continue;
                }
                let _ = mailbox.sender.try_send(Outbound::Text(frame));
            }
            Output::Ping { connection } => {
                if let Some(mailbox) = mailboxes.get(&connection) {
                    let _ = mailbox.sender.try_send(Outbound::Ping);
                }
            }
            Output::Close {
                connection,
                code,
                reason,
            } => {
                if let Some(mailbox) = mailboxes.remove(&connection) {
                    let _ = mailbox.sender.try_send(Outbound::Close(code, reason));
                }
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
