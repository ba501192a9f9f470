//! Per-connection state: identity, subscriptions, liveness and the client event rate window.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::channel::ChannelName;
use crate::error::ConnectError;
use crate::presence::UserId;

/// Handle of one connection, chosen by the node and never reused by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

/// A Pusher `socket_id`: two decimal integers joined by a dot, unique among live connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId {
    high: u64,
    low: u64,
}

impl SocketId {
    /// Largest value of either part, so JavaScript numbers hold both exactly.
    pub(crate) const PART_LIMIT: u64 = 1 << 53;

    pub(crate) fn new(high: u64, low: u64) -> Self {
        Self { high, low }
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.high, self.low)
    }
}

impl FromStr for SocketId {
    type Err = ();

    /// Parses `^\d+\.\d+$`; parts that do not fit in a `u64` are rejected.
    fn from_str(text: &str) -> Result<Self, ()> {
        let (high, low) = text.split_once('.').ok_or(())?;
        let part = |digits: &str| {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            digits.parse::<u64>().map_err(|_| ())
        };
        Ok(Self::new(part(high)?, part(low)?))
    }
}

/// The target of a WebSocket upgrade: `/app/{key}` and its `protocol` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// App key from the path.
    pub app_key: String,
    /// Raw `protocol` query value, if present.
    pub protocol: Option<String>,
}

impl ConnectRequest {
    /// Parses a request target such as `/app/KEY?protocol=7&client=js`. Returns `None` when the
    /// path is not `/app/{key}`; the host then replies with HTTP 404 instead of upgrading.
    pub fn parse(target: &str) -> Option<Self> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let key = path.strip_prefix("/app/")?.trim_end_matches('/');
        if key.is_empty() || key.contains('/') {
            return None;
        }
        let protocol = query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(name, _)| *name == "protocol")
            .map(|(_, value)| value.to_owned());
        Some(Self {
            app_key: key.to_owned(),
            protocol,
        })
    }

    /// Returns the protocol version: 7 when absent, 4006 when not an integer, 4007 outside 4-7.
    pub(crate) fn protocol_version(&self) -> Result<u8, ConnectError> {
        let Some(text) = self.protocol.as_deref() else {
            return Ok(7);
        };
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConnectError::InvalidProtocolVersion);
        }
        // Any decimal integer is a version; one too large for `u32` is reported as the max.
        let version: u32 = text.parse().unwrap_or(u32::MAX);
        match u8::try_from(version) {
            Ok(version @ 4..=7) => Ok(version),
            _ => Err(ConnectError::UnsupportedProtocolVersion(version)),
        }
    }
}

/// State of one open connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) socket_id: SocketId,
    /// Channels subscribed, with the member's user id on presence channels.
    pub(crate) channels: Subscriptions,
    pub(crate) last_activity: Instant,
    /// When the liveness probe was sent, if it is still unanswered.
    pub(crate) probe_sent: Option<Instant>,
    /// The deadline under which this connection sits in the node's timer table.
    pub(crate) scheduled: Instant,
    pub(crate) client_events: RateWindow,
}

impl Connection {
    pub(crate) fn new(socket_id: SocketId, now: Instant, scheduled: Instant) -> Self {
        Self {
            socket_id,
            channels: Subscriptions::default(),
            last_activity: now,
            probe_sent: None,
            scheduled,
            client_events: RateWindow::new(now),
        }
    }

    /// Returns when the liveness timer should next act for this connection.
    pub(crate) fn liveness_deadline(&self, activity: Duration, pong: Duration) -> Instant {
        match self.probe_sent {
            Some(sent) => sent + pong,
            None => self.last_activity + activity,
        }
    }
}

/// A connection's subscriptions, in subscription order.
///
/// A short vector rather than a map, because most connections have a few channels and an
/// idle connection should cost little memory. Lookups scan at most the per-connection limit.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions(Vec<(ChannelName, Option<UserId>)>);

impl Subscriptions {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn contains_key(&self, channel: &str) -> bool {
        self.get_key_value(channel).is_some()
    }

    pub(crate) fn get_key_value(&self, channel: &str) -> Option<(&ChannelName, &Option<UserId>)> {
        self.0
            .iter()
            .find(|(name, _)| name.as_str() == channel)
            .map(|(name, user_id)| (name, user_id))
    }

