//! The protocol state machine of one app: connections, channels, presence and timers.
//!
//! Inputs are `handle_*` calls that take the current time; results are [`Output`] values the
//! host drains with [`Node::poll_output`]. HTTP API handling lives in `api.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, trace};
use serde_json::value::RawValue;

use crate::auth::{channel_string_to_sign, verify_channel_auth};
use crate::channel::{ChannelKind, ChannelName};
use crate::cluster::{Cluster, remote_user_info};
use crate::config::Config;
use crate::connection::{ConnectRequest, Connection, ConnectionId, SocketId};
use crate::error::{ConfigError, ConnectError, ProtocolError, SubscribeError};
use crate::frame::{self, ClientFrame, SubscribeData};
use crate::presence::{MemberData, Roster, UserId};
use crate::rng::Rng;
use crate::timer::TimerTable;

/// Attempts at drawing a socket id not held by a live connection. With two 53-bit parts a
/// second attempt is already vanishingly rare.
const SOCKET_ID_ATTEMPTS: usize = 16;

/// An action the host must carry out, in the order polled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send one WebSocket text frame to a connection.
    Send {
        /// Recipient.
        connection: ConnectionId,
        /// Serialized frame, shared by every recipient of a broadcast.
        frame: Arc<str>,
    },
    /// Send a WebSocket Ping control frame: the liveness probe of an idle connection.
    Ping {
        /// Recipient.
        connection: ConnectionId,
    },
    /// Publish a message to every node of the cluster (cluster mode only), for example on a
    /// Redis pub/sub channel. Deliver it to the other nodes' [`Node::handle_cluster`].
    Publish {
        /// JSON message, opaque to the host.
        payload: Arc<str>,
    },
    /// Send the frames queued before this one, then close the WebSocket with `code`. The node
    /// has already released the connection's state.
    Close {
        /// Connection to close.
        connection: ConnectionId,
        /// WebSocket close code.
        code: u16,
        /// Close reason text.
        reason: &'static str,
    },
}

/// Counts of what the node holds, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Open connections.
    pub connections: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Subscriptions summed over all connections.
    pub subscriptions: usize,
    /// Distinct presence members summed over all presence channels.
    pub presence_members: usize,
    /// Armed timers.
    pub timers: usize,
    /// Outputs not yet polled.
    pub pending_outputs: usize,
}

/// A connection's socket id in log lines.
struct LogId(Option<SocketId>);

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(socket_id) => socket_id.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Subscribers of one channel, and its roster when it is a presence channel.
#[derive(Debug, Default)]
pub(crate) struct Channel {
    pub(crate) subscribers: BTreeSet<ConnectionId>,
    pub(crate) roster: Option<Roster>,
}

/// The state machine serving one app. See the crate documentation for the host loop.
#[derive(Debug)]
pub struct Node {
    pub(crate) config: Config,
    rng: Rng,
    next_connection: u64,
    pub(crate) connections: BTreeMap<ConnectionId, Connection>,
    pub(crate) sockets: BTreeMap<SocketId, ConnectionId>,
    pub(crate) channels: BTreeMap<ChannelName, Channel>,
    timers: TimerTable,
    outputs: VecDeque<Output>,
    pub(crate) shutting_down: bool,
    pub(crate) cluster: Option<Cluster>,
}

impl Node {
    /// Creates a node for `config.app`. `seed` drives socket id generation; give each node
    /// process a fresh random seed.
    pub fn new(config: Config, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let cluster = config
            .cluster
            .clone()
            .map(|cluster| Cluster::new(rng.next_u64(), cluster));
        Ok(Self {
            config,
            rng,
            next_connection: 0,
            connections: BTreeMap::new(),
            sockets: BTreeMap::new(),
            channels: BTreeMap::new(),
            timers: TimerTable::default(),
            outputs: VecDeque::new(),
            shutting_down: false,
            cluster,
        })
    }

