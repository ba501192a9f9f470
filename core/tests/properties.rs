//! Property tests of `crier-core` through its public API.
//!
//! - `node_matches_model` replays random operations (connections, subscriptions with valid
//!   and invalid signatures, client events, signed HTTP API requests, disconnects, time
//!   passing) against a `Node` and a reference model in `properties/model.rs`, comparing
//!   every output, API response and `stats()` after every step.
//! - The other properties check that frames this file serializes parse to the expected
//!   `ClientFrame`, and that signatures verify and break under any one-byte change.
//!
//! Run with `cargo test -p crier-core --test properties`. Each property runs proptest's
//! default of 256 cases, and `PROPTEST_CASES=10000` sets a longer run. Failures are not saved
//! to disk: turn the minimal input proptest prints into a plain `#[test]` at the end of this
//! file.

#[path = "properties/harness.rs"]
mod harness;
#[path = "properties/model.rs"]
mod model;
#[path = "properties/ops.rs"]
mod ops;

use std::borrow::Cow;

use crier_core::{
    ApiRequest, ClientFrame, Node, sign_api_request, sign_channel, sign_hex, verify_hex,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::Value;
use serde_json::value::RawValue;

use harness::{APP_ID, KEY, SECRET, md5_hex};
use ops::{
    AuthKind, ChannelDataKind, ClientData, ConnectKind, Exclude, Garbage, Op, Tamper, Target,
};

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
    fn node_matches_model(ops in ops::ops()) {
        harness::run(&ops);
    }
}

// ---------------------------------------------------------------------------------------
// ClientFrame::parse of frames serialized here.

/// A client frame as this file writes it, and what `ClientFrame::parse` must return.
#[derive(Clone, Debug)]
enum FrameSpec {
    Ping {
        data: Option<String>,
    },
    Pong {
        data: Option<String>,
    },
    Subscribe {
        channel: String,
        auth: Option<String>,
        channel_data: Option<String>,
        data_as_string: bool,
    },
    Unsubscribe {
        channel: String,
        data_as_string: bool,
    },
    Signin,
    ClientEvent {
        event: String,
        channel: Option<String>,
        /// JSON text of `data`, exactly as written into the frame.
        data: Option<String>,
    },
    OtherPusherEvent {
        event: String,
    },
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON text of a value, compact or pretty-printed.
fn json_text() -> impl Strategy<Value = String> {
    (json_value(), any::<bool>()).prop_map(|(value, pretty)| {
        let text = if pretty {
            serde_json::to_string_pretty(&value)
        } else {
            serde_json::to_string(&value)
        };
        text.expect("a Value serializes")
    })
}

/// Generates the optional `data` of a ping or pong: absent, `{}`, or `{}` with spaces.
fn ping_data() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("{}".to_owned())),
        Just(Some("{ }".to_owned()))
    ]
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    let text = "\\PC{0,16}";
    let known = ["ping", "pong", "subscribe", "unsubscribe", "signin"];
    prop_oneof![
        ping_data().prop_map(|data| FrameSpec::Ping { data }),
        ping_data().prop_map(|data| FrameSpec::Pong { data }),
        (
            text,
            prop::option::of(text),
            prop::option::of(text),
            any::<bool>()
        )
            .prop_map(|(channel, auth, channel_data, data_as_string)| {
                FrameSpec::Subscribe {
                    channel,
                    auth,
                    channel_data,
                    data_as_string,
                }
            }),
        (text, any::<bool>()).prop_map(|(channel, data_as_string)| FrameSpec::Unsubscribe {
            channel,
            data_as_string,
        }),
        Just(FrameSpec::Signin),
        (text, prop::option::of(text), prop::option::of(json_text())).prop_map(
            |(suffix, channel, data)| FrameSpec::ClientEvent {
                event: format!("client-{suffix}"),
                channel,
                data,
            }
        ),
        ("(pusher|pusher_internal):[a-z_]{0,12}")
            .prop_filter("not a handled event", move |name| {
                !known.iter().any(|k| *name == format!("pusher:{k}"))
            })
            .prop_map(|event| FrameSpec::OtherPusherEvent { event }),
    ]
}

