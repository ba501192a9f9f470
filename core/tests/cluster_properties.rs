//! Property test of cluster mode through the public API.
//!
//! `cluster_matches_model` replays random operations on two or three nodes joined by an
//! in-memory bus. The bus delivers every published message to every node, the publisher
//! included, in publication order, until no message is left after each step. After every
//! step the test checks:
//!
//! - the frames each socket got against a model of the whole cluster, so each subscriber
//!   gets `member_added` and `member_removed` exactly once per cluster-wide transition, and
//!   events reach exactly the subscribed sockets of every node minus the excluded one;
//! - each node's `GET /channels/NAME/users` against the distinct users with a subscribed
//!   socket on any node, and its channel counts against the cluster-wide totals.
//!
//! Run with `cargo test -p crier-core --test cluster_properties`. Each run has proptest's
//! default of 256 cases, and `PROPTEST_CASES=10000` sets a longer run. Failures are not saved
//! to disk: turn the minimal input proptest prints into a plain `#[test]` in this file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crier_core::{
    ApiRequest, AppConfig, ClusterConfig, Config, ConnectRequest, ConnectionId, Node, Output,
    sign_api_request, sign_channel,
};
use md5::{Digest, Md5};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Value, json};

const APP_ID: &str = "1001";
const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

/// Wall-clock time of every API request, in Unix seconds.
const UNIX_NOW: u64 = 1_700_000_000;

/// Channels of the operations: two presence channels, a private and a public one.
const CHANNELS: [&str; 4] = ["presence-a", "presence-b", "private-c", "d"];

/// Presence user ids, few so that one user often has sockets on several nodes.
const USERS: [&str; 3] = ["u-0", "u-1", "u-2"];

/// Time that passes before each step. At one client event per step, a connection stays
/// below its limit of 10 per second, and cases of more than four steps see heartbeats.
const STEP: Duration = Duration::from_millis(250);

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bounds on the messages the bus delivers after one input, on the `handle_timeout`
/// calls in one step, and on the outputs one node queues for one input.
const MAX_DELIVERIES: usize = 10_000;
const MAX_TIMER_CALLS: usize = 1_000;
const MAX_OUTPUTS: usize = 100_000;

/// proptest's defaults (including `PROPTEST_CASES`), without writing failures to disk.
fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn cluster_matches_model(node_count in 2..=3usize, ops in vec(op(), 1..60)) {
        let mut run = Run::new(node_count);
        for op in &ops {
            run.apply(op);
        }
    }
}

/// One operation. Node, socket and channel indices are taken modulo the number of nodes,
/// live sockets and channels, so every generated value names something that exists.
#[derive(Clone, Debug)]
enum Op {
    Connect {
        node: usize,
    },
    /// Subscribes with a valid signature; on a presence channel as `USERS[user]`.
    Subscribe {
        socket: usize,
        channel: usize,
        user: usize,
    },
    Unsubscribe {
        socket: usize,
        channel: usize,
    },
    Disconnect {
        socket: usize,
    },
    ClientEvent {
        socket: usize,
        channel: usize,
    },
    /// Publishes through `POST /events` on `node`, excluding socket `exclude` if given.
    Trigger {
        node: usize,
        channel: usize,
        exclude: Option<usize>,
    },
    /// Calls `handle_cluster_connected`, as a host does after reconnecting to Redis.
    Reconnect {
        node: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let index = || 0..8usize;
    let channel = || 0..CHANNELS.len();
    prop_oneof![
        3 => index().prop_map(|node| Op::Connect { node }),
        6 => (index(), channel(), 0..USERS.len())
            .prop_map(|(socket, channel, user)| Op::Subscribe { socket, channel, user }),
        2 => (index(), channel())
            .prop_map(|(socket, channel)| Op::Unsubscribe { socket, channel }),
        1 => index().prop_map(|socket| Op::Disconnect { socket }),
        2 => (index(), channel())
            .prop_map(|(socket, channel)| Op::ClientEvent { socket, channel }),
        2 => (index(), channel(), proptest::option::of(index()))
            .prop_map(|(node, channel, exclude)| Op::Trigger { node, channel, exclude }),
        1 => index().prop_map(|node| Op::Reconnect { node }),
    ]
}

/// The model of one live socket.
#[derive(Debug)]
struct ModelSocket {
    node: usize,
    id: ConnectionId,
    socket_id: String,
    /// Subscribed channels, with the user id on presence channels.
    channels: BTreeMap<&'static str, Option<&'static str>>,
}

impl ModelSocket {
    fn address(&self) -> (usize, ConnectionId) {
        (self.node, self.id)
    }
}

/// Frames per socket, each socket named by its node index and connection.
type Frames = BTreeMap<(usize, ConnectionId), Vec<Value>>;

/// The nodes, the bus, a fake clock and the model of every live socket.
struct Run {
    nodes: Vec<Node>,
    now: Instant,
    bus: VecDeque<Arc<str>>,
    /// Frames sent since the last check.
    frames: Frames,
    sockets: Vec<ModelSocket>,
    step: usize,
    /// Signed query strings of GET requests by path and parameters. The signature depends
    /// on nothing else, and HMAC dominates the run time of a debug build.
    signed_gets: BTreeMap<String, String>,
}

impl Run {
    fn new(node_count: usize) -> Self {
        let nodes = (0..node_count)
            .map(|index| Node::new(config(), 100 + index as u64).expect("valid config"))
            .collect();
        let mut run = Self {
            nodes,
            now: Instant::now(),
            bus: VecDeque::new(),
            frames: Frames::new(),
            sockets: Vec::new(),
            step: 0,
            signed_gets: BTreeMap::new(),
        };
        for node in 0..node_count {
            run.reconnect(node);
        }
        run
    }

