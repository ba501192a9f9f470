//! Setup shared by the fuzz targets: a node with a few subscribed connections, signed API
//! requests, and the checks every output and every `stats()` reading must pass.
//!
//! Any panic counts as a bug, so each check is an `assert!`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crier_core::{
    ApiRequest, ApiResponse, AppConfig, Config, ConnectRequest, ConnectionId, Limits, Node, Output,
    sign_api_request, sign_channel,
};
use md5::{Digest, Md5};
use serde_json::Value;

/// The part of an output frame every check needs: a string `event`.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
}

/// App credentials, the same as in the protocol test vectors, so vector requests verify.
pub const KEY: &str = "9f3c2a7b8d1e4f605a11";
pub const SECRET: &str = "5b7e0c9d2f4a6b8c1d3e";
pub const APP_ID: &str = "1001";

/// Wall-clock time passed to `handle_api`. The vector requests carry timestamps from
/// 1700000123 to 1700001200, and all but the last are within 600 s of it.
pub const UNIX_SECS: u64 = 1_700_000_600;

/// Seed of every node, so that the first connection always gets the same socket id and a
/// seed input can carry a valid subscription signature for it.
pub const SEED: u64 = 0;

/// The statuses `handle_api` may return.
pub const API_STATUSES: [u16; 6] = [200, 400, 401, 404, 405, 413];

/// Channels the fixtures subscribe to and the targets pick from.
pub const CHANNELS: [&str; 8] = [
    "orders",
    "cache-ticker",
    "private-orders",
    "private-encrypted-vault",
    "presence-lobby",
    "presence-room-7",
    "#server-to-user-u-1",
    "bad channel",
];

/// Limits lowered so that short inputs reach them.
pub fn config() -> Config {
    let mut app = AppConfig::new(KEY, SECRET);
    app.id = Some(APP_ID.to_owned());
    let mut config = Config::new(app);
    config.limits = Limits {
        max_connections: 8,
        max_channels_per_connection: 4,
        max_presence_members: 3,
        max_client_events_per_second: 3,
        ..Limits::default()
    };
    config
}

pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks an API response: a known status and a JSON body, `{"error": string}` on failure.
pub fn check_response(response: &ApiResponse) {
    assert!(
        API_STATUSES.contains(&response.status),
        "status {}",
        response.status
    );
    let body: Value = serde_json::from_str(&response.body).expect("API body is JSON");
    if response.status != 200 {
        assert!(body["error"].is_string(), "error body {body}");
    }
}