/// Writes a JSON object from `(key, JSON text)` fields in the given order, with `space`
/// around every separator.
fn object_text(fields: &[(String, String)], space: &str) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}{space}:{space}{value}", quote(key)))
        .collect();
    format!(
        "{{{space}{}{space}}}",
        fields.join(&format!("{space},{space}"))
    )
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// Serializes `spec` with its fields rotated by `rotation`, an unknown field when
/// `extra_field` is set, and `space` between tokens.
fn serialize_frame(spec: &FrameSpec, rotation: usize, extra_field: bool, space: &str) -> String {
    let field = |key: &str, value: String| (key.to_owned(), value);
    let pusher_data = |fields: Vec<(String, String)>, as_string: bool| {
        let object = object_text(&fields, space);
        if as_string { quote(&object) } else { object }
    };
    let mut fields = match spec {
        FrameSpec::Ping { data } | FrameSpec::Pong { data } => {
            let name = if matches!(spec, FrameSpec::Ping { .. }) {
                "ping"
            } else {
                "pong"
            };
            let mut fields = vec![field("event", quote(&format!("pusher:{name}")))];
            fields.extend(data.clone().map(|data| field("data", data)));
            fields
        }
        FrameSpec::Subscribe {
            channel,
            auth,
            channel_data,
            data_as_string,
        } => {
            let mut data = vec![field("channel", quote(channel))];
            data.extend(auth.as_deref().map(|auth| field("auth", quote(auth))));
            data.extend(
                channel_data
                    .as_deref()
                    .map(|cd| field("channel_data", quote(cd))),
            );
            let len = data.len();
            data.rotate_left(rotation % len);
            let data = pusher_data(data, *data_as_string);
            vec![
                field("event", quote("pusher:subscribe")),
                field("data", data),
            ]
        }
        FrameSpec::Unsubscribe {
            channel,
            data_as_string,
        } => {
            let data = pusher_data(vec![field("channel", quote(channel))], *data_as_string);
            vec![
                field("event", quote("pusher:unsubscribe")),
                field("data", data),
            ]
        }
        FrameSpec::Signin => vec![
            field("event", quote("pusher:signin")),
            field(
                "data",
                r#"{"auth":"k:s","user_data":"{\"id\":\"1\"}"}"#.to_owned(),
            ),
        ],
        FrameSpec::ClientEvent {
            event,
            channel,
            data,
        } => {
            let mut fields = vec![field("event", quote(event))];
            fields.extend(
                channel
                    .as_deref()
                    .map(|channel| field("channel", quote(channel))),
            );
            fields.extend(data.clone().map(|data| field("data", data)));
            fields
        }
        FrameSpec::OtherPusherEvent { event } => vec![field("event", quote(event))],
    };
    if extra_field {
        fields.push(field(
            "unknown_field",
            r#"{"nested":[1,"two",null]}"#.to_owned(),
        ));
    }
    let len = fields.len();
    fields.rotate_left(rotation % len);
    object_text(&fields, space)
}