    /// Lets time pass, applies `op` to the nodes and the model, then checks the frames and
    /// the API responses.
    fn apply(&mut self, op: &Op) {
        self.step += 1;
        self.advance(STEP);
        self.check_frames(&Frames::new(), "time passing");
        let expected = match *op {
            Op::Connect { node } => self.connect(node),
            Op::Subscribe {
                socket,
                channel,
                user,
            } => self.subscribe(socket, channel, user),
            Op::Unsubscribe { socket, channel } => self.unsubscribe(socket, channel),
            Op::Disconnect { socket } => self.disconnect(socket),
            Op::ClientEvent { socket, channel } => self.client_event(socket, channel),
            Op::Trigger {
                node,
                channel,
                exclude,
            } => self.trigger(node, channel, exclude),
            Op::Reconnect { node } => {
                self.reconnect(node % self.nodes.len());
                Frames::new()
            }
        };
        self.settle();
        self.check_frames(&expected, &format!("{op:?}"));
        self.check_api();
    }

    // Hosting: outputs, the bus and timers.

    fn collect(&mut self, node: usize) {
        for _ in 0..MAX_OUTPUTS {
            let Some(output) = self.nodes[node].poll_output() else {
                return;
            };
            match output {
                Output::Send { connection, frame } => {
                    let frame = parse_frame(&frame);
                    self.frames
                        .entry((node, connection))
                        .or_default()
                        .push(frame);
                }
                Output::Publish { payload } => self.bus.push_back(payload),
                other => panic!("step {}: unexpected output {other:?}", self.step),
            }
        }
        panic!("node {node} queues outputs without end");
    }

    /// Drains every node and delivers messages until the bus is empty.
    fn settle(&mut self) {
        for node in 0..self.nodes.len() {
            self.collect(node);
        }
        for _ in 0..MAX_DELIVERIES {
            let Some(payload) = self.bus.pop_front() else {
                return;
            };
            for node in 0..self.nodes.len() {
                self.nodes[node].handle_cluster(self.now, &payload);
                self.collect(node);
            }
        }
        panic!("cluster messages keep coming after {MAX_DELIVERIES} deliveries");
    }

