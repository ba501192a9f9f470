//! Cluster scenarios: two or three `Node`s joined by an in-memory bus, with a fake clock.
//!
//! The bus plays Redis pub/sub: a published message reaches every running node, its
//! publisher included, in publication order. After every input the harness drains each
//! node's outputs and delivers queued messages until the bus is empty. Time moves only in
//! `TestCluster::advance`, which runs each node's timers at the instants `poll_timeout`
//! returns.

use std::collections::VecDeque;

use md5::{Digest, Md5};
use serde_json::{Value, json};

use super::*;
use crate::api::ApiRequest;
use crate::auth::{sign_api_request, sign_channel, to_hex};
use crate::config::{AppConfig, Config};
use crate::connection::ConnectRequest;

const APP_ID: &str = "1001";
const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

/// Wall-clock time of every API request, in Unix seconds.
const UNIX_NOW: u64 = 1_700_000_000;

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
const NODE_TIMEOUT: Duration = Duration::from_secs(15);

/// Upper bound on the messages the bus delivers for one input.
const MAX_DELIVERIES: usize = 10_000;
/// Upper bound on `handle_timeout` calls in one `advance`.
const MAX_TIMER_CALLS: usize = 10_000;
/// Upper bound on the outputs one node queues for one input.
const MAX_OUTPUTS: usize = 100_000;

const ROOM: &str = "presence-room";

/// What `TestCluster::take` returns for a socket that got no frame.
const NO_FRAMES: [Value; 0] = [];

/// Cluster ids of fake nodes whose messages the tests write by hand. Real nodes draw their
/// ids from their seeds, and `fake_ids_are_not_real_ids` checks that these differ.
const FAKE_NODE: u64 = 7;
const OTHER_FAKE_NODE: u64 = 8;

fn config() -> Config {
    let mut app = AppConfig::new(KEY, SECRET);
    app.id = Some(APP_ID.to_owned());
    let mut config = Config::new(app);
    // Long enough that no liveness probe fires in any test.
    config.activity_timeout = Duration::from_secs(3600);
    config.cluster = Some(ClusterConfig {
        heartbeat_interval: HEARTBEAT_INTERVAL,
        node_timeout: NODE_TIMEOUT,
        ..ClusterConfig::default()
    });
    config
}

/// Returns `config()` with one change to its cluster settings.
fn config_with(change: impl FnOnce(&mut ClusterConfig)) -> Config {
    let mut config = config();
    change(config.cluster.as_mut().expect("cluster mode"));
    config
}

/// One client socket: the index of its node and its connection there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Socket {
    node: usize,
    id: ConnectionId,
}

/// Nodes, the bus between them, a fake clock, and every frame sent to each socket.
struct TestCluster {
    nodes: Vec<Node>,
    now: Instant,
    /// Messages published and not yet delivered.
    bus: VecDeque<Arc<str>>,
    /// Crashed nodes: they get no input, and what they queue is discarded.
    down: BTreeSet<usize>,
    /// Nodes whose published messages are lost, while they keep receiving.
    muted: BTreeSet<usize>,
    /// Whether every published message is lost, as during a Redis restart.
    losing_messages: bool,
    /// Every message published, with the index of its publisher, lost ones included.
    published: Vec<(usize, Arc<str>)>,
    /// Frames sent to each socket and not yet taken by `take`.
    pending: BTreeMap<Socket, Vec<String>>,
    /// Every frame sent to each socket.
    history: BTreeMap<Socket, Vec<String>>,
    /// Close codes of the sockets a node closed.
    closed: BTreeMap<Socket, u16>,
}

impl TestCluster {
    fn new(count: usize) -> Self {
        Self::with_configs(vec![config(); count])
    }

    /// Starts one node per config, connects them to the bus in index order and runs the
    /// timers due at the start.
    fn with_configs(configs: Vec<Config>) -> Self {
        let nodes = configs
            .into_iter()
            .zip(1000..)
            .map(|(config, seed)| Node::new(config, seed).expect("valid config"))
            .collect();
        let mut cluster = Self {
            nodes,
            now: Instant::now(),
            bus: VecDeque::new(),
            down: BTreeSet::new(),
            muted: BTreeSet::new(),
            losing_messages: false,
            published: Vec::new(),
            pending: BTreeMap::new(),
            history: BTreeMap::new(),
            closed: BTreeMap::new(),
        };
        for node in 0..cluster.nodes.len() {
            cluster.reconnect(node);
        }
        cluster
    }

    fn cluster_id(&self, node: usize) -> u64 {
        self.nodes[node].cluster_id().expect("cluster mode")
    }

    fn remotes(&self, node: usize) -> &BTreeMap<u64, RemoteNode> {
        &self.nodes[node]
            .cluster
            .as_ref()
            .expect("cluster mode")
            .remotes
    }

    /// Drains one node's outputs: frames are recorded per socket and messages go on the bus.
    fn collect(&mut self, node: usize) {
        for _ in 0..MAX_OUTPUTS {
            let Some(output) = self.nodes[node].poll_output() else {
                return;
            };
            if self.down.contains(&node) {
                continue;
            }
            match output {
                Output::Send { connection, frame } => {
                    let socket = Socket {
                        node,
                        id: connection,
                    };
                    self.pending
                        .entry(socket)
                        .or_default()
                        .push(frame.to_string());
                    self.history
                        .entry(socket)
                        .or_default()
                        .push(frame.to_string());
                }
                Output::Close {
                    connection, code, ..
                } => {
                    let socket = Socket {
                        node,
                        id: connection,
                    };
                    self.closed.insert(socket, code);
                }
                Output::Ping { .. } => {}
                Output::Publish { payload } => {
                    self.published.push((node, payload.clone()));
                    if !self.losing_messages && !self.muted.contains(&node) {
                        self.bus.push_back(payload);
                    }
                }
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
                if !self.down.contains(&node) {
                    self.nodes[node].handle_cluster(self.now, &payload);
                    self.collect(node);
                }
            }
        }
        panic!("cluster messages keep coming after {MAX_DELIVERIES} deliveries");
    }