/// Checks that `parsed` is the frame `spec` describes.
fn assert_parsed_as(parsed: &ClientFrame<'_>, spec: &FrameSpec) {
    match (spec, parsed) {
        (FrameSpec::Ping { .. }, ClientFrame::Ping)
        | (FrameSpec::Pong { .. }, ClientFrame::Pong)
        | (FrameSpec::Signin, ClientFrame::Signin) => {}
        (
            FrameSpec::Subscribe {
                channel,
                auth,
                channel_data,
                ..
            },
            ClientFrame::Subscribe(data),
        ) => {
            assert_eq!(&data.channel, channel);
            assert_eq!(&data.auth, auth);
            assert_eq!(&data.channel_data, channel_data);
        }
        (FrameSpec::Unsubscribe { channel, .. }, ClientFrame::Unsubscribe(data)) => {
            assert_eq!(&data.channel, channel);
        }
        (
            FrameSpec::ClientEvent {
                event,
                channel,
                data,
            },
            parsed,
        ) => {
            let data: Option<&RawValue> = data
                .as_deref()
                .map(|data| serde_json::from_str(data).expect("valid JSON text"));
            let expected = ClientFrame::ClientEvent {
                event: Cow::Borrowed(event),
                channel: channel.as_deref().map(Cow::Borrowed),
                data,
            };
            assert_eq!(parsed, &expected);
        }
        (FrameSpec::OtherPusherEvent { event }, parsed) => {
            assert_eq!(parsed, &ClientFrame::OtherPusherEvent(Cow::Borrowed(event)));
        }
        (spec, parsed) => panic!("{spec:?} parsed as {parsed:?}"),
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn client_frames_parse_as_serialized(
        spec in frame_spec(),
        rotation in 0usize..4,
        extra_field in any::<bool>(),
        space in prop_oneof![Just(""), Just(" "), Just("\n  ")],
    ) {
        let text = serialize_frame(&spec, rotation, extra_field, space);
        let parsed = ClientFrame::parse(&text);
        let parsed = parsed.unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_parsed_as(&parsed, &spec);
    }

    /// `parse` never panics, and any error it returns is one the node can send.
    #[test]
    fn client_frame_parse_never_panics(text in "\\PC{0,64}") {
        if let Err(error) = ClientFrame::parse(&text) {
            prop_assert!(error.close_code().is_none());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Signatures.

/// Builds the canonical query string of the signing rules, independently of the crate:
/// every parameter but `auth_signature`, percent-decoded (`+` is a space), keys lower-cased,
/// `k[]` grouped into one array in arrival order, sorted by key, values not re-escaped.
/// Returns `None` when the node must reject the query string (bad UTF-8, a repeated key).
fn canonical_query(raw: &str) -> Option<String> {
    let mut params: std::collections::BTreeMap<String, (bool, Vec<String>)> = Default::default();
    for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?.to_ascii_lowercase();
        let value = percent_decode(value)?;
        let (base, is_array) = match key.strip_suffix("[]") {
            Some(base) => (base.to_owned(), true),
            None => (key, false),
        };
        let entry = params.entry(base).or_insert((is_array, Vec::new()));
        if entry.0 != is_array || (!is_array && !entry.1.is_empty()) {
            return None;
        }
        entry.1.push(value);
    }
    let mut pairs = Vec::new();
    for (key, (is_array, values)) in &params {
        if key == "auth_signature" {
            continue;
        }
        let suffix = if *is_array { "[]" } else { "" };
        pairs.extend(values.iter().map(|value| format!("{key}{suffix}={value}")));
    }
    Some(pairs.join("&"))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes.get(i + 1..i + 3).filter(|_| bytes[i] == b'%');
        let decoded = escape
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (decoded, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes every byte outside the unreserved characters of RFC 3986.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Extra query parameters for `GET /channels`: keys that name nothing the endpoint reads,
/// distinct after lower-casing, some as arrays, values with arbitrary characters.
fn extra_params() -> impl Strategy<Value = Vec<(String, Vec<String>, bool)>> {
    let key = "x[a-zA-Z0-9_]{0,6}";
    let values = prop::collection::vec("\\PC{0,8}", 1..3);
    prop::collection::vec((key, values, any::<bool>()), 0..5).prop_map(|params| {
        let mut seen = std::collections::BTreeSet::new();
        let distinct = params
            .into_iter()
            .filter(|(key, _, _)| seen.insert(key.to_ascii_lowercase()));
        let shaped = distinct.map(|(key, mut values, is_array)| {
            if !is_array {
                values.truncate(1);
            }
            (key, values, is_array)
        });
        shaped.collect()
    })
}

/// Writes the query string of a `GET /channels` request without `auth_signature`.
fn channels_query(unix_secs: u64, extra: &[(String, Vec<String>, bool)], encode: bool) -> String {
    let mut pairs = vec![
        format!("auth_key={KEY}"),
        format!("auth_timestamp={unix_secs}"),
        "auth_version=1.0".to_owned(),
    ];
    for (key, values, is_array) in extra {
        let suffix = if *is_array { "[]" } else { "" };
        for value in values {
            let value = if encode {
                percent_encode(value)
            } else {
                value.replace(['&', '%', '+', '#', '='], "_")
            };
            pairs.push(format!("{key}{suffix}={value}"));
        }
    }
    pairs.rotate_left(extra.len() % 3);
    pairs.join("&")
}

const UNIX_SECS: u64 = 1_700_000_000;

fn node() -> Node {
    Node::new(harness::config(), 1).expect("valid config")
}

/// Sends a request to a fresh node and returns the status and whether it queued output.
fn status_of(method: &str, path: &str, query: &str, body: &[u8]) -> (u16, bool) {
    let mut node = node();
    let request = ApiRequest {
        method,
        path,
        query,
        body,
    };
    let response = node.handle_api(std::time::Instant::now(), UNIX_SECS, &request);
    (response.status, node.poll_output().is_some())
}

/// Builds a signed `POST /events` to `orders`: the query string, with `auth_signature`,
/// and the body.
fn signed_trigger(data: &str) -> (String, String) {
    let body = serde_json::json!({"name": "e", "data": data, "channel": "orders"}).to_string();
    let query = format!(
        "auth_key={KEY}&auth_timestamp={UNIX_SECS}&auth_version=1.0&body_md5={}",
        md5_hex(body.as_bytes())
    );
    let path = format!("/apps/{APP_ID}/events");
    let signature = sign_api_request(SECRET, "POST", &path, &query).expect("valid query");
    (format!("{query}&auth_signature={signature}"), body)
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn hmac_verifies_and_breaks_on_any_change(
        secret in "\\PC{1,24}",
        message in prop::collection::vec(any::<u8>(), 0..64),
        index in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let signature = sign_hex(&secret, &message);
        prop_assert_eq!(signature.len(), 64);
        prop_assert!(signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        prop_assert!(verify_hex(&secret, &message, &signature));

        let mut bad_signature = signature.clone().into_bytes();
        let at = index.index(bad_signature.len());
        prop_assume!(bad_signature[at] != replacement);
        bad_signature[at] = replacement;
        let bad_signature = String::from_utf8_lossy(&bad_signature);
        prop_assert!(!verify_hex(&secret, &message, &bad_signature));
        prop_assert!(!verify_hex(&secret, &message, &signature.to_ascii_uppercase())
            || !signature.bytes().any(|b| b.is_ascii_alphabetic()));

        if !message.is_empty() {
            let mut bad_message = message.clone();
            let at = index.index(bad_message.len());
            bad_message[at] = bad_message[at].wrapping_add(1);
            prop_assert!(!verify_hex(&secret, &bad_message, &signature));
        }
    }

    #[test]
    fn channel_auth_signs_the_documented_string(
        socket_id in (0u64..1 << 53, 0u64..1 << 53).prop_map(|(a, b)| format!("{a}.{b}")),
        channel in "(private-|presence-)[a-zA-Z0-9_=@,.;-]{1,20}",
        channel_data in prop::option::of("\\PC{0,40}"),
    ) {
        let auth = sign_channel(KEY, SECRET, &socket_id, &channel, channel_data.as_deref());
        let message = match &channel_data {
            Some(data) => format!("{socket_id}:{channel}:{data}"),
            None => format!("{socket_id}:{channel}"),
        };
        let (key, signature) = auth.split_once(':').expect("auth is key:signature");
        prop_assert_eq!(key, KEY);
        prop_assert!(verify_hex(SECRET, message.as_bytes(), signature));
        prop_assert_eq!(signature, sign_hex(SECRET, message.as_bytes()));
    }

    #[test]
    fn api_signature_matches_canonical_query(
        extra in extra_params(),
        encode in any::<bool>(),
        lowercase_method in any::<bool>(),
    ) {
        let path = format!("/apps/{APP_ID}/channels");
        let query = channels_query(UNIX_SECS, &extra, encode);
        let method = if lowercase_method { "get" } else { "GET" };
        let signature = sign_api_request(SECRET, method, &path, &query).expect("valid query");
        let canonical = canonical_query(&query).expect("valid query");
        let expected = sign_hex(SECRET, format!("GET\n{path}\n{canonical}").as_bytes());
        prop_assert_eq!(&signature, &expected);

        let signed = format!("{query}&auth_signature={signature}");
        prop_assert_eq!(status_of("GET", &path, &signed, b""), (200, false));
    }

    #[test]
    fn api_request_breaks_on_any_signature_byte(
        data in "\\PC{0,40}",
        index in any::<prop::sample::Index>(),
        replacement in 0x20u8..0x7f,
    ) {
        let (query, body) = signed_trigger(&data);
        let path = format!("/apps/{APP_ID}/events");
        prop_assert_eq!(status_of("POST", &path, &query, body.as_bytes()), (200, false));

        let start = query.find("auth_signature=").expect("signed") + "auth_signature=".len();
        let at = start + index.index(query.len() - start);
        prop_assume!(query.as_bytes()[at] != replacement);
        let mut bad = query.into_bytes();
        bad[at] = replacement;
        let bad = String::from_utf8(bad).expect("ASCII replacement");
        // A `%` can form an escape that decodes to invalid UTF-8, which is a 400.
        let (status, published) = status_of("POST", &path, &bad, body.as_bytes());
        prop_assert!(matches!(status, 400 | 401), "{} got {}", bad, status);
        prop_assert!(!published);
    }

    #[test]
    fn api_request_breaks_on_any_body_byte(
        data in "\\PC{0,40}",
        index in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let (query, body) = signed_trigger(&data);
        let path = format!("/apps/{APP_ID}/events");
        let mut bad = body.into_bytes();
        let at = index.index(bad.len());
        prop_assume!(bad[at] != replacement);
        bad[at] = replacement;
        prop_assert_eq!(status_of("POST", &path, &query, &bad), (401, false));
    }

    /// A one-byte change anywhere in `auth`, or in the signed `channel_data`, makes the node
    /// reject the subscription and keep no trace of it.
    #[test]
    fn channel_auth_breaks_on_any_byte(
        in_channel_data in any::<bool>(),
        index in any::<prop::sample::Index>(),
        replacement in 0x20u8..0x7f,
    ) {
        let mut node = node();
        let now = std::time::Instant::now();
        let request = crier_core::ConnectRequest::parse(&format!("/app/{KEY}")).expect("target");
        let id = node.open(now, &request).expect("connection");
        while node.poll_output().is_some() {}

        let socket_id = node.socket_id(id).expect("open").to_string();
        let channel = "presence-lobby";
        let channel_data = r#"{"user_id":"u-1","user_info":{"name":"Ada"}}"#.to_owned();
        let auth = sign_channel(KEY, SECRET, &socket_id, channel, Some(&channel_data));
        let (mut auth, mut channel_data) = (auth.into_bytes(), channel_data.into_bytes());
        let target = if in_channel_data { &mut channel_data } else { &mut auth };
        let at = index.index(target.len());
        prop_assume!(target[at] != replacement);
        target[at] = replacement;
        let auth = String::from_utf8(auth).expect("ASCII");
        let channel_data = String::from_utf8(channel_data).expect("ASCII");

        let data = serde_json::json!({
            "channel": channel,
            "auth": auth,
            "channel_data": channel_data,
        });
        let subscribe = serde_json::json!({ "event": "pusher:subscribe", "data": data });
        node.handle_text(now, id, &subscribe.to_string());
        let outputs: Vec<_> = std::iter::from_fn(|| node.poll_output()).collect();
        prop_assert_eq!(outputs.len(), 2, "{:?}", outputs);
        let events: Vec<Value> = outputs
            .iter()
            .map(|output| match output {
                crier_core::Output::Send { frame, .. } => {
                    serde_json::from_str::<Value>(frame).expect("frame is JSON")["event"].clone()
                }
                other => panic!("expected frames, got {other:?}"),
            })
            .collect();
        prop_assert_eq!(&events[0], "pusher:error");
        prop_assert_eq!(&events[1], "pusher:subscription_error");
        let stats = node.stats();
        prop_assert_eq!(stats.subscriptions, 0);
        prop_assert_eq!(stats.channels, 0);
        prop_assert_eq!(stats.presence_members, 0);
    }

    /// A one-byte change before `auth_signature` breaks the request exactly when it changes
    /// the canonical query string, which is what the signature covers.
    #[test]
    fn api_request_breaks_on_query_change(
        data in "\\PC{0,20}",
        index in any::<prop::sample::Index>(),
        replacement in 0x20u8..0x7f,
    ) {
        let (query, body) = signed_trigger(&data);
        let path = format!("/apps/{APP_ID}/events");
        let (unsigned, signature) = query.split_once("&auth_signature=").expect("signed");
        let at = index.index(unsigned.len());
        prop_assume!(unsigned.as_bytes()[at] != replacement);
        let mut changed = unsigned.as_bytes().to_vec();
        changed[at] = replacement;
        let changed = String::from_utf8(changed).expect("ASCII replacement");
        let bad = format!("{changed}&auth_signature={signature}");
        let (status, published) = status_of("POST", &path, &bad, body.as_bytes());
        prop_assert!(!published || status == 200);
        if canonical_query(&changed) == canonical_query(unsigned) {
            prop_assert_eq!(status, 200, "{} still signs the same string", changed);
        } else {
            prop_assert_ne!(status, 200, "{} was accepted", changed);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixed cases: operation sequences that once failed, and scenarios worth keeping exact.

#[test]
fn presence_join_and_leave() {
    let subscribe = |slot, user| Op::Subscribe {
        slot,
        target: Target::Channel(4),
        user,
        auth: AuthKind::Valid,
        channel_data: ChannelDataKind::Default,
        data_as_string: false,
        spaced: slot % 2 == 0,
    };
    harness::run(&[
        Op::Connect {
            slot: 0,
            kind: ConnectKind::Valid(Some(7)),
        },
        Op::Connect {
            slot: 1,
            kind: ConnectKind::Valid(None),
        },
        Op::Connect {
            slot: 2,
            kind: ConnectKind::Valid(Some(5)),
        },
        subscribe(0, 0),
        subscribe(1, 0),
        subscribe(2, 2),
        Op::ClientEvent {
            slot: 1,
            channel: Some(4),
            data: ClientData::SpacedObject,
            long_name: false,
            spoofed_user_id: true,
            repeat: 1,
        },
        Op::Unsubscribe {
            slot: 0,
            channel: 4,
        },
        Op::Disconnect { slot: 1 },
        Op::Trigger {
            channels: vec![4, 0],
            exclude: Exclude::Slot(2),
            batch: false,
            info: true,
            tamper: Tamper::None,
        },
    ]);
}

#[test]
fn liveness_ping_then_close() {
    harness::run(&[
        Op::Connect {
            slot: 0,
            kind: ConnectKind::Valid(None),
        },
        Op::Connect {
            slot: 1,
            kind: ConnectKind::Valid(None),
        },
        Op::Advance { secs: 60 },
        Op::Activity { slot: 1 },
        Op::Advance { secs: 119 },
        Op::Garbage {
            slot: 0,
            kind: Garbage::UnknownPusherEvent,
        },
        Op::Advance { secs: 400 },
    ]);
}

/// Shrunk from a failure: one connection timing out leaves two presence channels, and the
/// two `member_removed` frames may reach the other member in either channel order.
#[test]
fn two_leaves_in_one_timeout() {
    let subscribe = |slot, channel, user| Op::Subscribe {
        slot,
        target: Target::Channel(channel),
        user,
        auth: AuthKind::Valid,
        channel_data: ChannelDataKind::Default,
        data_as_string: false,
        spaced: false,
    };
    harness::run(&[
        Op::Connect {
            slot: 0,
            kind: ConnectKind::Valid(Some(7)),
        },
        Op::Connect {
            slot: 3,
            kind: ConnectKind::Valid(None),
        },
        subscribe(3, 5, 0),
        subscribe(0, 4, 0),
        subscribe(0, 5, 1),
        subscribe(3, 4, 1),
        Op::Advance { secs: 29 },
        subscribe(0, 0, 0),
        Op::Advance { secs: 121 },
    ]);
}

/// `"data":null` is data, not a missing field, so it is relayed unchanged.
#[test]
fn client_event_null_data_relayed() {
    let text = r#"{"event":"client-x","channel":"private-orders","data":null}"#;
    let parsed = ClientFrame::parse(text).expect("valid client event");
    let null: &RawValue = serde_json::from_str("null").expect("JSON null");
    let expected = ClientFrame::ClientEvent {
        event: Cow::Borrowed("client-x"),
        channel: Some(Cow::Borrowed("private-orders")),
        data: Some(null),
    };
    assert_eq!(parsed, expected);

    let mut node = node();
    let now = std::time::Instant::now();
    let request = crier_core::ConnectRequest::parse(&format!("/app/{KEY}")).expect("target");
    let sender = node.open(now, &request).expect("first connection");
    let receiver = node.open(now, &request).expect("second connection");
    for id in [sender, receiver] {
        let socket_id = node.socket_id(id).expect("open").to_string();
        let auth = sign_channel(KEY, SECRET, &socket_id, "private-orders", None);
        let data = serde_json::json!({ "channel": "private-orders", "auth": auth });
        let subscribe = serde_json::json!({ "event": "pusher:subscribe", "data": data });
        node.handle_text(now, id, &subscribe.to_string());
    }
    while node.poll_output().is_some() {}

    node.handle_text(now, sender, text);
    let relayed = node.poll_output();
    let expected = crier_core::Output::Send {
        connection: receiver,
        frame: r#"{"event":"client-x","channel":"private-orders","data":null}"#.into(),
    };
    assert_eq!(relayed, Some(expected));
    assert_eq!(node.poll_output(), None);
}