    /// Adds a subscription; the caller checks that `channel` is not subscribed yet.
    pub(crate) fn insert(&mut self, channel: ChannelName, user_id: Option<UserId>) {
        self.0.push((channel, user_id));
    }

    pub(crate) fn remove_entry(&mut self, channel: &str) -> Option<(ChannelName, Option<UserId>)> {
        let index = self
            .0
            .iter()
            .position(|(name, _)| name.as_str() == channel)?;
        Some(self.0.remove(index))
    }
}

impl IntoIterator for Subscriptions {
    type Item = (ChannelName, Option<UserId>);
    type IntoIter = std::vec::IntoIter<Self::Item>;

    /// Yields the subscriptions in channel name order, so that the events a disconnect causes
    /// come out in the same order however the channels were joined.
    fn into_iter(mut self) -> Self::IntoIter {
        self.0.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.0.into_iter()
    }
}

/// A fixed one-second window counting events.
#[derive(Debug)]
pub(crate) struct RateWindow {
    start: Instant,
    count: u32,
}

impl RateWindow {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            count: 0,
        }
    }

    /// Counts one event at `now`; returns `false` when `max` events were already counted in
    /// the current window.
    pub(crate) fn try_acquire(&mut self, now: Instant, max: u32) -> bool {
        if now.saturating_duration_since(self.start) >= Duration::from_secs(1) {
            self.start = now;
            self.count = 0;
        }
        if self.count >= max {
            return false;
        }
        self.count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_id_parses_digits_only() {
        assert_eq!("12.34".parse(), Ok(SocketId::new(12, 34)));
        assert_eq!(SocketId::new(12, 34).to_string(), "12.34");
        for bad in [
            "", ".", "1.", ".1", "1.2.3", "a.1", "1,2", "+1.2", "1.-2", " 1.2",
        ] {
            assert_eq!(bad.parse::<SocketId>(), Err(()), "{bad:?}");
        }
        assert_eq!("99999999999999999999.1".parse::<SocketId>(), Err(()));
    }

    #[test]
    fn connect_request_parses_key_and_protocol() {
        let request = ConnectRequest::parse("/app/abc?protocol=7&client=js").unwrap();
        assert_eq!(request.app_key, "abc");
        assert_eq!(request.protocol.as_deref(), Some("7"));
        assert_eq!(ConnectRequest::parse("/app/abc").unwrap().protocol, None);
        assert!(ConnectRequest::parse("/apps/abc").is_none());
        assert!(ConnectRequest::parse("/app/").is_none());
        assert!(ConnectRequest::parse("/app/a/b").is_none());
    }

    #[test]
    fn protocol_version_rules() {
        let version = |protocol: Option<&str>| {
            ConnectRequest {
                app_key: "k".into(),
                protocol: protocol.map(str::to_owned),
            }
            .protocol_version()
        };
        assert_eq!(version(None), Ok(7));
        assert_eq!(version(Some("4")), Ok(4));
        assert_eq!(version(Some("5")), Ok(5));
        assert_eq!(version(Some("6")), Ok(6));
        assert_eq!(
            version(Some("3")),
            Err(ConnectError::UnsupportedProtocolVersion(3))
        );
        assert_eq!(
            version(Some("8")),
            Err(ConnectError::UnsupportedProtocolVersion(8))
        );
        assert_eq!(
            version(Some("abc")),
            Err(ConnectError::InvalidProtocolVersion)
        );
        assert_eq!(version(Some("")), Err(ConnectError::InvalidProtocolVersion));
        assert_eq!(
            version(Some("-7")),
            Err(ConnectError::InvalidProtocolVersion)
        );
        assert_eq!(
            version(Some("99999999999999999999")),
            Err(ConnectError::UnsupportedProtocolVersion(u32::MAX))
        );
        assert_eq!(
            version(Some("4294967303")),
            Err(ConnectError::UnsupportedProtocolVersion(u32::MAX))
        );
    }

    #[test]
    fn rate_window_allows_max_per_second() {
        let start = Instant::now();
        let mut window = RateWindow::new(start);
        for _ in 0..10 {
            assert!(window.try_acquire(start, 10));
        }
        assert!(!window.try_acquire(start + Duration::from_millis(999), 10));
        assert!(window.try_acquire(start + Duration::from_secs(1), 10));
    }
}
