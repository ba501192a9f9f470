//! Scenario tests: a `Node` driven through its inputs with a fake clock. Time only moves when
//! a test advances it, and every test drains `poll_output` after each input.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::auth::sign_channel;
use crate::config::AppConfig;

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

/// The path pusher-js 8.4.0 connects to.
const PUSHER_JS_PATH: &str = "/app/app-key?protocol=7&client=js&version=8.4.0&flash=false";

const PING: &str = r#"{"event":"pusher:ping","data":{}}"#;
const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// Upper bound on the outputs one input may produce in these tests.
const MAX_OUTPUTS: usize = 100_000;

fn config() -> Config {
    Config::new(AppConfig::new(KEY, SECRET))
}

/// A node and a fake clock that starts at `start` and moves only through `advance`.
struct Harness {
    node: Node,
    start: Instant,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(config())
    }

    fn with_config(config: Config) -> Self {
        let start = Instant::now();
        Self {
            node: Node::new(config, 42).expect("valid config"),
            start,
            now: start,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn secs(&self, offset: u64) -> Instant {
        self.start + Duration::from_secs(offset)
    }

    fn open(&mut self, target: &str) -> Result<ConnectionId, ConnectError> {
        let request = ConnectRequest::parse(target).expect("valid /app/ path");
        self.node.open(self.now, &request)
    }

    /// Opens a connection as pusher-js does and drops its `connection_established` frame.
    fn connect(&mut self) -> ConnectionId {
        let id = self.open(PUSHER_JS_PATH).expect("open accepted");
        self.drain();
        id
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        while let Some(output) = self.node.poll_output() {
            outputs.push(output);
            assert!(outputs.len() <= MAX_OUTPUTS, "output queue does not drain");
        }
        outputs
    }

    fn text(&mut self, id: ConnectionId, text: &str) -> Vec<Output> {
        self.node.handle_text(self.now, id, text);
        self.drain()
    }

    fn timeout(&mut self, at: Instant) -> Vec<Output> {
        self.now = at;
        self.node.handle_timeout(at);
        self.drain()
    }

    fn disconnect(&mut self, id: ConnectionId) -> Vec<Output> {
        self.node.handle_disconnect(self.now, id);
        self.drain()
    }

    fn socket_id(&self, id: ConnectionId) -> String {
        self.node
            .socket_id(id)
            .expect("connection is open")
            .to_string()
    }

    fn subscribe(&mut self, id: ConnectionId, channel: &str) -> Vec<Output> {
        self.text(id, &subscribe_frame(channel, Some(""), None))
    }

    fn subscribe_private(&mut self, id: ConnectionId, channel: &str) -> Vec<Output> {
        let auth = sign_channel(KEY, SECRET, &self.socket_id(id), channel, None);
        self.text(id, &subscribe_frame(channel, Some(&auth), None))
    }

    /// Subscribes to a presence channel with `channel_data` signed by the app secret.
    fn join(&mut self, id: ConnectionId, channel: &str, channel_data: &str) -> Vec<Output> {
        let auth = sign_channel(
            KEY,
            SECRET,
            &self.socket_id(id),
            channel,
            Some(channel_data),
        );
        self.text(
            id,
            &subscribe_frame(channel, Some(&auth), Some(channel_data)),
        )
    }

    fn join_user(&mut self, id: ConnectionId, channel: &str, user_id: &str) -> Vec<Output> {
        self.join(id, channel, &json!({ "user_id": user_id }).to_string())
    }
}

fn subscribe_frame(channel: &str, auth: Option<&str>, channel_data: Option<&str>) -> String {
    let mut data = json!({ "channel": channel });
    if let Some(auth) = auth {
        data["auth"] = auth.into();
    }
    if let Some(channel_data) = channel_data {
        data["channel_data"] = channel_data.into();
    }
    json!({ "event": "pusher:subscribe", "data": data }).to_string()
}

fn unsubscribe_frame(channel: &str) -> String {
    json!({ "event": "pusher:unsubscribe", "data": { "channel": channel } }).to_string()
}

/// Builds a client event in the form pusher-js sends: `data` as JSON text, then the channel.
fn client_event_frame(event: &str, channel: &str, data: &str) -> String {
    format!(r#"{{"event":"{event}","data":{data},"channel":"{channel}"}}"#)
}

fn send(connection: ConnectionId, frame: &str) -> Output {
    Output::Send {
        connection,
        frame: frame.into(),
    }
}

fn close(connection: ConnectionId, code: u16, reason: &'static str) -> Output {
    Output::Close {
        connection,
        code,
        reason,
    }
}

fn succeeded(channel: &str) -> String {
    format!(
        r#"{{"event":"pusher_internal:subscription_succeeded","channel":"{channel}","data":"{{}}"}}"#
    )
}

fn error_frame(code: Option<u16>, message: &str) -> String {
    let code = code.map_or("null".to_owned(), |code| code.to_string());
    let message = serde_json::to_string(message).expect("strings serialize");
    format!(r#"{{"event":"pusher:error","data":{{"code":{code},"message":{message}}}}}"#)
}

fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    format!(
        r#"{{"event":"pusher:subscription_error","channel":"{channel}","data":{{"type":"{kind}","error":"{error}","status":{status}}}}}"#
    )
}

fn member_added(channel: &str, user_id: &str) -> String {
    format!(
        r#"{{"event":"pusher_internal:member_added","channel":"{channel}","data":"{{\"user_id\":\"{user_id}\"}}"}}"#
    )
}

fn member_removed(channel: &str, user_id: &str) -> String {
    format!(
        r#"{{"event":"pusher_internal:member_removed","channel":"{channel}","data":"{{\"user_id\":\"{user_id}\"}}"}}"#
    )
}

/// Returns the frames sent to `id`, in order.
fn frames_to(outputs: &[Output], id: ConnectionId) -> Vec<&str> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Send { connection, frame } if *connection == id => Some(&**frame),
            _ => None,
        })
        .collect()
}

/// Parses a frame, and its `data` too when that is a string holding JSON.
fn decode(frame: &str) -> Value {
    let mut value: Value = serde_json::from_str(frame).expect("frame is valid JSON");
    let inner = match value.get("data") {
        Some(Value::String(data)) => serde_json::from_str::<Value>(data).ok(),
        _ => None,
    };
    if let Some(inner) = inner {
        value["data"] = inner;
    }
    value
}

/// Asserts that `outputs` are exactly the two frames of a rejected subscription sent to
/// `id`, and returns the message of the `pusher:error`.
fn assert_rejected(
    outputs: &[Output],
    id: ConnectionId,
    channel: &str,
    kind: &str,
    error: &str,
    status: u16,
) -> String {
    let frames = frames_to(outputs, id);
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert_eq!(frames.len(), 2, "{outputs:?}");
    let first = decode(frames[0]);
    assert_eq!(first["event"], "pusher:error", "{}", frames[0]);
    assert_eq!(first["data"]["code"], Value::Null, "{}", frames[0]);
    assert_eq!(frames[1], subscription_error(channel, kind, error, status));
    first["data"]["message"]
        .as_str()
        .expect("message is a string")
        .to_owned()
}