    /// Moves the clock forward by `by`, running every timer that falls due on the way in
    /// time order and delivering what it publishes at once.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..MAX_TIMER_CALLS {
            let next = (0..self.nodes.len())
                .filter(|node| !self.down.contains(node))
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

    /// Tells `node` that its bus subscription is up, as a host does after every connection
    /// to Redis, and runs its timers that are due now.
    fn reconnect(&mut self, node: usize) {
        self.nodes[node].handle_cluster_connected(self.now);
        self.settle();
        self.advance(Duration::ZERO);
    }

    /// Hands `payload` to one node as if another node had published it.
    fn deliver(&mut self, node: usize, payload: &str) {
        self.nodes[node].handle_cluster(self.now, payload);
        self.settle();
    }

    fn connect(&mut self, node: usize) -> Socket {
        let request = ConnectRequest::parse("/app/app-key?protocol=7").expect("valid path");
        let id = self.nodes[node]
            .open(self.now, &request)
            .expect("open accepted");
        self.settle();
        let socket = Socket { node, id };
        self.take(socket);
        socket
    }

    fn socket_id(&self, socket: Socket) -> String {
        self.nodes[socket.node]
            .socket_id(socket.id)
            .expect("connection is open")
            .to_string()
    }

    fn text(&mut self, socket: Socket, text: &str) {
        self.nodes[socket.node].handle_text(self.now, socket.id, text);
        self.settle();
    }

    /// Subscribes to a public or private channel, signing the request when it needs it.
    fn subscribe(&mut self, socket: Socket, channel: &str) {
        let auth = sign_channel(KEY, SECRET, &self.socket_id(socket), channel, None);
        let data = json!({ "channel": channel, "auth": auth });
        self.text(
            socket,
            &json!({ "event": "pusher:subscribe", "data": data }).to_string(),
        );
    }

    /// Subscribes to a presence channel with signed `channel_data`.
    fn join_with_data(&mut self, socket: Socket, channel: &str, channel_data: &str) {
        let socket_id = self.socket_id(socket);
        let auth = sign_channel(KEY, SECRET, &socket_id, channel, Some(channel_data));
        let data = json!({ "channel": channel, "auth": auth, "channel_data": channel_data });
        self.text(
            socket,
            &json!({ "event": "pusher:subscribe", "data": data }).to_string(),
        );
    }

    /// Subscribes to a presence channel as `user_id`, with `user_info(user_id)`.
    fn join(&mut self, socket: Socket, channel: &str, user_id: &str) {
        let channel_data = json!({ "user_id": user_id, "user_info": user_info(user_id) });
        self.join_with_data(socket, channel, &channel_data.to_string());
    }

    /// Connects a socket to `node`, joins `ROOM` as `user_id` and drops the frames it got.
    fn member(&mut self, node: usize, user_id: &str) -> Socket {
        let socket = self.connect(node);
        self.join(socket, ROOM, user_id);
        self.take(socket);
        socket
    }

    fn unsubscribe(&mut self, socket: Socket, channel: &str) {
        let data = json!({ "channel": channel });
        self.text(
            socket,
            &json!({ "event": "pusher:unsubscribe", "data": data }).to_string(),
        );
    }

    fn disconnect(&mut self, socket: Socket) {
        self.nodes[socket.node].handle_disconnect(self.now, socket.id);
        self.settle();
    }

    /// Returns the frames sent to `socket` since the last call, parsed by `parse_frame`.
    fn take(&mut self, socket: Socket) -> Vec<Value> {
        let frames = self.pending.remove(&socket).unwrap_or_default();
        frames.iter().map(|frame| parse_frame(frame)).collect()
    }

    /// Drops the frames every socket got so far.
    fn discard_frames(&mut self) {
        self.pending.clear();
    }

    /// Takes the frames of every socket in `sockets` and asserts that each got `expected`.
    fn assert_each_got(&mut self, sockets: &[Socket], expected: &[Value]) {
        for &socket in sockets {
            assert_eq!(self.take(socket), expected, "frames to {socket:?}");
        }
    }

    /// Returns the members `socket` has learned of in `channel`: the roster of its last
    /// `subscription_succeeded`, updated by every later `member_added` and `member_removed`.
    /// Panics when an event adds a known member or removes an unknown one.
    fn roster_seen(&self, socket: Socket, channel: &str) -> BTreeSet<String> {
        let mut roster = BTreeSet::new();
        let frames = self.history.get(&socket).map_or(&[][..], Vec::as_slice);
        for frame in frames.iter().map(|frame| parse_frame(frame)) {
            if frame["channel"] != channel {
                continue;
            }
            let data = &frame["data"];
            match frame["event"].as_str() {
                Some("pusher_internal:subscription_succeeded") => {
                    let ids = data["presence"]["ids"].as_array().expect("presence ids");
                    roster = ids
                        .iter()
                        .map(|id| id.as_str().unwrap().to_owned())
                        .collect();
                }
                Some("pusher_internal:member_added") => {
                    let user_id = data["user_id"].as_str().unwrap();
                    assert!(roster.insert(user_id.to_owned()), "{socket:?}: {frame}");
                }
                Some("pusher_internal:member_removed") => {
                    let user_id = data["user_id"].as_str().unwrap();
                    assert!(roster.remove(user_id), "{socket:?}: {frame}");
                }
                _ => {}
            }
        }
        roster
    }

