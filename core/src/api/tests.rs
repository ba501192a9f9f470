//! HTTP API scenarios: signed requests against a `Node` with live connections.

use md5::{Digest, Md5};
use serde_json::{Value, json};

use super::*;
use crate::auth::{sign_api_request, sign_channel, to_hex};
use crate::config::{AppConfig, Config};
use crate::connection::{ConnectRequest, ConnectionId};
use crate::node::{NodeStats, Output};

const APP_ID: &str = "1001";
const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

/// Wall-clock time of every request, in Unix seconds.
const UNIX_NOW: u64 = 1_700_000_000;

/// MD5 of the empty body, which pusher-http-python sends on GET requests.
const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

fn config() -> Config {
    let mut app = AppConfig::new(KEY, SECRET);
    app.id = Some(APP_ID.to_owned());
    Config::new(app)
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

fn md5_hex(body: &str) -> String {
    to_hex(&Md5::digest(body.as_bytes()))
}

/// Builds a signed query string. `params` come after the `auth_*` ones, and `body_md5` is
/// added for a non-empty body.
fn signed_query(method: &str, path: &str, params: &[(&str, &str)], body: &str) -> String {
    let timestamp = UNIX_NOW.to_string();
    let mut pairs = vec![
        ("auth_key", KEY),
        ("auth_timestamp", timestamp.as_str()),
        ("auth_version", "1.0"),
    ];
    let md5 = md5_hex(body);
    if !body.is_empty() {
        pairs.push(("body_md5", &md5));
    }
    pairs.extend_from_slice(params);
    raw_signed_query(method, path, &pairs)
}

/// Encodes `pairs` as given and appends `auth_signature` made with the app secret.
fn raw_signed_query(method: &str, path: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect();
    let query = query.join("&");
    let signature = sign_api_request(SECRET, method, path, &query).expect("query parses");
    format!("{query}&auth_signature={signature}")
}

/// A node with a fake clock. Every request carries `UNIX_NOW` as the wall-clock time.
struct Harness {
    node: Node,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(config())
    }

    fn with_config(config: Config) -> Self {
        Self {
            node: Node::new(config, 7).expect("valid config"),
            now: Instant::now(),
        }
    }

    fn connect(&mut self) -> ConnectionId {
        let request = ConnectRequest::parse("/app/app-key?protocol=7").expect("valid path");
        let id = self.node.open(self.now, &request).expect("open accepted");
        self.drain();
        id
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        while let Some(output) = self.node.poll_output() {
            outputs.push(output);
            assert!(outputs.len() <= 100_000, "output queue does not drain");
        }
        outputs
    }

    fn text(&mut self, id: ConnectionId, text: &str) {
        self.node.handle_text(self.now, id, text);
        let outputs = self.drain();
        let first = frames_to(&outputs, id)[0];
        assert!(first.contains("subscription_succeeded"), "{first}");
    }

    fn subscribe(&mut self, id: ConnectionId, channel: &str) {
        let socket_id = self.node.socket_id(id).expect("open").to_string();
        let auth = sign_channel(KEY, SECRET, &socket_id, channel, None);
        let data = json!({ "channel": channel, "auth": auth });
        self.text(
            id,
            &json!({ "event": "pusher:subscribe", "data": data }).to_string(),
        );
    }

    fn join(&mut self, id: ConnectionId, channel: &str, channel_data: &str) {
        let socket_id = self.node.socket_id(id).expect("open").to_string();
        let auth = sign_channel(KEY, SECRET, &socket_id, channel, Some(channel_data));
        let data = json!({ "channel": channel, "auth": auth, "channel_data": channel_data });
        self.text(
            id,
            &json!({ "event": "pusher:subscribe", "data": data }).to_string(),
        );
    }

    fn join_user(&mut self, id: ConnectionId, channel: &str, user_id: &str) {
        self.join(id, channel, &json!({ "user_id": user_id }).to_string());
    }

    fn request(&mut self, method: &str, path: &str, query: &str, body: &str) -> ApiResponse {
        let request = ApiRequest {
            method,
            path,
            query,
            body: body.as_bytes(),
        };
        self.node.handle_api(self.now, UNIX_NOW, &request)
    }

    fn get(&mut self, path: &str, params: &[(&str, &str)]) -> ApiResponse {
        let query = signed_query("GET", path, params, "");
        self.request("GET", path, &query, "")
    }

    fn post(&mut self, path: &str, body: &str) -> ApiResponse {
        let query = signed_query("POST", path, &[], body);
        self.request("POST", path, &query, body)
    }

    fn post_event(&mut self, event: Value) -> ApiResponse {
        self.post("/apps/1001/events", &event.to_string())
    }

    fn post_batch(&mut self, batch: Vec<Value>) -> ApiResponse {
        self.post(
            "/apps/1001/batch_events",
            &json!({ "batch": batch }).to_string(),
        )
    }
}