// Connecting

#[test]
fn open_sends_connection_established() {
    let mut h = Harness::new();
    let id = h.open(PUSHER_JS_PATH).expect("open accepted");
    let outputs = h.drain();
    let socket_id = h.socket_id(id);
    let expected = format!(
        r#"{{"event":"pusher:connection_established","data":"{{\"socket_id\":\"{socket_id}\",\"activity_timeout\":120}}"}}"#
    );
    assert_eq!(outputs, vec![send(id, &expected)]);
}

#[test]
fn open_socket_id_format() {
    let mut h = Harness::new();
    let mut seen = BTreeSet::new();
    for _ in 0..500 {
        let id = h.connect();
        let socket_id = h.socket_id(id);
        let (high, low) = socket_id.split_once('.').expect("socket id has a dot");
        assert!(!high.is_empty(), "{socket_id}");
        assert!(!low.is_empty(), "{socket_id}");
        assert!(high.bytes().all(|b| b.is_ascii_digit()), "{socket_id}");
        assert!(low.bytes().all(|b| b.is_ascii_digit()), "{socket_id}");
        assert!(high.parse::<u64>().unwrap() < 1 << 53, "{socket_id}");
        assert!(low.parse::<u64>().unwrap() < 1 << 53, "{socket_id}");
        assert!(seen.insert(socket_id.clone()), "{socket_id} drawn twice");
    }
}

#[test]
fn open_same_seed_same_ids() {
    let mut first = Harness::new();
    let mut second = Harness::new();
    for _ in 0..10 {
        let a = first.connect();
        let b = second.connect();
        assert_eq!(first.socket_id(a), second.socket_id(b));
    }
}

#[test]
fn open_unknown_key() {
    let mut h = Harness::new();
    let error = h.open("/app/other-key?protocol=7").unwrap_err();
    let frame =
        r#"{"event":"pusher:error","data":{"code":4001,"message":"Application does not exist"}}"#;
    assert_eq!(error, ConnectError::UnknownApp);
    assert_eq!(error.close_code(), 4001);
    assert_eq!(error.frame(), frame);
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.node.stats(), NodeStats::default());
}

#[test]
fn open_protocol_3() {
    let mut h = Harness::new();
    let error = h.open("/app/app-key?protocol=3").unwrap_err();
    let frame =
        r#"{"event":"pusher:error","data":{"code":4007,"message":"Unsupported protocol version"}}"#;
    assert_eq!(error, ConnectError::UnsupportedProtocolVersion(3));
    assert_eq!(error.close_code(), 4007);
    assert_eq!(error.frame(), frame);
    assert_eq!(h.node.stats().connections, 0);
}

#[test]
fn open_protocol_8() {
    let mut h = Harness::new();
    let error = h.open("/app/app-key?protocol=8").unwrap_err();
    assert_eq!(error.close_code(), 4007);
}

#[test]
fn open_protocol_abc() {
    let mut h = Harness::new();
    let error = h.open("/app/app-key?protocol=abc").unwrap_err();
    assert_eq!(error, ConnectError::InvalidProtocolVersion);
    assert_eq!(error.close_code(), 4006);
    assert_eq!(decode(&error.frame())["data"]["code"], 4006);
    assert_eq!(h.node.stats().connections, 0);
}

#[test]
fn open_protocol_missing() {
    let mut h = Harness::new();
    let id = h.open("/app/app-key").expect("missing protocol means 7");
    let frames = h.drain();
    assert_eq!(
        decode(frames_to(&frames, id)[0])["event"],
        "pusher:connection_established"
    );
}

#[test]
fn open_protocol_4_to_7() {
    let mut h = Harness::new();
    for version in 4..=7 {
        let result = h.open(&format!(
            "/app/app-key?client=java-client&protocol={version}"
        ));
        assert!(result.is_ok(), "protocol {version}: {result:?}");
    }
}

#[test]
fn open_over_capacity() {
    let mut config = config();
    config.limits.max_connections = 2;
    let mut h = Harness::with_config(config);
    h.connect();
    h.connect();
    let error = h.open(PUSHER_JS_PATH).unwrap_err();
    assert_eq!(error, ConnectError::OverCapacity);
    assert_eq!(error.close_code(), 4100);
    assert_eq!(h.node.stats().connections, 2);
}

// Subscribing

#[test]
fn subscribe_public() {
    let mut h = Harness::new();
    let a = h.connect();
    let outputs = h.text(
        a,
        r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"orders"}}"#,
    );
    assert_eq!(outputs, vec![send(a, &succeeded("orders"))]);
    assert_eq!(h.node.stats().channels, 1);
    assert_eq!(h.node.stats().subscriptions, 1);
}

#[test]
fn subscribe_public_without_auth() {
    let mut h = Harness::new();
    let a = h.connect();
    let outputs = h.text(
        a,
        r#"{"event":"pusher:subscribe","data":{"channel":"orders"}}"#,
    );
    assert_eq!(outputs, vec![send(a, &succeeded("orders"))]);
}

#[test]
fn subscribe_public_string_data() {
    let mut h = Harness::new();
    let a = h.connect();
    let outputs = h.text(
        a,
        r#"{"event":"pusher:subscribe","data":"{\"channel\":\"orders\"}"}"#,
    );
    assert_eq!(outputs, vec![send(a, &succeeded("orders"))]);
}

#[test]
fn subscribe_cache_channel() {
    let mut h = Harness::new();
    let a = h.connect();
    assert_eq!(
        h.subscribe(a, "cache-ticker"),
        vec![send(a, &succeeded("cache-ticker"))]
    );
}

#[test]
fn subscribe_private_signed() {
    let mut h = Harness::new();
    let a = h.connect();
    let outputs = h.subscribe_private(a, "private-orders");
    assert_eq!(outputs, vec![send(a, &succeeded("private-orders"))]);
}

#[test]
fn subscribe_encrypted_signed() {
    let mut h = Harness::new();
    let a = h.connect();
    let outputs = h.subscribe_private(a, "private-encrypted-vault");
    assert_eq!(
        outputs,
        vec![send(a, &succeeded("private-encrypted-vault"))]
    );
}

#[test]
fn subscribe_private_channel_data() {
    let mut h = Harness::new();
    let a = h.connect();
    let data = r#"{"foo":"bar"}"#;
    let auth = sign_channel(KEY, SECRET, &h.socket_id(a), "private-orders", Some(data));
    let outputs = h.text(
        a,
        &subscribe_frame("private-orders", Some(&auth), Some(data)),
    );
    assert_eq!(outputs, vec![send(a, &succeeded("private-orders"))]);
}