    /// Returns the configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Accepts a new WebSocket connection and queues `pusher:connection_established` for it.
    ///
    /// On `Err` nothing is kept: the host sends [`ConnectError::frame`] and closes the socket
    /// with [`ConnectError::close_code`].
    pub fn open(
        &mut self,
        now: Instant,
        request: &ConnectRequest,
    ) -> Result<ConnectionId, ConnectError> {
        if self.shutting_down {
            return Err(ConnectError::ShuttingDown);
        }
        if request.app_key != self.config.app.key {
            return Err(ConnectError::UnknownApp);
        }
        request.protocol_version()?;
        if self.connections.len() >= self.config.limits.max_connections {
            return Err(ConnectError::OverCapacity);
        }
        let socket_id = self.new_socket_id().ok_or(ConnectError::OverCapacity)?;

        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        let deadline = now + self.config.activity_timeout;
        self.timers.insert(deadline, id);
        self.connections
            .insert(id, Connection::new(socket_id, now, deadline));
        self.sockets.insert(socket_id, id);

        let activity_timeout = self.config.activity_timeout.as_secs();
        let established = frame::connection_established(&socket_id.to_string(), activity_timeout);
        self.send(id, established.into());
        debug!("connection opened: socket_id={socket_id}");
        Ok(id)
    }

    /// Handles one WebSocket text frame from `connection`.
    pub fn handle_text(&mut self, now: Instant, connection: ConnectionId, text: &str) {
        if !self.touch(now, connection) {
            return;
        }
        let max = self.config.limits.max_frame_bytes;
        if text.len() > max {
            self.reject_frame(connection, ProtocolError::FrameTooLarge { max });
            return;
        }
        trace!(
            "text frame: connection={} bytes={}",
            connection.0,
            text.len()
        );
        let result = match ClientFrame::parse(text) {
            Ok(frame) => self.dispatch(now, connection, frame),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            self.reject_frame(connection, error);
        }
    }

    /// Handles one WebSocket binary frame of `len` bytes; the protocol has no binary frames.
    pub fn handle_binary(&mut self, now: Instant, connection: ConnectionId, len: usize) {
        if !self.touch(now, connection) {
            return;
        }
        let max = self.config.limits.max_frame_bytes;
        let error = if len > max {
            ProtocolError::FrameTooLarge { max }
        } else {
            ProtocolError::BinaryFrame
        };
        self.reject_frame(connection, error);
    }

    /// Records that a WebSocket Ping or Pong control frame arrived; it counts as activity.
    pub fn handle_activity(&mut self, now: Instant, connection: ConnectionId) {
        self.touch(now, connection);
    }

    /// Closes `connection` with 1009 because its WebSocket library refused a message above
    /// the frame size limit before the node saw it.
    pub fn handle_oversized_frame(&mut self, _now: Instant, connection: ConnectionId) {
        let max = self.config.limits.max_frame_bytes;
        self.reject_frame(connection, ProtocolError::FrameTooLarge { max });
    }

    /// Closes `connection` with 4100 because it does not read its frames fast enough and the
    /// host's outbound queue for it is full. Clients reconnect after a short delay.
    ///
    /// The host should drop the connection's queued frames first: the node queues a
    /// `pusher:error` 4100 ahead of the close.
    pub fn handle_backpressure(&mut self, _now: Instant, connection: ConnectionId) {
        if self.connections.contains_key(&connection) {
            debug!(
                "closing slow connection: socket_id={}",
                self.log_id(connection)
            );
            let message = "Client too slow to read its messages, reconnect";
            self.send(connection, frame::error(Some(4100), message).into());
            self.close(connection, 4100, "Client too slow to read its messages");
        }
    }

    /// Releases the state of a connection whose socket is gone (closed by the peer or
    /// failed). Other members of its presence channels get `member_removed` where due.
    pub fn handle_disconnect(&mut self, _now: Instant, connection: ConnectionId) {
        let socket_id = self.log_id(connection);
        if self.remove_connection(connection) {
            debug!("connection closed by peer: socket_id={socket_id}");
        }
    }

    /// Sends every client `pusher:error` 4200 and a 4200 close, so clients reconnect at once
    /// to another node, and rejects new connections from now on.
    pub fn shutdown(&mut self, _now: Instant) {
        // Every member leaves at once, so no `member_removed` is sent to sockets that are
        // closing too.
        self.shutting_down = true;
        self.cluster_bye();
        let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        let error = ConnectError::ShuttingDown;
        let frame: Arc<str> = error.frame().into();
        for id in ids {
            self.send(id, frame.clone());
            self.close(id, error.close_code(), "Server is shutting down");
        }
    }

