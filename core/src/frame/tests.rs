use serde_json::Value;
use serde_json::value::RawValue;

use super::*;
use crate::config::Limits;
use crate::error::{ConnectError, SubscribeError};
use crate::presence::{MemberData, Roster};

/// Exact frames for every event in both directions, as described by `about` inside the file.
const MESSAGES: &str = include_str!("../../tests/vectors/messages.json");

/// Server-to-client vector frames that the core never sends, because it lacks the feature:
/// - `error-over-quota`: there is no per-app connection quota (4004), only the node-wide
///   limit (4100).
/// - `ping-from-server`: the liveness probe is a WebSocket Ping control frame.
/// - `signin-success`, `error-signin-invalid`, `watchlist-events`, `error-watchlist-limit`,
///   `subscription-succeeded-server-to-user`, `server-to-user-event`: user sign-in,
///   watchlists and `#server-to-user-` channels.
/// - `error-terminated`: `terminate_connections`.
/// - `cache-miss`, `cache-replay`: cache channels do not replay their last event.
/// - `subscription-count`: `pusher_internal:subscription_count` events.
const NOT_IMPLEMENTED: &[&str] = &[
    "error-over-quota",
    "ping-from-server",
    "signin-success",
    "error-signin-invalid",
    "watchlist-events",
    "error-watchlist-limit",
    "subscription-succeeded-server-to-user",
    "server-to-user-event",
    "error-terminated",
    "cache-miss",
    "cache-replay",
    "subscription-count",
];

fn vector_frames(direction: &str) -> Vec<Value> {
    let messages: Value = serde_json::from_str(MESSAGES).expect("messages.json is valid JSON");
    let frames = messages["frames"]
        .as_array()
        .expect("messages.json has a frames array");
    frames
        .iter()
        .filter(|frame| frame["direction"] == direction)
        .cloned()
        .collect()
}

fn field<'a>(frame: &'a Value, name: &str) -> &'a str {
    frame[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector frame has no string {name}: {frame}"))
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("test JSON is valid")
}

/// Returns the presence `subscription_succeeded` data of a roster that joined `channel_data`
/// values in order, as the node builds it.
fn roster_data(channel_data: &[&str]) -> String {
    let mut roster = Roster::default();
    for data in channel_data {
        let member = MemberData::parse(data, &Limits::default()).expect("valid channel_data");
        roster.join(member);
    }
    crate::frame::presence_data(roster.iter())
}

