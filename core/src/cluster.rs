//! Cluster mode: nodes share events, presence and channel counts through messages the host
//! relays between them, for example over one Redis pub/sub channel.
//!
//! Each node replicates what the others announce: per remote node, its channels' subscription
//! counts and its presence members. A node announces its own state when the cluster
//! connection comes up and on request, sends a heartbeat every interval, and drops a node
//! whose heartbeats stop. It requests the state of a node it hears from while not tracking it,
//! such as one forgotten while its messages were lost. `member_added` and `member_removed`
//! are decided on the union of the local roster and every remote one, so each subscriber gets
//! one event per user transition wherever that user's sockets are.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::ChannelName;
use crate::connection::ConnectionId;
use crate::frame;
use crate::node::{Node, Output};
use crate::presence::UserId;

/// Settings of cluster mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Time between two heartbeats of this node.
    pub heartbeat_interval: Duration,
    /// Silence after which another node counts as dead and its members are removed. A dead
    /// node is noticed at most `node_timeout + heartbeat_interval` after its last heartbeat.
    pub node_timeout: Duration,
    /// Maximum number of other nodes tracked; messages from further nodes are ignored.
    pub max_nodes: usize,
    /// Maximum number of channels tracked per remote node.
    pub max_remote_channels: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            node_timeout: Duration::from_secs(15),
            max_nodes: 1024,
            max_remote_channels: 1_000_000,
        }
    }
}