fn frames_to(outputs: &[Output], id: ConnectionId) -> Vec<&str> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Send { connection, frame } if *connection == id => Some(&**frame),
            _ => None,
        })
        .collect()
}

fn body(response: &ApiResponse) -> Value {
    serde_json::from_str(&response.body).expect("response body is JSON")
}

/// Asserts an error response: the status and a JSON body with a string `error`.
fn assert_error(response: &ApiResponse, status: u16) {
    assert_eq!(response.status, status, "{}", response.body);
    assert!(body(response)["error"].is_string(), "{}", response.body);
}

fn event(name: &str, channel: &str, data: &str) -> Value {
    json!({ "name": name, "channel": channel, "data": data })
}

// POST /events

#[test]
fn events_to_channel() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.subscribe(a, "orders");
    h.subscribe(b, "orders");
    let response = h.post_event(event("order-shipped", "orders", r#"{"id":42}"#));
    let frame = r#"{"event":"order-shipped","channel":"orders","data":"{\"id\":42}"}"#;
    let outputs = h.drain();
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), json!({}));
    assert_eq!(frames_to(&outputs, a), vec![frame]);
    assert_eq!(frames_to(&outputs, b), vec![frame]);
}

#[test]
fn events_to_channels() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.subscribe(a, "private-orders");
    h.subscribe(b, "orders");
    let event = json!({
        "name": "order-shipped",
        "data": r#"{"id":42,"status":"shipped"}"#,
        "channels": ["private-orders", "orders"],
    });
    let response = h.post_event(event);
    let outputs = h.drain();
    let to_private = r#"{"event":"order-shipped","channel":"private-orders","data":"{\"id\":42,\"status\":\"shipped\"}"}"#;
    let to_public = r#"{"event":"order-shipped","channel":"orders","data":"{\"id\":42,\"status\":\"shipped\"}"}"#;
    assert_eq!(response.status, 200);
    assert_eq!(frames_to(&outputs, a), vec![to_private]);
    assert_eq!(frames_to(&outputs, b), vec![to_public]);
}

#[test]
fn events_channels_win_over_channel() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.subscribe(a, "alpha");
    h.subscribe(b, "beta");
    let event = json!({ "name": "e", "data": "x", "channel": "alpha", "channels": ["beta"] });
    let response = h.post_event(event);
    let outputs = h.drain();
    assert_eq!(response.status, 200);
    assert_eq!(frames_to(&outputs, a).len(), 0);
    assert_eq!(frames_to(&outputs, b).len(), 1);
}

#[test]
fn events_duplicate_channels_once() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    let response =
        h.post_event(json!({ "name": "e", "data": "x", "channels": ["orders", "orders"] }));
    assert_eq!(response.status, 200);
    assert_eq!(frames_to(&h.drain(), a).len(), 1);
}

#[test]
fn events_socket_id_excluded() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.subscribe(a, "orders");
    h.subscribe(b, "orders");
    let socket_id = h.node.socket_id(a).expect("open").to_string();
    let mut event = event("e", "orders", "x");
    event["socket_id"] = socket_id.into();
    let response = h.post_event(event);
    let outputs = h.drain();
    assert_eq!(response.status, 200);
    assert_eq!(frames_to(&outputs, a).len(), 0);
    assert_eq!(frames_to(&outputs, b).len(), 1);
}

#[test]
fn events_unknown_socket_id() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    let mut event = event("e", "orders", "x");
    event["socket_id"] = "2002.3003".into();
    let response = h.post_event(event);
    assert_eq!(response.status, 200);
    assert_eq!(frames_to(&h.drain(), a).len(), 1);
}

#[test]
fn events_no_subscribers() {
    let mut h = Harness::new();
    let response = h.post_event(event("e", "orders", "x"));
    assert_eq!(response.status, 200);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn events_info_counts() {
    let mut h = Harness::new();
    let tab1 = h.connect();
    let tab2 = h.connect();
    let other = h.connect();
    h.join_user(tab1, "presence-lobby", "u-1");
    h.join_user(tab2, "presence-lobby", "u-1");
    h.join_user(other, "presence-lobby", "u-2");
    h.subscribe(other, "orders");
    let event = json!({
        "name": "e",
        "data": "x",
        "channels": ["presence-lobby", "orders", "empty"],
        "info": "user_count,subscription_count",
    });
    let response = h.post_event(event);
    let expected = json!({ "channels": {
        "presence-lobby": { "user_count": 2, "subscription_count": 3 },
        "orders": { "subscription_count": 1 },
        "empty": { "subscription_count": 0 },
    }});
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), expected);
}