/// Builds the frame the core sends for a server-to-client vector id, from the same error
/// values and builders the node uses. Returns `None` for ids the core has no frame for.
fn build_server_frame(id: &str) -> Option<String> {
    let invalid_signature = SubscribeError::InvalidSignature {
        string_to_sign: "48213.902117:private-orders".to_owned(),
        presented: "b".repeat(64),
    };
    let ada = r#"{"user_id":"u-1001","user_info":{"name":"Ada","role":"admin"}}"#;
    let bo = r#"{"user_id":"u-2002","user_info":{"name":"Bo"}}"#;
    let typing = raw(r#"{"typing":true}"#);
    let encrypted = r#"{"nonce":"eDd7UldXtJRCf4kBT5fXmSjzk40U61Hi","ciphertext":"MFUx3MUOvKMc8dWzHp/HbtUfZrO23VoDDGU5rmUy+XkAAAAAAAAAAA=="}"#;

    let frame = match id {
        "connection-established" => connection_established("48213.902117", 120),
        "error-app-not-found" => ConnectError::UnknownApp.frame(),
        "error-over-capacity" => ConnectError::OverCapacity.frame(),
        "error-unsupported-protocol" => ConnectError::UnsupportedProtocolVersion(3).frame(),
        "pong-reply" => pong(),
        "error-pong-timeout" => error(Some(4201), "Pong reply not received"),
        "error-server-shutdown" => ConnectError::ShuttingDown.frame(),
        "subscription-succeeded-public" => subscription_succeeded("orders", "{}"),
        "subscription-succeeded-cache" => subscription_succeeded("cache-ticker", "{}"),
        "subscription-succeeded-presence" => {
            subscription_succeeded("presence-lobby", &roster_data(&[ada, bo]))
        }
        "member-added" => member_added("presence-lobby", "u-2002", Some(&raw(r#"{"name":"Bo"}"#))),
        "member-added-numeric-id" => member_added("presence-room-7", "77", Some(&raw("{}"))),
        "member-removed" => member_removed("presence-lobby", "u-2002"),
        "error-invalid-signature" => error(None, &invalid_signature.message("private-orders")),
        "subscription-error" => subscription_error(
            "private-orders",
            invalid_signature.error_type(),
            invalid_signature.short_message(),
            invalid_signature.status(),
        ),
        "server-event" => api_event(
            "order-shipped",
            "private-orders",
            r#"{"id":42,"status":"shipped"}"#,
        ),
        "server-event-plain-string" => api_event("price", "cache-ticker", "12.5"),
        "encrypted-event" => api_event("vault-updated", "private-encrypted-vault", encrypted),
        "client-event-out" => client_event("client-typing", "private-orders", Some(&typing), None),
        "client-event-out-presence" => client_event(
            "client-typing",
            "presence-lobby",
            Some(&typing),
            Some("u-1001"),
        ),
        "error-client-events-disabled" => protocol_error(ProtocolError::ClientEventsDisabled),
        "error-client-event-not-subscribed" => protocol_error(
            ProtocolError::ClientEventNotSubscribed("private-orders".to_owned()),
        ),
        "error-client-event-public" => protocol_error(ProtocolError::ClientEventChannelKind),
        "error-client-event-encrypted" => {
            protocol_error(ProtocolError::ClientEventEncryptedChannel)
        }
        "error-client-event-rate-limit" => protocol_error(ProtocolError::ClientEventRateLimited),
        "error-unsupported-event" => {
            protocol_error(ProtocolError::UnsupportedEvent("my-event".to_owned()))
        }
        "error-invalid-json" => protocol_error(ProtocolError::InvalidJson),
        _ => return None,
    };
    Some(frame)
}

/// Builds the `pusher:error` frame the node sends for a client mistake that keeps the
/// connection open.
fn protocol_error(error: ProtocolError) -> String {
    self::error(error.code(), &error.message())
}

#[test]
fn server_frames_match_vectors() {
    for frame in vector_frames("server->client") {
        let id = field(&frame, "id");
        let text = field(&frame, "text");
        if NOT_IMPLEMENTED.contains(&id) {
            assert_eq!(
                build_server_frame(id),
                None,
                "{id} is listed as not implemented"
            );
            continue;
        }
        let built = build_server_frame(id)
            .unwrap_or_else(|| panic!("no builder for server frame {id}; add one or list it"));
        assert_eq!(built, text, "{id}");
    }
}

#[test]
fn not_implemented_ids_exist() {
    let frames = vector_frames("server->client");
    for id in NOT_IMPLEMENTED {
        let found = frames.iter().any(|frame| frame["id"] == *id);
        assert!(
            found,
            "{id} is not a server-to-client frame in messages.json"
        );
    }
}

fn subscribe_data(decoded: &Value) -> SubscribeData {
    let text = |name: &str| {
        decoded
            .get(name)
            .map(|value| value.as_str().unwrap().to_owned())
    };
    SubscribeData {
        channel: text("channel").expect("subscribe vectors name a channel"),
        auth: text("auth"),
        channel_data: text("channel_data"),
    }
}

#[test]
fn client_frames_parse_to_variants() {
    let typing_object = raw(r#"{"typing":true}"#);
    let typing_string = raw(r#""{\"typing\":true}""#);
    for frame in vector_frames("client->server") {
        let id = field(&frame, "id");
        let text = field(&frame, "text");
        let decoded = &frame["data_decoded"];
        let expected = match id {
            "ping-from-pusher-js" | "ping-from-java" => Ok(ClientFrame::Ping),
            "pong-from-pusher-js" => Ok(ClientFrame::Pong),
            "subscribe-public-pusher-js"
            | "subscribe-public-java"
            | "subscribe-private"
            | "subscribe-presence"
            | "subscribe-encrypted"
            | "subscribe-server-to-user"
            | "subscribe-cache" => Ok(ClientFrame::Subscribe(subscribe_data(decoded))),
            "unsubscribe" => Ok(ClientFrame::Unsubscribe(UnsubscribeData {
                channel: "orders".to_owned(),
            })),
            "client-event-in" => Ok(ClientFrame::ClientEvent {
                event: "client-typing".into(),
                channel: Some("private-orders".into()),
                data: Some(&typing_object),
            }),
            "client-event-in-string-data" => Ok(ClientFrame::ClientEvent {
                event: "client-typing".into(),
                channel: Some("private-orders".into()),
                data: Some(&typing_string),
            }),
            "unsupported-event-in" => Err(ProtocolError::UnsupportedEvent("my-event".to_owned())),
            "signin" => Ok(ClientFrame::Signin),
            other => panic!("no expected parse for client frame {other}; add one"),
        };
        assert_eq!(ClientFrame::parse(text), expected, "{id}");
    }
}

#[test]
fn public_subscribe_auth_forms() {
    let Ok(ClientFrame::Subscribe(pusher_js)) =
        ClientFrame::parse(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"orders"}}"#)
    else {
        panic!("pusher-js subscribe did not parse");
    };
    let Ok(ClientFrame::Subscribe(java)) =
        ClientFrame::parse(r#"{"event":"pusher:subscribe","data":{"channel":"orders"}}"#)
    else {
        panic!("Java subscribe did not parse");
    };
    assert_eq!(pusher_js.auth.as_deref(), Some(""));
    assert_eq!(java.auth, None);
}

#[test]
fn subscribe_data_as_string() {
    let text = r#"{"event":"pusher:subscribe","data":"{\"channel\":\"orders\",\"auth\":\"\"}"}"#;
    let expected = ClientFrame::Subscribe(SubscribeData {
        channel: "orders".to_owned(),
        auth: Some(String::new()),
        channel_data: None,
    });
    assert_eq!(ClientFrame::parse(text), Ok(expected));
}

#[test]
fn subscribe_data_missing() {
    let expected = ProtocolError::InvalidEventData {
        event: "pusher:subscribe",
        problem: "data is missing",
    };
    assert_eq!(
        ClientFrame::parse(r#"{"event":"pusher:subscribe"}"#),
        Err(expected)
    );
}

#[test]
fn subscribe_data_without_channel() {
    let result = ClientFrame::parse(r#"{"event":"pusher:subscribe","data":{"auth":""}}"#);
    assert!(
        matches!(
            result,
            Err(ProtocolError::InvalidEventData {
                event: "pusher:subscribe",
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn unsubscribe_data_as_string() {
    let text = r#"{"event":"pusher:unsubscribe","data":"{\"channel\":\"orders\"}"}"#;
    let expected = ClientFrame::Unsubscribe(UnsubscribeData {
        channel: "orders".to_owned(),
    });
    assert_eq!(ClientFrame::parse(text), Ok(expected));
}

#[test]
fn invalid_json_forms() {
    for text in [
        "",
        "not json",
        "[]",
        "null",
        r#""pusher:ping""#,
        "{}",
        r#"{"data":{}}"#,
        r#"{"event":5}"#,
        r#"{"event":null}"#,
        r#"{"event":"pusher:ping""#,
    ] {
        assert_eq!(
            ClientFrame::parse(text),
            Err(ProtocolError::InvalidJson),
            "{text:?}"
        );
    }
}

#[test]
fn unknown_pusher_events_ignored() {
    let internal = ClientFrame::parse(r#"{"event":"pusher_internal:future","data":{}}"#);
    let pusher = ClientFrame::parse(r#"{"event":"pusher:future"}"#);
    assert_eq!(
        internal,
        Ok(ClientFrame::OtherPusherEvent(
            "pusher_internal:future".into()
        ))
    );
    assert_eq!(
        pusher,
        Ok(ClientFrame::OtherPusherEvent("pusher:future".into()))
    );
}

#[test]
fn unknown_fields_ignored() {
    let text = r#"{"event":"pusher:ping","data":{},"extra":[1,2],"id":7}"#;
    assert_eq!(ClientFrame::parse(text), Ok(ClientFrame::Ping));
}

#[test]
fn client_event_keeps_escaped_name() {
    let text = r#"{"event":"client-\u0041","channel":"private-\u0061","data":1}"#;
    let Ok(ClientFrame::ClientEvent {
        event,
        channel,
        data,
    }) = ClientFrame::parse(text)
    else {
        panic!("client event did not parse");
    };
    assert_eq!(event, "client-A");
    assert_eq!(channel.as_deref(), Some("private-a"));
    assert_eq!(data.map(RawValue::get), Some("1"));
}

#[test]
fn client_event_without_data() {
    let frame = client_event("client-x", "private-a", None, None);
    assert_eq!(frame, r#"{"event":"client-x","channel":"private-a"}"#);
}

#[test]
fn member_added_without_user_info() {
    let frame = member_added("presence-a", "u-1", None);
    let expected = r#"{"event":"pusher_internal:member_added","channel":"presence-a","data":"{\"user_id\":\"u-1\"}"}"#;
    assert_eq!(frame, expected);
}

#[test]
fn presence_data_null_user_info() {
    let data = roster_data(&[r#"{"user_id":"solo"}"#]);
    assert_eq!(
        data,
        r#"{"presence":{"ids":["solo"],"hash":{"solo":null},"count":1}}"#
    );
}

#[test]
fn error_message_escaped() {
    let frame = error(None, "quote \" backslash \\ newline \n");
    let parsed: Value = serde_json::from_str(&frame).expect("error frame is valid JSON");
    assert_eq!(
        parsed["data"]["message"],
        "quote \" backslash \\ newline \n"
    );
}

#[test]
fn api_event_data_stays_string() {
    let frame = api_event("e", "c", "{\"a\":\"\u{fc}\"}");
    assert_eq!(
        frame,
        "{\"event\":\"e\",\"channel\":\"c\",\"data\":\"{\\\"a\\\":\\\"\u{fc}\\\"}\"}"
    );
}

#[test]
fn client_event_null_data() {
    let text = r#"{"event":"client-x","channel":"private-a","data":null}"#;
    let Ok(ClientFrame::ClientEvent { data, .. }) = ClientFrame::parse(text) else {
        panic!("client event did not parse");
    };
    assert_eq!(data.map(RawValue::get), Some("null"));
}

#[test]
fn parse_rejects_json_array_frames() {
    assert_eq!(
        ClientFrame::parse(r#"["pusher:ping"]"#),
        Err(ProtocolError::InvalidJson)
    );
    assert_eq!(
        ClientFrame::parse(r#"  ["client-a", "private-a"]"#),
        Err(ProtocolError::InvalidJson)
    );
    assert_eq!(
        ClientFrame::parse(r#" {"event":"pusher:ping"}"#),
        Ok(ClientFrame::Ping)
    );
}

#[test]
fn parse_rejects_subscribe_data_arrays() {
    let error = ClientFrame::parse(r#"{"event":"pusher:subscribe","data":["orders"]}"#);
    assert!(
        matches!(error, Err(ProtocolError::InvalidEventData { .. })),
        "{error:?}"
    );
    let error = ClientFrame::parse(r#"{"event":"pusher:subscribe","data":"[\"orders\"]"}"#);
    assert!(
        matches!(error, Err(ProtocolError::InvalidEventData { .. })),
        "{error:?}"
    );
}
