//! Error types, one per failure set, each mapped to its wire form by an exhaustive `match`.
//!
//! `Display` texts are lowercase for logs; the texts sent to clients are separate methods,
//! because several of them must match hosted Pusher's wording.

use std::fmt;

/// Why a WebSocket connection was rejected before `pusher:connection_established`.
///
/// The host sends [`ConnectError::frame`] and then closes with [`ConnectError::close_code`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The key in `/app/{key}` belongs to no app. Clients give up (4001).
    UnknownApp,
    /// The `protocol` query parameter is not a decimal integer (4006).
    InvalidProtocolVersion,
    /// The `protocol` version is outside 4 to 7 (4007).
    UnsupportedProtocolVersion(u32),
    /// The node has its maximum number of connections; clients retry after a delay (4100).
    OverCapacity,
    /// The node is shutting down; clients reconnect at once, to another node (4200).
    ShuttingDown,
}

impl ConnectError {
    /// Returns the Pusher close code, also carried in the error frame.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::UnknownApp => 4001,
            Self::InvalidProtocolVersion => 4006,
            Self::UnsupportedProtocolVersion(_) => 4007,
            Self::OverCapacity => 4100,
            Self::ShuttingDown => 4200,
        }
    }

    /// Returns the message sent to the client.
    pub fn message(&self) -> &'static str {
        match self {
            Self::UnknownApp => "Application does not exist",
            Self::InvalidProtocolVersion => "Invalid version string format",
            Self::UnsupportedProtocolVersion(_) => "Unsupported protocol version",
            Self::OverCapacity => "Over capacity",
            Self::ShuttingDown => "Server is shutting down, reconnect",
        }
    }

    /// Returns the `pusher:error` frame to send before closing.
    pub fn frame(&self) -> String {
        crate::frame::error(Some(self.close_code()), self.message())
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownApp => f.write_str("unknown app key"),
            Self::InvalidProtocolVersion => f.write_str("protocol version is not an integer"),
            Self::UnsupportedProtocolVersion(v) => write!(f, "unsupported protocol version {v}"),
            Self::OverCapacity => f.write_str("node is at its connection limit"),
            Self::ShuttingDown => f.write_str("node is shutting down"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// The reason a channel name is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelNameError {
    /// The name is empty.
    Empty,
    /// The name is longer than the configured maximum.
    TooLong {
        /// Length of the name in bytes.
        len: usize,
        /// Configured maximum in bytes.
        max: usize,
    },
    /// The name contains a character outside `A-Z a-z 0-9 _ - = @ , . ;`.
    InvalidCharacter,
    /// The name starts with `#` but is not `#server-to-user-{user_id}`.
    ReservedName,
}

impl fmt::Display for ChannelNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("channel name is empty"),
            Self::TooLong { len, max } => {
                write!(f, "channel name is {len} bytes long, the maximum is {max}")
            }
            Self::InvalidCharacter => f.write_str(
                "channel name may only contain A-Z, a-z, 0-9, and the characters _ - = @ , . ;",
            ),
            Self::ReservedName => {
                f.write_str("channel names starting with # are reserved for #server-to-user-")
            }
        }
    }
}

impl std::error::Error for ChannelNameError {}

/// A client mistake, reported with `pusher:error` or, for an oversized frame, a close.
///
/// The connection stays open unless [`ProtocolError::close_code`] returns a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// The text frame is not a JSON object with a string `event`.
    InvalidJson,
    /// A binary frame arrived; the protocol uses text frames only.
    BinaryFrame,
    /// A text frame exceeded the frame size limit (close 1009).
    FrameTooLarge {
        /// Configured maximum in bytes.
        max: usize,
    },
    /// The event name starts with neither `pusher:` nor `client-`.
    UnsupportedEvent(String),
    /// A `pusher:` event whose `data` lacks a required field or has the wrong type.
    InvalidEventData {
        /// The event name, such as `pusher:subscribe`.
        event: &'static str,
        /// The problem with `data`.
        problem: &'static str,
    },
    /// Client events are disabled for the app.
    ClientEventsDisabled,
    /// The client event name is longer than the limit.
    ClientEventNameTooLong {
        /// Configured maximum in bytes.
        max: usize,
    },
    /// The client event has no `channel`.
    ClientEventMissingChannel,
    /// The client event targets a channel that is neither private nor presence.
    ClientEventChannelKind,
    /// The client event targets a `private-encrypted-` channel.
    ClientEventEncryptedChannel,
    /// The sender is not subscribed to the channel of its client event.
    ClientEventNotSubscribed(String),
    /// The client event's `data` is larger than the limit.
    ClientEventTooLarge {
        /// Configured maximum in bytes.
        max: usize,
    },
    /// The connection sent more client events per second than allowed (4301).
    ClientEventRateLimited,
    /// `pusher:signin` arrived, but this node does not support user sign-in (4009).
    SigninNotSupported,
}