#[test]
fn events_info_user_count_public() {
    let mut h = Harness::new();
    let response = h
        .post_event(json!({ "name": "e", "data": "x", "channel": "orders", "info": "user_count" }));
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), json!({ "channels": { "orders": {} } }));
}

#[test]
fn events_info_unknown() {
    let mut h = Harness::new();
    let response =
        h.post_event(json!({ "name": "e", "data": "x", "channel": "orders", "info": "cache" }));
    assert_error(&response, 400);
}

#[test]
fn events_non_string_data() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    let response = h.post_event(json!({ "name": "e", "channel": "orders", "data": { "id": 42 } }));
    let frame = r#"{"event":"e","channel":"orders","data":"{\"id\":42}"}"#;
    assert_eq!(response.status, 200);
    assert_eq!(frames_to(&h.drain(), a), vec![frame]);
}

#[test]
fn events_python_body() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "lobby");
    let body = r#"{"name": "greet", "channel": "lobby", "data": "{\"msg\": \"Gr\u00fc\u00dfe\"}"}"#;
    let response = h.post("/apps/1001/events", body);
    let frame = "{\"event\":\"greet\",\"channel\":\"lobby\",\"data\":\"{\\\"msg\\\": \\\"Gr\u{fc}\u{df}e\\\"}\"}";
    assert_eq!(response.status, 200);
    assert_eq!(frames_to(&h.drain(), a), vec![frame]);
}

#[test]
fn events_query_form() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.subscribe(a, "alpha");
    h.subscribe(b, "beta");
    let path = "/apps/1001/events";
    let params = [
        ("name", "legacy-event"),
        ("data", r#"{"a":1}"#),
        ("channels[]", "alpha"),
        ("channels[]", "beta"),
    ];
    let query = signed_query("POST", path, &params, "");
    let response = h.request("POST", path, &query, "");
    let outputs = h.drain();
    let to_alpha = r#"{"event":"legacy-event","channel":"alpha","data":"{\"a\":1}"}"#;
    let to_beta = r#"{"event":"legacy-event","channel":"beta","data":"{\"a\":1}"}"#;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(frames_to(&outputs, a), vec![to_alpha]);
    assert_eq!(frames_to(&outputs, b), vec![to_beta]);
}

#[test]
fn events_query_single_channel() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "alpha");
    let path = "/apps/1001/events";
    let params = [("name", "e"), ("data", "x"), ("channel", "alpha")];
    let query = signed_query("POST", path, &params, "");
    let response = h.request("POST", path, &query, "");
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(frames_to(&h.drain(), a).len(), 1);
}

#[test]
fn events_invalid_parameters() {
    let mut h = Harness::new();
    let long_name = "e".repeat(201);
    let hundred_one: Vec<String> = (0..101).map(|n| format!("c-{n}")).collect();
    let cases = [
        ("missing name", json!({ "data": "x", "channel": "orders" })),
        (
            "empty name",
            json!({ "name": "", "data": "x", "channel": "orders" }),
        ),
        (
            "long name",
            json!({ "name": long_name, "data": "x", "channel": "orders" }),
        ),
        (
            "name not a string",
            json!({ "name": 5, "data": "x", "channel": "orders" }),
        ),
        (
            "pusher: name",
            json!({ "name": "pusher:x", "data": "x", "channel": "orders" }),
        ),
        (
            "pusher_internal: name",
            event("pusher_internal:x", "orders", "x"),
        ),
        ("missing data", json!({ "name": "e", "channel": "orders" })),
        ("missing channel", json!({ "name": "e", "data": "x" })),
        (
            "empty channels",
            json!({ "name": "e", "data": "x", "channels": [] }),
        ),
        (
            "channels not an array",
            json!({ "name": "e", "data": "x", "channels": "orders" }),
        ),
        (
            "channel not a string",
            json!({ "name": "e", "data": "x", "channel": 5 }),
        ),
        ("invalid channel", event("e", "bad channel", "x")),
        (
            "too many channels",
            json!({ "name": "e", "data": "x", "channels": hundred_one }),
        ),
        (
            "socket_id",
            json!({ "name": "e", "data": "x", "channel": "a", "socket_id": "abc" }),
        ),
        (
            "socket_id number",
            json!({ "name": "e", "data": "x", "channel": "a", "socket_id": 1 }),
        ),
        (
            "info number",
            json!({ "name": "e", "data": "x", "channel": "a", "info": 1 }),
        ),
        (
            "encrypted with others",
            json!({ "name": "e", "data": "x", "channels": ["private-encrypted-a", "b"] }),
        ),
    ];
    for (case, event) in cases {
        let response = h.post_event(event);
        assert_eq!(response.status, 400, "{case}: {}", response.body);
        assert!(body(&response)["error"].is_string(), "{case}");
    }
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn events_hundred_channels() {
    let mut h = Harness::new();
    let channels: Vec<String> = (0..100).map(|n| format!("c-{n}")).collect();
    let response = h.post_event(json!({ "name": "e", "data": "x", "channels": channels }));
    assert_eq!(response.status, 200, "{}", response.body);
}

#[test]
fn events_encrypted_single_channel() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "private-encrypted-vault");
    let data = r#"{"nonce":"eDd7UldXtJRCf4kBT5fXmSjzk40U61Hi","ciphertext":"MFUx3MUO"}"#;
    let response = h.post_event(event("vault-updated", "private-encrypted-vault", data));
    let frame = r#"{"event":"vault-updated","channel":"private-encrypted-vault","data":"{\"nonce\":\"eDd7UldXtJRCf4kBT5fXmSjzk40U61Hi\",\"ciphertext\":\"MFUx3MUO\"}"}"#;
    assert_eq!(response.status, 200);
    assert_eq!(frames_to(&h.drain(), a), vec![frame]);
}