#[test]
fn subscribe_private_unsigned_channel_data() {
    let mut h = Harness::new();
    let a = h.connect();
    let auth = sign_channel(KEY, SECRET, &h.socket_id(a), "private-orders", None);
    let frame = subscribe_frame("private-orders", Some(&auth), Some(r#"{"foo":"bar"}"#));
    let outputs = h.text(a, &frame);
    assert_rejected(
        &outputs,
        a,
        "private-orders",
        "AuthError",
        "Invalid signature",
        401,
    );
}

#[test]
fn subscribe_presence_members() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.join(
        a,
        "presence-lobby",
        r#"{"user_id":"u-1001","user_info":{"name":"Ada"}}"#,
    );
    let outputs = h.join(
        b,
        "presence-lobby",
        r#"{"user_id":"u-2002","user_info":{"name":"Bo"}}"#,
    );
    let added = r#"{"event":"pusher_internal:member_added","channel":"presence-lobby","data":"{\"user_id\":\"u-2002\",\"user_info\":{\"name\":\"Bo\"}}"}"#;
    let presence = r#"{"event":"pusher_internal:subscription_succeeded","channel":"presence-lobby","data":"{\"presence\":{\"ids\":[\"u-1001\",\"u-2002\"],\"hash\":{\"u-1001\":{\"name\":\"Ada\"},\"u-2002\":{\"name\":\"Bo\"}},\"count\":2}}"}"#;
    assert_eq!(outputs, vec![send(a, added), send(b, presence)]);
    assert_eq!(h.node.stats().presence_members, 2);
}

#[test]
fn subscribe_presence_first_member() {
    let mut h = Harness::new();
    let a = h.connect();
    let outputs = h.join(a, "presence-lobby", r#"{"user_id":"solo"}"#);
    let frames = frames_to(&outputs, a);
    let expected = json!({ "presence": { "ids": ["solo"], "hash": { "solo": null }, "count": 1 } });
    assert_eq!(outputs.len(), 1);
    assert_eq!(decode(frames[0])["data"], expected);
}

#[test]
fn subscribe_bad_signature() {
    let mut h = Harness::new();
    let a = h.connect();
    let socket_id = h.socket_id(a);
    let presented = "b".repeat(64);
    let outputs = h.text(
        a,
        &subscribe_frame("private-orders", Some(&format!("{KEY}:{presented}")), None),
    );
    let message = format!(
        "Invalid signature: Expected HMAC SHA256 hex digest of {socket_id}:private-orders, but got {presented}"
    );
    let rejection = subscription_error("private-orders", "AuthError", "Invalid signature", 401);
    assert_eq!(
        outputs,
        vec![send(a, &error_frame(None, &message)), send(a, &rejection)]
    );
    assert_eq!(h.node.stats().subscriptions, 0);
    assert_eq!(h.node.stats().channels, 0);
}

#[test]
fn subscribe_bad_signature_keeps_connection() {
    let mut h = Harness::new();
    let a = h.connect();
    h.text(
        a,
        &subscribe_frame("private-orders", Some(&format!("{KEY}:00")), None),
    );
    assert_eq!(h.node.stats().connections, 1);
    assert_eq!(h.text(a, PING), vec![send(a, PONG)]);
    assert_eq!(
        h.subscribe(a, "orders"),
        vec![send(a, &succeeded("orders"))]
    );
    assert_eq!(
        h.subscribe_private(a, "private-orders"),
        vec![send(a, &succeeded("private-orders"))]
    );
}

#[test]
fn subscribe_wrong_key() {
    let mut h = Harness::new();
    let a = h.connect();
    let auth = sign_channel("other-key", SECRET, &h.socket_id(a), "private-orders", None);
    let outputs = h.text(a, &subscribe_frame("private-orders", Some(&auth), None));
    let error = "Invalid key in subscription auth data";
    let message = assert_rejected(&outputs, a, "private-orders", "AuthError", error, 401);
    assert_eq!(message, error);
}

#[test]
fn subscribe_auth_without_colon() {
    let mut h = Harness::new();
    let a = h.connect();
    let auth = sign_channel(KEY, SECRET, &h.socket_id(a), "private-orders", None);
    let signature = auth.split_once(':').unwrap().1;
    let outputs = h.text(a, &subscribe_frame("private-orders", Some(signature), None));
    let error = "Invalid key in subscription auth data";
    assert_rejected(&outputs, a, "private-orders", "AuthError", error, 401);
}

#[test]
fn subscribe_missing_auth() {
    let mut h = Harness::new();
    let a = h.connect();
    for auth in [Some(""), None] {
        let outputs = h.text(a, &subscribe_frame("private-orders", auth, None));
        let message = assert_rejected(
            &outputs,
            a,
            "private-orders",
            "AuthError",
            "Missing auth",
            401,
        );
        assert_eq!(message, "Missing auth for protected channel private-orders");
    }
}

#[test]
fn subscribe_other_socket_signature() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    let auth = sign_channel(KEY, SECRET, &h.socket_id(b), "private-orders", None);
    let outputs = h.text(a, &subscribe_frame("private-orders", Some(&auth), None));
    assert_rejected(
        &outputs,
        a,
        "private-orders",
        "AuthError",
        "Invalid signature",
        401,
    );
}

#[test]
fn subscribe_wrong_secret() {
    let mut h = Harness::new();
    let a = h.connect();
    let auth = sign_channel(
        KEY,
        "not-the-secret",
        &h.socket_id(a),
        "private-orders",
        None,
    );
    let outputs = h.text(a, &subscribe_frame("private-orders", Some(&auth), None));
    assert_rejected(
        &outputs,
        a,
        "private-orders",
        "AuthError",
        "Invalid signature",
        401,
    );
}

#[test]
fn subscribe_invalid_channel_name() {
    let mut h = Harness::new();
    let a = h.connect();
    let long = format!("a{}", "b".repeat(200));
    for channel in ["bad channel", "caf\u{e9}", "a:b", &long, "#other"] {
        let outputs = h.subscribe(a, channel);
        let frames = frames_to(&outputs, a);
        assert_eq!(frames.len(), 2, "{channel}");
        assert_eq!(
            decode(frames[1])["data"]["type"],
            "InvalidChannel",
            "{channel}"
        );
        assert_eq!(decode(frames[1])["data"]["status"], 400, "{channel}");
    }
    assert_eq!(h.node.stats().channels, 0);
}

#[test]
fn subscribe_name_at_limit() {
    let mut h = Harness::new();
    let a = h.connect();
    let name = "a".repeat(200);
    assert_eq!(h.subscribe(a, &name), vec![send(a, &succeeded(&name))]);
}

#[test]
fn subscribe_user_channel() {
    let mut h = Harness::new();
    let a = h.connect();
    let outputs = h.subscribe(a, "#server-to-user-u-1001");
    assert_rejected(
        &outputs,
        a,
        "#server-to-user-u-1001",
        "AuthError",
        "Not signed in",
        401,
    );
}

#[test]
fn subscribe_without_data() {
    let mut h = Harness::new();
    let a = h.connect();
    let outputs = h.text(a, r#"{"event":"pusher:subscribe"}"#);
    let message = "Invalid pusher:subscribe data: data is missing";
    assert_eq!(outputs, vec![send(a, &error_frame(None, message))]);
}

#[test]
fn subscribe_duplicate_public() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    let outputs = h.subscribe(a, "orders");
    assert_eq!(outputs, vec![send(a, &succeeded("orders"))]);
    assert_eq!(h.node.stats().subscriptions, 1);
    assert_eq!(h.node.stats().channels, 1);
}

#[test]
fn subscribe_duplicate_presence() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.join_user(a, "presence-lobby", "u-1");
    h.join_user(b, "presence-lobby", "u-2");
    let outputs = h.join_user(b, "presence-lobby", "u-2");
    let frames = frames_to(&outputs, b);
    let data = decode(frames[0])["data"].clone();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(
        decode(frames[0])["event"],
        "pusher_internal:subscription_succeeded"
    );
    assert_eq!(data["presence"]["count"], 2);
    assert_eq!(h.node.stats().presence_members, 2);
    assert_eq!(h.node.stats().subscriptions, 2);
}

