//! Pusher JSON frames: parsing what clients send and serializing what the server sends.
//!
//! Server-generated `data` of `pusher:` and `pusher_internal:` events is double-encoded (a
//! JSON string holding JSON), except for `pusher:error` and `pusher:subscription_error`,
//! whose `data` is an object. Client event `data` is relayed byte for byte.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::ProtocolError;

/// One parsed client-to-server frame.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    /// `pusher:ping`; the server replies with `pusher:pong`.
    Ping,
    /// `pusher:pong`; counts as activity only.
    Pong,
    /// `pusher:subscribe`.
    Subscribe(SubscribeData),
    /// `pusher:unsubscribe`.
    Unsubscribe(UnsubscribeData),
    /// `pusher:signin`, which this node does not support yet.
    Signin,
    /// A `client-` event to relay.
    ClientEvent {
        /// Event name, starting with `client-`.
        event: Cow<'a, str>,
        /// Target channel, if the frame names one.
        channel: Option<Cow<'a, str>>,
        /// The `data` value exactly as received, if present.
        data: Option<&'a RawValue>,
    },
    /// Another `pusher:` or `pusher_internal:` event, ignored for forward compatibility.
    OtherPusherEvent(Cow<'a, str>),
}

impl PartialEq for ClientFrame<'_> {
    /// Compares client event `data` by its exact JSON text.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Ping, Self::Ping) | (Self::Pong, Self::Pong) | (Self::Signin, Self::Signin) => {
                true
            }
            (Self::Subscribe(a), Self::Subscribe(b)) => a == b,
            (Self::Unsubscribe(a), Self::Unsubscribe(b)) => a == b,
            (Self::OtherPusherEvent(a), Self::OtherPusherEvent(b)) => a == b,
            (
                Self::ClientEvent {
                    event,
                    channel,
                    data,
                },
                Self::ClientEvent {
                    event: other_event,
                    channel: other_channel,
                    data: other_data,
                },
            ) => {
                event == other_event
                    && channel == other_channel
                    && data.map(RawValue::get) == other_data.map(RawValue::get)
            }
            _ => false,
        }
    }
}

/// The `data` of a `pusher:subscribe` frame.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct SubscribeData {
    /// Channel name as sent, not yet validated.
    pub channel: String,
    /// `key:signature`; pusher-js sends `""` for public channels and Java omits it.
    #[serde(default)]
    pub auth: Option<String>,
    /// Presence member data: a string holding JSON, signed exactly as received.
    #[serde(default)]
    pub channel_data: Option<String>,
}

/// The `data` of a `pusher:unsubscribe` frame.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct UnsubscribeData {
    /// Channel name as sent.
    pub channel: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// Keeps `"data":null` as the raw text `null`, so that a client event relays it unchanged.
/// Only a missing `data` field becomes `None`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl<'a> ClientFrame<'a> {
    /// Parses one WebSocket text frame.
    pub fn parse(text: &'a str) -> Result<Self, ProtocolError> {
        if !is_json_object(text) {
            return Err(ProtocolError::InvalidJson);
        }
        let envelope: Envelope<'a> =
            serde_json::from_str(text).map_err(|_| ProtocolError::InvalidJson)?;
        let frame = match envelope.event.as_ref() {
            "pusher:ping" => Self::Ping,
            "pusher:pong" => Self::Pong,
            "pusher:subscribe" => Self::Subscribe(pusher_data("pusher:subscribe", envelope.data)?),
            "pusher:unsubscribe" => {
                Self::Unsubscribe(pusher_data("pusher:unsubscribe", envelope.data)?)
            }
            "pusher:signin" => Self::Signin,
            name if name.starts_with("client-") => Self::ClientEvent {
                event: envelope.event,
                channel: envelope.channel,
                data: envelope.data,
            },
            name if name.starts_with("pusher:") || name.starts_with("pusher_internal:") => {
                Self::OtherPusherEvent(envelope.event)
            }
            _ => return Err(ProtocolError::UnsupportedEvent(envelope.event.into_owned())),
        };
        Ok(frame)
    }
}