#[test]
fn events_invalid_json_body() {
    let mut h = Harness::new();
    for body in ["not json", "[]", r#""x""#, "{"] {
        let response = h.post("/apps/1001/events", body);
        assert_eq!(response.status, 400, "{body}: {}", response.body);
    }
}

#[test]
fn events_data_at_limit() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    let response = h.post_event(event("e", "orders", &"x".repeat(10_240)));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(frames_to(&h.drain(), a).len(), 1);
}

#[test]
fn events_data_over_limit() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    let response = h.post_event(event("e", "orders", &"x".repeat(10_241)));
    assert_error(&response, 413);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn events_data_limit_in_bytes() {
    let mut h = Harness::new();
    // 5,121 two-byte characters are 10,242 bytes of UTF-8.
    let response = h.post_event(event("e", "orders", &"\u{fc}".repeat(5_121)));
    assert_error(&response, 413);
}

#[test]
fn events_body_over_limit() {
    let mut h = Harness::new();
    let padding = " ".repeat(256 * 1024);
    let body = format!(r#"{{"name":"e","data":"x","channel":"orders"}}{padding}"#);
    let response = h.post("/apps/1001/events", &body);
    assert_error(&response, 413);
}

// POST /batch_events

#[test]
fn batch_delivered() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.subscribe(a, "alpha");
    h.subscribe(b, "beta");
    let response = h.post_batch(vec![event("one", "alpha", "1"), event("two", "beta", "2")]);
    let outputs = h.drain();
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), json!({}));
    assert_eq!(
        frames_to(&outputs, a),
        vec![r#"{"event":"one","channel":"alpha","data":"1"}"#]
    );
    assert_eq!(
        frames_to(&outputs, b),
        vec![r#"{"event":"two","channel":"beta","data":"2"}"#]
    );
}

#[test]
fn batch_socket_id_excluded() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.subscribe(a, "alpha");
    h.subscribe(b, "alpha");
    let mut first = event("one", "alpha", "1");
    first["socket_id"] = h.node.socket_id(a).expect("open").to_string().into();
    let response = h.post_batch(vec![first, event("two", "alpha", "2")]);
    let outputs = h.drain();
    assert_eq!(response.status, 200);
    assert_eq!(frames_to(&outputs, a).len(), 1);
    assert_eq!(frames_to(&outputs, b).len(), 2);
}

#[test]
fn batch_ten_events() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "alpha");
    let batch = (0..10)
        .map(|n| event(&format!("e-{n}"), "alpha", "x"))
        .collect();
    let response = h.post_batch(batch);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(frames_to(&h.drain(), a).len(), 10);
}

#[test]
fn batch_eleven_events() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "alpha");
    let batch = (0..11)
        .map(|n| event(&format!("e-{n}"), "alpha", "x"))
        .collect();
    let response = h.post_batch(batch);
    assert_error(&response, 400);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn batch_oversized_event() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "alpha");
    let batch = vec![
        event("ok", "alpha", "x"),
        event("big", "alpha", &"x".repeat(10_241)),
    ];
    let response = h.post_batch(batch);
    assert_error(&response, 413);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn batch_oversized_and_invalid() {
    let mut h = Harness::new();
    let batch = vec![
        event("big", "alpha", &"x".repeat(10_241)),
        event("", "alpha", "x"),
    ];
    let response = h.post_batch(batch);
    assert_error(&response, 400);
}