    /// Sends a signed HTTP API request to one node and returns the status and the JSON body.
    fn api(
        &mut self,
        node: usize,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let query = signed_query(method, path, params, body);
        let request = ApiRequest {
            method,
            path,
            query: &query,
            body: body.as_bytes(),
        };
        let response = self.nodes[node].handle_api(self.now, UNIX_NOW, &request);
        self.settle();
        let body = serde_json::from_str(&response.body).expect("response body is JSON");
        (response.status, body)
    }

    fn get(&mut self, node: usize, path: &str, params: &[(&str, &str)]) -> Value {
        let (status, body) = self.api(node, "GET", path, params, "");
        assert_eq!(status, 200, "GET {path} on node {node}: {body}");
        body
    }

    fn trigger(&mut self, node: usize, event: &Value) {
        let path = "/apps/1001/events";
        let (status, body) = self.api(node, "POST", path, &[], &event.to_string());
        assert_eq!(status, 200, "POST {path} on node {node}: {body}");
        assert_eq!(body, json!({}));
    }

    /// Returns the user ids that `GET /channels/{channel}/users` lists on one node.
    fn users(&mut self, node: usize, channel: &str) -> BTreeSet<String> {
        let path = format!("/apps/1001/channels/{channel}/users");
        let body = self.get(node, &path, &[]);
        let users = body["users"].as_array().expect("users array");
        let ids: BTreeSet<String> = users
            .iter()
            .map(|user| user["id"].as_str().expect("string id").to_owned())
            .collect();
        assert_eq!(
            ids.len(),
            users.len(),
            "duplicate users on node {node}: {body}"
        );
        ids
    }

    /// Asserts that every running node lists exactly `expected` as members of `channel`.
    fn assert_users(&mut self, channel: &str, expected: &[&str]) {
        let expected: BTreeSet<String> = expected.iter().map(|&id| id.to_owned()).collect();
        for node in 0..self.nodes.len() {
            if !self.down.contains(&node) {
                assert_eq!(self.users(node, channel), expected, "users on node {node}");
            }
        }
    }

    /// Returns `(user_count, subscription_count)` of a presence channel as one node reports.
    fn counts(&mut self, node: usize, channel: &str) -> (Value, Value) {
        let path = format!("/apps/1001/channels/{channel}");
        let info = [("info", "user_count,subscription_count")];
        let body = self.get(node, &path, &info);
        (
            body["user_count"].clone(),
            body["subscription_count"].clone(),
        )
    }
}

