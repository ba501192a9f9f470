//! Replays operations against a `Node` and the reference model, and compares the outputs,
//! API responses and node state after every step.
//!
//! The harness plays the host: it drains `poll_output` after every input and, when time
//! passes, calls `handle_timeout` at each instant `poll_timeout` names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crier_core::{
    ApiRequest, ApiResponse, AppConfig, Config, ConnectRequest, ConnectionId, Limits, Node, Output,
    sign_api_request, sign_channel,
};
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

use crate::model::{
    self, Expected, Kind, Member, Model, Out, RateOutcome, Slot, Verdict, error_frame, kind,
    pong_frame,
};
use crate::ops::{
    AuthKind, CHANNELS, ChannelDataKind, ClientData, ConnectKind, Exclude, Garbage, INFOS, Op,
    PREFIXES, SLOTS, Tamper, Target,
};

/// App credentials, the same as in the protocol test vectors.
pub const KEY: &str = "9f3c2a7b8d1e4f605a11";
pub const SECRET: &str = "5b7e0c9d2f4a6b8c1d3e";
pub const APP_ID: &str = "1001";

/// Wall-clock Unix seconds at the start of a case, passed to `handle_api`.
const UNIX_START: u64 = 1_700_000_000;

/// Maximum `handle_timeout` calls in one `Advance`. Each connection needs a few at most.
const MAX_TIMEOUT_CALLS: usize = 200;

/// Presence user ids. The last one is sent as a JSON number.
const USER_IDS: [&str; 3] = ["u-0", "u-1", "77"];

/// Returns the configuration every case runs with: default timeouts, lowered limits.
pub fn config() -> Config {
    let mut app = AppConfig::new(KEY, SECRET);
    app.id = Some(APP_ID.to_owned());
    let mut config = Config::new(app);
    config.activity_timeout = model::ACTIVITY_TIMEOUT;
    config.pong_timeout = model::PONG_TIMEOUT;
    config.limits = Limits {
        max_connections: model::MAX_CONNECTIONS,
        max_channels_per_connection: model::MAX_CHANNELS_PER_CONNECTION,
        max_presence_members: model::MAX_PRESENCE_MEMBERS,
        max_client_events_per_second: model::MAX_CLIENT_EVENTS_PER_SECOND,
        ..Limits::default()
    };
    config
}

/// Replays `ops`, then disconnects every connection and checks that nothing is left.
pub fn run(ops: &[Op]) {
    let mut harness = Harness::new();
    for (step, op) in ops.iter().enumerate() {
        harness.step = step;
        harness.apply(op);
    }
    harness.teardown();
}

/// Decodes a server frame for comparison with the model, checking its shape on the way:
/// double-encoded `data` is decoded, presence `ids` are sorted, and free-text messages are
/// dropped after checking that they are strings.
pub fn normalize(text: &str) -> Result<Value, String> {
    let mut frame: Value =
        serde_json::from_str(text).map_err(|e| format!("frame is not JSON ({e}): {text}"))?;
    let object = frame
        .as_object_mut()
        .ok_or(format!("frame is not an object: {text}"))?;
    let event = match object.get("event") {
        Some(Value::String(event)) => event.clone(),
        _ => return Err(format!("frame has no string event: {text}")),
    };
    match event.as_str() {
        "pusher:connection_established"
        | "pusher_internal:subscription_succeeded"
        | "pusher_internal:member_added"
        | "pusher_internal:member_removed" => {
            let Some(Value::String(data)) = object.get("data") else {
                return Err(format!("data must be a string holding JSON: {text}"));
            };
            let mut decoded: Value = serde_json::from_str(data)
                .map_err(|e| format!("data string is not JSON ({e}): {text}"))?;
            if let Some(ids) = decoded
                .pointer_mut("/presence/ids")
                .and_then(Value::as_array_mut)
            {
                ids.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
            object.insert("data".into(), decoded);
        }
        "pusher:error" => {
            let data = object.get("data").and_then(Value::as_object);
            let code = data.and_then(|data| data.get("code")).cloned();
            let message = data.and_then(|data| data.get("message"));
            let code_ok = matches!(code, Some(Value::Null | Value::Number(_)));
            if !code_ok || !message.is_some_and(Value::is_string) {
                return Err(format!(
                    "pusher:error data needs a code and a message: {text}"
                ));
            }
            object.insert("data".into(), json!({ "code": code }));
        }
        "pusher:subscription_error" => {
            let data = object.get("data").and_then(Value::as_object);
            let field = |name| data.and_then(|data| data.get(name)).cloned();
            let (error_type, status) = (field("type"), field("status"));
            if !field("error").is_some_and(|error| error.is_string()) {
                return Err(format!(
                    "subscription_error data needs an error text: {text}"
                ));
            }
            object.insert(
                "data".into(),
                json!({ "type": error_type, "status": status }),
            );
        }
        _ => {}
    }
    Ok(frame)
}

/// Returns whether `socket_id` matches `^\d+\.\d+$` with both parts below 2^53.
fn is_valid_socket_id(socket_id: &str) -> bool {
    let Some((high, low)) = socket_id.split_once('.') else {
        return false;
    };
    let part_ok = |part: &str| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && part.parse::<u64>().is_ok_and(|n| n < 1 << 53)
    };
    part_ok(high) && part_ok(low)
}