/// One message between nodes, serialized as JSON and tagged externally, as in
/// `{"heartbeat":{"node":1}}`: an internally tagged enum would buffer its fields, and
/// `RawValue` fields cannot be read from a buffer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    /// A frame to deliver to every local subscriber of `channel` except socket `except`.
    Event {
        node: u64,
        channel: String,
        frame: Box<RawValue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<String>,
    },
    /// The sender's first socket of `user_id` joined `channel`.
    Join {
        node: u64,
        channel: String,
        user_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_info: Option<Box<RawValue>>,
    },
    /// The sender's last socket of `user_id` left `channel`.
    Leave {
        node: u64,
        channel: String,
        user_id: String,
    },
    /// The sender's number of sockets subscribed to `channel` changed.
    Count {
        node: u64,
        channel: String,
        count: usize,
    },
    /// The sender is alive.
    Heartbeat { node: u64 },
    /// The sender's complete state; it replaces everything known about the sender.
    State {
        node: u64,
        channels: Vec<ChannelState>,
    },
    /// Every node replies with its `State`.
    SyncRequest { node: u64 },
    /// The sender is shutting down.
    Bye { node: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
struct ChannelState {
    channel: String,
    count: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    members: Vec<MemberState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MemberState {
    user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_info: Option<Box<RawValue>>,
}

/// This node's copy of one other node's state.
#[derive(Debug, Default)]
struct RemoteNode {
    last_seen: Option<Instant>,
    channels: BTreeMap<ChannelName, RemoteChannel>,
}

#[derive(Debug, Default)]
struct RemoteChannel {
    count: usize,
    members: BTreeMap<UserId, Option<Box<RawValue>>>,
}

impl RemoteChannel {
    fn is_empty(&self) -> bool {
        self.count == 0 && self.members.is_empty()
    }
}

/// The node's cluster state.
#[derive(Debug)]
pub(crate) struct Cluster {
    id: u64,
    config: ClusterConfig,
    /// When to send the next heartbeat and look for dead nodes; `None` until connected.
    next_heartbeat: Option<Instant>,
    remotes: BTreeMap<u64, RemoteNode>,
}

impl Cluster {
    pub(crate) fn new(id: u64, config: ClusterConfig) -> Self {
        Self {
            id,
            config,
            next_heartbeat: None,
            remotes: BTreeMap::new(),
        }
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.next_heartbeat
    }

    /// Returns whether a remote node has `user_id` as a member of `channel`.
    fn has_member(&self, channel: &str, user_id: &str) -> bool {
        self.remotes.values().any(|node| {
            node.channels
                .get(channel)
                .is_some_and(|c| c.members.contains_key(user_id))
        })
    }
}

/// Returns the `user_info` another node announced for `user_id` in `channel`, from the node
/// with the lowest id, or `None` when no other node has the user.
pub(crate) fn remote_user_info(
    cluster: &Option<Cluster>,
    channel: &str,
    user_id: &str,
) -> Option<Option<Box<RawValue>>> {
    let remotes = cluster.iter().flat_map(|c| c.remotes.values());
    remotes
        .filter_map(|node| node.channels.get(channel)?.members.get(user_id))
        .map(|info| info.as_deref().map(ToOwned::to_owned))
        .next()
}

/// A presence transition to announce to local subscribers.
enum Transition {
    Added(ChannelName, UserId, Option<Box<RawValue>>),
    Removed(ChannelName, UserId),
}

impl Node {
    /// Returns this node's cluster id, or `None` in single-node mode.
    pub fn cluster_id(&self) -> Option<u64> {
        self.cluster.as_ref().map(|c| c.id)
    }

    /// Tells the node that its cluster connection is (again) up and subscribed. It announces
    /// its full state, requests every other node's and starts its heartbeat. Call it
    /// after every reconnection, then drain [`Node::poll_output`].
    pub fn handle_cluster_connected(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let node = cluster.id;
        cluster.next_heartbeat = Some(now);
        let state = self.local_state();
        self.publish_cluster(&Message::State {
            node,
            channels: state,
        });
        self.publish_cluster(&Message::SyncRequest { node });
        info!("cluster connected: node={node:x}");
    }

    /// Handles one message published by a node of the cluster (including this one, whose
    /// own messages are ignored). Malformed messages are logged and dropped.
    // NOTE: messages carry no sequence number, so the node cannot detect a lost message. A
    // host that drops messages must call `handle_cluster_connected` afterwards; otherwise a
    // lost `Leave` leaves a ghost member until the sender's next `State`.
    pub fn handle_cluster(&mut self, now: Instant, payload: &str) {
        if self.shutting_down {
            return;
        }
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let message: Message = match serde_json::from_str(payload) {
            Ok(message) => message,
            Err(error) => {
                warn!("invalid cluster message ({} bytes): {error}", payload.len());
                return;
            }
        };
        let sender = message.sender();
        if sender == cluster.id {
            return;
        }

        let unknown = !cluster.remotes.contains_key(&sender);
        if unknown {
            if cluster.remotes.len() >= cluster.config.max_nodes {
                warn!(
                    "ignoring node {sender:x}: {} nodes already tracked",
                    cluster.remotes.len()
                );
                return;
            }
            debug!("cluster node seen: node={sender:x}");
        }
        cluster.remotes.entry(sender).or_default().last_seen = Some(now);

        // A node heard from without its `State` first, for example one timed out while its
        // messages were lost, may have members missing here, so request its state.
        let ask_state = unknown && !matches!(message, Message::State { .. } | Message::Bye { .. });
        let node = cluster.id;
        self.apply(sender, message);
        if ask_state {
            info!("cluster node seen before its state, requesting it: node={sender:x}");
            self.publish_cluster(&Message::SyncRequest { node });
        }
    }

    fn apply(&mut self, sender: u64, message: Message) {
        match message {
            Message::Event {
                channel,
                frame,
                except,
                ..
            } => self.deliver_remote_event(&channel, frame.get(), except.as_deref()),
            Message::Join {
                channel,
                user_id,
                user_info,
                ..
            } => self.remote_join(sender, &channel, user_id, user_info),
            Message::Leave {
                channel, user_id, ..
            } => self.remote_leave(sender, &channel, &user_id),
            Message::Count { channel, count, .. } => self.remote_count(sender, &channel, count),
            Message::Heartbeat { .. } => {}
            Message::State { channels, .. } => {
                let node = self.remote_node_from_state(channels);
                self.replace_remote(sender, Some(node));
            }
            Message::SyncRequest { .. } => {
                if let Some(node) = self.cluster_id() {
                    let channels = self.local_state();
                    self.publish_cluster(&Message::State { node, channels });
                }
            }
            Message::Bye { .. } => {
                info!("cluster node left: node={sender:x}");
                self.replace_remote(sender, None);
            }
        }
    }

    /// Sends the heartbeat and removes nodes whose heartbeats stopped.
    pub(crate) fn cluster_timeout(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.next_heartbeat.is_none_or(|at| at > now) {
            return;
        }
        cluster.next_heartbeat = Some(now + cluster.config.heartbeat_interval);
        let node = cluster.id;
        let timeout = cluster.config.node_timeout;
        let dead: Vec<u64> = cluster
            .remotes
            .iter()
            .filter(|(_, remote)| remote.last_seen.is_none_or(|seen| seen + timeout <= now))
            .map(|(id, _)| *id)
            .collect();
        self.publish_cluster(&Message::Heartbeat { node });
        for id in dead {
            warn!("cluster node timed out, removing its members: node={id:x}");
            self.replace_remote(id, None);
        }
    }

    /// Announces that this node leaves the cluster, so the others drop its members at once.
    /// Also stops the heartbeat, which would make them track this node again.
    pub(crate) fn cluster_bye(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.next_heartbeat = None;
        let node = cluster.id;
        self.publish_cluster(&Message::Bye { node });
    }

    /// Returns whether any other node has `user_id` in `channel`'s roster.
    pub(crate) fn remote_has_member(&self, channel: &str, user_id: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.has_member(channel, user_id))
    }

    /// Returns whether `user_id` is a member of `channel` on any node, this one included.
    fn member_present(&self, channel: &str, user_id: &str) -> bool {
        let local = self
            .channels
            .get(channel)
            .and_then(|c| c.roster.as_ref())
            .is_some_and(|roster| roster.contains(user_id));
        local || self.remote_has_member(channel, user_id)
    }

    /// Returns the cluster-wide roster of `channel`: user id to `user_info`, the local copy
    /// first.
    // NOTE: a node adopts the `user_info` of a user already present elsewhere, so all nodes
    // agree. The exception is one user joining on two nodes at the same moment with different
    // values: then each node lists its own copy.
    pub(crate) fn members(&self, channel: &str) -> BTreeMap<&str, Option<&RawValue>> {
        let mut members = BTreeMap::new();
        if let Some(roster) = self.channels.get(channel).and_then(|c| c.roster.as_ref()) {
            members.extend(roster.iter());
        }
        for remote in self.cluster.iter().flat_map(|c| c.remotes.values()) {
            if let Some(remote_channel) = remote.channels.get(channel) {
                for (user_id, info) in &remote_channel.members {
                    members.entry(user_id.as_ref()).or_insert(info.as_deref());
                }
            }
        }
        members
    }

    /// Returns the number of sockets subscribed to `channel` on every node.
    pub(crate) fn subscription_count(&self, channel: &str) -> usize {
        let local = self
            .channels
            .get(channel)
            .map_or(0, |c| c.subscribers.len());
        // Counts from other nodes are added with saturation, so a bad one cannot overflow.
        self.cluster
            .iter()
            .flat_map(|c| c.remotes.values())
            .filter_map(|node| node.channels.get(channel))
            .map(|c| c.count)
            .fold(local, usize::saturating_add)
    }

    /// Returns every channel with a subscriber on any node, in name order.
    pub(crate) fn occupied_channels(&self) -> BTreeSet<&ChannelName> {
        let mut names: BTreeSet<&ChannelName> = self.channels.keys().collect();
        for remote in self.cluster.iter().flat_map(|c| c.remotes.values()) {
            names.extend(
                remote
                    .channels
                    .iter()
                    .filter(|(_, channel)| channel.count > 0)
                    .map(|(name, _)| name),
            );
        }
        names
    }

    /// Announces an event delivered here so other nodes deliver it to their subscribers.
    pub(crate) fn cluster_event(
        &mut self,
        channel: &ChannelName,
        frame: &str,
        except: Option<String>,
    ) {
        let Some(node) = self.cluster_id() else {
            return;
        };
        let Ok(frame) = RawValue::from_string(frame.to_owned()) else {
            return;
        };
        self.publish_cluster(&Message::Event {
            node,
            channel: channel.to_string(),
            frame,
            except,
        });
    }

    /// Announces this node's subscriber count of `channel` after it changed.
    pub(crate) fn cluster_count(&mut self, channel: &ChannelName) {
        let Some(node) = self.cluster_id() else {
            return;
        };
        let count = self
            .channels
            .get(channel)
            .map_or(0, |c| c.subscribers.len());
        self.publish_cluster(&Message::Count {
            node,
            channel: channel.to_string(),
            count,
        });
    }

    /// Handles the first local socket of `user_id` joining `channel`: sends `member_added` to
    /// local subscribers (except `joiner`) when the user is new to the cluster, and publishes
    /// a `Join` for the other nodes.
    pub(crate) fn local_member_joined(
        &mut self,
        joiner: ConnectionId,
        channel: &ChannelName,
        user_id: &UserId,
    ) {
        let info = self
            .channels
            .get(channel)
            .and_then(|c| c.roster.as_ref())
            .and_then(|r| r.user_info(user_id))
            .map(ToOwned::to_owned);
        if !self.remote_has_member(channel.as_str(), user_id) {
            let added: Arc<str> =
                frame::member_added(channel.as_str(), user_id, info.as_deref()).into();
            self.broadcast(channel, Some(joiner), &added);
        }
        if let Some(node) = self.cluster_id() {
            self.publish_cluster(&Message::Join {
                node,
                channel: channel.to_string(),
                user_id: user_id.to_string(),
                user_info: info,
            });
        }
    }

    /// Handles the last local socket of `user_id` leaving `channel`.
    pub(crate) fn local_member_left(&mut self, channel: &ChannelName, user_id: &UserId) {
        if !self.remote_has_member(channel.as_str(), user_id) {
            let removed: Arc<str> = frame::member_removed(channel.as_str(), user_id).into();
            self.broadcast(channel, None, &removed);
        }
        if let Some(node) = self.cluster_id() {
            self.publish_cluster(&Message::Leave {
                node,
                channel: channel.to_string(),
                user_id: user_id.to_string(),
            });
        }
    }

    fn deliver_remote_event(&mut self, channel: &str, frame: &str, except: Option<&str>) {
        let Ok(channel) = ChannelName::parse(channel, self.config.limits.max_channel_name_bytes)
        else {
            return;
        };
        let except = except
            .and_then(|socket_id| socket_id.parse().ok())
            .and_then(|socket_id| self.sockets.get(&socket_id).copied());
        let frame: Arc<str> = frame.into();
        if channel.kind() == crate::channel::ChannelKind::User {
            return;
        }
        self.broadcast(&channel, except, &frame);
    }

    fn remote_join(
        &mut self,
        sender: u64,
        channel: &str,
        user_id: String,
        info: Option<Box<RawValue>>,
    ) {
        let Some(channel) = self.remote_channel_name(channel) else {
            return;
        };
        let user_id: UserId = Arc::from(user_id);
        let present = self.member_present(channel.as_str(), &user_id);
        let Some(remote) = self.remote_channel_mut(sender, &channel) else {
            return;
        };
        let announced = info.as_deref().map(ToOwned::to_owned);
        remote.members.insert(user_id.clone(), info);
        if !present {
            self.announce(Transition::Added(channel, user_id, announced));
        }
    }

    fn remote_leave(&mut self, sender: u64, channel: &str, user_id: &str) {
        let Some(channel) = self.remote_channel_name(channel) else {
            return;
        };
        let removed = self
            .remote_channel_mut(sender, &channel)
            .and_then(|remote| remote.members.remove_entry(user_id));
        // Pruning also drops the empty entry `remote_channel_mut` creates when the leave names
        // a channel unknown for the sender.
        self.prune_remote_channel(sender, &channel);
        let Some((user_id, _)) = removed else {
            return;
        };
        if !self.member_present(channel.as_str(), &user_id) {
            self.announce(Transition::Removed(channel, user_id));
        }
    }

    fn remote_count(&mut self, sender: u64, channel: &str, count: usize) {
        let Some(channel) = self.remote_channel_name(channel) else {
            return;
        };
        if let Some(remote) = self.remote_channel_mut(sender, &channel) {
            remote.count = count;
        }
        self.prune_remote_channel(sender, &channel);
    }

    /// Replaces this node's copy of node `id` (or removes it, with `None`), announcing every
    /// member that appears in or disappears from the cluster as a result.
    fn replace_remote(&mut self, id: u64, new: Option<RemoteNode>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let mut transitions = Vec::new();
        for (channel, remote_channel) in new.iter().flat_map(|node| &node.channels) {
            for (user_id, info) in &remote_channel.members {
                if !self.member_present(channel.as_str(), user_id) {
                    let info = info.as_deref().map(ToOwned::to_owned);
                    transitions.push(Transition::Added(channel.clone(), user_id.clone(), info));
                }
            }
        }
        let _ = cluster;
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let old = cluster.remotes.remove(&id);
        if let Some(mut node) = new {
            node.last_seen = old.as_ref().and_then(|o| o.last_seen);
            cluster.remotes.insert(id, node);
        }
        for (channel, remote_channel) in old.iter().flat_map(|node| &node.channels) {
            for user_id in remote_channel.members.keys() {
                if !self.member_present(channel.as_str(), user_id) {
                    transitions.push(Transition::Removed(channel.clone(), user_id.clone()));
                }
            }
        }
        for transition in transitions {
            self.announce(transition);
        }
    }

    fn announce(&mut self, transition: Transition) {
        let (channel, frame) = match &transition {
            Transition::Added(channel, user_id, info) => (
                channel,
                frame::member_added(channel.as_str(), user_id, info.as_deref()),
            ),
            Transition::Removed(channel, user_id) => {
                (channel, frame::member_removed(channel.as_str(), user_id))
            }
        };
        let frame: Arc<str> = frame.into();
        self.broadcast(channel, None, &frame);
    }

    fn remote_node_from_state(&self, channels: Vec<ChannelState>) -> RemoteNode {
        let mut node = RemoteNode::default();
        let max = self
            .cluster
            .as_ref()
            .map_or(0, |c| c.config.max_remote_channels);
        for state in channels.into_iter().take(max) {
            let Some(channel) = self.remote_channel_name(&state.channel) else {
                continue;
            };
            let members = state
                .members
                .into_iter()
                .map(|m| (Arc::from(m.user_id), m.user_info))
                .collect();
            let remote = RemoteChannel {
                count: state.count,
                members,
            };
            if !remote.is_empty() {
                node.channels.insert(channel, remote);
            }
        }
        node
    }

    fn remote_channel_name(&self, channel: &str) -> Option<ChannelName> {
        ChannelName::parse(channel, self.config.limits.max_channel_name_bytes).ok()
    }

    fn remote_channel_mut(
        &mut self,
        sender: u64,
        channel: &ChannelName,
    ) -> Option<&mut RemoteChannel> {
        let cluster = self.cluster.as_mut()?;
        let max = cluster.config.max_remote_channels;
        let node = cluster.remotes.get_mut(&sender)?;
        if !node.channels.contains_key(channel) && node.channels.len() >= max {
            return None;
        }
        Some(node.channels.entry(channel.clone()).or_default())
    }

    fn prune_remote_channel(&mut self, sender: u64, channel: &ChannelName) {
        let Some(node) = self
            .cluster
            .as_mut()
            .and_then(|c| c.remotes.get_mut(&sender))
        else {
            return;
        };
        if node
            .channels
            .get(channel)
            .is_some_and(RemoteChannel::is_empty)
        {
            node.channels.remove(channel);
        }
    }

    fn local_state(&self) -> Vec<ChannelState> {
        self.channels
            .iter()
            .map(|(name, channel)| ChannelState {
                channel: name.to_string(),
                count: channel.subscribers.len(),
                members: channel
                    .roster
                    .iter()
                    .flat_map(|roster| roster.iter())
                    .map(|(user_id, info)| MemberState {
                        user_id: user_id.to_owned(),
                        user_info: info.map(ToOwned::to_owned),
                    })
                    .collect(),
            })
            .collect()
    }

    fn publish_cluster(&mut self, message: &Message) {
        match serde_json::to_string(message) {
            Ok(payload) => self.push_output(Output::Publish {
                payload: payload.into(),
            }),
            Err(error) => warn!("cannot serialize cluster message: {error}"),
        }
    }
}

impl Message {
    fn sender(&self) -> u64 {
        match self {
            Self::Event { node, .. }
            | Self::Join { node, .. }
            | Self::Leave { node, .. }
            | Self::Count { node, .. }
            | Self::Heartbeat { node }
            | Self::State { node, .. }
            | Self::SyncRequest { node }
            | Self::Bye { node } => *node,
        }
    }
}

#[cfg(test)]
mod tests;