#[test]
fn presence_without_channel_data() {
    let mut h = Harness::new();
    let a = h.connect();
    let auth = sign_channel(KEY, SECRET, &h.socket_id(a), "presence-lobby", None);
    let outputs = h.text(a, &subscribe_frame("presence-lobby", Some(&auth), None));
    let error = "Missing channel_data";
    assert_rejected(&outputs, a, "presence-lobby", "AuthError", error, 401);
}

#[test]
fn presence_invalid_channel_data() {
    let mut h = Harness::new();
    let a = h.connect();
    for data in [
        r#"{"user_id":null}"#,
        r#"{"user_id":true}"#,
        r#"{"name":"x"}"#,
        "[]",
        "x",
        "",
    ] {
        let outputs = h.join(a, "presence-lobby", data);
        let error = "Invalid channel_data";
        assert_rejected(&outputs, a, "presence-lobby", "AuthError", error, 401);
    }
    assert_eq!(h.node.stats().presence_members, 0);
}

#[test]
fn presence_unsigned_channel_data() {
    let mut h = Harness::new();
    let a = h.connect();
    let signed = r#"{"user_id": "17"}"#;
    let sent = r#"{"user_id":"17"}"#;
    let auth = sign_channel(KEY, SECRET, &h.socket_id(a), "presence-lobby", Some(signed));
    let outputs = h.text(
        a,
        &subscribe_frame("presence-lobby", Some(&auth), Some(sent)),
    );
    assert_rejected(
        &outputs,
        a,
        "presence-lobby",
        "AuthError",
        "Invalid signature",
        401,
    );
}