pub fn md5_hex(body: &[u8]) -> String {
    Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replaces the last hex digit of `signature` with a different one.
pub fn flip_last_hex_digit(signature: &str) -> String {
    let mut flipped = signature.to_owned();
    let last = flipped.pop().unwrap_or('0');
    flipped.push(if last == '0' { '1' } else { '0' });
    flipped
}

/// Outputs grouped by connection and channel, in queue order within each group. Frames
/// without a channel, pings and closes form the group with channel `None`.
type Grouped = BTreeMap<(ConnectionId, Option<String>), Vec<Out>>;

/// Groups outputs for comparison. The protocol orders events per channel, so the order of
/// two frames for different channels of one connection (say the `member_removed` frames of
/// a disconnect) is left to the node.
fn group(outputs: &[(ConnectionId, Out)]) -> Grouped {
    let mut grouped = Grouped::new();
    for (id, out) in outputs {
        let channel = match out {
            Out::Frame(frame) => frame["channel"].as_str().map(str::to_owned),
            Out::Ping | Out::Close(_) => None,
        };
        grouped.entry((*id, channel)).or_default().push(out.clone());
    }
    grouped
}

/// The connection an operation on a slot goes to.
enum Recipient {
    /// The slot was never used, so the operation is skipped.
    None,
    /// The slot's connection is closed, so the node must ignore the input.
    Closed(ConnectionId),
    Open(ConnectionId),
}

/// Outputs drained after one input.
struct Drained {
    outputs: Vec<(ConnectionId, Out)>,
    /// The text of every `Send`, for byte-level checks.
    sent: Vec<(ConnectionId, Arc<str>)>,
}

struct Harness {
    node: Node,
    model: Model,
    start: Instant,
    step: usize,
    /// Every `ConnectionId` the node has handed out in this case.
    issued: BTreeSet<ConnectionId>,
    events_published: u64,
}

impl Harness {
    fn new() -> Self {
        Self {
            node: Node::new(config(), 7).expect("valid config"),
            model: Model::new(),
            start: Instant::now(),
            step: 0,
            issued: BTreeSet::new(),
            events_published: 0,
        }
    }

    fn now(&self) -> Instant {
        self.start + self.model.now
    }

    fn recipient(&self, slot: usize) -> Recipient {
        match &self.model.slots[slot] {
            Slot::Empty => Recipient::None,
            Slot::Open(conn) => Recipient::Open(conn.id),
            Slot::Closed { id, .. } => Recipient::Closed(*id),
        }
    }

    fn apply(&mut self, op: &Op) {
        let open_before: BTreeSet<ConnectionId> =
            self.model.open_conns().iter().map(|conn| conn.id).collect();
        let (drained, expected) = match op {
            Op::Advance { secs } => {
                self.advance(Duration::from_secs(*secs));
                self.check_invariants(op);
                return;
            }
            Op::Connect { slot, kind } => self.connect(*slot, *kind),
            Op::ClientEvent { repeat, .. } => {
                for _ in 1..*repeat {
                    let (drained, expected) = self.client_event(op);
                    self.compare(&drained.outputs, &expected, op);
                }
                self.client_event(op)
            }
            _ => {
                let expected = self.apply_simple(op);
                (self.drain(&open_before), expected)
            }
        };
        self.compare(&drained.outputs, &expected, op);
        self.check_invariants(op);
    }

    /// Applies an operation whose expected outputs do not depend on what the node did.
    fn apply_simple(&mut self, op: &Op) -> Expected {
        match op {
            Op::Subscribe { slot, .. } => self.with_slot(*slot, op, Self::subscribe),
            Op::Unsubscribe { slot, channel } => {
                let text =
                    json!({"event": "pusher:unsubscribe", "data": {"channel": CHANNELS[*channel]}});
                let on_open = |model: &mut Model| model.unsubscribe(*slot, CHANNELS[*channel]);
                self.send_text(*slot, &text.to_string(), on_open)
            }
            Op::Ping { slot } => {
                let text = r#"{"event":"pusher:ping","data":{}}"#;
                self.send_text(*slot, text, |model| {
                    let id = model.conn(*slot).map(|conn| conn.id);
                    id.map(|id| vec![(id, pong_frame())]).unwrap_or_default()
                })
            }
            Op::Activity { slot } => {
                let (Recipient::Open(id) | Recipient::Closed(id)) = self.recipient(*slot) else {
                    return Vec::new();
                };
                self.node.handle_activity(self.now(), id);
                self.model.touch(*slot);
                Vec::new()
            }
            Op::Garbage { slot, kind } => self.garbage(*slot, *kind),
            Op::Trigger { .. } => self.trigger(op),
            Op::QueryChannels { prefix, info } => self.query_channels(*prefix, *info),
            Op::QueryChannel {
                channel,
                info,
                encode,
            } => self.query_channel(*channel, *info, *encode),
            Op::QueryUsers { channel } => self.query_users(*channel),
            Op::Disconnect { slot } => match self.recipient(*slot) {
                Recipient::None => Vec::new(),
                Recipient::Closed(id) => {
                    self.node.handle_disconnect(self.now(), id);
                    Vec::new()
                }
                Recipient::Open(id) => {
                    self.node.handle_disconnect(self.now(), id);
                    self.model.close(*slot, Vec::new())
                }
            },
            Op::Shutdown => {
                self.node.shutdown(self.now());
                self.model.shutdown()
            }
            Op::Advance { .. } | Op::Connect { .. } | Op::ClientEvent { .. } => {
                unreachable!("handled in apply")
            }
        }
    }

    /// Runs `on_open` for an open slot. A closed slot gets a subscribe frame, which the node
    /// must ignore.
    fn with_slot(
        &mut self,
        slot: usize,
        op: &Op,
        on_open: fn(&mut Self, &Op) -> Expected,
    ) -> Expected {
        match self.recipient(slot) {
            Recipient::None => Vec::new(),
            Recipient::Closed(id) => {
                let text = r#"{"event":"pusher:subscribe","data":{"channel":"orders"}}"#;
                self.node.handle_text(self.now(), id, text);
                Vec::new()
            }
            Recipient::Open(_) => on_open(self, op),
        }
    }

    /// Sends `text` to the slot's connection. When the connection is open, `on_open` returns
    /// the outputs the model expects.
    fn send_text(
        &mut self,
        slot: usize,
        text: &str,
        on_open: impl FnOnce(&mut Model) -> Expected,
    ) -> Expected {
        match self.recipient(slot) {
            Recipient::None => Vec::new(),
            Recipient::Closed(id) => {
                self.node.handle_text(self.now(), id, text);
                Vec::new()
            }
            Recipient::Open(id) => {
                self.node.handle_text(self.now(), id, text);
                self.model.touch(slot);
                on_open(&mut self.model)
            }
        }
    }

    fn connect(&mut self, slot: usize, kind: ConnectKind) -> (Drained, Expected) {
        let open_before: BTreeSet<ConnectionId> =
            self.model.open_conns().iter().map(|conn| conn.id).collect();
        if self.model.conn(slot).is_some() {
            return (self.drain(&open_before), Vec::new());
        }
        let (target, request_error) = match kind {
            ConnectKind::Valid(None) => (format!("/app/{KEY}?client=java-client"), None),
            ConnectKind::Valid(Some(version)) => (
                format!("/app/{KEY}?protocol={version}&client=js&version=8.4.0&flash=false"),
                None,
            ),
            ConnectKind::UnknownKey => ("/app/unknown-key?protocol=7".to_owned(), Some(4001)),
            ConnectKind::ProtocolNotInteger => (format!("/app/{KEY}?protocol=abc"), Some(4006)),
            ConnectKind::ProtocolUnsupported => (format!("/app/{KEY}?protocol=3"), Some(4007)),
        };
        let request = ConnectRequest::parse(&target).expect("a /app/{key} target");
        let expected_error = self.model.connect_error(request_error);
        let expected = match self.node.open(self.now(), &request) {
            Ok(id) => {
                assert_eq!(expected_error, None, "step {}: open succeeded", self.step);
                assert!(
                    self.issued.insert(id),
                    "connection id {id:?} handed out twice"
                );
                let socket_id = self
                    .node
                    .socket_id(id)
                    .expect("socket id of an open connection");
                let socket_id = socket_id.to_string();
                assert!(is_valid_socket_id(&socket_id), "socket id {socket_id:?}");
                let duplicate = self
                    .model
                    .open_conns()
                    .iter()
                    .any(|c| c.socket_id == socket_id);
                assert!(!duplicate, "socket id {socket_id} held by two connections");
                self.model.opened(slot, id, socket_id)
            }
            Err(error) => {
                let code = error.close_code();
                assert_eq!(
                    Some(code),
                    expected_error,
                    "step {}: open failed",
                    self.step
                );
                let frame = normalize(&error.frame()).expect("error frame");
                assert_eq!(Out::Frame(frame), error_frame(Some(code)));
                Vec::new()
            }
        };
        let mut allowed = open_before;
        allowed.extend(expected.iter().map(|(id, _)| *id));
        (self.drain(&allowed), expected)
    }

    fn subscribe(&mut self, op: &Op) -> Expected {
        let Op::Subscribe {
            slot,
            target,
            user,
            auth,
            channel_data,
            data_as_string,
            spaced,
        } = *op
        else {
            unreachable!("subscribe takes a Subscribe operation")
        };
        let conn = self.model.conn(slot).expect("open slot");
        let (id, socket_id) = (conn.id, conn.socket_id.clone());
        let channel = match target {
            Target::Channel(index) => CHANNELS[index],
            Target::InvalidName => "bad channel",
        };

        let (member_text, member) = member_json(user, slot, spaced);
        let channel_data = match (channel_data, kind(channel)) {
            (ChannelDataKind::Default, Kind::Presence) | (ChannelDataKind::Member, _) => {
                Some(member_text)
            }
            (ChannelDataKind::Default | ChannelDataKind::Absent, _) => None,
            (ChannelDataKind::NotMember, _) => Some(r#"{"id":"u-0"}"#.to_owned()),
        };
        let signed_data = match auth {
            AuthKind::SignatureWithoutChannelData => None,
            _ => channel_data.as_deref(),
        };
        let signed_socket = if auth == AuthKind::OtherSocket {
            "1.2"
        } else {
            &socket_id
        };
        let valid = sign_channel(KEY, SECRET, signed_socket, channel, signed_data);
        let auth_value = match auth {
            AuthKind::BadSignature => Some(flip_last_hex_digit(&valid)),
            AuthKind::WrongKey => Some(valid.replacen(KEY, "wrong-key", 1)),
            AuthKind::Missing if spaced => None,
            AuthKind::Missing => Some(String::new()),
            AuthKind::Valid | AuthKind::OtherSocket | AuthKind::SignatureWithoutChannelData => {
                Some(valid)
            }
        };

        let mut data = Map::new();
        data.insert("channel".into(), channel.into());
        if let Some(auth) = &auth_value {
            data.insert("auth".into(), auth.as_str().into());
        }
        if let Some(channel_data) = &channel_data {
            data.insert("channel_data".into(), channel_data.as_str().into());
        }
        let data = Value::Object(data);
        let data = if data_as_string {
            Value::String(data.to_string())
        } else {
            data
        };
        let text = json!({"event": "pusher:subscribe", "data": data}).to_string();
        self.node.handle_text(self.now(), id, &text);
        self.model.touch(slot);

        let signature_ok = matches!(auth, AuthKind::Valid)
            || (auth == AuthKind::SignatureWithoutChannelData && channel_data.is_none());
        let auth_error = Verdict::Reject {
            error_type: "AuthError",
            status: 401,
        };
        let verdict = match (target, kind(channel)) {
            (Target::InvalidName, _) => Verdict::Reject {
                error_type: "InvalidChannel",
                status: 400,
            },
            (_, Kind::Public) => Verdict::Accept(None),
            (_, Kind::Private | Kind::Encrypted) if signature_ok => Verdict::Accept(None),
            (_, Kind::Private | Kind::Encrypted) => auth_error,
            (_, Kind::Presence) => match channel_data {
                Some(_) if signature_ok && channel_data_kind_is_member(op) => {
                    Verdict::Accept(Some(member))
                }
                _ => auth_error,
            },
        };
        self.model.subscribe(slot, channel, verdict)
    }

    fn client_event(&mut self, op: &Op) -> (Drained, Expected) {
        let Op::ClientEvent {
            slot,
            channel,
            data,
            long_name,
            spoofed_user_id,
            ..
        } = *op
        else {
            unreachable!("client_event takes a ClientEvent operation")
        };
        let open_before: BTreeSet<ConnectionId> =
            self.model.open_conns().iter().map(|conn| conn.id).collect();
        let name = if long_name {
            format!("client-{}", "x".repeat(200))
        } else {
            "client-typing".to_owned()
        };
        let raw_data = match data {
            ClientData::Object => Some(r#"{"typing":true}"#.to_owned()),
            ClientData::SpacedObject => Some(r#"{ "typing" : true , "keys" : [1, 2] }"#.to_owned()),
            ClientData::Text => Some(r#""hello""#.to_owned()),
            ClientData::Absent => None,
            ClientData::TooLarge => Some(format!("\"{}\"", "x".repeat(10_300))),
        };
        let channel = channel.map(|index| CHANNELS[index]);
        let mut text = format!(r#"{{"event":"{name}""#);
        if let Some(channel) = channel {
            text.push_str(&format!(r#","channel":"{channel}""#));
        }
        if let Some(raw_data) = &raw_data {
            text.push_str(&format!(r#","data":{raw_data}"#));
        }
        if spoofed_user_id {
            text.push_str(r#","user_id":"spoofed""#);
        }
        text.push('}');

        let id = match self.recipient(slot) {
            Recipient::None => return (self.drain(&open_before), Vec::new()),
            Recipient::Closed(id) => {
                self.node.handle_text(self.now(), id, &text);
                return (self.drain(&open_before), Vec::new());
            }
            Recipient::Open(id) => id,
        };
        self.node.handle_text(self.now(), id, &text);
        self.model.touch(slot);
        let drained = self.drain(&open_before);

        let conn = self.model.conn(slot).expect("open slot");
        let subscription = channel.and_then(|channel| conn.subscriptions.get(channel));
        let relayable = channel.is_some_and(|c| matches!(kind(c), Kind::Private | Kind::Presence));
        let rejected =
            long_name || !relayable || subscription.is_none() || data == ClientData::TooLarge;
        let (Some(channel), Some(user_id), false) = (channel, subscription, rejected) else {
            return (drained, vec![(id, error_frame(None))]);
        };

        let mut frame = json!({"event": name, "channel": channel});
        if let Some(raw_data) = &raw_data {
            frame["data"] = serde_json::from_str(raw_data).expect("client data is JSON");
        }
        if let Some(user_id) = user_id {
            frame["user_id"] = user_id.as_str().into();
        }
        let limit_error = (id, error_frame(Some(4301)));
        let outcome = if drained.outputs.contains(&limit_error) {
            RateOutcome::Limited
        } else {
            RateOutcome::Accepted
        };
        let expected = self.model.client_event(slot, channel, frame, outcome);
        let expected = expected.unwrap_or_else(|e| panic!("step {}: {e}", self.step));

        // The data must be relayed byte for byte, not re-serialized.
        if let Some(raw_data) = &raw_data {
            for (recipient, text) in &drained.sent {
                if *recipient != id {
                    assert!(
                        text.contains(raw_data.as_str()),
                        "data re-serialized: {text}"
                    );
                }
            }
        }
        (drained, expected)
    }

    fn garbage(&mut self, slot: usize, kind: Garbage) -> Expected {
        let id = match self.recipient(slot) {
            Recipient::None => return Vec::new(),
            Recipient::Closed(id) | Recipient::Open(id) => id,
        };
        let open = self.model.conn(slot).is_some();
        let now = self.now();
        let text = match kind {
            Garbage::NotJson => Some("not json".to_owned()),
            Garbage::EventNotString => Some(r#"{"event":1}"#.to_owned()),
            Garbage::UnsupportedEvent => Some(r#"{"event":"order-shipped","data":{}}"#.to_owned()),
            Garbage::UnknownPusherEvent => Some(r#"{"event":"pusher:future_event"}"#.to_owned()),
            Garbage::SubscribeWithoutData => Some(r#"{"event":"pusher:subscribe"}"#.to_owned()),
            Garbage::Signin => Some(r#"{"event":"pusher:signin","data":{"auth":"a"}}"#.to_owned()),
            Garbage::OversizedText => Some(" ".repeat(Limits::default().max_frame_bytes + 1)),
            Garbage::Binary | Garbage::OversizedReported | Garbage::Backpressure => None,
        };
        match (kind, text) {
            (_, Some(text)) => self.node.handle_text(now, id, &text),
            (Garbage::Binary, None) => self.node.handle_binary(now, id, 10),
            (Garbage::OversizedReported, None) => self.node.handle_oversized_frame(now, id),
            (_, None) => self.node.handle_backpressure(now, id),
        }
        if !open {
            return Vec::new();
        }
        if !matches!(kind, Garbage::OversizedReported | Garbage::Backpressure) {
            self.model.touch(slot);
        }
        match kind {
            Garbage::UnknownPusherEvent => Vec::new(),
            Garbage::Signin => vec![(id, error_frame(Some(4009)))],
            Garbage::OversizedText | Garbage::OversizedReported => {
                self.model.close(slot, vec![Out::Close(1009)])
            }
            Garbage::Backpressure => self
                .model
                .close(slot, vec![error_frame(Some(4100)), Out::Close(4100)]),
            Garbage::NotJson
            | Garbage::EventNotString
            | Garbage::UnsupportedEvent
            | Garbage::SubscribeWithoutData
            | Garbage::Binary => vec![(id, error_frame(None))],
        }
    }

    /// Sends a signed API request, damaged after signing as `tamper` selects.
    fn api(
        &mut self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &str,
        tamper: Tamper,
    ) -> ApiResponse {
        let unix_secs = UNIX_START + self.model.now.as_secs();
        let timestamp = match tamper {
            Tamper::Timestamp => unix_secs - 600,
            _ => unix_secs,
        };
        let mut query = format!("auth_key={KEY}&auth_timestamp={timestamp}&auth_version=1.0");
        if !body.is_empty() {
            query.push_str(&format!("&body_md5={}", md5_hex(body.as_bytes())));
        }
        for (key, value) in params {
            query.push_str(&format!("&{key}={value}"));
        }
        let signature = sign_api_request(SECRET, method, path, &query).expect("valid query");
        let signature = match tamper {
            Tamper::Signature => flip_last_hex_digit(&signature),
            _ => signature,
        };
        let query = format!("{query}&auth_signature={signature}");
        let mut body = body.as_bytes().to_vec();
        if tamper == Tamper::Body {
            let middle = body.len() / 2;
            body[middle] = if body[middle] == b'x' { b'y' } else { b'x' };
        }
        let request = ApiRequest {
            method,
            path,
            query: &query,
            body: &body,
        };
        self.node.handle_api(self.now(), unix_secs, &request)
    }

    /// Checks an API response: `expected` is the body of a 200, `None` means a 400.
    fn check_response(&self, response: &ApiResponse, expected: Option<Value>, endpoint: &str) {
        let body: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("{endpoint}: body is not JSON ({e}): {}", response.body));
        match expected {
            Some(expected) => {
                assert_eq!(
                    response.status, 200,
                    "step {}: {endpoint}: {}",
                    self.step, response.body
                );
                assert_eq!(body, expected, "step {}: {endpoint}", self.step);
            }
            None => {
                assert_eq!(
                    response.status, 400,
                    "step {}: {endpoint}: {}",
                    self.step, response.body
                );
                assert!(body["error"].is_string(), "{endpoint}: error body {body}");
            }
        }
    }

    fn trigger(&mut self, op: &Op) -> Expected {
        let Op::Trigger {
            channels,
            exclude,
            batch,
            info,
            tamper,
        } = op
        else {
            unreachable!("trigger takes a Trigger operation")
        };
        self.events_published += 1;
        let name = format!("evt-{}", self.events_published);
        let data = format!(r#"{{"n":{}}}"#, self.events_published);
        let socket_id = match exclude {
            Exclude::Nobody => None,
            Exclude::Slot(slot) => self.model.any_socket_id(*slot).map(str::to_owned),
            Exclude::Unknown => Some("1.1".to_owned()),
            Exclude::Malformed => Some("abc".to_owned()),
        };
        let names: Vec<&str> = channels.iter().map(|&index| CHANNELS[index]).collect();
        let event = |field: &str, channel: Value| {
            let mut event = json!({"name": name, "data": data});
            event[field] = channel;
            if let Some(socket_id) = &socket_id {
                event["socket_id"] = socket_id.as_str().into();
            }
            if *info {
                event["info"] = "user_count,subscription_count".into();
            }
            event
        };
        let (path, body) = if *batch {
            let events: Vec<Value> = names.iter().map(|c| event("channel", json!(c))).collect();
            (
                format!("/apps/{APP_ID}/batch_events"),
                json!({ "batch": events }),
            )
        } else if names.len() == 1 {
            (
                format!("/apps/{APP_ID}/events"),
                event("channel", json!(names[0])),
            )
        } else {
            (
                format!("/apps/{APP_ID}/events"),
                event("channels", json!(names)),
            )
        };
        let response = self.api("POST", &path, &[], &body.to_string(), *tamper);

        let mut distinct: Vec<&str> = Vec::new();
        for name in &names {
            if !distinct.contains(name) {
                distinct.push(name);
            }
        }
        let encrypted = distinct.iter().any(|c| kind(c) == Kind::Encrypted);
        if *tamper != Tamper::None {
            assert_eq!(
                response.status, 401,
                "step {}: {}",
                self.step, response.body
            );
            return Vec::new();
        }
        if socket_id.as_deref() == Some("abc") || (!*batch && encrypted && distinct.len() > 1) {
            self.check_response(&response, None, "trigger");
            return Vec::new();
        }

        let targets = if *batch { names } else { distinct };
        let mut expected = Vec::new();
        for channel in &targets {
            let frame = json!({"event": name, "channel": channel, "data": data});
            expected.extend(self.model.publish(channel, &frame, socket_id.as_deref()));
        }
        let counts = |channel: &&str| self.model.counts(channel, true, true);
        let expected_body = match (*info, *batch) {
            (false, _) => json!({}),
            (true, true) => json!({ "batch": targets.iter().map(counts).collect::<Vec<_>>() }),
            (true, false) => {
                let channels: Map<String, Value> =
                    targets.iter().map(|c| (c.to_string(), counts(c))).collect();
                json!({ "channels": channels })
            }
        };
        self.check_response(&response, Some(expected_body), "trigger");
        expected
    }

    fn query_channels(&mut self, prefix: Option<usize>, info: usize) -> Expected {
        let prefix = prefix.map(|index| PREFIXES[index]);
        let info = INFOS[info];
        let mut params = Vec::new();
        if let Some(prefix) = prefix {
            params.push(("filter_by_prefix", prefix));
        }
        if let Some(info) = info {
            params.push(("info", info));
        }
        let path = format!("/apps/{APP_ID}/channels");
        let response = self.api("GET", &path, &params, "", Tamper::None);

        let (user_count, subscription_count, known) = parse_info(info);
        let prefix = prefix.unwrap_or("");
        let expected = (known && (!user_count || prefix.starts_with("presence-"))).then(|| {
            let occupied = self.model.occupied_channels().into_iter();
            let channels: Map<String, Value> = occupied
                .filter(|channel| channel.starts_with(prefix))
                .map(|c| {
                    let counts = self.model.counts(&c, user_count, subscription_count);
                    (c, counts)
                })
                .collect();
            json!({ "channels": channels })
        });
        self.check_response(&response, expected, "GET /channels");
        Vec::new()
    }

    fn query_channel(&mut self, channel: usize, info: usize, encode: bool) -> Expected {
        let channel = CHANNELS[channel];
        let info = INFOS[info];
        let segment = if encode {
            channel.replace('-', "%2D")
        } else {
            channel.to_owned()
        };
        let path = format!("/apps/{APP_ID}/channels/{segment}");
        let params: Vec<(&str, &str)> = info.map(|info| ("info", info)).into_iter().collect();
        let response = self.api("GET", &path, &params, "", Tamper::None);

        let (user_count, subscription_count, known) = parse_info(info);
        let presence = kind(channel) == Kind::Presence;
        let expected = (known && (!user_count || presence)).then(|| {
            let occupied = !self.model.subscribers(channel).is_empty();
            let mut body = json!({ "occupied": occupied });
            let counts = self.model.counts(channel, user_count, subscription_count);
            if let (Value::Object(body), Value::Object(counts)) = (&mut body, counts) {
                body.extend(counts);
            }
            body
        });
        self.check_response(&response, expected, "GET /channels/{name}");
        Vec::new()
    }

    fn query_users(&mut self, channel: usize) -> Expected {
        let channel = CHANNELS[channel];
        let path = format!("/apps/{APP_ID}/channels/{channel}/users");
        let response = self.api("GET", &path, &[], "", Tamper::None);
        if kind(channel) != Kind::Presence {
            self.check_response(&response, None, "GET /users");
            return Vec::new();
        }
        let mut body: Value = serde_json::from_str(&response.body).expect("users body is JSON");
        if let Some(users) = body["users"].as_array_mut() {
            users.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        }
        let members = self.model.members(channel).into_iter();
        let users: Vec<Value> = members.map(|id| json!({ "id": id })).collect();
        let sorted = ApiResponse {
            status: response.status,
            body: body.to_string(),
        };
        self.check_response(&sorted, Some(json!({ "users": users })), "GET /users");
        Vec::new()
    }

    /// Moves the clock forward by `by`, calling `handle_timeout` at every deadline on the way.
    fn advance(&mut self, by: Duration) {
        let target = self.model.now + by;
        for _ in 0..MAX_TIMEOUT_CALLS {
            self.check_deadline();
            let Some(deadline) = self.node.poll_timeout() else {
                break;
            };
            if deadline > self.start + target {
                break;
            }
            self.model.now = deadline.duration_since(self.start);
            let open_before = self.model.open_conns().iter().map(|conn| conn.id).collect();
            self.node.handle_timeout(deadline);
            let drained = self.drain(&open_before);
            let expected = self.model.timeout();
            self.compare(
                &drained.outputs,
                &expected,
                &Op::Advance { secs: by.as_secs() },
            );
            if let Some(next) = self.node.poll_timeout() {
                assert!(
                    next > deadline,
                    "poll_timeout {next:?} not after handle_timeout"
                );
            }
        }
        self.model.now = target;
        let open_before = self.model.open_conns().iter().map(|conn| conn.id).collect();
        self.node.handle_timeout(self.now());
        let drained = self.drain(&open_before);
        let expected = self.model.timeout();
        self.compare(
            &drained.outputs,
            &expected,
            &Op::Advance { secs: by.as_secs() },
        );
    }

    /// Checks that the node's timer never fires after the model's next liveness deadline.
    fn check_deadline(&self) {
        let model_deadline = self.model.next_deadline().map(|at| self.start + at);
        let node_deadline = self.node.poll_timeout();
        match (node_deadline, model_deadline) {
            (Some(node), Some(model)) => {
                assert!(
                    node <= model,
                    "step {}: timer set after a liveness deadline",
                    self.step
                );
            }
            (None, None) => {}
            (node, model) => panic!("step {}: poll_timeout {node:?}, model {model:?}", self.step),
        }
    }

    /// Drains every output, checking that each names a connection in `allowed` and that
    /// nothing follows a connection's `Close`.
    fn drain(&mut self, allowed: &BTreeSet<ConnectionId>) -> Drained {
        let mut drained = Drained {
            outputs: Vec::new(),
            sent: Vec::new(),
        };
        let mut closed = BTreeSet::new();
        while let Some(output) = self.node.poll_output() {
            let (id, out) = match output {
                Output::Send { connection, frame } => {
                    let normalized =
                        normalize(&frame).unwrap_or_else(|e| panic!("step {}: {e}", self.step));
                    drained.sent.push((connection, frame));
                    (connection, Out::Frame(normalized))
                }
                Output::Ping { connection } => (connection, Out::Ping),
                Output::Close {
                    connection, code, ..
                } => (connection, Out::Close(code)),
                Output::Publish { .. } => {
                    panic!(
                        "step {}: a single node published a cluster message",
                        self.step
                    )
                }
            };
            assert!(
                allowed.contains(&id),
                "step {}: output for unknown {id:?}",
                self.step
            );
            assert!(
                !closed.contains(&id),
                "step {}: output after Close {id:?}",
                self.step
            );
            if matches!(out, Out::Close(_)) {
                closed.insert(id);
            }
            drained.outputs.push((id, out));
        }
        drained
    }

    fn compare(&self, actual: &[(ConnectionId, Out)], expected: &Expected, op: &Op) {
        let actual = group(actual);
        let expected = group(expected);
        assert_eq!(
            actual, expected,
            "step {} ({op:?}): outputs differ",
            self.step
        );
    }

    fn check_invariants(&self, op: &Op) {
        let stats = self.node.stats();
        let conns = self.model.open_conns();
        let occupied = self.model.occupied_channels();
        let members: usize = occupied
            .iter()
            .filter(|channel| kind(channel) == Kind::Presence)
            .map(|channel| self.model.members(channel).len())
            .sum();
        let subscriptions: usize = conns.iter().map(|conn| conn.subscriptions.len()).sum();
        let context = format!("step {} ({op:?})", self.step);
        assert_eq!(stats.connections, conns.len(), "{context}: connections");
        assert_eq!(stats.channels, occupied.len(), "{context}: channels");
        assert_eq!(
            stats.subscriptions, subscriptions,
            "{context}: subscriptions"
        );
        assert_eq!(
            stats.presence_members, members,
            "{context}: presence members"
        );
        assert_eq!(
            stats.timers,
            conns.len(),
            "{context}: one timer per connection"
        );
        assert_eq!(
            stats.pending_outputs, 0,
            "{context}: outputs left after draining"
        );

        for slot in 0..SLOTS {
            match &self.model.slots[slot] {
                Slot::Empty => {}
                Slot::Open(conn) => {
                    let socket_id = self.node.socket_id(conn.id).map(|s| s.to_string());
                    assert_eq!(
                        socket_id.as_deref(),
                        Some(conn.socket_id.as_str()),
                        "{context}"
                    );
                }
                Slot::Closed { id, .. } => {
                    assert_eq!(self.node.socket_id(*id), None, "{context}: closed {id:?}");
                }
            }
        }
        if let Some(next) = self.node.poll_timeout() {
            assert!(
                next > self.now(),
                "{context}: poll_timeout is not in the future"
            );
        }
        self.check_deadline();
    }

    /// Disconnects every open connection and checks that the node keeps no state.
    fn teardown(&mut self) {
        for slot in 0..SLOTS {
            self.step += 1;
            self.apply(&Op::Disconnect { slot });
        }
        let stats = self.node.stats();
        assert_eq!(stats.connections, 0, "connections after teardown");
        assert_eq!(stats.channels, 0, "channels after teardown");
        assert_eq!(stats.subscriptions, 0, "subscriptions after teardown");
        assert_eq!(stats.presence_members, 0, "presence members after teardown");
        assert_eq!(stats.timers, 0, "timers after teardown");
        assert_eq!(
            self.node.poll_timeout(),
            None,
            "poll_timeout after teardown"
        );
        self.apply(&Op::QueryChannels {
            prefix: None,
            info: 0,
        });
    }
}

/// Returns the presence member `user` as `channel_data` text and as a model `Member`.
fn member_json(user: usize, slot: usize, spaced: bool) -> (String, Member) {
    let user_id = USER_IDS[user];
    if user == USER_IDS.len() - 1 {
        let text = if spaced {
            format!(r#"{{"user_id": {user_id}}}"#)
        } else {
            format!(r#"{{"user_id":{user_id}}}"#)
        };
        let member = Member {
            user_id: user_id.to_owned(),
            user_info: None,
        };
        return (text, member);
    }
    let text = if spaced {
        format!(
            r#"{{"user_id": "{user_id}", "user_info": {{"name": "{user_id}", "slot": {slot}}}}}"#
        )
    } else {
        format!(r#"{{"user_id":"{user_id}","user_info":{{"name":"{user_id}","slot":{slot}}}}}"#)
    };
    let member = Member {
        user_id: user_id.to_owned(),
        user_info: Some(json!({ "name": user_id, "slot": slot })),
    };
    (text, member)
}

fn channel_data_kind_is_member(op: &Op) -> bool {
    matches!(
        op,
        Op::Subscribe {
            channel_data: ChannelDataKind::Default | ChannelDataKind::Member,
            ..
        }
    )
}

/// Splits an `info` value into (user_count, subscription_count, every attribute known).
fn parse_info(info: Option<&str>) -> (bool, bool, bool) {
    let attributes: Vec<&str> = info
        .unwrap_or("")
        .split(',')
        .filter(|a| !a.is_empty())
        .collect();
    let known = attributes
        .iter()
        .all(|a| matches!(*a, "user_count" | "subscription_count"));
    let has = |name| attributes.contains(&name);
    (has("user_count"), has("subscription_count"), known)
}