impl ProtocolError {
    /// Returns the code of the `pusher:error` frame; `None` is sent as `null`.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::ClientEventRateLimited => Some(4301),
            Self::SigninNotSupported => Some(4009),
            Self::FrameTooLarge { .. } => Some(1009),
            Self::InvalidJson
            | Self::BinaryFrame
            | Self::UnsupportedEvent(_)
            | Self::InvalidEventData { .. }
            | Self::ClientEventsDisabled
            | Self::ClientEventNameTooLong { .. }
            | Self::ClientEventMissingChannel
            | Self::ClientEventChannelKind
            | Self::ClientEventEncryptedChannel
            | Self::ClientEventNotSubscribed(_)
            | Self::ClientEventTooLarge { .. } => None,
        }
    }

    /// Returns the WebSocket close code when this error ends the connection.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::FrameTooLarge { .. } => Some(1009),
            Self::InvalidJson
            | Self::BinaryFrame
            | Self::UnsupportedEvent(_)
            | Self::InvalidEventData { .. }
            | Self::ClientEventsDisabled
            | Self::ClientEventNameTooLong { .. }
            | Self::ClientEventMissingChannel
            | Self::ClientEventChannelKind
            | Self::ClientEventEncryptedChannel
            | Self::ClientEventNotSubscribed(_)
            | Self::ClientEventTooLarge { .. }
            | Self::ClientEventRateLimited
            | Self::SigninNotSupported => None,
        }
    }

    /// Returns the message sent to the client, in hosted Pusher's wording where it has one.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidJson => "Invalid JSON".into(),
            Self::BinaryFrame => "Binary frames are not supported, send JSON text frames".into(),
            Self::FrameTooLarge { max } => format!("Message exceeds the {max} byte limit"),
            Self::UnsupportedEvent(name) => {
                format!(
                    "Unsupported event received on socket: {}",
                    truncate(name, 200)
                )
            }
            Self::InvalidEventData { event, problem } => format!("Invalid {event} data: {problem}"),
            Self::ClientEventsDisabled => "To send client events, you must enable this feature \
                in the Settings page of your dashboard."
                .into(),
            Self::ClientEventNameTooLong { max } => {
                format!("Client event rejected - event name longer than {max} characters")
            }
            Self::ClientEventMissingChannel => "Client event rejected - no channel given".into(),
            Self::ClientEventChannelKind => {
                "Client event rejected - only supported on private and presence channels".into()
            }
            Self::ClientEventEncryptedChannel => {
                "Client event rejected - not supported on private-encrypted- channels".into()
            }
            Self::ClientEventNotSubscribed(channel) => format!(
                "Cannot broadcast client event (connection not subscribed to channel {})",
                truncate(channel, 200)
            ),
            Self::ClientEventTooLarge { max } => {
                format!("Client event rejected - data larger than {max} bytes")
            }
            Self::ClientEventRateLimited => "Client event rejected due to rate limit".into(),
            Self::SigninNotSupported => {
                "User authentication is not supported by this server".into()
            }
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidJson => f.write_str("frame is not a JSON object with a string event"),
            Self::BinaryFrame => f.write_str("binary frame received"),
            Self::FrameTooLarge { max } => write!(f, "text frame larger than {max} bytes"),
            Self::UnsupportedEvent(_) => f.write_str("unsupported event name"),
            Self::InvalidEventData { event, problem } => {
                write!(f, "invalid {event} data: {problem}")
            }
            Self::ClientEventsDisabled => f.write_str("client events are disabled"),
            Self::ClientEventNameTooLong { max } => {
                write!(f, "client event name longer than {max} bytes")
            }
            Self::ClientEventMissingChannel => f.write_str("client event without channel"),
            Self::ClientEventChannelKind => f.write_str("client event on a public channel"),
            Self::ClientEventEncryptedChannel => {
                f.write_str("client event on an encrypted channel")
            }
            Self::ClientEventNotSubscribed(_) => {
                f.write_str("client event on an unsubscribed channel")
            }
            Self::ClientEventTooLarge { max } => {
                write!(f, "client event data larger than {max} bytes")
            }
            Self::ClientEventRateLimited => f.write_str("client event rate limit reached"),
            Self::SigninNotSupported => f.write_str("user sign-in is not supported"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why a `pusher:subscribe` was rejected. The socket stays connected and unsubscribed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscribeError {
    /// The channel name is invalid.
    InvalidChannel(ChannelNameError),
    /// A protected channel was requested without an `auth` value.
    MissingAuth,
    /// The part of `auth` before the colon is not the app key.
    InvalidKey,
    /// The HMAC in `auth` does not match the expected one.
    InvalidSignature {
        /// The string the signature must cover.
        string_to_sign: String,
        /// The signature part the client presented.
        presented: String,
    },
    /// A presence subscription without `channel_data`.
    MissingChannelData,
    /// `channel_data` is not a JSON object with a string or number `user_id`.
    InvalidChannelData,
    /// The presence `user_id` is longer than the limit.
    InvalidUserId {
        /// Configured maximum in bytes.
        max: usize,
    },
    /// The presence `user_info` is larger than the limit.
    UserInfoTooLarge {
        /// Configured maximum in bytes.
        max: usize,
    },
    /// The presence channel already has the maximum number of distinct users.
    MemberLimitReached {
        /// Configured maximum.
        max: usize,
    },
    /// The connection is already subscribed to the maximum number of channels.
    ChannelLimitReached {
        /// Configured maximum.
        max: usize,
    },
    /// `#server-to-user-` channels need user sign-in, which this node does not support.
    UserChannelNotSignedIn,
}

impl SubscribeError {
    /// Returns the `type` of the `pusher:subscription_error` frame.
    pub fn error_type(&self) -> &'static str {
        match self.status() {
            400 => "InvalidChannel",
            401 => "AuthError",
            _ => "LimitReached",
        }
    }

    /// Returns the HTTP-style `status` of the `pusher:subscription_error` frame.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidChannel(_) => 400,
            Self::MissingAuth
            | Self::InvalidKey
            | Self::InvalidSignature { .. }
            | Self::MissingChannelData
            | Self::InvalidChannelData
            | Self::UserChannelNotSignedIn => 401,
            Self::InvalidUserId { .. }
            | Self::UserInfoTooLarge { .. }
            | Self::MemberLimitReached { .. }
            | Self::ChannelLimitReached { .. } => 403,
        }
    }

    /// Returns the short `error` text of the `pusher:subscription_error` frame.
    pub fn short_message(&self) -> &'static str {
        match self {
            Self::InvalidChannel(_) => "Invalid channel name",
            Self::MissingAuth => "Missing auth",
            Self::InvalidKey => "Invalid key in subscription auth data",
            Self::InvalidSignature { .. } => "Invalid signature",
            Self::MissingChannelData => "Missing channel_data",
            Self::InvalidChannelData => "Invalid channel_data",
            Self::InvalidUserId { .. } => "Invalid user_id",
            Self::UserInfoTooLarge { .. } => "user_info too large",
            Self::MemberLimitReached { .. } => "Presence member limit reached",
            Self::ChannelLimitReached { .. } => "Channel limit reached",
            Self::UserChannelNotSignedIn => "Not signed in",
        }
    }

    /// Returns the message of the `pusher:error` frame, in hosted Pusher's wording.
    pub fn message(&self, channel: &str) -> String {
        let channel = truncate(channel, 200);
        match self {
            Self::InvalidChannel(e) => format!("Invalid channel name '{channel}': {e}"),
            Self::MissingAuth => format!("Missing auth for protected channel {channel}"),
            Self::InvalidKey => "Invalid key in subscription auth data".into(),
            Self::InvalidSignature {
                string_to_sign,
                presented,
            } => format!(
                "Invalid signature: Expected HMAC SHA256 hex digest of {string_to_sign}, \
                 but got {presented}"
            ),
            Self::MissingChannelData => {
                format!("Presence channel {channel} requires channel_data")
            }
            Self::InvalidChannelData => {
                "Invalid channel_data: expected a JSON object with a string or number user_id"
                    .into()
            }
            Self::InvalidUserId { max } => {
                format!("Invalid user_id: it is longer than {max} bytes")
            }
            Self::UserInfoTooLarge { max } => {
                format!("Presence user_info is larger than {max} bytes")
            }
            Self::MemberLimitReached { max } => {
                format!("Presence channel {channel} already has the maximum of {max} members")
            }
            Self::ChannelLimitReached { max } => {
                format!("Connection is already subscribed to the maximum of {max} channels")
            }
            Self::UserChannelNotSignedIn => {
                format!("Subscribing to {channel} requires a signed-in user")
            }
        }
    }
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidChannel(e) => write!(f, "invalid channel name: {e}"),
            Self::MissingAuth => f.write_str("missing auth"),
            Self::InvalidKey => f.write_str("auth key does not match the app key"),
            Self::InvalidSignature { .. } => f.write_str("invalid subscription signature"),
            Self::MissingChannelData => f.write_str("missing channel_data"),
            Self::InvalidChannelData => f.write_str("invalid channel_data"),
            Self::InvalidUserId { .. } => f.write_str("invalid user_id"),
            Self::UserInfoTooLarge { max } => write!(f, "user_info larger than {max} bytes"),
            Self::MemberLimitReached { max } => write!(f, "presence channel has {max} members"),
            Self::ChannelLimitReached { max } => write!(f, "connection has {max} channels"),
            Self::UserChannelNotSignedIn => f.write_str("user channel without sign-in"),
        }
    }
}