#[test]
fn batch_invalid_event_rejects_all() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "alpha");
    let response = h.post_batch(vec![
        event("ok", "alpha", "x"),
        event("bad", "bad channel", "x"),
    ]);
    assert_error(&response, 400);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn batch_event_with_channels() {
    let mut h = Harness::new();
    let response = h.post_batch(vec![json!({ "name": "e", "data": "x", "channels": ["a"] })]);
    assert_error(&response, 400);
}

#[test]
fn batch_malformed() {
    let mut h = Harness::new();
    for body in [r#"{}"#, r#"{"batch":{}}"#, r#"{"batch":[1]}"#, "[]"] {
        let response = h.post("/apps/1001/batch_events", body);
        assert_eq!(response.status, 400, "{body}: {}", response.body);
    }
}

#[test]
fn batch_info() {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    h.join_user(a, "presence-lobby", "u-1");
    h.join_user(b, "presence-lobby", "u-1");
    let mut first = event("one", "presence-lobby", "1");
    first["info"] = "user_count,subscription_count".into();
    let response = h.post_batch(vec![first, event("two", "lobby", "2")]);
    let expected = json!({ "batch": [{ "user_count": 1, "subscription_count": 2 }, {}] });
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), expected);
}

// GET /channels

/// Subscribes connections to `orders`, `private-orders`, and `presence-lobby` (2 users,
/// 3 sockets) and `presence-room-7` (1 user).
fn occupied() -> Harness {
    let mut h = Harness::new();
    let a = h.connect();
    let b = h.connect();
    let c = h.connect();
    h.subscribe(a, "orders");
    h.subscribe(a, "private-orders");
    h.join_user(a, "presence-lobby", "u-1");
    h.join_user(b, "presence-lobby", "u-1");
    h.join_user(c, "presence-lobby", "u-2");
    h.join(c, "presence-room-7", r#"{"user_id":77}"#);
    h
}

#[test]
fn channels_occupied() {
    let mut h = occupied();
    let response = h.get("/apps/1001/channels", &[]);
    let expected = json!({ "channels": {
        "orders": {},
        "private-orders": {},
        "presence-lobby": {},
        "presence-room-7": {},
    }});
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), expected);
}

#[test]
fn channels_empty() {
    let mut h = Harness::new();
    let response = h.get("/apps/1001/channels", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), json!({ "channels": {} }));
}

#[test]
fn channels_filter_by_prefix() {
    let mut h = occupied();
    let response = h.get("/apps/1001/channels", &[("filter_by_prefix", "private-")]);
    assert_eq!(response.status, 200);
    assert_eq!(
        body(&response),
        json!({ "channels": { "private-orders": {} } })
    );
}

#[test]
fn channels_user_count() {
    let mut h = occupied();
    let params = [("filter_by_prefix", "presence-"), ("info", "user_count")];
    let response = h.get("/apps/1001/channels", &params);
    let expected = json!({ "channels": {
        "presence-lobby": { "user_count": 2 },
        "presence-room-7": { "user_count": 1 },
    }});
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), expected);
}

#[test]
fn channels_user_count_needs_prefix() {
    let mut h = occupied();
    let without = h.get("/apps/1001/channels", &[("info", "user_count")]);
    let params = [("filter_by_prefix", "private-"), ("info", "user_count")];
    let other_prefix = h.get("/apps/1001/channels", &params);
    assert_error(&without, 400);
    assert_error(&other_prefix, 400);
}

#[test]
fn channels_subscription_count() {
    let mut h = occupied();
    let response = h.get("/apps/1001/channels", &[("info", "subscription_count")]);
    let expected = json!({ "channels": {
        "orders": { "subscription_count": 1 },
        "private-orders": { "subscription_count": 1 },
        "presence-lobby": { "subscription_count": 3 },
        "presence-room-7": { "subscription_count": 1 },
    }});
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), expected);
}

#[test]
fn channels_unknown_info() {
    let mut h = occupied();
    let response = h.get("/apps/1001/channels", &[("info", "occupied")]);
    assert_error(&response, 400);
}

// GET /channels/{channel_name}