/// A node and the fuzz target's record of its connections.
pub struct Fixture {
    pub node: Node,
    pub start: Instant,
    pub now: Instant,
    /// Every connection id the node has handed out, open or not, in order.
    pub issued: Vec<ConnectionId>,
    pub open: BTreeSet<ConnectionId>,
    pub socket_ids: BTreeMap<ConnectionId, String>,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            node: Node::new(config(), SEED).expect("valid config"),
            start: now,
            now,
            issued: Vec::new(),
            open: BTreeSet::new(),
            socket_ids: BTreeMap::new(),
        }
    }

    /// Creates a node with two connections, each subscribed to `orders`, `private-orders` and
    /// `presence-lobby` as users `u-1` and `u-2`.
    pub fn with_subscribers() -> Self {
        let mut fixture = Self::new();
        for user in ["u-1", "u-2"] {
            let id = fixture.open(None).expect("room for two connections");
            for channel in ["orders", "private-orders", "presence-lobby"] {
                let member = format!(r#"{{"user_id":"{user}","user_info":{{"name":"{user}"}}}}"#);
                let member = channel.starts_with("presence-").then_some(member);
                fixture.subscribe(id, channel, member.as_deref(), true);
            }
        }
        fixture
    }

    /// Opens a connection with `protocol` as the raw `protocol` query value.
    pub fn open(&mut self, protocol: Option<&str>) -> Option<ConnectionId> {
        let target = match protocol {
            Some(protocol) => format!("/app/{KEY}?protocol={protocol}&client=js"),
            None => format!("/app/{KEY}"),
        };
        let request = ConnectRequest::parse(&target)?;
        self.open_request(&request)
    }

    pub fn open_request(&mut self, request: &ConnectRequest) -> Option<ConnectionId> {
        match self.node.open(self.now, request) {
            Ok(id) => {
                assert!(!self.issued.contains(&id), "connection id {id:?} reused");
                let socket_id = self
                    .node
                    .socket_id(id)
                    .expect("open connection has a socket id");
                let socket_id = socket_id.to_string();
                let taken = self
                    .open
                    .iter()
                    .any(|open| self.socket_ids[open] == socket_id);
                assert!(
                    !taken,
                    "socket id {socket_id} given to two open connections"
                );
                self.issued.push(id);
                self.open.insert(id);
                self.socket_ids.insert(id, socket_id);
                self.drain(Some(id));
                Some(id)
            }
            Err(error) => {
                let frame: Value = serde_json::from_str(&error.frame()).expect("error frame");
                assert_eq!(frame["data"]["code"], error.close_code());
                self.drain(None);
                None
            }
        }
    }

    /// Sends `pusher:subscribe` for `channel`, signed for this connection when `signed`.
    pub fn subscribe(
        &mut self,
        id: ConnectionId,
        channel: &str,
        channel_data: Option<&str>,
        signed: bool,
    ) -> Vec<Output> {
        let socket_id = self.socket_ids.get(&id).map_or("1.1", String::as_str);
        let auth = sign_channel(KEY, SECRET, socket_id, channel, channel_data);
        let auth = if signed {
            auth
        } else {
            format!("{KEY}:{}", "0".repeat(64))
        };
        let mut data = serde_json::json!({ "channel": channel, "auth": auth });
        if let Some(channel_data) = channel_data {
            data["channel_data"] = channel_data.into();
        }
        let text = serde_json::json!({ "event": "pusher:subscribe", "data": data }).to_string();
        self.node.handle_text(self.now, id, &text);
        self.drain(None)
    }

    /// Sends a correctly signed API request and checks the response's shape.
    pub fn api(&mut self, method: &str, path: &str, extra_query: &str, body: &[u8]) -> ApiResponse {
        let unix_secs = self.unix_secs();
        let mut query = format!("auth_key={KEY}&auth_timestamp={unix_secs}&auth_version=1.0");
        if !body.is_empty() {
            query.push_str("&body_md5=");
            query.push_str(&md5_hex(body));
        }
        if !extra_query.is_empty() {
            query.push('&');
            query.push_str(extra_query);
        }
        if let Some(signature) = sign_api_request(SECRET, method, path, &query) {
            query.push_str("&auth_signature=");
            query.push_str(&signature);
        }
        let request = ApiRequest {
            method,
            path,
            query: &query,
            body,
        };
        let response = self.node.handle_api(self.now, unix_secs, &request);
        check_response(&response);
        response
    }

    /// Wall-clock seconds that move with the fixture's clock.
    pub fn unix_secs(&self) -> u64 {
        UNIX_SECS + self.now.duration_since(self.start).as_secs()
    }

    /// Moves the clock forward and runs the node's timers once, as a host that woke late.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.node.handle_timeout(self.now);
        self.drain(None);
        if let Some(next) = self.node.poll_timeout() {
            assert!(
                next > self.now,
                "poll_timeout is not after handle_timeout(now)"
            );
        }
    }

    /// Disconnects `id` as if its socket failed.
    pub fn disconnect(&mut self, id: ConnectionId) {
        self.node.handle_disconnect(self.now, id);
        self.open.remove(&id);
        self.drain(None);
    }

    /// Drains every output and checks it: each `Send` is a JSON object with a string
    /// `event`, each output names a connection that was open when it was queued (or
    /// `opened`, the one just opened), and nothing follows a connection's `Close`.
    pub fn drain(&mut self, opened: Option<ConnectionId>) -> Vec<Output> {
        let mut allowed = self.open.clone();
        allowed.extend(opened);
        let mut outputs = Vec::new();
        while let Some(output) = self.node.poll_output() {
            let id = match &output {
                Output::Send { connection, frame } => {
                    // Client event data is relayed byte for byte, and JSON allows numbers
                    // beyond f64 (`1E400`), which `Value` rejects, so only the envelope is read.
                    let envelope: Envelope<'_> = serde_json::from_str(frame)
                        .unwrap_or_else(|error| panic!("frame is not JSON ({error}): {frame}"));
                    assert!(!envelope.event.is_empty(), "frame without event: {frame}");
                    *connection
                }
                Output::Ping { connection } => *connection,
                Output::Close { connection, .. } => {
                    self.open.remove(connection);
                    *connection
                }
                Output::Publish { payload } => panic!("Publish without cluster mode: {payload}"),
            };
            assert!(
                allowed.contains(&id),
                "output for {id:?}, which is not open: {output:?}"
            );
            if matches!(output, Output::Close { .. }) {
                allowed.remove(&id);
            }
            outputs.push(output);
        }
        self.check_state();
        outputs
    }

    /// Checks `stats()`, `socket_id` and `poll_timeout` against the connections known open.
    pub fn check_state(&self) {
        let stats = self.node.stats();
        assert_eq!(stats.pending_outputs, 0, "outputs left after draining");
        assert_eq!(stats.connections, self.open.len(), "open connections");
        assert_eq!(stats.timers, self.open.len(), "one timer per connection");
        assert!(
            stats.channels <= stats.subscriptions,
            "a channel without subscribers"
        );
        assert!(
            stats.presence_members <= stats.subscriptions,
            "a member without a socket"
        );
        for id in &self.issued {
            let socket_id = self.node.socket_id(*id).map(|s| s.to_string());
            let expected = self.open.contains(id).then(|| self.socket_ids[id].clone());
            assert_eq!(socket_id, expected, "socket id of {id:?}");
        }
        match self.node.poll_timeout() {
            Some(next) => assert!(next > self.now, "poll_timeout in the past"),
            None => assert!(self.open.is_empty(), "open connections without a timer"),
        }
    }

    /// Disconnects every open connection and checks that the node keeps no state.
    pub fn close_all(&mut self) {
        let open: Vec<ConnectionId> = self.open.iter().copied().collect();
        for id in open {
            self.disconnect(id);
        }
        let stats = self.node.stats();
        assert_eq!(stats.connections, 0, "connections left");
        assert_eq!(stats.channels, 0, "channels left");
        assert_eq!(stats.subscriptions, 0, "subscriptions left");
        assert_eq!(stats.presence_members, 0, "presence members left");
        assert_eq!(stats.timers, 0, "timers left");
        assert_eq!(
            self.node.poll_timeout(),
            None,
            "timer armed with no connection"
        );
    }
}

/// Splits `METHOD\nPATH\nQUERY\nBODY` into its parts. Returns `None` when the first three
/// are not UTF-8 or a newline is missing.
pub fn split_request(data: &[u8]) -> Option<(&str, &str, &str, &[u8])> {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let method = std::str::from_utf8(parts.next()?).ok()?;
    let path = std::str::from_utf8(parts.next()?).ok()?;
    let query = std::str::from_utf8(parts.next()?).ok()?;
    let body = parts.next().unwrap_or(&[]);
    Some((method, path, query, body))
}