impl std::error::Error for SubscribeError {}

/// The reason an HTTP API request failed. Each variant maps to one status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// No API route matches the path (404).
    PathNotFound,
    /// The route exists but not for this method (405).
    MethodNotAllowed,
    /// The app id in the path is not this node's app (404).
    AppNotFound,
    /// A required `auth_*` query parameter is missing (401).
    MissingAuthParam(&'static str),
    /// `auth_key` is not the app's key (401).
    InvalidAuthKey,
    /// `auth_version` is not `1.0` (401).
    InvalidAuthVersion,
    /// `auth_timestamp` is not an integer or is 600 s or more away from the server time (401).
    TimestampExpired,
    /// The body is not empty and `body_md5` is missing (401).
    MissingBodyMd5,
    /// `body_md5` does not match the MD5 of the body (401).
    BodyMd5Mismatch,
    /// `auth_signature` does not match (401).
    InvalidSignature,
    /// The query string is not valid UTF-8 after percent-decoding (400).
    InvalidQueryString,
    /// The body is not a JSON object of the expected shape (400).
    InvalidJson,
    /// A required parameter is missing (400).
    MissingParam(&'static str),
    /// A parameter has the wrong type or form (400).
    InvalidParam(&'static str),
    /// The event name is empty or longer than the limit (400).
    InvalidEventName {
        /// Configured maximum in bytes.
        max: usize,
    },
    /// The event name starts with `pusher:` or `pusher_internal:` (400).
    ReservedEventName,
    /// A channel name is invalid (400).
    InvalidChannel(ChannelNameError),
    /// More channels than allowed in one trigger (400).
    TooManyChannels {
        /// Configured maximum.
        max: usize,
    },
    /// More events than allowed in one batch (400).
    TooManyEvents {
        /// Configured maximum.
        max: usize,
    },
    /// A batch event names `channels` instead of one `channel` (400).
    BatchEventWithChannels,
    /// `socket_id` does not match `^\d+\.\d+$` (400).
    InvalidSocketId,
    /// A multi-channel trigger includes a `private-encrypted-` channel (400).
    EncryptedMultiChannel,
    /// An `info` attribute is unknown or does not apply (400).
    InvalidInfo(String),
    /// `info=user_count` on channels that are not all presence channels (400).
    UserCountRequiresPresence,
    /// `/users` on a channel that is not a presence channel (400).
    NotPresenceChannel,
    /// An event's `data` is larger than the limit (413).
    DataTooLarge {
        /// Configured maximum in bytes.
        max: usize,
    },
    /// The request body is larger than the limit (413).
    BodyTooLarge {
        /// Configured maximum in bytes.
        max: usize,
    },
}

impl ApiError {
    /// Returns the HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::PathNotFound | Self::AppNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::MissingAuthParam(_)
            | Self::InvalidAuthKey
            | Self::InvalidAuthVersion
            | Self::TimestampExpired
            | Self::MissingBodyMd5
            | Self::BodyMd5Mismatch
            | Self::InvalidSignature => 401,
            Self::InvalidQueryString
            | Self::InvalidJson
            | Self::MissingParam(_)
            | Self::InvalidParam(_)
            | Self::InvalidEventName { .. }
            | Self::ReservedEventName
            | Self::InvalidChannel(_)
            | Self::TooManyChannels { .. }
            | Self::TooManyEvents { .. }
            | Self::BatchEventWithChannels
            | Self::InvalidSocketId
            | Self::EncryptedMultiChannel
            | Self::InvalidInfo(_)
            | Self::UserCountRequiresPresence
            | Self::NotPresenceChannel => 400,
            Self::DataTooLarge { .. } | Self::BodyTooLarge { .. } => 413,
        }
    }

    /// Returns the JSON body `{"error": "..."}` sent with the status.
    pub fn body(&self) -> String {
        let mut text = self.to_string();
        if let Some(first) = text.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        serde_json::json!({ "error": text }).to_string()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PathNotFound => f.write_str("no API endpoint at this path"),
            Self::MethodNotAllowed => f.write_str("method not allowed for this endpoint"),
            Self::AppNotFound => f.write_str("unknown app id"),
            Self::MissingAuthParam(name) => write!(f, "missing query parameter {name}"),
            Self::InvalidAuthKey => f.write_str("auth_key does not belong to this app"),
            Self::InvalidAuthVersion => f.write_str("auth_version must be 1.0"),
            Self::TimestampExpired => f.write_str(
                "auth_timestamp must be Unix seconds within 600 s of the server's clock",
            ),
            Self::MissingBodyMd5 => f.write_str("body_md5 is required with a request body"),
            Self::BodyMd5Mismatch => f.write_str("body_md5 does not match the request body"),
            Self::InvalidSignature => f.write_str(
                "invalid auth_signature: sign METHOD\\nPATH\\nSORTED_QUERY with the app secret",
            ),
            Self::InvalidQueryString => f.write_str("query string is not valid UTF-8"),
            Self::InvalidJson => f.write_str("request body is not a valid JSON object"),
            Self::MissingParam(name) => write!(f, "missing parameter {name}"),
            Self::InvalidParam(problem) => write!(f, "invalid parameter: {problem}"),
            Self::InvalidEventName { max } => {
                write!(f, "event name must be 1 to {max} characters")
            }
            Self::ReservedEventName => {
                f.write_str("event names starting with pusher: or pusher_internal: are reserved")
            }
            Self::InvalidChannel(e) => write!(f, "invalid channel: {e}"),
            Self::TooManyChannels { max } => write!(f, "at most {max} channels per event"),
            Self::TooManyEvents { max } => write!(f, "at most {max} events per batch"),
            Self::BatchEventWithChannels => {
                f.write_str("batch events take a single channel, not channels")
            }
            Self::InvalidSocketId => f.write_str("socket_id must look like 1234.5678"),
            Self::EncryptedMultiChannel => {
                f.write_str("events to private-encrypted- channels must name exactly one channel")
            }
            Self::InvalidInfo(attribute) => {
                write!(
                    f,
                    "info attribute '{}' is not supported here",
                    truncate(attribute, 50)
                )
            }
            Self::UserCountRequiresPresence => {
                f.write_str("info=user_count is only available for presence channels")
            }
            Self::NotPresenceChannel => f.write_str("users are only listed for presence channels"),
            Self::DataTooLarge { max } => write!(f, "event data is larger than {max} bytes"),
            Self::BodyTooLarge { max } => write!(f, "request body is larger than {max} bytes"),
        }
    }
}