/// Parses a server frame, decoding a `data` string that contains JSON (the double encoding of
/// `pusher_internal:` events) and sorting presence `ids`, whose order the protocol leaves
/// open.
fn parse_frame(text: &str) -> Value {
    let mut frame: Value = serde_json::from_str(text).expect("frame is JSON");
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

fn user_info(user_id: &str) -> Value {
    json!({ "name": format!("User {user_id}") })
}

fn member_added(channel: &str, user_id: &str) -> Value {
    json!({
        "event": "pusher_internal:member_added",
        "channel": channel,
        "data": { "user_id": user_id, "user_info": user_info(user_id) },
    })
}

fn member_removed(channel: &str, user_id: &str) -> Value {
    json!({
        "event": "pusher_internal:member_removed",
        "channel": channel,
        "data": { "user_id": user_id },
    })
}

fn api_event(name: &str, channel: &str, data: &str) -> Value {
    json!({ "event": name, "channel": channel, "data": data })
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
    let md5 = to_hex(&Md5::digest(body.as_bytes()));
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

fn heartbeat(node: u64) -> String {
    json!({ "heartbeat": { "node": node } }).to_string()
}

/// Returns the kind of a published message: its tag, such as `"heartbeat"`.
fn message_kind(payload: &str) -> String {
    let message: Value = serde_json::from_str(payload).expect("message is JSON");
    let object = message.as_object().expect("message is an object");
    assert_eq!(object.len(), 1, "one tag per message: {payload}");
    object.keys().next().unwrap().clone()
}

// Presence across nodes

#[test]
fn presence_member_once_across_nodes() {
    let mut cluster = TestCluster::new(3);
    let watchers: Vec<Socket> = (0..3)
        .map(|node| cluster.member(node, &format!("watcher-{node}")))
        .collect();
    cluster.discard_frames();

    let alice_0 = cluster.member(0, "alice");
    cluster.assert_each_got(&watchers, &[member_added(ROOM, "alice")]);

    // A second socket of the same user, on another node, is no new member.
    let alice_1 = cluster.connect(1);
    cluster.join(alice_1, ROOM, "alice");
    cluster.assert_each_got(&watchers, &[]);
    assert_eq!(cluster.take(alice_0), NO_FRAMES);
    let frames = cluster.take(alice_1);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["data"]["presence"]["count"], 4);
    cluster.assert_users(ROOM, &["alice", "watcher-0", "watcher-1", "watcher-2"]);

    // The user stays while a socket on any node remains.
    cluster.unsubscribe(alice_0, ROOM);
    cluster.assert_each_got(&watchers, &[]);
    assert_eq!(cluster.take(alice_1), NO_FRAMES);
    cluster.assert_users(ROOM, &["alice", "watcher-0", "watcher-1", "watcher-2"]);

    cluster.disconnect(alice_1);
    cluster.assert_each_got(&watchers, &[member_removed(ROOM, "alice")]);
    assert_eq!(cluster.take(alice_0), NO_FRAMES);
    cluster.assert_users(ROOM, &["watcher-0", "watcher-1", "watcher-2"]);
}

#[test]
fn presence_last_socket_on_first_node() {
    let mut cluster = TestCluster::new(2);
    let watchers = [
        cluster.member(0, "watcher-0"),
        cluster.member(1, "watcher-1"),
    ];
    cluster.discard_frames();
    let alice_0 = cluster.member(0, "alice");
    let alice_1 = cluster.member(1, "alice");
    let alice_1_again = cluster.member(1, "alice");
    cluster.assert_each_got(&watchers, &[member_added(ROOM, "alice")]);

    // Unlike in `presence_member_once_across_nodes`, the user's last socket is on the node
    // where the user joined first.
    cluster.disconnect(alice_1);
    cluster.disconnect(alice_1_again);
    cluster.assert_each_got(&watchers, &[]);
    cluster.disconnect(alice_0);
    cluster.assert_each_got(&watchers, &[member_removed(ROOM, "alice")]);
    cluster.assert_users(ROOM, &["watcher-0", "watcher-1"]);
}

#[test]
fn subscription_succeeded_lists_cluster_roster() {
    let mut cluster = TestCluster::new(3);
    cluster.member(0, "alice");
    cluster.member(1, "bob");
    cluster.member(2, "bob");
    let dave = cluster.connect(1);
    cluster.join_with_data(dave, ROOM, r#"{"user_id":"dave"}"#);

    for node in 0..3 {
        let erin = cluster.connect(node);
        cluster.join(erin, ROOM, "erin");
        let expected = json!({
            "event": "pusher_internal:subscription_succeeded",
            "channel": ROOM,
            "data": { "presence": {
                "ids": ["alice", "bob", "dave", "erin"],
                "hash": {
                    "alice": user_info("alice"),
                    "bob": user_info("bob"),
                    "dave": null,
                    "erin": user_info("erin"),
                },
                "count": 4,
            }},
        });
        assert_eq!(cluster.take(erin), [expected], "subscriber on node {node}");
        cluster.disconnect(erin);
    }
}

#[test]
fn member_added_carries_remote_user_info() {
    let mut cluster = TestCluster::new(2);
    let watcher = cluster.member(0, "watcher");
    let dave = cluster.connect(1);
    cluster.join_with_data(dave, ROOM, r#"{"user_id":77,"user_info":[1,"two"]}"#);

    let expected = json!({
        "event": "pusher_internal:member_added",
        "channel": ROOM,
        "data": { "user_id": "77", "user_info": [1, "two"] },
    });
    assert_eq!(cluster.take(watcher), [expected]);

    // A member without user_info gets a member_added without the field.
    let erin = cluster.connect(1);
    cluster.join_with_data(erin, ROOM, r#"{"user_id":"erin"}"#);
    let expected = json!({
        "event": "pusher_internal:member_added",
        "channel": ROOM,
        "data": { "user_id": "erin" },
    });
    assert_eq!(cluster.take(watcher), [expected]);
}

#[test]
fn member_limit_counts_cluster_members() {
    let mut config = config();
    config.limits.max_presence_members = 3;
    let mut cluster = TestCluster::with_configs(vec![config; 3]);
    cluster.member(0, "alice");
    let bob = cluster.member(1, "bob");
    cluster.member(2, "carol");

    let dave = cluster.connect(0);
    cluster.join(dave, ROOM, "dave");
    let frames = cluster.take(dave);
    let events: Vec<&Value> = frames.iter().map(|frame| &frame["event"]).collect();
    assert_eq!(events, ["pusher:error", "pusher:subscription_error"]);
    assert_eq!(frames[1]["data"]["status"], 403);
    cluster.assert_users(ROOM, &["alice", "bob", "carol"]);

    // A user who is a member on another node may add a socket to a full channel.
    let alice = cluster.connect(2);
    cluster.join(alice, ROOM, "alice");
    let frames = cluster.take(alice);
    assert_eq!(frames[0]["event"], "pusher_internal:subscription_succeeded");

    cluster.disconnect(bob);
    cluster.join(dave, ROOM, "dave");
    let frames = cluster.take(dave);
    assert_eq!(frames[0]["event"], "pusher_internal:subscription_succeeded");
    cluster.assert_users(ROOM, &["alice", "carol", "dave"]);
}

// Events across nodes

#[test]
fn api_event_reaches_every_node_once() {
    let mut cluster = TestCluster::new(3);
    let mut news = Vec::new();
    for node in [0, 0, 1, 2] {
        let socket = cluster.connect(node);
        cluster.subscribe(socket, "news");
        news.push(socket);
    }
    let sport = cluster.connect(2);
    cluster.subscribe(sport, "sport");
    cluster.assert_each_got(&news, &[subscription_succeeded("news")]);
    cluster.assert_each_got(&[sport], &[subscription_succeeded("sport")]);

    for node in 0..3 {
        let event = json!({ "name": "update", "channel": "news", "data": "hello" });
        cluster.trigger(node, &event);
        cluster.assert_each_got(&news, &[api_event("update", "news", "hello")]);
        cluster.assert_each_got(&[sport], &[]);
    }

    let event = json!({ "name": "update", "channels": ["news", "sport"], "data": "all" });
    cluster.trigger(1, &event);
    cluster.assert_each_got(&news, &[api_event("update", "news", "all")]);
    cluster.assert_each_got(&[sport], &[api_event("update", "sport", "all")]);
}

fn subscription_succeeded(channel: &str) -> Value {
    json!({
        "event": "pusher_internal:subscription_succeeded",
        "channel": channel,
        "data": {},
    })
}

#[test]
fn api_event_excludes_socket_on_other_node() {
    let mut cluster = TestCluster::new(3);
    let sockets: Vec<Socket> = (0..3)
        .map(|node| {
            let socket = cluster.connect(node);
            cluster.subscribe(socket, "private-news");
            cluster.take(socket);
            socket
        })
        .collect();

    for (publisher, excluded) in [(0, 1), (2, 0), (1, 1)] {
        let socket_id = cluster.socket_id(sockets[excluded]);
        let event = json!({
            "name": "update",
            "channel": "private-news",
            "data": "hello",
            "socket_id": socket_id,
        });
        cluster.trigger(publisher, &event);
        for (index, &socket) in sockets.iter().enumerate() {
            let expected = if index == excluded {
                vec![]
            } else {
                vec![api_event("update", "private-news", "hello")]
            };
            assert_eq!(
                cluster.take(socket),
                expected,
                "published on node {publisher}, socket {index} excluded"
            );
        }
    }
}

#[test]
fn client_event_reaches_other_nodes() {
    let mut cluster = TestCluster::new(3);
    let alice = cluster.member(0, "alice");
    let alice_again = cluster.member(1, "alice");
    let bob = cluster.member(1, "bob");
    let carol = cluster.member(2, "carol");
    cluster.discard_frames();

    let typing = r#"{"event":"client-typing","channel":"presence-room","data":{"text":"hi"}}"#;
    cluster.text(alice, typing);
    let expected = json!({
        "event": "client-typing",
        "channel": ROOM,
        "data": { "text": "hi" },
        "user_id": "alice",
    });
    assert_eq!(cluster.take(alice), NO_FRAMES, "sender gets no echo");
    cluster.assert_each_got(&[alice_again, bob, carol], &[expected]);

    // On a private channel the relayed event has no user_id.
    let chat: Vec<Socket> = [0, 2, 2]
        .into_iter()
        .map(|node| {
            let socket = cluster.connect(node);
            cluster.subscribe(socket, "private-chat");
            cluster.take(socket);
            socket
        })
        .collect();
    cluster.text(
        chat[1],
        r#"{"event":"client-note","channel":"private-chat","data":"plain"}"#,
    );
    let expected = json!({ "event": "client-note", "channel": "private-chat", "data": "plain" });
    assert_eq!(cluster.take(chat[1]), NO_FRAMES, "sender gets no echo");
    cluster.assert_each_got(&[chat[0], chat[2]], &[expected]);
    cluster.assert_each_got(&[alice, alice_again, bob, carol], &[]);
}

// HTTP API responses

#[test]
fn api_counts_are_cluster_totals() {
    let mut cluster = TestCluster::new(3);
    cluster.member(0, "alice");
    cluster.member(0, "alice");
    cluster.member(1, "alice");
    let bob = cluster.member(2, "bob");
    let mut news = Vec::new();
    for node in [1, 2, 2] {
        let socket = cluster.connect(node);
        cluster.subscribe(socket, "news");
        news.push(socket);
    }
    let private = cluster.connect(0);
    cluster.subscribe(private, "private-x");

    let presence_info = [
        ("filter_by_prefix", "presence-"),
        ("info", "user_count,subscription_count"),
    ];
    for node in 0..3 {
        let body = cluster.get(node, "/apps/1001/channels", &[]);
        let expected = json!({ "channels": { "news": {}, ROOM: {}, "private-x": {} } });
        assert_eq!(body, expected, "channels on node {node}");

        let body = cluster.get(node, "/apps/1001/channels", &presence_info);
        let expected = json!({ "channels": {
            ROOM: { "user_count": 2, "subscription_count": 4 },
        }});
        assert_eq!(body, expected, "presence channels on node {node}");

        let info = [("info", "user_count,subscription_count")];
        let body = cluster.get(node, "/apps/1001/channels/presence-room", &info);
        let expected = json!({ "occupied": true, "user_count": 2, "subscription_count": 4 });
        assert_eq!(body, expected, "presence channel on node {node}");

        let info = [("info", "subscription_count")];
        let body = cluster.get(node, "/apps/1001/channels/news", &info);
        let expected = json!({ "occupied": true, "subscription_count": 3 });
        assert_eq!(body, expected, "news on node {node}");

        let body = cluster.get(node, "/apps/1001/channels/empty", &info);
        let expected = json!({ "occupied": false, "subscription_count": 0 });
        assert_eq!(body, expected, "empty channel on node {node}");
    }
    cluster.assert_users(ROOM, &["alice", "bob"]);

    cluster.disconnect(bob);
    cluster.disconnect(news[1]);
    cluster.disconnect(news[2]);
    for node in 0..3 {
        assert_eq!(
            cluster.counts(node, ROOM),
            (json!(1), json!(3)),
            "node {node}"
        );
        let info = [("info", "subscription_count")];
        let body = cluster.get(node, "/apps/1001/channels/news", &info);
        let expected = json!({ "occupied": true, "subscription_count": 1 });
        assert_eq!(body, expected, "news on node {node}");
    }

    cluster.unsubscribe(news[0], "news");
    for node in 0..3 {
        let body = cluster.get(node, "/apps/1001/channels", &[]);
        let expected = json!({ "channels": { ROOM: {}, "private-x": {} } });
        assert_eq!(body, expected, "channels on node {node}");
    }
}

#[test]
fn api_event_info_counts_cluster_wide() {
    let mut cluster = TestCluster::new(2);
    cluster.member(0, "alice");
    cluster.member(1, "bob");
    cluster.member(1, "bob");

    let event = json!({
        "name": "update",
        "channel": ROOM,
        "data": "hello",
        "info": "user_count,subscription_count",
    });
    let body = event.to_string();
    let (status, response) = cluster.api(0, "POST", "/apps/1001/events", &[], &body);
    assert_eq!(status, 200, "{response}");
    let expected = json!({ "channels": {
        ROOM: { "user_count": 2, "subscription_count": 3 },
    }});
    assert_eq!(response, expected);
}

// Node failures

/// Starts three nodes: watchers on nodes 0 and 1, `carol` only on node 2, and `alice` on
/// nodes 0 and 2. Returns the cluster and the watchers, with every frame so far discarded.
fn three_nodes_with_members() -> (TestCluster, [Socket; 2]) {
    let mut cluster = TestCluster::new(3);
    let watchers = [
        cluster.member(0, "watcher-0"),
        cluster.member(1, "watcher-1"),
    ];
    cluster.member(0, "alice");
    cluster.member(2, "alice");
    cluster.member(2, "carol");
    cluster.discard_frames();
    (cluster, watchers)
}

#[test]
fn dead_node_members_removed_after_timeout() {
    let (mut cluster, watchers) = three_nodes_with_members();
    cluster.down.insert(2);

    // The last message of node 2 came at the start, so it is still alive for the others
    // until node_timeout has passed.
    cluster.advance(NODE_TIMEOUT - Duration::from_secs(1));
    cluster.assert_each_got(&watchers, &[]);
    cluster.assert_users(ROOM, &["alice", "carol", "watcher-0", "watcher-1"]);

    cluster.advance(Duration::from_secs(1) + HEARTBEAT_INTERVAL);
    cluster.assert_each_got(&watchers, &[member_removed(ROOM, "carol")]);
    cluster.assert_users(ROOM, &["alice", "watcher-0", "watcher-1"]);
    for node in 0..2 {
        assert_eq!(
            cluster.counts(node, ROOM),
            (json!(3), json!(3)),
            "node {node}"
        );
        assert!(
            !cluster.remotes(node).contains_key(&cluster.cluster_id(2)),
            "node {node} still tracks node 2"
        );
    }
}

#[test]
fn rejoined_node_members_added_again() {
    let (mut cluster, watchers) = three_nodes_with_members();
    cluster.down.insert(2);
    cluster.advance(NODE_TIMEOUT + HEARTBEAT_INTERVAL);
    cluster.assert_each_got(&watchers, &[member_removed(ROOM, "carol")]);

    cluster.down.remove(&2);
    cluster.reconnect(2);
    cluster.assert_each_got(&watchers, &[member_added(ROOM, "carol")]);
    cluster.assert_users(ROOM, &["alice", "carol", "watcher-0", "watcher-1"]);
    for node in 0..3 {
        assert_eq!(
            cluster.counts(node, ROOM),
            (json!(4), json!(5)),
            "node {node}"
        );
    }

    // Sockets on node 2 got no frame, because from the side of node 2 no member left.
    let node_2_sockets: Vec<Socket> = cluster
        .history
        .keys()
        .filter(|socket| socket.node == 2)
        .copied()
        .collect();
    cluster.assert_each_got(&node_2_sockets, &[]);
}

#[test]
fn silent_node_resynced_when_heard_again() {
    let (mut cluster, watchers) = three_nodes_with_members();
    // Node 2 keeps running and receiving, but what it publishes is lost.
    cluster.muted.insert(2);
    cluster.advance(NODE_TIMEOUT + HEARTBEAT_INTERVAL);
    cluster.assert_each_got(&watchers, &[member_removed(ROOM, "carol")]);

    // Its next heartbeat reaches nodes that no longer track it, so they request its state.
    cluster.muted.remove(&2);
    cluster.advance(HEARTBEAT_INTERVAL);
    cluster.assert_each_got(&watchers, &[member_added(ROOM, "carol")]);
    cluster.assert_users(ROOM, &["alice", "carol", "watcher-0", "watcher-1"]);
}

#[test]
fn lost_messages_converge_after_reconnect() {
    let mut cluster = TestCluster::new(3);
    let watchers: Vec<Socket> = (0..3)
        .map(|node| cluster.member(node, &format!("watcher-{node}")))
        .collect();
    let alice = cluster.member(0, "alice");
    let bob = cluster.member(1, "bob");
    let news = cluster.connect(2);

    // Every message of these changes is lost, as when Redis restarts.
    cluster.losing_messages = true;
    cluster.member(2, "carol");
    cluster.disconnect(alice);
    cluster.member(2, "bob");
    cluster.unsubscribe(bob, ROOM);
    cluster.member(0, "dave");
    cluster.subscribe(news, "news");
    cluster.losing_messages = false;

    for node in 0..3 {
        cluster.reconnect(node);
    }
    let expected = [
        "bob",
        "carol",
        "dave",
        "watcher-0",
        "watcher-1",
        "watcher-2",
    ];
    cluster.assert_users(ROOM, &expected);
    let expected: BTreeSet<String> = expected.iter().map(|&id| id.to_owned()).collect();
    for &watcher in &watchers {
        assert_eq!(
            cluster.roster_seen(watcher, ROOM),
            expected,
            "roster seen by {watcher:?}"
        );
    }
    for node in 0..3 {
        assert_eq!(
            cluster.counts(node, ROOM),
            (json!(6), json!(6)),
            "node {node}"
        );
        let body = cluster.get(node, "/apps/1001/channels", &[]);
        let expected = json!({ "channels": { "news": {}, ROOM: {} } });
        assert_eq!(body, expected, "channels on node {node}");
    }
}

#[test]
fn bye_removes_members_at_once() {
    let (mut cluster, watchers) = three_nodes_with_members();
    let node_2_sockets: Vec<Socket> = cluster
        .history
        .keys()
        .filter(|socket| socket.node == 2)
        .copied()
        .collect();

    cluster.nodes[2].shutdown(cluster.now);
    cluster.settle();
    cluster.assert_each_got(&watchers, &[member_removed(ROOM, "carol")]);
    for node in 0..2 {
        assert_eq!(cluster.users(node, ROOM).len(), 3, "users on node {node}");
        assert!(
            !cluster.remotes(node).contains_key(&cluster.cluster_id(2)),
            "node {node} still tracks node 2"
        );
    }
    for socket in node_2_sockets {
        assert_eq!(cluster.closed.get(&socket), Some(&4200), "{socket:?}");
    }
}

#[test]
fn bye_stops_heartbeats() {
    let mut cluster = TestCluster::new(2);
    cluster.member(1, "bob");
    cluster.nodes[1].shutdown(cluster.now);
    cluster.settle();
    let after_bye = cluster.published.len();

    cluster.advance(NODE_TIMEOUT * 2);
    let from_node_1: Vec<String> = cluster.published[after_bye..]
        .iter()
        .filter(|(node, _)| *node == 1)
        .map(|(_, payload)| message_kind(payload))
        .collect();
    assert_eq!(from_node_1, Vec::<String>::new());
    assert!(cluster.remotes(0).is_empty(), "node 1 is tracked again");
}

// Messages

#[test]
fn heartbeats_every_interval() {
    let mut cluster = TestCluster::new(2);
    let start = cluster.published.len();
    cluster.advance(HEARTBEAT_INTERVAL * 4);
    for node in 0..2 {
        let heartbeats = cluster.published[start..]
            .iter()
            .filter(|(publisher, payload)| {
                *publisher == node && message_kind(payload) == "heartbeat"
            })
            .count();
        assert_eq!(heartbeats, 4, "heartbeats of node {node}");
    }

    // Heartbeats keep the nodes alive for each other however long the run.
    cluster.advance(NODE_TIMEOUT * 10);
    assert!(cluster.remotes(0).contains_key(&cluster.cluster_id(1)));
    assert!(cluster.remotes(1).contains_key(&cluster.cluster_id(0)));
}

#[test]
fn message_wire_format() {
    let heartbeat = Message::Heartbeat { node: 1 };
    assert_eq!(
        serde_json::to_string(&heartbeat).unwrap(),
        r#"{"heartbeat":{"node":1}}"#
    );
    let leave = Message::Leave {
        node: 2,
        channel: ROOM.to_owned(),
        user_id: "u".to_owned(),
    };
    assert_eq!(
        serde_json::to_string(&leave).unwrap(),
        r#"{"leave":{"node":2,"channel":"presence-room","user_id":"u"}}"#
    );
    let sync = Message::SyncRequest { node: 3 };
    assert_eq!(
        serde_json::to_string(&sync).unwrap(),
        r#"{"sync_request":{"node":3}}"#
    );
}

#[test]
fn fake_ids_are_not_real_ids() {
    let cluster = TestCluster::new(3);
    for node in 0..3 {
        let id = cluster.cluster_id(node);
        assert_ne!(id, FAKE_NODE);
        assert_ne!(id, OTHER_FAKE_NODE);
    }
    let ids: BTreeSet<u64> = (0..3).map(|node| cluster.cluster_id(node)).collect();
    assert_eq!(ids.len(), 3, "nodes with different seeds share an id");
}

#[test]
fn own_messages_ignored() {
    let mut cluster = TestCluster::new(1);
    let watcher = cluster.member(0, "watcher");
    let alice = cluster.member(0, "alice");
    cluster.text(
        alice,
        r#"{"event":"client-typing","channel":"presence-room","data":{}}"#,
    );
    cluster.trigger(0, &json!({ "name": "e", "channel": ROOM, "data": "x" }));
    cluster.reconnect(0);
    cluster.take(watcher);
    cluster.take(alice);

    // Feed back everything the node published: its state, joins, counts and events.
    let published: Vec<Arc<str>> = cluster
        .published
        .iter()
        .map(|(_, payload)| payload.clone())
        .collect();
    let kinds: BTreeSet<String> = published.iter().map(|p| message_kind(p)).collect();
    for kind in [
        "state",
        "sync_request",
        "join",
        "count",
        "event",
        "heartbeat",
    ] {
        assert!(kinds.contains(kind), "no {kind} message among {kinds:?}");
    }
    for payload in &published {
        cluster.nodes[0].handle_cluster(cluster.now, payload);
        assert_eq!(cluster.nodes[0].poll_output(), None, "after {payload}");
    }
    assert!(cluster.remotes(0).is_empty());

    // Had the node taken its own state for another node's, alice would stay a member.
    cluster.disconnect(alice);
    assert_eq!(cluster.take(watcher), [member_removed(ROOM, "alice")]);
}

#[test]
fn malformed_messages_ignored() {
    let mut cluster = TestCluster::new(1);
    let watcher = cluster.member(0, "watcher");
    let news = cluster.connect(0);
    cluster.subscribe(news, "news");
    cluster.take(news);

    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let payloads = [
        "",
        "null",
        "42",
        "[]",
        "{}",
        "not json",
        r#"{"heartbeat":{}}"#,
        r#"{"heartbeat":{"node":-1}}"#,
        r#"{"heartbeat":{"node":"7"}}"#,
        r#"{"heartbeat":{"node":7},"bye":{"node":7}}"#,
        r#"{"unknown":{"node":7}}"#,
        r#"{"join":{"node":7,"channel":"presence-room"}}"#,
        r#"{"join":{"node":7,"channel":"presence-room","user_id":5}}"#,
        r#"{"join":{"node":7,"channel":"bad channel","user_id":"ghost"}}"#,
        r#"{"event":{"node":7,"channel":"news","frame":}}"#,
        r#"{"event":{"node":7,"channel":"bad channel","frame":{"event":"x"}}}"#,
        r#"{"count":{"node":7,"channel":"news","count":-1}}"#,
        r#"{"count":{"node":7,"channel":"news","count":1.5}}"#,
        r#"{"state":{"node":7,"channels":[{"channel":"","count":1}]}}"#,
        r#"{"state":{"node":7,"channels":{}}}"#,
        r#"{"leave":{"node":7,"channel":"presence-room","user_id":"nobody"}}"#,
        r#"{"heartbeat":{"node":7}} trailing"#,
        deep_array.as_str(),
    ];
    for payload in payloads {
        cluster.deliver(0, payload);
        assert_eq!(cluster.take(watcher), NO_FRAMES, "after {payload:.80}");
        assert_eq!(cluster.take(news), NO_FRAMES, "after {payload:.80}");
    }
    cluster.assert_users(ROOM, &["watcher"]);
    let info = [("info", "subscription_count")];
    let body = cluster.get(0, "/apps/1001/channels/news", &info);
    assert_eq!(body, json!({ "occupied": true, "subscription_count": 1 }));

    // The node still works.
    cluster.member(0, "alice");
    assert_eq!(cluster.take(watcher), [member_added(ROOM, "alice")]);
}

#[test]
fn huge_remote_counts_saturate() {
    let mut cluster = TestCluster::new(1);
    let news = cluster.connect(0);
    cluster.subscribe(news, "news");
    for node in [FAKE_NODE, OTHER_FAKE_NODE] {
        let count = json!({ "count": { "node": node, "channel": "news", "count": usize::MAX } });
        cluster.deliver(0, &count.to_string());
    }

    let info = [("info", "subscription_count")];
    let body = cluster.get(0, "/apps/1001/channels/news", &info);
    let expected = json!({ "occupied": true, "subscription_count": usize::MAX });
    assert_eq!(body, expected);
}

// Bounds

#[test]
fn max_nodes_bounds_tracked_nodes() {
    let mut cluster = TestCluster::with_configs(vec![
        config_with(|cluster| cluster.max_nodes = 1),
        config(),
        config(),
    ]);
    let watcher = cluster.member(0, "watcher");
    cluster.member(1, "bob");
    cluster.member(2, "carol");
    assert_eq!(cluster.take(watcher), [member_added(ROOM, "bob")]);
    assert_eq!(
        cluster.users(0, ROOM),
        BTreeSet::from(["bob", "watcher"].map(String::from))
    );
    let tracked: Vec<u64> = cluster.remotes(0).keys().copied().collect();
    assert_eq!(tracked, [cluster.cluster_id(1)]);

    // Once node 1 leaves, node 2 takes its place at its next heartbeat.
    cluster.nodes[1].shutdown(cluster.now);
    cluster.settle();
    assert_eq!(cluster.take(watcher), [member_removed(ROOM, "bob")]);
    cluster.advance(HEARTBEAT_INTERVAL);
    assert_eq!(cluster.take(watcher), [member_added(ROOM, "carol")]);
    let tracked: Vec<u64> = cluster.remotes(0).keys().copied().collect();
    assert_eq!(tracked, [cluster.cluster_id(2)]);
}

#[test]
fn max_nodes_ignores_further_senders() {
    let mut cluster = TestCluster::with_configs(vec![config_with(|cluster| {
        cluster.max_nodes = 3;
    })]);
    for node in 100..110 {
        cluster.deliver(0, &heartbeat(node));
    }
    let tracked: Vec<u64> = cluster.remotes(0).keys().copied().collect();
    assert_eq!(tracked, [100, 101, 102]);
}

#[test]
fn max_remote_channels_bounds_state() {
    let mut cluster = TestCluster::with_configs(vec![config_with(|cluster| {
        cluster.max_remote_channels = 2;
    })]);
    let channels: Vec<Value> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| json!({ "channel": name, "count": 1 }))
        .collect();
    let state = json!({ "state": { "node": FAKE_NODE, "channels": channels } });
    cluster.deliver(0, &state.to_string());
    let count = json!({ "count": { "node": FAKE_NODE, "channel": "e", "count": 1 } });
    cluster.deliver(0, &count.to_string());

    let body = cluster.get(0, "/apps/1001/channels", &[]);
    assert_eq!(body, json!({ "channels": { "a": {}, "b": {} } }));
}

#[test]
fn leave_for_unknown_channel_keeps_nothing() {
    let mut cluster = TestCluster::with_configs(vec![config_with(|cluster| {
        cluster.max_remote_channels = 2;
    })]);
    for channel in ["presence-a", "presence-b", "presence-c"] {
        let leave = json!({ "leave": { "node": FAKE_NODE, "channel": channel, "user_id": "u" } });
        cluster.deliver(0, &leave.to_string());
    }
    let remote = &cluster.remotes(0)[&FAKE_NODE];
    assert!(remote.channels.is_empty(), "{:?}", remote.channels);

    // The leaves took no channel slot, so a join still fits.
    let join = json!({ "join": { "node": FAKE_NODE, "channel": "presence-d", "user_id": "u" } });
    cluster.deliver(0, &join.to_string());
    assert_eq!(
        cluster.users(0, "presence-d"),
        BTreeSet::from(["u".to_owned()])
    );
}

#[test]
fn single_node_mode_ignores_cluster_input() {
    let mut config = config();
    config.cluster = None;
    let mut node = Node::new(config, 1).expect("valid config");
    let now = Instant::now();
    assert_eq!(node.cluster_id(), None);
    node.handle_cluster_connected(now);
    let join = json!({ "join": { "node": FAKE_NODE, "channel": ROOM, "user_id": "u" } });
    node.handle_cluster(now, &join.to_string());
    assert_eq!(node.poll_output(), None);
    assert_eq!(node.poll_timeout(), None);
    assert!(node.members(ROOM).is_empty());
}

#[test]
fn user_info_of_first_node_kept_everywhere() {
    let mut cluster = TestCluster::new(3);
    let first = cluster.connect(0);
    cluster.join_with_data(
        first,
        ROOM,
        r#"{"user_id":"alice","user_info":{"name":"first"}}"#,
    );
    let second = cluster.connect(1);
    cluster.join_with_data(
        second,
        ROOM,
        r#"{"user_id":"alice","user_info":{"name":"second"}}"#,
    );
    // The first socket leaves; the user stays, with the user_info it joined with first.
    cluster.disconnect(first);

    for node in 0..3 {
        let viewer = cluster.connect(node);
        cluster.join(viewer, ROOM, "viewer");
        let frames = cluster.take(viewer);
        let hash = &frames[0]["data"]["presence"]["hash"];
        assert_eq!(
            hash["alice"],
            json!({"name": "first"}),
            "viewer on node {node}"
        );
        cluster.disconnect(viewer);
    }
}
