//! The operations a model-based case replays, and the proptest strategies that draw them.
//!
//! Every operation is valid in every state: an operation on a slot that has no open
//! connection targets the slot's closed connection, or does nothing when the slot was never
//! used. Shrinking can therefore drop any operation and still replay the rest.

use proptest::collection::vec;
use proptest::prelude::*;

/// Number of connection slots. A slot has at most one open connection at a time.
pub const SLOTS: usize = 6;

/// The channels operations refer to by index, at least one of each kind.
pub const CHANNELS: [&str; 6] = [
    "orders",
    "cache-news",
    "private-orders",
    "private-encrypted-vault",
    "presence-lobby",
    "presence-room-7",
];

/// Number of distinct presence users.
pub const USERS: usize = 3;

/// A `filter_by_prefix` value for `GET /channels`, by index.
pub const PREFIXES: [&str; 4] = ["presence-", "private-", "orders", "p"];

/// An `info` value for the channel queries, by index. `None` leaves the parameter out.
pub const INFOS: [Option<&str>; 5] = [
    None,
    Some("user_count"),
    Some("subscription_count"),
    Some("user_count,subscription_count"),
    Some("occupied"),
];

/// What the connection request looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectKind {
    /// The right key, with the `protocol` parameter absent or one of 4 to 7.
    Valid(Option<u8>),
    /// A key the node does not serve (4001).
    UnknownKey,
    /// `protocol=abc` (4006).
    ProtocolNotInteger,
    /// `protocol=3` (4007).
    ProtocolUnsupported,
}

/// How the `auth` value of a subscription is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// Signed correctly for this socket.
    Valid,
    /// Correct except for the last hex digit.
    BadSignature,
    /// The right signature behind another key.
    WrongKey,
    /// No `auth` field, or an empty one.
    Missing,
    /// Signed for another socket id.
    OtherSocket,
    /// The frame carries `channel_data` but the signature leaves it out.
    SignatureWithoutChannelData,
}

/// What `channel_data` the subscribe frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelDataKind {
    /// None on public and private channels, a member on presence channels.
    Default,
    /// A member object, on any kind of channel.
    Member,
    /// No `channel_data` at all, also on presence channels.
    Absent,
    /// A string that is not a presence member (`{"id":"u-0"}`).
    NotMember,
}

/// The channel a subscribe frame names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One of [`CHANNELS`].
    Channel(usize),
    /// `bad channel`, which contains a space.
    InvalidName,
}

/// The `data` of a client event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientData {
    /// An object, compact.
    Object,
    /// An object with spaces, which must be relayed byte for byte.
    SpacedObject,
    /// A string.
    Text,
    /// No `data` field.
    Absent,
    /// A string above the 10 KiB data limit.
    TooLarge,
}

/// A frame or input that the node rejects or ignores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbage {
    /// Text that is not JSON.
    NotJson,
    /// `event` is a number.
    EventNotString,
    /// An event name with neither `pusher:` nor `client-` in front.
    UnsupportedEvent,
    /// An unknown `pusher:` event, ignored for forward compatibility.
    UnknownPusherEvent,
    /// `pusher:subscribe` without `data`.
    SubscribeWithoutData,
    /// `pusher:signin`, which the node does not support.
    Signin,
    /// A binary frame.
    Binary,
    /// A text frame one byte above the frame limit.
    OversizedText,
    /// The host's report that its WebSocket library dropped an oversized frame.
    OversizedReported,
    /// The host's report that the connection's outbound queue is full.
    Backpressure,
}

/// Which `socket_id` an API trigger excludes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exclude {
    /// No `socket_id` parameter.
    Nobody,
    /// The socket id of the slot's open or last closed connection.
    Slot(usize),
    /// A well-formed socket id no connection holds.
    Unknown,
    /// `abc`, which is not a socket id (400).
    Malformed,
}

/// How a signed API request is damaged after signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Sent as signed.
    None,
    /// The last hex digit of `auth_signature` changed.
    Signature,
    /// One byte of the body changed after `body_md5` was computed.
    Body,
    /// `auth_timestamp` 600 s behind the server clock, then signed.
    Timestamp,
}