impl std::error::Error for ApiError {}

/// A configuration value the node cannot run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The app key is empty.
    MissingAppKey,
    /// The app key contains characters that need escaping in a URL path.
    InvalidAppKey,
    /// The app secret is empty.
    MissingSecret,
    /// The app id is empty or contains characters that need escaping in a URL path.
    InvalidAppId,
    /// The activity timeout is zero or too large.
    InvalidActivityTimeout,
    /// The pong timeout is zero or longer than `u32::MAX` seconds.
    InvalidPongTimeout,
    /// The cluster heartbeat interval is zero or not shorter than the node timeout.
    InvalidClusterTimeouts,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingAppKey => f.write_str("app key is missing"),
            Self::InvalidAppKey => {
                f.write_str("app key may only contain A-Z, a-z, 0-9 and the characters - _ . ~")
            }
            Self::MissingSecret => f.write_str("app secret is missing"),
            Self::InvalidAppId => {
                f.write_str("app id may only contain A-Z, a-z, 0-9 and the characters - _ . ~")
            }
            Self::InvalidActivityTimeout => {
                f.write_str("activity timeout must be 1 to 4294967295 seconds")
            }
            Self::InvalidPongTimeout => {
                f.write_str("pong timeout must be greater than zero and at most 4294967295 seconds")
            }
            Self::InvalidClusterTimeouts => f.write_str(
                "cluster heartbeat interval must be greater than zero and shorter than the node timeout",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Cuts `text` to at most `max` bytes on a character boundary, for echoing client input.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