#[test]
fn presence_numeric_user_id() {
    let mut h = Harness::new();
    let observer = h.connect();
    let a = h.connect();
    h.join_user(observer, "presence-room-7", "u-0");
    let outputs = h.join(a, "presence-room-7", r#"{"user_id":77,"user_info":{}}"#);
    let added = r#"{"event":"pusher_internal:member_added","channel":"presence-room-7","data":"{\"user_id\":\"77\",\"user_info\":{}}"}"#;
    let own = decode(frames_to(&outputs, a)[0]);
    assert_eq!(frames_to(&outputs, observer), vec![added]);
    assert_eq!(own["data"]["presence"]["ids"], json!(["77", "u-0"]));
    assert_eq!(own["data"]["presence"]["hash"]["77"], json!({}));
}

#[test]
fn presence_numeric_user_id_in_client_event() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.join(a, "presence-room-7", r#"{"user_id":77}"#);
    h.join_user(b, "presence-room-7", "u-0");
    let outputs = h.text(a, &client_event_frame("client-x", "presence-room-7", "{}"));
    let relayed = r#"{"event":"client-x","channel":"presence-room-7","data":{},"user_id":"77"}"#;
    assert_eq!(outputs, vec![send(b, relayed)]);
}

#[test]
fn presence_same_user_two_sockets() {
    let mut h = Harness::new();
    let observer = h.connect();
    let tab1 = h.connect();
    let tab2 = h.connect();
    h.join_user(observer, "presence-lobby", "u-0");

    let first = h.join_user(tab1, "presence-lobby", "u-1");
    assert_eq!(
        frames_to(&first, observer),
        vec![member_added("presence-lobby", "u-1")]
    );

    let second = h.join_user(tab2, "presence-lobby", "u-1");
    let own = decode(frames_to(&second, tab2)[0]);
    assert_eq!(frames_to(&second, observer), Vec::<&str>::new());
    assert_eq!(frames_to(&second, tab1), Vec::<&str>::new());
    assert_eq!(own["data"]["presence"]["ids"], json!(["u-0", "u-1"]));
    assert_eq!(own["data"]["presence"]["count"], 2);
    assert_eq!(h.node.stats().presence_members, 2);
    assert_eq!(h.node.stats().subscriptions, 3);
}

#[test]
fn presence_first_user_info_kept() {
    let mut h = Harness::new();
    let tab1 = h.connect();
    let tab2 = h.connect();
    h.join(
        tab1,
        "presence-lobby",
        r#"{"user_id":"u-1","user_info":{"tab":1}}"#,
    );
    let outputs = h.join(
        tab2,
        "presence-lobby",
        r#"{"user_id":"u-1","user_info":{"tab":2}}"#,
    );
    let own = decode(frames_to(&outputs, tab2)[0]);
    assert_eq!(own["data"]["presence"]["hash"]["u-1"], json!({ "tab": 1 }));
}

/// Joins an observer (`u-0`) and two sockets of `u-1` to `presence-lobby`.
fn two_tabs() -> (Harness, ConnectionId, ConnectionId, ConnectionId) {
    let mut h = Harness::new();
    let observer = h.connect();
    let tab1 = h.connect();
    let tab2 = h.connect();
    h.join_user(observer, "presence-lobby", "u-0");
    h.join_user(tab1, "presence-lobby", "u-1");
    h.join_user(tab2, "presence-lobby", "u-1");
    (h, observer, tab1, tab2)
}

#[test]
fn presence_leave_by_unsubscribe() {
    let (mut h, observer, tab1, tab2) = two_tabs();
    let first = h.text(tab1, &unsubscribe_frame("presence-lobby"));
    assert_eq!(first, vec![]);
    assert_eq!(h.node.stats().presence_members, 2);

    let last = h.text(tab2, &unsubscribe_frame("presence-lobby"));
    assert_eq!(
        last,
        vec![send(observer, &member_removed("presence-lobby", "u-1"))]
    );
    assert_eq!(h.node.stats().presence_members, 1);
}

#[test]
fn presence_leave_by_disconnect() {
    let (mut h, observer, tab1, tab2) = two_tabs();
    assert_eq!(h.disconnect(tab1), vec![]);
    assert_eq!(h.node.stats().presence_members, 2);

    let last = h.disconnect(tab2);
    assert_eq!(
        last,
        vec![send(observer, &member_removed("presence-lobby", "u-1"))]
    );
    assert_eq!(h.node.stats().presence_members, 1);
}

#[test]
fn presence_leave_mixed() {
    let (mut h, observer, tab1, tab2) = two_tabs();
    assert_eq!(h.disconnect(tab2), vec![]);
    let last = h.text(tab1, &unsubscribe_frame("presence-lobby"));
    assert_eq!(
        last,
        vec![send(observer, &member_removed("presence-lobby", "u-1"))]
    );
}

#[test]
fn presence_rejoin_after_leave() {
    let (mut h, observer, tab1, tab2) = two_tabs();
    h.disconnect(tab1);
    h.disconnect(tab2);
    let tab3 = h.connect();
    let outputs = h.join_user(tab3, "presence-lobby", "u-1");
    assert_eq!(
        frames_to(&outputs, observer),
        vec![member_added("presence-lobby", "u-1")]
    );
}

#[test]
fn presence_member_limit() {
    let mut h = Harness::new();
    let mut sockets = Vec::new();
    for user in 0..100 {
        let id = h.connect();
        let outputs = h.join_user(id, "presence-big", &format!("u-{user}"));
        assert_eq!(
            decode(frames_to(&outputs, id)[0])["event"],
            "pusher_internal:subscription_succeeded"
        );
        sockets.push(id);
    }
    let newcomer = h.connect();
    let outputs = h.join_user(newcomer, "presence-big", "u-100");
    let error = "Presence member limit reached";
    let message = assert_rejected(
        &outputs,
        newcomer,
        "presence-big",
        "LimitReached",
        error,
        403,
    );
    assert_eq!(
        message,
        "Presence channel presence-big already has the maximum of 100 members"
    );
    assert_eq!(h.node.stats().presence_members, 100);
}

#[test]
fn presence_member_limit_existing_user() {
    let mut h = Harness::new();
    for user in 0..100 {
        let id = h.connect();
        h.join_user(id, "presence-big", &format!("u-{user}"));
    }
    let another_tab = h.connect();
    let outputs = h.join_user(another_tab, "presence-big", "u-5");
    let own = decode(frames_to(&outputs, another_tab)[0]);
    assert_eq!(outputs.len(), 1, "no member_added for a known user");
    assert_eq!(own["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(own["data"]["presence"]["count"], 100);
    assert_eq!(h.node.stats().presence_members, 100);
}

#[test]
fn presence_member_limit_frees() {
    let mut h = Harness::new();
    let mut sockets = Vec::new();
    for user in 0..100 {
        let id = h.connect();
        h.join_user(id, "presence-big", &format!("u-{user}"));
        sockets.push(id);
    }
    h.disconnect(sockets[0]);
    let newcomer = h.connect();
    let outputs = h.join_user(newcomer, "presence-big", "u-100");
    let own = decode(frames_to(&outputs, newcomer)[0]);
    assert_eq!(own["event"], "pusher_internal:subscription_succeeded");
}

#[test]
fn presence_user_id_limit() {
    let mut h = Harness::new();
    let a = h.connect();
    let at_limit = "i".repeat(128);
    let outputs = h.join_user(a, "presence-lobby", &at_limit);
    assert_eq!(
        decode(frames_to(&outputs, a)[0])["data"]["presence"]["ids"],
        json!([at_limit])
    );

    let b = h.connect();
    let outputs = h.join_user(b, "presence-lobby", &"i".repeat(129));
    assert_rejected(
        &outputs,
        b,
        "presence-lobby",
        "LimitReached",
        "Invalid user_id",
        403,
    );
}

#[test]
fn presence_user_info_limit() {
    let mut h = Harness::new();
    let a = h.connect();
    // `user_info` is measured as JSON text: 1022 characters plus two quotes.
    let at_limit = json!({ "user_id": "a", "user_info": "x".repeat(1022) }).to_string();
    let outputs = h.join(a, "presence-lobby", &at_limit);
    assert_eq!(
        decode(frames_to(&outputs, a)[0])["event"],
        "pusher_internal:subscription_succeeded"
    );

    let b = h.connect();
    let over = json!({ "user_id": "b", "user_info": "x".repeat(1023) }).to_string();
    let outputs = h.join(b, "presence-lobby", &over);
    assert_rejected(
        &outputs,
        b,
        "presence-lobby",
        "LimitReached",
        "user_info too large",
        403,
    );
}

#[test]
fn channel_limit_per_connection() {
    let mut h = Harness::new();
    let a = h.connect();
    for n in 0..100 {
        let channel = format!("c-{n}");
        assert_eq!(
            h.subscribe(a, &channel),
            vec![send(a, &succeeded(&channel))]
        );
    }
    let outputs = h.subscribe(a, "c-100");
    let message = assert_rejected(
        &outputs,
        a,
        "c-100",
        "LimitReached",
        "Channel limit reached",
        403,
    );
    assert_eq!(
        message,
        "Connection is already subscribed to the maximum of 100 channels"
    );
    assert_eq!(h.node.stats().subscriptions, 100);
}

#[test]
fn channel_limit_allows_duplicate() {
    let mut h = Harness::new();
    let a = h.connect();
    for n in 0..100 {
        h.subscribe(a, &format!("c-{n}"));
    }
    assert_eq!(h.subscribe(a, "c-7"), vec![send(a, &succeeded("c-7"))]);
    h.text(a, &unsubscribe_frame("c-7"));
    assert_eq!(h.subscribe(a, "c-100"), vec![send(a, &succeeded("c-100"))]);
}

// Unsubscribing

#[test]
fn unsubscribe_releases_channel() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    assert_eq!(h.text(a, &unsubscribe_frame("orders")), vec![]);
    assert_eq!(h.node.stats().channels, 0);
    assert_eq!(h.node.stats().subscriptions, 0);
}

#[test]
fn unsubscribe_not_subscribed() {
    let mut h = Harness::new();
    let a = h.connect();
    assert_eq!(h.text(a, &unsubscribe_frame("orders")), vec![]);
    assert_eq!(h.text(a, &unsubscribe_frame("bad channel")), vec![]);
}

#[test]
fn unsubscribe_keeps_others() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.subscribe(a, "orders");
    h.subscribe(b, "orders");
    h.text(a, &unsubscribe_frame("orders"));
    assert_eq!(h.node.stats().channels, 1);
    assert_eq!(h.node.stats().subscriptions, 1);
}

// Client events

/// Subscribes three connections to `private-chat`.
fn private_chat() -> (Harness, ConnectionId, ConnectionId, ConnectionId) {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    let c = h.connect();
    for id in [a, b, c] {
        h.subscribe_private(id, "private-chat");
    }
    (h, a, b, c)
}

const TYPING: &str = r#"{"event":"client-typing","data":{"typing":true},"channel":"private-chat"}"#;
const TYPING_OUT: &str =
    r#"{"event":"client-typing","channel":"private-chat","data":{"typing":true}}"#;

#[test]
fn client_event_to_others() {
    let (mut h, a, b, c) = private_chat();
    let outputs = h.text(a, TYPING);
    assert_eq!(outputs, vec![send(b, TYPING_OUT), send(c, TYPING_OUT)]);
    assert_eq!(frames_to(&outputs, a), Vec::<&str>::new());
}

#[test]
fn client_event_string_data() {
    let (mut h, a, b, c) = private_chat();
    let frame = r#"{"event":"client-typing","channel":"private-chat","data":"{\"typing\":true}"}"#;
    let outputs = h.text(a, frame);
    assert_eq!(outputs, vec![send(b, frame), send(c, frame)]);
}

#[test]
fn client_event_data_unchanged() {
    let (mut h, a, b, _) = private_chat();
    let data = r#"{ "z" : [1.50, "\u00fc"], "a":null }"#;
    let outputs = h.text(a, &client_event_frame("client-x", "private-chat", data));
    let expected = format!(r#"{{"event":"client-x","channel":"private-chat","data":{data}}}"#);
    assert_eq!(frames_to(&outputs, b), vec![expected.as_str()]);
}

#[test]
fn client_event_sender_user_id_dropped() {
    let (mut h, a, b, c) = private_chat();
    let frame = r#"{"event":"client-typing","data":{"typing":true},"channel":"private-chat","user_id":"evil"}"#;
    let outputs = h.text(a, frame);
    assert_eq!(outputs, vec![send(b, TYPING_OUT), send(c, TYPING_OUT)]);
}

#[test]
fn client_event_presence_user_id() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.join_user(a, "presence-lobby", "u-1001");
    h.join_user(b, "presence-lobby", "u-2002");
    let frame = r#"{"event":"client-typing","data":{"typing":true},"channel":"presence-lobby","user_id":"evil"}"#;
    let outputs = h.text(a, frame);
    let relayed = r#"{"event":"client-typing","channel":"presence-lobby","data":{"typing":true},"user_id":"u-1001"}"#;
    assert_eq!(outputs, vec![send(b, relayed)]);
}

#[test]
fn client_event_public_channel() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    let message = "Client event rejected - only supported on private and presence channels";
    for channel in ["orders", "cache-ticker"] {
        h.subscribe(a, channel);
        h.subscribe(b, channel);
        let outputs = h.text(a, &client_event_frame("client-x", channel, "{}"));
        assert_eq!(
            outputs,
            vec![send(a, &error_frame(None, message))],
            "{channel}"
        );
    }
}

