//! A reference model of one node: which connection holds which subscriptions, presence
//! members, liveness, and the outputs each input must produce.
//!
//! Presence members are not stored: they are computed from the subscriptions, so the rule
//! "a member is a user with at least one subscribed socket" is true in the model by definition.
//! Frames are compared as normalized JSON values (see `harness::normalize`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crier_core::ConnectionId;
use serde_json::{Map, Value, json};

use crate::ops::SLOTS;

/// Activity timeout the node runs with (the default).
pub const ACTIVITY_TIMEOUT: Duration = Duration::from_secs(120);
/// Pong timeout the node runs with (the default).
pub const PONG_TIMEOUT: Duration = Duration::from_secs(30);
/// Lowered limits, so that random cases reach them.
pub const MAX_CONNECTIONS: usize = 5;
pub const MAX_CHANNELS_PER_CONNECTION: usize = 3;
pub const MAX_PRESENCE_MEMBERS: usize = 2;
pub const MAX_CLIENT_EVENTS_PER_SECOND: u32 = 3;

/// One output, with frames normalized for comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    Frame(Value),
    Ping,
    Close(u16),
}

/// Outputs in the order they are queued. Only the order per connection and channel is
/// compared.
pub type Expected = Vec<(ConnectionId, Out)>;

/// The channel kinds the model distinguishes, by anchored prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Public,
    Private,
    Encrypted,
    Presence,
}

pub fn kind(channel: &str) -> Kind {
    if channel.starts_with("private-encrypted-") {
        Kind::Encrypted
    } else if channel.starts_with("private-") {
        Kind::Private
    } else if channel.starts_with("presence-") {
        Kind::Presence
    } else {
        Kind::Public
    }
}

/// A presence member as the subscribe frame presents it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub user_id: String,
    pub user_info: Option<Value>,
}

/// What the node must decide about a subscription before looking at its own state.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Accept(Option<Member>),
    Reject {
        error_type: &'static str,
        status: u16,
    },
}

/// What happened to a client event that passed every check but the rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateOutcome {
    Accepted,
    Limited,
}

#[derive(Debug)]
pub struct Conn {
    pub id: ConnectionId,
    pub socket_id: String,
    /// Subscribed channels, with the member's user id on presence channels.
    pub subscriptions: BTreeMap<String, Option<String>>,
    last_activity: Duration,
    probe_sent: Option<Duration>,
    /// When each relayed client event was accepted, oldest first.
    accepted_events: VecDeque<Duration>,
}

impl Conn {
    fn liveness_deadline(&self) -> Duration {
        match self.probe_sent {
            Some(sent) => sent + PONG_TIMEOUT,
            None => self.last_activity + ACTIVITY_TIMEOUT,
        }
    }
}

#[derive(Debug)]
pub enum Slot {
    Empty,
    Open(Conn),
    Closed { id: ConnectionId, socket_id: String },
}

#[derive(Debug)]
pub struct Model {
    /// Time since the case started.
    pub now: Duration,
    pub slots: Vec<Slot>,
    pub shutting_down: bool,
    /// The `user_info` each presence member joined with, by (channel, user id).
    infos: BTreeMap<(String, String), Option<Value>>,
}

pub fn error_frame(code: Option<u16>) -> Out {
    Out::Frame(json!({"event": "pusher:error", "data": {"code": code}}))
}

pub fn pong_frame() -> Out {
    Out::Frame(json!({"event": "pusher:pong", "data": {}}))
}

fn member_removed(channel: &str, user_id: &str) -> Value {
    json!({
        "event": "pusher_internal:member_removed",
        "channel": channel,
        "data": {"user_id": user_id},
    })
}

impl Model {
    pub fn new() -> Self {
        Self {
            now: Duration::ZERO,
            slots: (0..SLOTS).map(|_| Slot::Empty).collect(),
            shutting_down: false,
            infos: BTreeMap::new(),
        }
    }