    /// Moves the clock forward by `by`, running every timer due on the way in time order.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..MAX_TIMER_CALLS {
            let next = (0..self.nodes.len())
                .filter_map(|node| Some((self.nodes[node].poll_timeout()?, node)))
                .min();
            match next {
                Some((at, node)) if at <= end => {
                    self.now = self.now.max(at);
                    self.nodes[node].handle_timeout(self.now);
                    self.settle();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("timers keep firing after {MAX_TIMER_CALLS} calls");
    }

    fn reconnect(&mut self, node: usize) {
        self.nodes[node].handle_cluster_connected(self.now);
        self.settle();
        self.advance(Duration::ZERO);
    }

    // Operations: each runs one input and returns the frames the model expects from it.

    fn connect(&mut self, node: usize) -> Frames {
        let node = node % self.nodes.len();
        let request = ConnectRequest::parse("/app/app-key?protocol=7").expect("valid path");
        let id = self.nodes[node]
            .open(self.now, &request)
            .expect("open accepted");
        let socket_id = self.nodes[node].socket_id(id).expect("open").to_string();
        let established = json!({
            "event": "pusher:connection_established",
            "data": { "socket_id": socket_id, "activity_timeout": 120 },
        });
        self.sockets.push(ModelSocket {
            node,
            id,
            socket_id,
            channels: BTreeMap::new(),
        });
        Frames::from([((node, id), vec![established])])
    }

    fn subscribe(&mut self, socket: usize, channel: usize, user: usize) -> Frames {
        let Some(index) = self.socket_index(socket) else {
            return Frames::new();
        };
        let channel = CHANNELS[channel];
        let presence = is_presence(channel);
        let user_id = USERS[user];
        let channel_data = presence
            .then(|| json!({ "user_id": user_id, "user_info": user_info(user_id) }).to_string());
        let socket = &self.sockets[index];
        let auth = sign_channel(
            KEY,
            SECRET,
            &socket.socket_id,
            channel,
            channel_data.as_deref(),
        );
        let mut data = json!({ "channel": channel, "auth": auth });
        if let Some(channel_data) = &channel_data {
            data["channel_data"] = channel_data.as_str().into();
        }
        let text = json!({ "event": "pusher:subscribe", "data": data }).to_string();
        let address = socket.address();
        let already = socket.channels.contains_key(channel);
        self.nodes[address.0].handle_text(self.now, address.1, &text);

        let mut expected = Frames::new();
        if !already {
            let member = presence.then_some(user_id);
            if presence && !self.members(channel).contains(user_id) {
                let added = json!({
                    "event": "pusher_internal:member_added",
                    "channel": channel,
                    "data": { "user_id": user_id, "user_info": user_info(user_id) },
                });
                for other in self.subscribers(channel) {
                    expected.entry(other).or_default().push(added.clone());
                }
            }
            self.sockets[index].channels.insert(channel, member);
        }
        let data = if presence {
            self.presence_data(channel)
        } else {
            json!({})
        };
        let succeeded = json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": data,
        });
        expected.entry(address).or_default().push(succeeded);
        expected
    }

    fn unsubscribe(&mut self, socket: usize, channel: usize) -> Frames {
        let Some(index) = self.socket_index(socket) else {
            return Frames::new();
        };
        let channel = CHANNELS[channel];
        let text = json!({ "event": "pusher:unsubscribe", "data": { "channel": channel } });
        let (node, id) = self.sockets[index].address();
        self.nodes[node].handle_text(self.now, id, &text.to_string());
        let Some(user_id) = self.sockets[index].channels.remove(channel) else {
            return Frames::new();
        };
        let mut expected = Frames::new();
        self.expect_leave(&mut expected, channel, user_id);
        expected
    }

    fn disconnect(&mut self, socket: usize) -> Frames {
        let Some(index) = self.socket_index(socket) else {
            return Frames::new();
        };
        let socket = self.sockets.remove(index);
        self.nodes[socket.node].handle_disconnect(self.now, socket.id);
        let mut expected = Frames::new();
        for (channel, user_id) in socket.channels {
            self.expect_leave(&mut expected, channel, user_id);
        }
        expected
    }

    /// Adds the `member_removed` a departure from `channel` causes, if the user has no
    /// socket left in it on any node. The model no longer lists the departed socket.
    fn expect_leave(&self, expected: &mut Frames, channel: &str, user_id: Option<&str>) {
        let Some(user_id) = user_id else {
            return;
        };
        if self.members(channel).contains(user_id) {
            return;
        }
        let removed = json!({
            "event": "pusher_internal:member_removed",
            "channel": channel,
            "data": { "user_id": user_id },
        });
        for other in self.subscribers(channel) {
            expected.entry(other).or_default().push(removed.clone());
        }
    }

    fn client_event(&mut self, socket: usize, channel: usize) -> Frames {
        let Some(index) = self.socket_index(socket) else {
            return Frames::new();
        };
        let channel = CHANNELS[channel];
        let data = json!({ "step": self.step });
        let text = json!({ "event": "client-e", "channel": channel, "data": data });
        let sender = &self.sockets[index];
        let address = sender.address();
        self.nodes[address.0].handle_text(self.now, address.1, &text.to_string());

        let mut expected = Frames::new();
        let allowed = channel.starts_with("private-") || is_presence(channel);
        match sender.channels.get(channel) {
            Some(user_id) if allowed => {
                let mut relayed = text;
                if let Some(user_id) = user_id {
                    relayed["user_id"] = (*user_id).into();
                }
                for other in self.subscribers(channel) {
                    if other != address {
                        expected.entry(other).or_default().push(relayed.clone());
                    }
                }
            }
            _ => {
                expected.insert(address, vec![json!({ "event": "pusher:error" })]);
            }
        }
        expected
    }