#[test]
fn client_event_encrypted_channel() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.subscribe_private(a, "private-encrypted-vault");
    h.subscribe_private(b, "private-encrypted-vault");
    let outputs = h.text(
        a,
        &client_event_frame("client-x", "private-encrypted-vault", "{}"),
    );
    let message = "Client event rejected - not supported on private-encrypted- channels";
    assert_eq!(outputs, vec![send(a, &error_frame(None, message))]);
}

#[test]
fn client_event_not_subscribed() {
    let (mut h, _, b, _) = private_chat();
    let outsider = h.connect();
    let outputs = h.text(outsider, TYPING);
    let message =
        "Cannot broadcast client event (connection not subscribed to channel private-chat)";
    assert_eq!(outputs, vec![send(outsider, &error_frame(None, message))]);
    assert_eq!(frames_to(&outputs, b), Vec::<&str>::new());
}

#[test]
fn client_event_after_unsubscribe() {
    let (mut h, a, _, _) = private_chat();
    h.text(a, &unsubscribe_frame("private-chat"));
    let outputs = h.text(a, TYPING);
    let message =
        "Cannot broadcast client event (connection not subscribed to channel private-chat)";
    assert_eq!(outputs, vec![send(a, &error_frame(None, message))]);
}

#[test]
fn client_event_missing_channel() {
    let (mut h, a, _, _) = private_chat();
    let outputs = h.text(a, r#"{"event":"client-x","data":{}}"#);
    let message = "Client event rejected - no channel given";
    assert_eq!(outputs, vec![send(a, &error_frame(None, message))]);
}

#[test]
fn client_events_disabled() {
    let mut config = config();
    config.app.client_events = false;
    let mut h = Harness::with_config(config);
    let a = h.connect();
    let b = h.connect();
    h.subscribe_private(a, "private-chat");
    h.subscribe_private(b, "private-chat");
    let outputs = h.text(a, TYPING);
    let message = "To send client events, you must enable this feature in the Settings page of your dashboard.";
    assert_eq!(outputs, vec![send(a, &error_frame(None, message))]);
}

#[test]
fn client_event_rate_limit() {
    let (mut h, a, b, c) = private_chat();
    for n in 0..10 {
        let outputs = h.text(a, TYPING);
        assert_eq!(outputs.len(), 2, "event {n}: {outputs:?}");
    }
    let outputs = h.text(a, TYPING);
    let limited = error_frame(Some(4301), "Client event rejected due to rate limit");
    assert_eq!(outputs, vec![send(a, &limited)]);
    assert_eq!(h.node.stats().connections, 3);

    h.advance(Duration::from_millis(999));
    assert_eq!(h.text(a, TYPING), vec![send(a, &limited)]);

    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.text(a, TYPING),
        vec![send(b, TYPING_OUT), send(c, TYPING_OUT)]
    );
}

#[test]
fn client_event_rate_per_connection() {
    let (mut h, a, b, c) = private_chat();
    for _ in 0..10 {
        h.text(a, TYPING);
    }
    let outputs = h.text(b, TYPING);
    assert_eq!(outputs, vec![send(a, TYPING_OUT), send(c, TYPING_OUT)]);
}