    pub fn conn(&self, slot: usize) -> Option<&Conn> {
        match &self.slots[slot] {
            Slot::Open(conn) => Some(conn),
            _ => None,
        }
    }

    fn conn_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        match &mut self.slots[slot] {
            Slot::Open(conn) => Some(conn),
            _ => None,
        }
    }

    /// Open connections in the order they were opened, which is `ConnectionId` order.
    pub fn open_conns(&self) -> Vec<&Conn> {
        let mut conns: Vec<&Conn> = self.slots.iter().filter_map(open).collect();
        conns.sort_by_key(|conn| conn.id);
        conns
    }

    fn open_slots_in_order(&self) -> Vec<usize> {
        let mut slots: Vec<usize> = (0..SLOTS).filter(|&s| self.conn(s).is_some()).collect();
        slots.sort_by_key(|&s| self.conn(s).map(|conn| conn.id));
        slots
    }

    /// Returns the socket id of the slot's open connection, else of its closed one.
    pub fn any_socket_id(&self, slot: usize) -> Option<&str> {
        match &self.slots[slot] {
            Slot::Empty => None,
            Slot::Open(conn) => Some(&conn.socket_id),
            Slot::Closed { socket_id, .. } => Some(socket_id),
        }
    }

    /// Subscribers of `channel` in `ConnectionId` order.
    pub fn subscribers(&self, channel: &str) -> Vec<ConnectionId> {
        let conns = self.open_conns().into_iter();
        conns
            .filter(|conn| conn.subscriptions.contains_key(channel))
            .map(|conn| conn.id)
            .collect()
    }

    /// Distinct user ids with at least one socket subscribed to `channel`.
    pub fn members(&self, channel: &str) -> BTreeSet<String> {
        self.open_conns()
            .into_iter()
            .filter_map(|conn| conn.subscriptions.get(channel).cloned().flatten())
            .collect()
    }

    /// Channels with at least one subscriber, sorted.
    pub fn occupied_channels(&self) -> BTreeSet<String> {
        let conns = self.open_conns().into_iter();
        conns
            .flat_map(|conn| conn.subscriptions.keys().cloned())
            .collect()
    }

    /// Returns the earliest liveness deadline of an open connection.
    pub fn next_deadline(&self) -> Option<Duration> {
        let conns = self.open_conns().into_iter();
        conns.map(Conn::liveness_deadline).min()
    }

    /// Returns the close code `Node::open` must fail with, or `None` when it must succeed.
    pub fn connect_error(&self, request_error: Option<u16>) -> Option<u16> {
        if self.shutting_down {
            return Some(4200);
        }
        if request_error.is_some() {
            return request_error;
        }
        if self.open_conns().len() >= MAX_CONNECTIONS {
            return Some(4100);
        }
        None
    }

    pub fn opened(&mut self, slot: usize, id: ConnectionId, socket_id: String) -> Expected {
        let established = json!({
            "event": "pusher:connection_established",
            "data": {"socket_id": socket_id, "activity_timeout": ACTIVITY_TIMEOUT.as_secs()},
        });
        self.slots[slot] = Slot::Open(Conn {
            id,
            socket_id,
            subscriptions: BTreeMap::new(),
            last_activity: self.now,
            probe_sent: None,
            accepted_events: VecDeque::new(),
        });
        vec![(id, Out::Frame(established))]
    }

    /// Records inbound activity on the slot's connection.
    pub fn touch(&mut self, slot: usize) {
        let now = self.now;
        if let Some(conn) = self.conn_mut(slot) {
            conn.last_activity = now;
            conn.probe_sent = None;
        }
    }

    pub fn subscribe(&mut self, slot: usize, channel: &str, verdict: Verdict) -> Expected {
        let Some(conn) = self.conn(slot) else {
            return Vec::new();
        };
        let id = conn.id;
        let member = match verdict {
            Verdict::Reject { error_type, status } => {
                return subscription_rejected(id, channel, error_type, status);
            }
            Verdict::Accept(member) => member,
        };
        if conn.subscriptions.contains_key(channel) {
            return vec![(id, self.subscription_succeeded(channel))];
        }
        if conn.subscriptions.len() >= MAX_CHANNELS_PER_CONNECTION {
            return subscription_rejected(id, channel, "LimitReached", 403);
        }
        let members = self.members(channel);
        let new_member = member
            .as_ref()
            .filter(|member| !members.contains(&member.user_id));
        if new_member.is_some() && members.len() >= MAX_PRESENCE_MEMBERS {
            return subscription_rejected(id, channel, "LimitReached", 403);
        }

        let mut expected = Vec::new();
        if let Some(member) = new_member {
            let mut data = json!({"user_id": member.user_id});
            if let Some(info) = &member.user_info {
                data["user_info"] = info.clone();
            }
            let added = json!({
                "event": "pusher_internal:member_added",
                "channel": channel,
                "data": data,
            });
            for other in self.subscribers(channel) {
                expected.push((other, Out::Frame(added.clone())));
            }
            let key = (channel.to_owned(), member.user_id.clone());
            self.infos.insert(key, member.user_info.clone());
        }
        let user_id = member.map(|member| member.user_id);
        if let Some(conn) = self.conn_mut(slot) {
            conn.subscriptions.insert(channel.to_owned(), user_id);
        }
        expected.push((id, self.subscription_succeeded(channel)));
        expected
    }

    fn subscription_succeeded(&self, channel: &str) -> Out {
        let data = if kind(channel) == Kind::Presence {
            let members = self.members(channel);
            let mut hash = Map::new();
            for user_id in &members {
                let key = (channel.to_owned(), user_id.clone());
                let info = self.infos.get(&key).cloned().flatten();
                hash.insert(user_id.clone(), info.unwrap_or(Value::Null));
            }
            json!({"presence": {"ids": members, "hash": hash, "count": members.len()}})
        } else {
            json!({})
        };
        Out::Frame(json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": data,
        }))
    }

    pub fn unsubscribe(&mut self, slot: usize, channel: &str) -> Expected {
        let Some(conn) = self.conn_mut(slot) else {
            return Vec::new();
        };
        match conn.subscriptions.remove(channel) {
            Some(user_id) => self.member_left(channel, user_id),
            None => Vec::new(),
        }
    }

    /// Returns the `member_removed` frames due after a socket of `user_id` left `channel`.
    fn member_left(&mut self, channel: &str, user_id: Option<String>) -> Expected {
        let Some(user_id) = user_id else {
            return Vec::new();
        };
        if self.members(channel).contains(&user_id) {
            return Vec::new();
        }
        self.infos.remove(&(channel.to_owned(), user_id.clone()));
        let removed = member_removed(channel, &user_id);
        let subscribers = self.subscribers(channel).into_iter();
        subscribers
            .map(|id| (id, Out::Frame(removed.clone())))
            .collect()
    }

    /// Checks a client event that passed every check before the rate limit, given what the
    /// node did with it, and returns the frames it must produce. Fails when the node limited
    /// an event it had to accept, or accepted one it had to limit.
    ///
    /// The limit allows `MAX_CLIENT_EVENTS_PER_SECOND` events per window of one second.
    /// Whether the windows are fixed or sliding is the node's choice, so the model only
    /// requires: no limit below the maximum in the last second, and no acceptance at twice
    /// the maximum.
    pub fn client_event(
        &mut self,
        slot: usize,
        channel: &str,
        frame: Value,
        outcome: RateOutcome,
    ) -> Result<Expected, String> {
        let now = self.now;
        let conn = self
            .conn_mut(slot)
            .expect("client event from an open connection");
        let id = conn.id;
        while conn
            .accepted_events
            .front()
            .is_some_and(|&at| at + Duration::from_secs(1) <= now)
        {
            conn.accepted_events.pop_front();
        }
        let recent = conn.accepted_events.len();
        let max = MAX_CLIENT_EVENTS_PER_SECOND as usize;
        match outcome {
            RateOutcome::Limited if recent < max => Err(format!(
                "client event rate limited after only {recent} events in the last second"
            )),
            RateOutcome::Limited => Ok(vec![(id, error_frame(Some(4301)))]),
            RateOutcome::Accepted if recent >= 2 * max => Err(format!(
                "client event accepted after {recent} events in the last second"
            )),
            RateOutcome::Accepted => {
                conn.accepted_events.push_back(now);
                let recipients = self.subscribers(channel).into_iter().filter(|&r| r != id);
                Ok(recipients.map(|r| (r, Out::Frame(frame.clone()))).collect())
            }
        }
    }

    /// Returns the frames an API event to `channel` produces, minus the excluded socket.
    pub fn publish(&self, channel: &str, frame: &Value, except: Option<&str>) -> Expected {
        let excluded = self
            .open_conns()
            .into_iter()
            .find(|conn| Some(conn.socket_id.as_str()) == except)
            .map(|conn| conn.id);
        let subscribers = self.subscribers(channel).into_iter();
        let recipients = subscribers.filter(|&id| Some(id) != excluded);
        recipients
            .map(|id| (id, Out::Frame(frame.clone())))
            .collect()
    }

    /// Removes the slot's connection. `closing` lists the frames and the close the node sends it
    /// first (none for a disconnect by the peer).
    pub fn close(&mut self, slot: usize, closing: Vec<Out>) -> Expected {
        let Slot::Open(conn) = std::mem::replace(&mut self.slots[slot], Slot::Empty) else {
            return Vec::new();
        };
        self.slots[slot] = Slot::Closed {
            id: conn.id,
            socket_id: conn.socket_id.clone(),
        };
        let mut expected: Expected = closing.into_iter().map(|out| (conn.id, out)).collect();
        for (channel, user_id) in conn.subscriptions {
            let left = self.member_left(&channel, user_id);
            // During shutdown every other member is closing too, so no socket gets `member_removed`.
            if !self.shutting_down {
                expected.extend(left);
            }
        }
        expected
    }

    /// Runs the liveness checks at `self.now`, in `ConnectionId` order.
    pub fn timeout(&mut self) -> Expected {
        let now = self.now;
        let mut expected = Vec::new();
        for slot in self.open_slots_in_order() {
            let Some(conn) = self.conn_mut(slot) else {
                continue;
            };
            if conn.liveness_deadline() > now {
                continue;
            }
            if conn.probe_sent.is_none() {
                conn.probe_sent = Some(now);
                expected.push((conn.id, Out::Ping));
            } else {
                let closing = vec![error_frame(Some(4201)), Out::Close(4201)];
                expected.extend(self.close(slot, closing));
            }
        }
        expected
    }

    pub fn shutdown(&mut self) -> Expected {
        self.shutting_down = true;
        let mut expected = Vec::new();
        for slot in self.open_slots_in_order() {
            let closing = vec![error_frame(Some(4200)), Out::Close(4200)];
            expected.extend(self.close(slot, closing));
        }
        expected
    }

    /// Returns the `info` counts of `channel` for an API response.
    pub fn counts(&self, channel: &str, user_count: bool, subscription_count: bool) -> Value {
        let mut counts = Map::new();
        if user_count && kind(channel) == Kind::Presence {
            counts.insert("user_count".into(), self.members(channel).len().into());
        }
        if subscription_count {
            let sockets = self.subscribers(channel).len();
            counts.insert("subscription_count".into(), sockets.into());
        }
        Value::Object(counts)
    }
}

fn open(slot: &Slot) -> Option<&Conn> {
    match slot {
        Slot::Open(conn) => Some(conn),
        _ => None,
    }
}

fn subscription_rejected(
    id: ConnectionId,
    channel: &str,
    error_type: &'static str,
    status: u16,
) -> Expected {
    let rejection = json!({
        "event": "pusher:subscription_error",
        "channel": channel,
        "data": {"type": error_type, "status": status},
    });
    vec![(id, error_frame(None)), (id, Out::Frame(rejection))]
}