#[test]
fn channel_occupied_counts() {
    let mut h = occupied();
    let params = [("info", "user_count,subscription_count")];
    let response = h.get("/apps/1001/channels/presence-lobby", &params);
    let expected = json!({ "occupied": true, "user_count": 2, "subscription_count": 3 });
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), expected);
}

#[test]
fn channel_without_info() {
    let mut h = occupied();
    let response = h.get("/apps/1001/channels/orders", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), json!({ "occupied": true }));
}

#[test]
fn channel_unoccupied() {
    let mut h = Harness::new();
    let plain = h.get("/apps/1001/channels/orders", &[]);
    let params = [("info", "user_count,subscription_count")];
    let counted = h.get("/apps/1001/channels/presence-lobby", &params);
    let expected = json!({ "occupied": false, "user_count": 0, "subscription_count": 0 });
    assert_eq!(body(&plain), json!({ "occupied": false }));
    assert_eq!(counted.status, 200);
    assert_eq!(body(&counted), expected);
}

#[test]
fn channel_vacated() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    h.node.handle_disconnect(h.now, a);
    let response = h.get(
        "/apps/1001/channels/orders",
        &[("info", "subscription_count")],
    );
    assert_eq!(
        body(&response),
        json!({ "occupied": false, "subscription_count": 0 })
    );
}

#[test]
fn channel_user_count_public() {
    let mut h = occupied();
    let response = h.get("/apps/1001/channels/orders", &[("info", "user_count")]);
    assert_error(&response, 400);
}

#[test]
fn channel_cache_info_public() {
    let mut h = occupied();
    let response = h.get("/apps/1001/channels/orders", &[("info", "cache")]);
    assert_error(&response, 400);
}

#[test]
fn channel_percent_encoded_name() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "private-a@b;c");
    let path = "/apps/1001/channels/private-a%40b%3bc";
    let response = h.get(path, &[("info", "subscription_count")]);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        body(&response),
        json!({ "occupied": true, "subscription_count": 1 })
    );
}

#[test]
fn channel_invalid_name() {
    let mut h = Harness::new();
    for path in [
        "/apps/1001/channels/bad%20name",
        "/apps/1001/channels/a%3Ab",
    ] {
        let response = h.get(path, &[]);
        assert_error(&response, 400);
    }
}

// GET /channels/{channel_name}/users

#[test]
fn users_distinct_ids() {
    let mut h = occupied();
    let lobby = h.get("/apps/1001/channels/presence-lobby/users", &[]);
    let room = h.get("/apps/1001/channels/presence-room-7/users", &[]);
    assert_eq!(lobby.status, 200);
    assert_eq!(
        body(&lobby),
        json!({ "users": [{ "id": "u-1" }, { "id": "u-2" }] })
    );
    assert_eq!(body(&room), json!({ "users": [{ "id": "77" }] }));
}