#[test]
fn client_event_data_limit() {
    let (mut h, a, b, c) = private_chat();
    // A JSON string of 10,238 characters is 10,240 bytes of JSON text with its quotes.
    let at_limit = format!(r#""{}""#, "x".repeat(10_238));
    let outputs = h.text(
        a,
        &client_event_frame("client-x", "private-chat", &at_limit),
    );
    assert_eq!(outputs.len(), 2, "event at the limit is relayed");
    assert_eq!(frames_to(&outputs, b).len(), 1);
    assert_eq!(frames_to(&outputs, c).len(), 1);

    let over = format!(r#""{}""#, "x".repeat(10_239));
    let outputs = h.text(a, &client_event_frame("client-x", "private-chat", &over));
    let message = "Client event rejected - data larger than 10240 bytes";
    assert_eq!(outputs, vec![send(a, &error_frame(None, message))]);
}

#[test]
fn client_event_name_limit() {
    let (mut h, a, b, c) = private_chat();
    let at_limit = format!("client-{}", "x".repeat(193));
    let outputs = h.text(a, &client_event_frame(&at_limit, "private-chat", "{}"));
    assert_eq!(frames_to(&outputs, b).len(), 1);
    assert_eq!(frames_to(&outputs, c).len(), 1);

    let over = format!("client-{}", "x".repeat(194));
    let outputs = h.text(a, &client_event_frame(&over, "private-chat", "{}"));
    let message = "Client event rejected - event name longer than 200 characters";
    assert_eq!(outputs, vec![send(a, &error_frame(None, message))]);
}

// Malformed input

#[test]
fn invalid_json() {
    let mut h = Harness::new();
    let a = h.connect();
    let invalid = error_frame(None, "Invalid JSON");
    for text in [
        "not json",
        "[]",
        "{}",
        r#"{"event":5}"#,
        r#"{"data":{}}"#,
        "",
    ] {
        assert_eq!(h.text(a, text), vec![send(a, &invalid)], "{text:?}");
    }
    assert_eq!(h.node.stats().connections, 1);
    assert_eq!(h.text(a, PING), vec![send(a, PONG)]);
}

#[test]
fn unsupported_event() {
    let mut h = Harness::new();
    let a = h.connect();
    let outputs = h.text(a, r#"{"event":"my-event","channel":"orders","data":{}}"#);
    let message = "Unsupported event received on socket: my-event";
    assert_eq!(outputs, vec![send(a, &error_frame(None, message))]);
    assert_eq!(h.node.stats().connections, 1);
}

#[test]
fn unknown_pusher_event() {
    let mut h = Harness::new();
    let a = h.connect();
    assert_eq!(h.text(a, r#"{"event":"pusher:future","data":{}}"#), vec![]);
    assert_eq!(h.text(a, r#"{"event":"pusher_internal:future"}"#), vec![]);
}

#[test]
fn ping_forms() {
    let mut h = Harness::new();
    let a = h.connect();
    assert_eq!(h.text(a, PING), vec![send(a, PONG)]);
    assert_eq!(
        h.text(a, r#"{"event": "pusher:ping"}"#),
        vec![send(a, PONG)]
    );
    assert_eq!(h.text(a, r#"{"event":"pusher:pong","data":{}}"#), vec![]);
}

#[test]
fn signin_not_supported() {
    let mut h = Harness::new();
    let a = h.connect();
    let frame = r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"u-1\"}"}}"#;
    let message = "User authentication is not supported by this server";
    assert_eq!(
        h.text(a, frame),
        vec![send(a, &error_frame(Some(4009), message))]
    );
    assert_eq!(h.node.stats().connections, 1);
}

#[test]
fn binary_frame() {
    let mut h = Harness::new();
    let a = h.connect();
    h.node.handle_binary(h.now, a, 10);
    let message = "Binary frames are not supported, send JSON text frames";
    assert_eq!(h.drain(), vec![send(a, &error_frame(None, message))]);
    assert_eq!(h.node.stats().connections, 1);
}

#[test]
fn text_frame_over_limit() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    let text = format!("{PING}{}", " ".repeat(64 * 1024 - PING.len() + 1));
    let outputs = h.text(a, &text);
    assert_eq!(outputs, vec![close(a, 1009, "Message too big")]);
    assert_eq!(h.node.stats(), NodeStats::default());
}

#[test]
fn text_frame_at_limit() {
    let mut h = Harness::new();
    let a = h.connect();
    let text = format!("{PING}{}", " ".repeat(64 * 1024 - PING.len()));
    assert_eq!(text.len(), 64 * 1024);
    assert_eq!(h.text(a, &text), vec![send(a, PONG)]);
}

#[test]
fn binary_frame_over_limit() {
    let mut h = Harness::new();
    let a = h.connect();
    h.node.handle_binary(h.now, a, 64 * 1024 + 1);
    assert_eq!(h.drain(), vec![close(a, 1009, "Message too big")]);
    assert_eq!(h.node.stats().connections, 0);
}

#[test]
fn oversized_frame_from_host() {
    let mut h = Harness::new();
    let a = h.connect();
    h.node.handle_oversized_frame(h.now, a);
    assert_eq!(h.drain(), vec![close(a, 1009, "Message too big")]);
    assert_eq!(h.node.stats().connections, 0);
}

#[test]
fn backpressure_closes_4100() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    h.node.handle_backpressure(h.now, a);
    let outputs = h.drain();
    assert_eq!(
        outputs.last(),
        Some(&close(a, 4100, "Client too slow to read its messages"))
    );
    assert_eq!(h.node.stats(), NodeStats::default());
}

#[test]
fn input_after_close_ignored() {
    let mut h = Harness::new();
    let a = h.connect();
    h.disconnect(a);
    assert_eq!(h.text(a, PING), vec![]);
    h.node.handle_binary(h.now, a, 1);
    h.node.handle_activity(h.now, a);
    h.node.handle_oversized_frame(h.now, a);
    h.node.handle_backpressure(h.now, a);
    h.node.handle_disconnect(h.now, a);
    assert_eq!(h.drain(), vec![]);
}

// Liveness

const PONG_TIMEOUT_FRAME: &str =
    r#"{"event":"pusher:error","data":{"code":4201,"message":"Pong reply not received"}}"#;

#[test]
fn liveness_probe_and_close() {
    let mut h = Harness::new();
    let a = h.connect();
    assert_eq!(h.node.poll_timeout(), Some(h.secs(120)));
    assert_eq!(h.timeout(h.secs(119)), vec![]);

    assert_eq!(h.timeout(h.secs(120)), vec![Output::Ping { connection: a }]);
    assert_eq!(h.node.poll_timeout(), Some(h.secs(150)));
    assert_eq!(h.timeout(h.secs(149)), vec![]);

    let outputs = h.timeout(h.secs(150));
    assert_eq!(
        outputs,
        vec![
            send(a, PONG_TIMEOUT_FRAME),
            close(a, 4201, "Pong reply not received")
        ]
    );
    assert_eq!(h.node.poll_timeout(), None);
    assert_eq!(h.node.stats(), NodeStats::default());
}

#[test]
fn liveness_text_resets() {
    let mut h = Harness::new();
    let a = h.connect();
    h.advance(Duration::from_secs(60));
    h.text(a, PING);
    assert_eq!(h.timeout(h.secs(120)), vec![]);
    assert_eq!(h.node.poll_timeout(), Some(h.secs(180)));
    assert_eq!(h.timeout(h.secs(180)), vec![Output::Ping { connection: a }]);
}

#[test]
fn liveness_pong_after_probe() {
    let mut h = Harness::new();
    let a = h.connect();
    assert_eq!(h.timeout(h.secs(120)), vec![Output::Ping { connection: a }]);
    h.now = h.secs(130);
    h.node.handle_activity(h.now, a);
    assert_eq!(h.timeout(h.secs(150)), vec![]);
    assert_eq!(h.node.stats().connections, 1);
    assert_eq!(h.node.poll_timeout(), Some(h.secs(250)));
    assert_eq!(h.timeout(h.secs(250)), vec![Output::Ping { connection: a }]);
}

#[test]
fn liveness_binary_counts() {
    let mut h = Harness::new();
    let a = h.connect();
    h.now = h.secs(100);
    h.node.handle_binary(h.now, a, 1);
    h.drain();
    assert_eq!(h.timeout(h.secs(120)), vec![]);
    assert_eq!(h.node.poll_timeout(), Some(h.secs(220)));
}

#[test]
fn liveness_late_timeout_probes_first() {
    let mut h = Harness::new();
    let a = h.connect();
    assert_eq!(
        h.timeout(h.secs(1000)),
        vec![Output::Ping { connection: a }]
    );
    assert_eq!(h.node.poll_timeout(), Some(h.secs(1030)));
}

#[test]
fn liveness_custom_timeouts() {
    let mut config = config();
    config.activity_timeout = Duration::from_secs(30);
    config.pong_timeout = Duration::from_secs(5);
    let mut h = Harness::with_config(config);
    let id = h.open(PUSHER_JS_PATH).expect("open accepted");
    let established = h.drain();
    assert_eq!(
        decode(frames_to(&established, id)[0])["data"]["activity_timeout"],
        30
    );
    assert_eq!(h.timeout(h.secs(30)), vec![Output::Ping { connection: id }]);
    assert_eq!(h.timeout(h.secs(35)).len(), 2);
}

#[test]
fn poll_timeout_not_in_past() {
    let mut h = Harness::new();
    let mut ids = Vec::new();
    for n in 0..6 {
        h.advance(Duration::from_secs(7 * n));
        ids.push(h.connect());
    }
    for step in 0..300 {
        let Some(deadline) = h.node.poll_timeout() else {
            break;
        };
        h.now = deadline.max(h.now);
        // Keep connections alive for a while, at varying times.
        if step < 60 && step % 3 == 0 {
            h.node.handle_activity(h.now, ids[step % ids.len()]);
        }
        let now = h.now;
        h.timeout(now);
        if let Some(next) = h.node.poll_timeout() {
            assert!(
                next > now,
                "step {step}: deadline {next:?} is not after {now:?}"
            );
        }
    }
    assert_eq!(h.node.poll_timeout(), None);
    assert_eq!(h.node.stats(), NodeStats::default());
}

#[test]
fn timers_one_per_connection() {
    let mut h = Harness::new();
    let ids: Vec<ConnectionId> = (0..3).map(|_| h.connect()).collect();
    for n in 1..=5 {
        h.advance(Duration::from_secs(n * 10));
        for id in &ids {
            h.text(*id, PING);
        }
    }
    h.timeout(h.secs(120));
    assert_eq!(h.node.stats().timers, 3);
}

// Shutdown and cleanup

#[test]
fn shutdown_closes_all() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    let c = h.connect();
    h.subscribe(a, "orders");
    h.join_user(b, "presence-lobby", "u-1");
    h.join_user(c, "presence-lobby", "u-2");

    h.node.shutdown(h.now);
    let outputs = h.drain();
    let error = r#"{"event":"pusher:error","data":{"code":4200,"message":"Server is shutting down, reconnect"}}"#;
    for id in [a, b, c] {
        let own: Vec<&Output> = outputs
            .iter()
            .filter(|o| output_connection(o) == id)
            .collect();
        let tail = &own[own.len() - 2..];
        assert_eq!(tail[0], &send(id, error), "{id:?}");
        assert_eq!(
            tail[1],
            &close(id, 4200, "Server is shutting down"),
            "{id:?}"
        );
    }
    assert_eq!(h.node.stats(), NodeStats::default());
    assert_eq!(h.node.poll_timeout(), None);
}

fn output_connection(output: &Output) -> ConnectionId {
    match output {
        Output::Send { connection, .. }
        | Output::Ping { connection }
        | Output::Close { connection, .. } => *connection,
        Output::Publish { .. } => panic!("a single node publishes no cluster messages"),
    }
}

#[test]
fn shutdown_rejects_open() {
    let mut h = Harness::new();
    h.node.shutdown(h.now);
    let error = h.open(PUSHER_JS_PATH).unwrap_err();
    assert_eq!(error, ConnectError::ShuttingDown);
    assert_eq!(error.close_code(), 4200);
    assert_eq!(h.node.stats().connections, 0);
}

#[test]
fn nothing_after_close() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.join_user(a, "presence-lobby", "u-1");
    h.join_user(b, "presence-lobby", "u-2");
    h.node.shutdown(h.now);
    let outputs = h.drain();
    for id in [a, b] {
        let closed_at = outputs
            .iter()
            .position(|o| matches!(o, Output::Close { connection, .. } if *connection == id))
            .expect("every connection is closed");
        let later = outputs[closed_at + 1..]
            .iter()
            .filter(|o| output_connection(o) == id);
        assert_eq!(later.count(), 0, "{id:?}");
    }
}

#[test]
fn disconnect_releases_all() {
    let mut h = Harness::new();
    let ids: Vec<ConnectionId> = (0..4).map(|_| h.connect()).collect();
    for (n, id) in ids.iter().enumerate() {
        h.subscribe(*id, "orders");
        h.subscribe_private(*id, "private-orders");
        h.join_user(*id, "presence-lobby", &format!("u-{}", n % 2));
        h.join_user(*id, "presence-other", "u-same");
    }
    let stats = h.node.stats();
    assert_eq!(stats.channels, 4);
    assert_eq!(stats.subscriptions, 16);
    assert_eq!(stats.presence_members, 3);
    assert_eq!(stats.timers, 4);

    for id in ids {
        h.disconnect(id);
    }
    assert_eq!(h.node.stats(), NodeStats::default());
    assert_eq!(h.node.poll_timeout(), None);
}

#[test]
fn client_event_null_data() {
    let (mut h, a, b, c) = private_chat();
    let frame = r#"{"event":"client-x","channel":"private-chat","data":null}"#;
    assert_eq!(h.text(a, frame), vec![send(b, frame), send(c, frame)]);
}

#[test]
fn pong_timeout_too_large() {
    let mut config = config();
    config.pong_timeout = Duration::MAX;
    assert_eq!(
        Node::new(config, 1).unwrap_err(),
        ConfigError::InvalidPongTimeout
    );
}

#[test]
fn pong_timeout_at_maximum() {
    let mut config = config();
    config.pong_timeout = Duration::from_secs(u64::from(u32::MAX));
    let mut h = Harness::with_config(config);
    let a = h.connect();
    assert_eq!(h.timeout(h.secs(120)), vec![Output::Ping { connection: a }]);
    assert_eq!(
        h.node.poll_timeout(),
        Some(h.secs(120 + u64::from(u32::MAX)))
    );
}
