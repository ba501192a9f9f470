//! A sequence of operations replayed against one `Node`: connections opening and closing,
//! signed and unsigned subscriptions, client events, raw frames, signed API requests and
//! time passing. After every operation the fixture checks each output and `stats()`, and at
//! the end it disconnects every connection and checks that no state is left.

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use crier_core::{ConnectRequest, ConnectionId};
use crier_fuzz::{APP_ID, CHANNELS, Fixture, KEY};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// Operations beyond this count are ignored, to bound the time one input takes.
const MAX_OPS: usize = 256;

/// A channel: one of the fixture's, or any text.
#[derive(Arbitrary, Debug)]
enum Channel {
    Known(u8),
    Raw(String),
}

impl Channel {
    fn name(&self) -> &str {
        match self {
            Self::Known(index) => CHANNELS[usize::from(*index) % CHANNELS.len()],
            Self::Raw(name) => name,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Protocol {
    Absent,
    Version(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Auth {
    /// Signed for the connection's own socket id.
    Valid,
    /// Signed with the right secret but for another socket id.
    OtherSocket,
    Missing,
    Raw(String),
}

/// A presence member, written as `channel_data`.
#[derive(Arbitrary, Debug)]
struct Member {
    user: u8,
    numeric_id: bool,
    user_info: Option<String>,
}

impl Member {
    fn channel_data(&self) -> String {
        let user_id = match self.numeric_id {
            true => json!(self.user % 4),
            false => json!(format!("u-{}", self.user % 4)),
        };
        let mut data = json!({ "user_id": user_id });
        if let Some(info) = &self.user_info {
            data["user_info"] = json!({ "name": info });
        }
        data.to_string()
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open {
        protocol: Protocol,
        wrong_key: bool,
    },
    Subscribe {
        connection: u8,
        channel: Channel,
        auth: Auth,
        member: Option<Member>,
        raw_channel_data: Option<String>,
        data_as_string: bool,
    },
    Unsubscribe {
        connection: u8,
        channel: Channel,
    },
    ClientEvent {
        connection: u8,
        channel: Option<Channel>,
        event: String,
        data: Option<String>,
    },
    Text {
        connection: u8,
        text: String,
    },
    Binary {
        connection: u8,
        len: u32,
    },
    Activity {
        connection: u8,
    },
    Oversized {
        connection: u8,
    },
    Backpressure {
        connection: u8,
    },
    Disconnect {
        connection: u8,
    },
    Advance {
        millis: u32,
    },
    Trigger {
        channels: Vec<Channel>,
        exclude: Option<u8>,
        name: String,
        data: String,
        info: Option<String>,
        batch: bool,
    },
    Query {
        route: u8,
        channel: Channel,
        info: Option<String>,
        prefix: Option<String>,
    },
    Shutdown,
}

/// Picks any connection the node handed out, open or closed.
fn pick(fixture: &Fixture, index: u8) -> Option<ConnectionId> {
    let count = fixture.issued.len();
    (count > 0).then(|| fixture.issued[usize::from(index) % count])
}

/// Returns `text` when it is JSON, else `text` as a JSON string.
fn json_or_string(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(_) => text.to_owned(),
        Err(_) => json!(text).to_string(),
    }
}

fn subscribe(
    fixture: &mut Fixture,
    id: ConnectionId,
    channel: &Channel,
    auth: &Auth,
    channel_data: Option<String>,
    data_as_string: bool,
) {
    let name = channel.name();
    let socket_id = fixture.socket_ids[&id].clone();
    let sign = |socket_id: &str| {
        crier_core::sign_channel(
            KEY,
            crier_fuzz::SECRET,
            socket_id,
            name,
            channel_data.as_deref(),
        )
    };
    let auth = match auth {
        Auth::Valid => Some(sign(&socket_id)),
        Auth::OtherSocket => Some(sign("1.1")),
        Auth::Missing => None,
        Auth::Raw(auth) => Some(auth.clone()),
    };
    let mut data = json!({ "channel": name });
    if let Some(auth) = auth {
        data["auth"] = auth.into();
    }
    if let Some(channel_data) = channel_data {
        data["channel_data"] = channel_data.into();
    }
    if data_as_string {
        data = data.to_string().into();
    }
    let text = json!({ "event": "pusher:subscribe", "data": data }).to_string();
    fixture.node.handle_text(fixture.now, id, &text);
    fixture.drain(None);
}

fn client_event(
    fixture: &mut Fixture,
    id: ConnectionId,
    channel: Option<&Channel>,
    event: &str,
    data: Option<&str>,
) {
    let mut text = format!(r#"{{"event":{}"#, json!(format!("client-{event}")));
    if let Some(channel) = channel {
        text.push_str(&format!(r#","channel":{}"#, json!(channel.name())));
    }
    if let Some(data) = data {
        text.push_str(&format!(r#","data":{}"#, json_or_string(data)));
    }
    text.push('}');
    fixture.node.handle_text(fixture.now, id, &text);
    let outputs = fixture.drain(None);
    for output in outputs {
        if let crier_core::Output::Send { connection, frame } = output {
            let echoed = connection == id && frame.contains(r#""event":"client-"#);
            assert!(!echoed, "client event echoed to its sender: {frame}");
        }
    }
}

fn trigger(fixture: &mut Fixture, op: &Op) {
    let Op::Trigger {
        channels,
        exclude,
        name,
        data,
        info,
        batch,
    } = op
    else {
        return;
    };
    let socket_id = exclude
        .and_then(|index| pick(fixture, index))
        .map(|id| fixture.socket_ids[&id].clone());
    let names: Vec<&str> = channels.iter().take(12).map(Channel::name).collect();
    let event = |channel: serde_json::Value, many: bool| {
        let mut event = json!({ "name": name, "data": data });
        event[if many { "channels" } else { "channel" }] = channel;
        if let Some(socket_id) = &socket_id {
            event["socket_id"] = socket_id.as_str().into();
        }
        if let Some(info) = info {
            event["info"] = info.as_str().into();
        }
        event
    };
    let (path, body) = if *batch {
        let events: Vec<_> = names.iter().map(|c| event(json!(c), false)).collect();
        ("batch_events", json!({ "batch": events }))
    } else {
        ("events", event(json!(names), true))
    };
    let path = format!("/apps/{APP_ID}/{path}");
    fixture.api("POST", &path, "", body.to_string().as_bytes());
    fixture.drain(None);
}

fn query(
    fixture: &mut Fixture,
    route: u8,
    channel: &Channel,
    info: &Option<String>,
    prefix: &Option<String>,
) {
    let encode = |text: &str| {
        let mut encoded = String::new();
        for byte in text.bytes() {
            match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    encoded.push(byte as char)
                }
                _ => encoded.push_str(&format!("%{byte:02X}")),
            }
        }
        encoded
    };
    let name = encode(channel.name());
    let path = match route % 3 {
        0 => format!("/apps/{APP_ID}/channels"),
        1 => format!("/apps/{APP_ID}/channels/{name}"),
        _ => format!("/apps/{APP_ID}/channels/{name}/users"),
    };
    let mut params = Vec::new();
    if let Some(info) = info {
        params.push(format!("info={}", encode(info)));
    }
    if let Some(prefix) = prefix {
        params.push(format!("filter_by_prefix={}", encode(prefix)));
    }
    fixture.api("GET", &path, &params.join("&"), b"");
    fixture.drain(None);
}

fn apply(fixture: &mut Fixture, op: &Op) {
    let now = fixture.now;
    match op {
        Op::Open {
            protocol,
            wrong_key,
        } => {
            let protocol = match protocol {
                Protocol::Absent => None,
                Protocol::Version(version) => Some(version.to_string()),
                Protocol::Raw(raw) => Some(raw.clone()),
            };
            let request = ConnectRequest {
                app_key: if *wrong_key {
                    "other".into()
                } else {
                    KEY.into()
                },
                protocol,
            };
            fixture.open_request(&request);
        }
        Op::Subscribe {
            connection,
            channel,
            auth,
            member,
            raw_channel_data,
            data_as_string,
        } => {
            let Some(id) = pick(fixture, *connection) else {
                return;
            };
            let channel_data = match (member, raw_channel_data) {
                (Some(member), _) => Some(member.channel_data()),
                (None, raw) => raw.clone(),
            };
            subscribe(fixture, id, channel, auth, channel_data, *data_as_string);
        }
        Op::Unsubscribe {
            connection,
            channel,
        } => {
            let Some(id) = pick(fixture, *connection) else {
                return;
            };
            let text =
                json!({ "event": "pusher:unsubscribe", "data": { "channel": channel.name() } });
            fixture.node.handle_text(now, id, &text.to_string());
            fixture.drain(None);
        }
        Op::ClientEvent {
            connection,
            channel,
            event,
            data,
        } => {
            if let Some(id) = pick(fixture, *connection) {
                client_event(fixture, id, channel.as_ref(), event, data.as_deref());
            }
        }
        Op::Text { connection, text } => {
            if let Some(id) = pick(fixture, *connection) {
                fixture.node.handle_text(now, id, text);
                fixture.drain(None);
            }
        }
        Op::Binary { connection, len } => {
            if let Some(id) = pick(fixture, *connection) {
                fixture.node.handle_binary(now, id, *len as usize);
                fixture.drain(None);
            }
        }
        Op::Activity { connection } => {
            if let Some(id) = pick(fixture, *connection) {
                fixture.node.handle_activity(now, id);
                fixture.drain(None);
            }
        }
        Op::Oversized { connection } => {
            if let Some(id) = pick(fixture, *connection) {
                fixture.node.handle_oversized_frame(now, id);
                fixture.drain(None);
            }
        }
        Op::Backpressure { connection } => {
            if let Some(id) = pick(fixture, *connection) {
                fixture.node.handle_backpressure(now, id);
                fixture.drain(None);
            }
        }
        Op::Disconnect { connection } => {
            if let Some(id) = pick(fixture, *connection) {
                fixture.disconnect(id);
            }
        }
        Op::Advance { millis } => fixture.advance(Duration::from_millis(u64::from(*millis))),
        Op::Trigger { .. } => trigger(fixture, op),
        Op::Query {
            route,
            channel,
            info,
            prefix,
        } => query(fixture, *route, channel, info, prefix),
        Op::Shutdown => {
            fixture.node.shutdown(now);
            fixture.drain(None);
            assert!(fixture.open.is_empty(), "a connection outlived shutdown");
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut fixture = Fixture::new();
    for op in ops.iter().take(MAX_OPS) {
        apply(&mut fixture, op);
    }
    fixture.close_all();
});