    fn trigger(&mut self, node: usize, channel: usize, exclude: Option<usize>) -> Frames {
        let node = node % self.nodes.len();
        let channel = CHANNELS[channel];
        let data = format!("step-{}", self.step);
        let excluded = exclude.and_then(|socket| self.socket_index(socket));
        let mut event = json!({ "name": "e", "channel": channel, "data": data });
        if let Some(index) = excluded {
            event["socket_id"] = self.sockets[index].socket_id.as_str().into();
        }
        let (status, body) = self.api(node, "POST", "/apps/1001/events", &event.to_string());
        assert_eq!(status, 200, "step {}: POST /events: {body}", self.step);
        assert_eq!(body, json!({}), "step {}", self.step);

        let excluded = excluded.map(|index| self.sockets[index].address());
        let delivered = json!({ "event": "e", "channel": channel, "data": data });
        let mut expected = Frames::new();
        for socket in self.subscribers(channel) {
            if Some(socket) != excluded {
                expected.entry(socket).or_default().push(delivered.clone());
            }
        }
        expected
    }

    // The model.

    fn socket_index(&self, socket: usize) -> Option<usize> {
        (!self.sockets.is_empty()).then(|| socket % self.sockets.len())
    }

    /// Returns the sockets subscribed to `channel` on every node.
    fn subscribers(&self, channel: &str) -> Vec<(usize, ConnectionId)> {
        self.sockets
            .iter()
            .filter(|socket| socket.channels.contains_key(channel))
            .map(ModelSocket::address)
            .collect()
    }

    /// Returns the distinct users with a socket in `channel` on any node.
    fn members(&self, channel: &str) -> BTreeSet<&'static str> {
        self.sockets
            .iter()
            .filter_map(|socket| *socket.channels.get(channel)?)
            .collect()
    }

    fn presence_data(&self, channel: &str) -> Value {
        let members = self.members(channel);
        let hash: Map<String, Value> = members
            .iter()
            .map(|&id| (id.to_owned(), user_info(id)))
            .collect();
        json!({ "presence": { "ids": members, "hash": hash, "count": members.len() } })
    }

    // Checks.

    /// Compares the frames sent since the last check with `expected`, ignoring the order of
    /// frames to one socket, then clears them.
    fn check_frames(&mut self, expected: &Frames, cause: &str) {
        let actual = sorted(std::mem::take(&mut self.frames));
        let expected = sorted(expected.clone());
        assert_eq!(actual, expected, "step {}: frames after {cause}", self.step);
    }

    /// Checks every node's HTTP API responses against the cluster-wide totals of the model.
    fn check_api(&mut self) {
        let step = self.step;
        let mut counts = Map::new();
        let mut presence_counts = Map::new();
        for channel in CHANNELS {
            let sockets = self.subscribers(channel).len();
            if sockets == 0 {
                continue;
            }
            counts.insert(channel.to_owned(), json!({ "subscription_count": sockets }));
            if is_presence(channel) {
                let users = self.members(channel).len();
                let both = json!({ "user_count": users, "subscription_count": sockets });
                presence_counts.insert(channel.to_owned(), both);
            }
        }
        // One channel per step through the single-channel endpoint, for its `occupied`.
        let channel = CHANNELS[step % CHANNELS.len()];
        let sockets = self.subscribers(channel).len();
        let channel_body = json!({ "occupied": sockets > 0, "subscription_count": sockets });

        for node in 0..self.nodes.len() {
            let info = [("info", "subscription_count")];
            let body = self.get(node, "/apps/1001/channels", &info);
            let expected = json!({ "channels": counts });
            assert_eq!(body, expected, "step {step}: channels on node {node}");

            let info = [
                ("filter_by_prefix", "presence-"),
                ("info", "user_count,subscription_count"),
            ];
            let body = self.get(node, "/apps/1001/channels", &info);
            let expected = json!({ "channels": presence_counts });
            assert_eq!(
                body, expected,
                "step {step}: presence channels on node {node}"
            );

            let path = format!("/apps/1001/channels/{channel}");
            let body = self.get(node, &path, &[("info", "subscription_count")]);
            assert_eq!(body, channel_body, "step {step}: {channel} on node {node}");

            for channel in CHANNELS.into_iter().filter(|channel| is_presence(channel)) {
                let path = format!("/apps/1001/channels/{channel}/users");
                let body = self.get(node, &path, &[]);
                let users = body["users"].as_array().expect("users array");
                let mut ids: Vec<&str> = users
                    .iter()
                    .map(|user| user["id"].as_str().expect("string id"))
                    .collect();
                ids.sort_unstable();
                let expected: Vec<&str> = self.members(channel).into_iter().collect();
                assert_eq!(
                    ids, expected,
                    "step {step}: users of {channel} on node {node}"
                );
            }
        }
    }

    // The HTTP API.

    fn api(&mut self, node: usize, method: &str, path: &str, body: &str) -> (u16, Value) {
        let query = signed_query(method, path, &[], body);
        self.send_api(node, method, path, &query, body)
    }

    fn send_api(
        &mut self,
        node: usize,
        method: &str,
        path: &str,
        query: &str,
        body: &str,
    ) -> (u16, Value) {
        let request = ApiRequest {
            method,
            path,
            query,
            body: body.as_bytes(),
        };
        let response = self.nodes[node].handle_api(self.now, UNIX_NOW, &request);
        let body = serde_json::from_str(&response.body).expect("response body is JSON");
        (response.status, body)
    }

    fn get(&mut self, node: usize, path: &str, params: &[(&str, &str)]) -> Value {
        let key = format!("{path}?{params:?}");
        let query = self
            .signed_gets
            .entry(key)
            .or_insert_with(|| signed_query("GET", path, params, ""))
            .clone();
        let (status, body) = self.send_api(node, "GET", path, &query, "");
        assert_eq!(status, 200, "step {}: GET {path}: {body}", self.step);
        body
    }
}