/// One step of a model-based case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Open a connection in `slot` if the slot has none open.
    Connect { slot: usize, kind: ConnectKind },
    /// Send `pusher:subscribe`.
    Subscribe {
        slot: usize,
        target: Target,
        user: usize,
        auth: AuthKind,
        channel_data: ChannelDataKind,
        /// Send `data` as a string holding JSON instead of an object.
        data_as_string: bool,
        /// Format `channel_data` with spaces, as Python's `json.dumps` does.
        spaced: bool,
    },
    /// Send `pusher:unsubscribe`.
    Unsubscribe { slot: usize, channel: usize },
    /// Send a `client-` event. `channel: None` leaves the field out.
    ClientEvent {
        slot: usize,
        channel: Option<usize>,
        data: ClientData,
        long_name: bool,
        /// Add a `user_id` field, which the node must drop.
        spoofed_user_id: bool,
        /// How often to send the event at the same instant, to reach the rate limit.
        repeat: u8,
    },
    /// Send `pusher:ping`.
    Ping { slot: usize },
    /// Report a WebSocket Ping or Pong control frame.
    Activity { slot: usize },
    /// Send something the node rejects or ignores.
    Garbage { slot: usize, kind: Garbage },
    /// Publish through `POST /events` or, with `batch`, `POST /batch_events`.
    Trigger {
        channels: Vec<usize>,
        exclude: Exclude,
        batch: bool,
        info: bool,
        tamper: Tamper,
    },
    /// `GET /channels`.
    QueryChannels { prefix: Option<usize>, info: usize },
    /// `GET /channels/{name}`. `encode` percent-encodes the name's dashes.
    QueryChannel {
        channel: usize,
        info: usize,
        encode: bool,
    },
    /// `GET /channels/{name}/users`.
    QueryUsers { channel: usize },
    /// Report that the socket is gone.
    Disconnect { slot: usize },
    /// Let time pass, calling `handle_timeout` at every instant `poll_timeout` names.
    Advance { secs: u64 },
    /// Shut the node down.
    Shutdown,
}

/// Generates a slot, mostly one of the first three, so that the same connections meet often.
fn slot() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0..3usize, 1 => 3..SLOTS]
}

/// Generates a channel index, weighted towards `presence-lobby` so that members meet.
fn channel() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        1 => Just(1),
        2 => Just(2),
        1 => Just(3),
        4 => Just(4),
        1 => Just(5),
    ]
}

/// Generates a channel that takes client events, most of the time.
fn client_event_channel() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        3 => Just(Some(2usize)),
        4 => Just(Some(4)),
        1 => Just(Some(5)),
        2 => channel().prop_map(Some),
        1 => Just(None),
    ]
}

fn connect_kind() -> impl Strategy<Value = ConnectKind> {
    prop_oneof![
        12 => prop::option::of(4u8..=7).prop_map(ConnectKind::Valid),
        1 => Just(ConnectKind::UnknownKey),
        1 => Just(ConnectKind::ProtocolNotInteger),
        1 => Just(ConnectKind::ProtocolUnsupported),
    ]
}

fn auth_kind() -> impl Strategy<Value = AuthKind> {
    prop_oneof![
        25 => Just(AuthKind::Valid),
        1 => Just(AuthKind::BadSignature),
        1 => Just(AuthKind::WrongKey),
        1 => Just(AuthKind::Missing),
        1 => Just(AuthKind::OtherSocket),
        1 => Just(AuthKind::SignatureWithoutChannelData),
    ]
}

fn channel_data_kind() -> impl Strategy<Value = ChannelDataKind> {
    prop_oneof![
        20 => Just(ChannelDataKind::Default),
        1 => Just(ChannelDataKind::Member),
        1 => Just(ChannelDataKind::Absent),
        1 => Just(ChannelDataKind::NotMember),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        20 => channel().prop_map(Target::Channel),
        1 => Just(Target::InvalidName),
    ]
}

fn client_data() -> impl Strategy<Value = ClientData> {
    prop_oneof![
        4 => Just(ClientData::Object),
        2 => Just(ClientData::SpacedObject),
        2 => Just(ClientData::Text),
        1 => Just(ClientData::Absent),
        1 => Just(ClientData::TooLarge),
    ]
}

fn garbage() -> impl Strategy<Value = Garbage> {
    prop_oneof![
        Just(Garbage::NotJson),
        Just(Garbage::EventNotString),
        Just(Garbage::UnsupportedEvent),
        Just(Garbage::UnknownPusherEvent),
        Just(Garbage::SubscribeWithoutData),
        Just(Garbage::Signin),
        Just(Garbage::Binary),
        Just(Garbage::OversizedText),
        Just(Garbage::OversizedReported),
        Just(Garbage::Backpressure),
    ]
}