    /// Runs the timers due at `now`: probes idle connections and closes unanswered ones with
    /// 4201. Call it at the instant [`Node::poll_timeout`] returned, or later.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.cluster_timeout(now);
        let activity = self.config.activity_timeout;
        let pong = self.config.pong_timeout;
        while let Some((_, id)) = self.timers.pop_due(now) {
            let Some(connection) = self.connections.get_mut(&id) else {
                continue;
            };
            let deadline = connection.liveness_deadline(activity, pong);
            if deadline > now {
                connection.scheduled = deadline;
                self.timers.insert(deadline, id);
            } else if connection.probe_sent.is_none() {
                connection.probe_sent = Some(now);
                connection.scheduled = now + pong;
                self.timers.insert(now + pong, id);
                self.outputs.push_back(Output::Ping { connection: id });
            } else {
                debug!("pong not received, closing: socket_id={}", self.log_id(id));
                self.send(
                    id,
                    frame::error(Some(4201), "Pong reply not received").into(),
                );
                self.close(id, 4201, "Pong reply not received");
            }
        }
    }

    /// Returns the next output for the host to carry out, or `None` when all are drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Returns when [`Node::handle_timeout`] must next be called; `None` means no timer is
    /// armed. Read it after draining [`Node::poll_output`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cluster = self.cluster.as_ref().and_then(Cluster::next_timeout);
        match (self.timers.next(), cluster) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Returns the `socket_id` of an open connection.
    pub fn socket_id(&self, connection: ConnectionId) -> Option<SocketId> {
        Some(self.connections.get(&connection)?.socket_id)
    }

    /// Returns counts of the node's state.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            connections: self.connections.len(),
            channels: self.channels.len(),
            subscriptions: self.connections.values().map(|c| c.channels.len()).sum(),
            presence_members: self
                .channels
                .values()
                .filter_map(|channel| channel.roster.as_ref())
                .map(Roster::len)
                .sum(),
            timers: self.timers.len(),
            pending_outputs: self.outputs.len(),
        }
    }

    fn dispatch(
        &mut self,
        now: Instant,
        id: ConnectionId,
        frame: ClientFrame<'_>,
    ) -> Result<(), ProtocolError> {
        match frame {
            ClientFrame::Ping => self.send(id, frame::pong().into()),
            ClientFrame::Pong => {}
            ClientFrame::Subscribe(data) => self.subscribe(id, data),
            ClientFrame::Unsubscribe(data) => self.unsubscribe(id, &data.channel),
            ClientFrame::Signin => return Err(ProtocolError::SigninNotSupported),
            ClientFrame::ClientEvent {
                event,
                channel,
                data,
            } => self.client_event(now, id, &event, channel.as_deref(), data)?,
            ClientFrame::OtherPusherEvent(name) => {
                trace!("ignored event {name:?}: connection={}", id.0);
            }
        }
        Ok(())
    }

    /// Marks activity; returns `false` when the connection is unknown.
    fn touch(&mut self, now: Instant, id: ConnectionId) -> bool {
        match self.connections.get_mut(&id) {
            Some(connection) => {
                connection.last_activity = now;
                connection.probe_sent = None;
                true
            }
            None => {
                trace!("input for unknown connection {}", id.0);
                false
            }
        }
    }

    fn reject_frame(&mut self, id: ConnectionId, error: ProtocolError) {
        let code = error.code();
        debug!(
            "client error: socket_id={} code={code:?} {error}",
            self.log_id(id)
        );
        match error.close_code() {
            Some(code) => self.close(id, code, "Message too big"),
            None => self.send(id, frame::error(error.code(), &error.message()).into()),
        }
    }

    fn subscribe(&mut self, id: ConnectionId, data: SubscribeData) {
        if let Err(error) = self.try_subscribe(id, &data) {
            let channel = crate::error::truncate(&data.channel, 200);
            let socket_id = self.log_id(id);
            debug!("subscription rejected: socket_id={socket_id} channel={channel:?} {error}");
            // The message quotes at most 200 bytes of the name; the channel field carries it
            // whole, so that the client library can route the error to that channel.
            let channel = data.channel.as_str();
            self.send(id, frame::error(None, &error.message(channel)).into());
            let rejection = frame::subscription_error(
                channel,
                error.error_type(),
                error.short_message(),
                error.status(),
            );
            self.send(id, rejection.into());
        }
    }

    fn try_subscribe(
        &mut self,
        id: ConnectionId,
        data: &SubscribeData,
    ) -> Result<(), SubscribeError> {
        let limits = &self.config.limits;
        let channel = ChannelName::parse(&data.channel, limits.max_channel_name_bytes)
            .map_err(SubscribeError::InvalidChannel)?;
        let Some(connection) = self.connections.get(&id) else {
            return Ok(());
        };
        let member = self.authorize(connection.socket_id, &channel, data)?;

        if connection.channels.contains_key(channel.as_str()) {
            self.send_subscription_succeeded(id, &channel);
            return Ok(());
        }
        let max_channels = limits.max_channels_per_connection;
        if connection.channels.len() >= max_channels {
            return Err(SubscribeError::ChannelLimitReached { max: max_channels });
        }
        if let Some(member) = &member {
            let members = self.members(channel.as_str());
            let max = limits.max_presence_members;
            if members.len() >= max && !members.contains_key(member.user_id.as_ref()) {
                return Err(SubscribeError::MemberLimitReached { max });
            }
        }

        let user_id = member.as_ref().map(|m| m.user_id.clone());
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.channels.insert(channel.clone(), user_id);
        }
        let entry = self.channels.entry(channel.clone()).or_default();
        entry.subscribers.insert(id);
        let mut joined = None;
        if let Some(mut member) = member {
            // A user already present on another node keeps the `user_info` announced there,
            // so every node shows the first one, as a single node does.
            let local = entry
                .roster
                .as_ref()
                .is_some_and(|r| r.contains(&member.user_id));
            let user_id = member.user_id.as_ref();
            if !local && let Some(info) = remote_user_info(&self.cluster, channel.as_str(), user_id)
            {
                member.user_info = info;
            }
            let user_id = member.user_id.clone();
            let roster = entry.roster.get_or_insert_with(Roster::default);
            if roster.join(member) {
                joined = Some(user_id);
            }
        }
        if let Some(user_id) = joined {
            self.local_member_joined(id, &channel, &user_id);
        }
        self.cluster_count(&channel);
        debug!(
            "subscribed: socket_id={} channel={channel}",
            self.log_id(id)
        );
        self.send_subscription_succeeded(id, &channel);
        Ok(())
    }

    /// Checks the subscription's signature and returns the presence member it adds, if any.
    fn authorize(
        &self,
        socket_id: SocketId,
        channel: &ChannelName,
        data: &SubscribeData,
    ) -> Result<Option<MemberData>, SubscribeError> {
        let app = &self.config.app;
        let auth = data.auth.as_deref();
        let channel_data = data.channel_data.as_deref();
        let socket_id = socket_id.to_string();
        match channel.kind() {
            ChannelKind::Public => Ok(None),
            ChannelKind::User => Err(SubscribeError::UserChannelNotSignedIn),
            ChannelKind::Private | ChannelKind::Encrypted => {
                let message = channel_string_to_sign(&socket_id, channel.as_str(), channel_data);
                verify_channel_auth(app, message, auth)?;
                Ok(None)
            }
            ChannelKind::Presence => {
                // NOTE: presence without channel_data needs user sign-in, which this node
                // does not support, so such a subscription is always rejected.
                let channel_data = channel_data.ok_or(SubscribeError::MissingChannelData)?;
                let message =
                    channel_string_to_sign(&socket_id, channel.as_str(), Some(channel_data));
                verify_channel_auth(app, message, auth)?;
                MemberData::parse(channel_data, &self.config.limits).map(Some)
            }
        }
    }

    fn send_subscription_succeeded(&mut self, id: ConnectionId, channel: &ChannelName) {
        let data = match channel.kind() {
            ChannelKind::Presence => {
                let members = self.members(channel.as_str());
                frame::presence_data(members.iter().map(|(id, info)| (*id, *info)))
            }
            _ => "{}".to_owned(),
        };
        let frame = frame::subscription_succeeded(channel.as_str(), &data);
        self.send(id, frame.into());
    }

    fn unsubscribe(&mut self, id: ConnectionId, channel: &str) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let Some((channel, user_id)) = connection.channels.remove_entry(channel) else {
            return;
        };
        debug!(
            "unsubscribed: socket_id={} channel={channel}",
            self.log_id(id)
        );
        self.leave_channel(id, &channel, user_id);
    }

    /// Removes `id` from `channel`'s subscribers and roster, telling the other members when
    /// the user's last socket left, and drops the channel when it becomes empty.
    fn leave_channel(&mut self, id: ConnectionId, channel: &ChannelName, user_id: Option<UserId>) {
        let Some(entry) = self.channels.get_mut(channel) else {
            return;
        };
        entry.subscribers.remove(&id);
        let user_gone = match (&mut entry.roster, &user_id) {
            (Some(roster), Some(user_id)) => roster.leave(user_id),
            _ => false,
        };
        if entry.subscribers.is_empty() {
            self.channels.remove(channel);
        }
        if self.shutting_down {
            // Every remaining subscriber is being closed as well, and the cluster learns of
            // the departure from one `Bye` message.
            return;
        }
        if let (true, Some(user_id)) = (user_gone, user_id) {
            self.local_member_left(channel, &user_id);
        }
        self.cluster_count(channel);
    }

    fn client_event(
        &mut self,
        now: Instant,
        id: ConnectionId,
        event: &str,
        channel: Option<&str>,
        data: Option<&RawValue>,
    ) -> Result<(), ProtocolError> {
        let limits = &self.config.limits;
        if !self.config.app.client_events {
            return Err(ProtocolError::ClientEventsDisabled);
        }
        let max_name = limits.max_event_name_bytes;
        if event.len() > max_name {
            return Err(ProtocolError::ClientEventNameTooLong { max: max_name });
        }
        let channel = channel.ok_or(ProtocolError::ClientEventMissingChannel)?;
        let not_subscribed = || ProtocolError::ClientEventNotSubscribed(channel.to_owned());
        let name = ChannelName::parse(channel, limits.max_channel_name_bytes)
            .map_err(|_| not_subscribed())?;
        match name.kind() {
            ChannelKind::Private | ChannelKind::Presence => {}
            ChannelKind::Encrypted => return Err(ProtocolError::ClientEventEncryptedChannel),
            ChannelKind::Public | ChannelKind::User => {
                return Err(ProtocolError::ClientEventChannelKind);
            }
        }
        let max_data = limits.max_event_data_bytes;
        let max_rate = limits.max_client_events_per_second;
        let Some(connection) = self.connections.get_mut(&id) else {
            return Ok(());
        };
        let Some((name, user_id)) = connection.channels.get_key_value(channel) else {
            return Err(not_subscribed());
        };
        if data.is_some_and(|data| data.get().len() > max_data) {
            return Err(ProtocolError::ClientEventTooLarge { max: max_data });
        }
        if !connection.client_events.try_acquire(now, max_rate) {
            return Err(ProtocolError::ClientEventRateLimited);
        }
        let (name, user_id) = (name.clone(), user_id.clone());
        let socket_id = connection.socket_id.to_string();
        let relayed: Arc<str> =
            frame::client_event(event, name.as_str(), data, user_id.as_deref()).into();
        trace!(
            "client event relayed: socket_id={} channel={name}",
            connection.socket_id
        );
        self.broadcast(&name, Some(id), &relayed);
        self.cluster_event(&name, &relayed, Some(socket_id));
        Ok(())
    }

    /// Queues `frame` for every subscriber of `channel` except `except`.
    pub(crate) fn broadcast(
        &mut self,
        channel: &ChannelName,
        except: Option<ConnectionId>,
        frame: &Arc<str>,
    ) -> usize {
        let Some(entry) = self.channels.get(channel) else {
            return 0;
        };
        let before = self.outputs.len();
        let recipients = entry.subscribers.iter().filter(|id| Some(**id) != except);
        self.outputs
            .extend(recipients.map(|&connection| Output::Send {
                connection,
                frame: frame.clone(),
            }));
        self.outputs.len() - before
    }

    fn send(&mut self, connection: ConnectionId, frame: Arc<str>) {
        self.outputs.push_back(Output::Send { connection, frame });
    }

    pub(crate) fn push_output(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    fn close(&mut self, id: ConnectionId, code: u16, reason: &'static str) {
        if self.remove_connection(id) {
            self.outputs.push_back(Output::Close {
                connection: id,
                code,
                reason,
            });
        }
    }

    /// Forgets a connection and everything that refers to it; returns whether it existed.
    fn remove_connection(&mut self, id: ConnectionId) -> bool {
        let Some(connection) = self.connections.remove(&id) else {
            return false;
        };
        self.sockets.remove(&connection.socket_id);
        self.timers.remove(connection.scheduled, id);
        for (channel, user_id) in connection.channels {
            self.leave_channel(id, &channel, user_id);
        }
        true
    }

    /// Returns the socket id to show in logs for a connection, or `-` once it is gone.
    fn log_id(&self, id: ConnectionId) -> LogId {
        LogId(self.connections.get(&id).map(|c| c.socket_id))
    }

    fn new_socket_id(&mut self) -> Option<SocketId> {
        for _ in 0..SOCKET_ID_ATTEMPTS {
            let high = self.rng.below_power_of_two(SocketId::PART_LIMIT);
            let low = self.rng.below_power_of_two(SocketId::PART_LIMIT);
            let socket_id = SocketId::new(high, low);
            if !self.sockets.contains_key(&socket_id) {
                return Some(socket_id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