fn config() -> Config {
    let mut app = AppConfig::new(KEY, SECRET);
    app.id = Some(APP_ID.to_owned());
    let mut config = Config::new(app);
    config.cluster = Some(ClusterConfig {
        heartbeat_interval: HEARTBEAT_INTERVAL,
        node_timeout: NODE_TIMEOUT,
        ..ClusterConfig::default()
    });
    config
}

fn is_presence(channel: &str) -> bool {
    channel.starts_with("presence-")
}

fn user_info(user_id: &str) -> Value {
    json!({ "name": user_id })
}

/// Returns `frames` with each socket's frames in a fixed order and no empty entries.
fn sorted(frames: Frames) -> BTreeMap<(usize, ConnectionId), Vec<String>> {
    frames
        .into_iter()
        .filter(|(_, frames)| !frames.is_empty())
        .map(|(socket, frames)| {
            let mut texts: Vec<String> = frames.iter().map(Value::to_string).collect();
            texts.sort_unstable();
            (socket, texts)
        })
        .collect()
}

/// Parses a server frame for comparison with the model: a `data` string that contains JSON (the
/// double encoding of `pusher:` and `pusher_internal:` events) is decoded, presence `ids` are
/// sorted, and `pusher:error` keeps only its event name.
fn parse_frame(text: &str) -> Value {
    let mut frame: Value = serde_json::from_str(text).expect("frame is JSON");
    if frame["event"] == "pusher:error" {
        return json!({ "event": "pusher:error" });
    }
    if let Some(Value::String(data)) = frame.get("data")
        && let Ok(decoded) = serde_json::from_str::<Value>(data)
    {
        frame["data"] = decoded;
    }
    if let Some(Value::Array(ids)) = frame.pointer_mut("/data/presence/ids") {
        ids.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    frame
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Builds a query string signed with the app secret: the `auth_*` parameters, `body_md5`
/// for a non-empty body, then `params`.
fn signed_query(method: &str, path: &str, params: &[(&str, &str)], body: &str) -> String {
    let timestamp = UNIX_NOW.to_string();
    let md5: String = Md5::digest(body.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut pairs = vec![
        ("auth_key", KEY),
        ("auth_timestamp", timestamp.as_str()),
        ("auth_version", "1.0"),
    ];
    if !body.is_empty() {
        pairs.push(("body_md5", &md5));
    }
    pairs.extend_from_slice(params);
    let query: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect();
    let query = query.join("&");
    let signature = sign_api_request(SECRET, method, path, &query).expect("query parses");
    format!("{query}&auth_signature={signature}")
}