#[test]
fn users_unoccupied() {
    let mut h = Harness::new();
    let response = h.get("/apps/1001/channels/presence-empty/users", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(body(&response), json!({ "users": [] }));
}

#[test]
fn users_not_presence() {
    let mut h = occupied();
    for path in [
        "/apps/1001/channels/orders/users",
        "/apps/1001/channels/private-orders/users",
    ] {
        assert_error(&h.get(path, &[]), 400);
    }
}

// Routing and request verification

#[test]
fn unknown_paths() {
    let mut h = Harness::new();
    for path in [
        "/apps/1001/unknown",
        "/apps/1001",
        "/apps/",
        "/app/1001/events",
        "/apps/1001/channels/a/users/b",
    ] {
        let response = h.get(path, &[]);
        assert_eq!(response.status, 404, "{path}: {}", response.body);
    }
}

#[test]
fn wrong_app_id() {
    let mut h = Harness::new();
    let response = h.get("/apps/1002/channels", &[]);
    assert_error(&response, 404);
}

#[test]
fn any_app_id_when_unset() {
    let mut config = config();
    config.app.id = None;
    let mut h = Harness::with_config(config);
    let response = h.get("/apps/anything/channels", &[]);
    assert_eq!(response.status, 200, "{}", response.body);
}

#[test]
fn method_not_allowed() {
    let mut h = Harness::new();
    let cases = [
        ("GET", "/apps/1001/events"),
        ("GET", "/apps/1001/batch_events"),
        ("POST", "/apps/1001/channels"),
        ("DELETE", "/apps/1001/channels/orders"),
        ("PUT", "/apps/1001/channels/presence-a/users"),
    ];
    for (method, path) in cases {
        let query = signed_query(method, path, &[], "");
        let response = h.request(method, path, &query, "");
        assert_eq!(response.status, 405, "{method} {path}: {}", response.body);
    }
}

#[test]
fn trailing_slash() {
    let mut h = Harness::new();
    let response = h.get("/apps/1001/channels/", &[]);
    assert_eq!(response.status, 200, "{}", response.body);
}

/// Sends a GET /channels whose query is `pairs`, signed unless `signed` is false.
fn get_channels_with(h: &mut Harness, pairs: &[(&str, &str)], signed: bool) -> ApiResponse {
    let path = "/apps/1001/channels";
    let query = if signed {
        raw_signed_query("GET", path, pairs)
    } else {
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        encoded.join("&")
    };
    h.request("GET", path, &query, "")
}

#[test]
fn auth_missing_parameters() {
    let mut h = Harness::new();
    let timestamp = UNIX_NOW.to_string();
    let timestamp = timestamp.as_str();
    let cases: [(&str, &[(&str, &str)]); 3] = [
        (
            "auth_key",
            &[("auth_timestamp", timestamp), ("auth_version", "1.0")],
        ),
        (
            "auth_timestamp",
            &[("auth_key", KEY), ("auth_version", "1.0")],
        ),
        (
            "auth_version",
            &[("auth_key", KEY), ("auth_timestamp", timestamp)],
        ),
    ];
    for (missing, pairs) in cases {
        let response = get_channels_with(&mut h, pairs, true);
        assert_eq!(response.status, 401, "without {missing}: {}", response.body);
    }
    let unsigned = [
        ("auth_key", KEY),
        ("auth_timestamp", timestamp),
        ("auth_version", "1.0"),
    ];
    assert_error(&get_channels_with(&mut h, &unsigned, false), 401);
}

#[test]
fn auth_wrong_key() {
    let mut h = Harness::new();
    let timestamp = UNIX_NOW.to_string();
    let pairs = [
        ("auth_key", "other-key"),
        ("auth_timestamp", &timestamp),
        ("auth_version", "1.0"),
    ];
    assert_error(&get_channels_with(&mut h, &pairs, true), 401);
}

#[test]
fn auth_version_2() {
    let mut h = Harness::new();
    let timestamp = UNIX_NOW.to_string();
    let pairs = [
        ("auth_key", KEY),
        ("auth_timestamp", &timestamp),
        ("auth_version", "2.0"),
    ];
    assert_error(&get_channels_with(&mut h, &pairs, true), 401);
}

#[test]
fn auth_bad_signature() {
    let mut h = Harness::new();
    let path = "/apps/1001/channels";
    let query = signed_query("GET", path, &[], "");
    let (unsigned, signature) = query.rsplit_once("auth_signature=").expect("signed query");
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    let tampered = format!("{unsigned}auth_signature={flipped}{}", &signature[1..]);
    let upper = format!(
        "{unsigned}auth_signature={}",
        signature.to_ascii_uppercase()
    );
    assert_error(&h.request("GET", path, &tampered, ""), 401);
    assert_error(&h.request("GET", path, &upper, ""), 401);
}

#[test]
fn auth_signed_other_path() {
    let mut h = Harness::new();
    let query = signed_query("GET", "/apps/1001/channels/orders", &[], "");
    let response = h.request("GET", "/apps/1001/channels", &query, "");
    assert_error(&response, 401);
}

#[test]
fn auth_extra_parameter_unsigned() {
    let mut h = Harness::new();
    let path = "/apps/1001/channels";
    let query = signed_query("GET", path, &[], "");
    let response = h.request(
        "GET",
        path,
        &format!("{query}&filter_by_prefix=presence-"),
        "",
    );
    assert_error(&response, 401);
}

/// Sends GET /channels/lobby with `auth_timestamp` set to `timestamp`.
fn get_at_timestamp(h: &mut Harness, timestamp: &str) -> ApiResponse {
    let path = "/apps/1001/channels/lobby";
    let pairs = [
        ("auth_key", KEY),
        ("auth_timestamp", timestamp),
        ("auth_version", "1.0"),
    ];
    let query = raw_signed_query("GET", path, &pairs);
    h.request("GET", path, &query, "")
}

#[test]
fn timestamp_window() {
    let mut h = Harness::new();
    let behind_599 = get_at_timestamp(&mut h, &(UNIX_NOW - 599).to_string());
    let ahead_599 = get_at_timestamp(&mut h, &(UNIX_NOW + 599).to_string());
    let behind_600 = get_at_timestamp(&mut h, &(UNIX_NOW - 600).to_string());
    let ahead_600 = get_at_timestamp(&mut h, &(UNIX_NOW + 600).to_string());
    assert_eq!(behind_599.status, 200, "{}", behind_599.body);
    assert_eq!(ahead_599.status, 200, "{}", ahead_599.body);
    assert_error(&behind_600, 401);
    assert_error(&ahead_600, 401);
}

#[test]
fn timestamp_not_integer() {
    let mut h = Harness::new();
    for timestamp in ["", "abc", "-1", "1700000000.5", "99999999999999999999"] {
        let response = get_at_timestamp(&mut h, timestamp);
        assert_eq!(response.status, 401, "{timestamp:?}: {}", response.body);
    }
}

#[test]
fn body_without_md5() {
    let mut h = Harness::new();
    let path = "/apps/1001/events";
    let timestamp = UNIX_NOW.to_string();
    let pairs = [
        ("auth_key", KEY),
        ("auth_timestamp", &timestamp),
        ("auth_version", "1.0"),
    ];
    let query = raw_signed_query("POST", path, &pairs);
    let response = h.request("POST", path, &query, &event("e", "a", "x").to_string());
    assert_error(&response, 401);
}

#[test]
fn body_md5_mismatch() {
    let mut h = Harness::new();
    let a = h.connect();
    h.subscribe(a, "orders");
    let path = "/apps/1001/events";
    let signed_body = event("e", "orders", "x").to_string();
    let query = signed_query("POST", path, &[], &signed_body);
    let response = h.request("POST", path, &query, &event("e", "orders", "y").to_string());
    assert_error(&response, 401);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn get_with_empty_body_md5() {
    let mut h = Harness::new();
    let path = "/apps/1001/channels/presence-lobby/users";
    let timestamp = UNIX_NOW.to_string();
    let pairs = [
        ("auth_key", KEY),
        ("auth_timestamp", timestamp.as_str()),
        ("auth_version", "1.0"),
        ("body_md5", EMPTY_MD5),
    ];
    let query = raw_signed_query("GET", path, &pairs);
    let response = h.request("GET", path, &query, "");
    assert_eq!(response.status, 200, "{}", response.body);
}

#[test]
fn get_with_wrong_body_md5() {
    let mut h = Harness::new();
    let timestamp = UNIX_NOW.to_string();
    let pairs = [
        ("auth_key", KEY),
        ("auth_timestamp", timestamp.as_str()),
        ("auth_version", "1.0"),
        ("body_md5", "99914b932bd37a50b983c5e7c90ae93b"),
    ];
    assert_error(&get_channels_with(&mut h, &pairs, true), 401);
}

#[test]
fn query_upper_case_keys() {
    let mut h = Harness::new();
    let timestamp = UNIX_NOW.to_string();
    let pairs = [
        ("AUTH_KEY", KEY),
        ("Auth_Timestamp", timestamp.as_str()),
        ("auth_version", "1.0"),
        ("Filter_By_Prefix", "presence-"),
    ];
    let response = get_channels_with(&mut h, &pairs, true);
    assert_eq!(response.status, 200, "{}", response.body);
}

#[test]
fn query_repeated_parameter() {
    let mut h = Harness::new();
    let timestamp = UNIX_NOW.to_string();
    let pairs = [
        ("auth_key", KEY),
        ("auth_timestamp", timestamp.as_str()),
        ("auth_version", "1.0"),
        ("info", "user_count"),
        ("info", "subscription_count"),
    ];
    let path = "/apps/1001/channels";
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let response = h.request("GET", path, &query.join("&"), "");
    assert_error(&response, 400);
}

#[test]
fn error_body_names_problem() {
    let mut h = Harness::new();
    let response = h.get("/apps/1001/channels/orders/users", &[]);
    let expected = json!({ "error": "Users are only listed for presence channels" });
    assert_eq!(body(&response), expected);
}

#[test]
fn api_leaves_no_state() {
    let mut h = Harness::new();
    h.post_event(event("e", "orders", "x"));
    h.get("/apps/1001/channels/orders", &[]);
    h.get("/apps/1001/channels/presence-a/users", &[]);
    h.drain();
    assert_eq!(h.node.stats(), NodeStats::default());
}

#[test]
fn path_segment_decoding_rules() {
    assert_eq!(decode_path_segment("private-a%40b").unwrap(), "private-a@b");
    assert_eq!(decode_path_segment("a+b").unwrap(), "a+b");
    // `from_str_radix` would accept "+f"; an escape needs two hex digits.
    assert_eq!(decode_path_segment("a%+fb").unwrap(), "a%+fb");
    assert_eq!(decode_path_segment("a%4").unwrap(), "a%4");
    assert!(decode_path_segment("a%ff").is_err());
}