fn exclude() -> impl Strategy<Value = Exclude> {
    prop_oneof![
        3 => Just(Exclude::Nobody),
        4 => slot().prop_map(Exclude::Slot),
        1 => Just(Exclude::Unknown),
        1 => Just(Exclude::Malformed),
    ]
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        12 => Just(Tamper::None),
        1 => Just(Tamper::Signature),
        1 => Just(Tamper::Body),
        1 => Just(Tamper::Timestamp),
    ]
}

/// Generates time steps around the 1 s client event window, the 120 s activity timeout and the 30 s
/// pong timeout. Long steps are rare, because they close every silent connection.
fn advance_secs() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(1),
        2 => Just(29),
        2 => Just(31),
        1 => Just(0),
        1 => Just(60),
        1 => Just(119),
        1 => Just(121),
        1 => Just(150),
        1 => Just(400),
    ]
}

fn subscribe() -> impl Strategy<Value = Op> {
    (
        slot(),
        target(),
        0..USERS,
        auth_kind(),
        channel_data_kind(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(slot, target, user, auth, channel_data, data_as_string, spaced)| Op::Subscribe {
                slot,
                target,
                user,
                auth,
                channel_data,
                data_as_string,
                spaced,
            },
        )
}

fn client_event() -> impl Strategy<Value = Op> {
    let long_name = prop::bool::weighted(0.05);
    let spoofed_user_id = prop::bool::weighted(0.2);
    let repeat = prop_oneof![6 => Just(1u8), 1 => Just(5)];
    let fields = (
        slot(),
        client_event_channel(),
        client_data(),
        long_name,
        spoofed_user_id,
        repeat,
    );
    fields.prop_map(
        |(slot, channel, data, long_name, spoofed_user_id, repeat)| Op::ClientEvent {
            slot,
            channel,
            data,
            long_name,
            spoofed_user_id,
            repeat,
        },
    )
}

fn trigger() -> impl Strategy<Value = Op> {
    (
        vec(channel(), 1..=3),
        exclude(),
        prop::bool::weighted(0.3),
        any::<bool>(),
        tamper(),
    )
        .prop_map(|(channels, exclude, batch, info, tamper)| Op::Trigger {
            channels,
            exclude,
            batch,
            info,
            tamper,
        })
}

fn query() -> impl Strategy<Value = Op> {
    let info = 0..INFOS.len();
    prop_oneof![
        (prop::option::of(0..PREFIXES.len()), info.clone())
            .prop_map(|(prefix, info)| Op::QueryChannels { prefix, info }),
        (channel(), info, any::<bool>()).prop_map(|(channel, info, encode)| {
            Op::QueryChannel {
                channel,
                info,
                encode,
            }
        }),
        channel().prop_map(|channel| Op::QueryUsers { channel }),
    ]
}

/// Generates one operation, weighted towards connecting and subscribing so that channels fill up.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (slot(), connect_kind()).prop_map(|(slot, kind)| Op::Connect { slot, kind }),
        16 => subscribe(),
        4 => (slot(), channel()).prop_map(|(slot, channel)| Op::Unsubscribe { slot, channel }),
        8 => client_event(),
        1 => slot().prop_map(|slot| Op::Ping { slot }),
        1 => slot().prop_map(|slot| Op::Activity { slot }),
        1 => (slot(), garbage()).prop_map(|(slot, kind)| Op::Garbage { slot, kind }),
        5 => trigger(),
        3 => query(),
        3 => slot().prop_map(|slot| Op::Disconnect { slot }),
        2 => advance_secs().prop_map(|secs| Op::Advance { secs }),
    ]
}

/// Generates the operations of one case. It starts by connecting the first three slots,
/// so that early operations find connections. One case in ten shuts the node down three
/// quarters of the way through, so the operations after it meet a node that rejects
/// connections.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    (vec(op(), 1..120), prop::bool::weighted(0.1)).prop_map(|(random, shutdown)| {
        let connect = |slot| Op::Connect {
            slot,
            kind: ConnectKind::Valid(Some(7)),
        };
        let mut ops: Vec<Op> = (0..3).map(connect).collect();
        ops.extend(random);
        if shutdown {
            ops.insert(ops.len() * 3 / 4, Op::Shutdown);
        }
        ops
    })
}