/// Decodes the `data` of a `pusher:` event, given as an object or as a string holding one.
fn pusher_data<T: DeserializeOwned>(
    event: &'static str,
    data: Option<&RawValue>,
) -> Result<T, ProtocolError> {
    let invalid = |problem| ProtocolError::InvalidEventData { event, problem };
    let raw = data.ok_or(invalid("data is missing"))?.get();
    let expected = || invalid("expected an object with a string channel");
    if raw.starts_with('"') {
        let inner: String = serde_json::from_str(raw).map_err(|_| invalid("invalid string"))?;
        if !is_json_object(&inner) {
            return Err(expected());
        }
        serde_json::from_str(&inner).map_err(|_| expected())
    } else if is_json_object(raw) {
        serde_json::from_str(raw).map_err(|_| expected())
    } else {
        Err(expected())
    }
}

/// Returns whether `text` is a JSON object rather than another value. serde fills a
/// struct from a JSON array too, field by field, so this is checked before parsing.
pub(crate) fn is_json_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

#[derive(Serialize)]
struct Outgoing<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

fn serialize<T: Serialize>(value: &T) -> String {
    // Serializing strings, numbers and maps with string keys into memory cannot fail.
    serde_json::to_string(value).expect("frame serialization is infallible")
}

fn envelope<D: Serialize>(
    event: &str,
    channel: Option<&str>,
    data: Option<D>,
    user_id: Option<&str>,
) -> String {
    serialize(&Outgoing {
        event,
        channel,
        data,
        user_id,
    })
}

pub(crate) fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        socket_id: &'a str,
        activity_timeout: u64,
    }
    let data = serialize(&Data {
        socket_id,
        activity_timeout: activity_timeout_secs,
    });
    envelope("pusher:connection_established", None, Some(data), None)
}

pub(crate) fn error(code: Option<u16>, message: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        code: Option<u16>,
        message: &'a str,
    }
    envelope("pusher:error", None, Some(Data { code, message }), None)
}

pub(crate) fn pong() -> String {
    envelope("pusher:pong", None, Some(serde_json::Map::new()), None)
}

/// `data` is JSON text, sent double-encoded.
pub(crate) fn subscription_succeeded(channel: &str, data: &str) -> String {
    envelope(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        Some(data),
        None,
    )
}

pub(crate) fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        error: &'a str,
        status: u16,
    }
    let data = Data {
        kind,
        error,
        status,
    };
    envelope("pusher:subscription_error", Some(channel), Some(data), None)
}

pub(crate) fn member_added(channel: &str, user_id: &str, user_info: Option<&RawValue>) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_info: Option<&'a RawValue>,
    }
    let data = serialize(&Data { user_id, user_info });
    envelope(
        "pusher_internal:member_added",
        Some(channel),
        Some(data),
        None,
    )
}

pub(crate) fn member_removed(channel: &str, user_id: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_id: &'a str,
    }
    let data = serialize(&Data { user_id });
    envelope(
        "pusher_internal:member_removed",
        Some(channel),
        Some(data),
        None,
    )
}

/// Presence `subscription_succeeded` data: `ids`, `hash` (id to `user_info`) and `count`.
pub(crate) fn presence_data<'a>(
    members: impl Iterator<Item = (&'a str, Option<&'a RawValue>)> + Clone,
) -> String {
    #[derive(Serialize)]
    struct Presence<'a, H: Serialize> {
        ids: Vec<&'a str>,
        hash: H,
        count: usize,
    }
    #[derive(Serialize)]
    struct Data<'a, H: Serialize> {
        presence: Presence<'a, H>,
    }
    let ids: Vec<&str> = members.clone().map(|(id, _)| id).collect();
    let data = Data {
        presence: Presence {
            count: ids.len(),
            ids,
            hash: HashView(members),
        },
    };
    serialize(&data)
}

/// Serializes `(id, user_info)` pairs as a JSON object, `null` for a missing `user_info`.
struct HashView<I>(I);

impl<'a, I> Serialize for HashView<I>
where
    I: Iterator<Item = (&'a str, Option<&'a RawValue>)> + Clone,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.clone())
    }
}

/// Serializes an event published through the HTTP API; `data` is sent as a JSON string.
pub(crate) fn api_event(event: &str, channel: &str, data: &str) -> String {
    envelope(event, Some(channel), Some(data), None)
}

/// Serializes a client event for the other subscribers, with its `data` unchanged.
pub(crate) fn client_event(
    event: &str,
    channel: &str,
    data: Option<&RawValue>,
    user_id: Option<&str>,
) -> String {
    envelope(event, Some(channel), data, user_id)
}

#[cfg(test)]
mod tests;
