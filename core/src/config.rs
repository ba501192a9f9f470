//! Node configuration: the app's credentials, protocol timeouts and resource limits.
//!
//! Defaults follow the limits of hosted Pusher where it states one.

use std::fmt;
use std::time::Duration;

use crate::cluster::ClusterConfig;
use crate::error::ConfigError;

/// A secret string whose `Debug` and `Display` print a redaction marker, so it never reaches
/// a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret itself, for HMAC keys only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Credentials and switches of the one app a [`Node`](crate::Node) serves.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// App id expected in HTTP API paths; `None` accepts any id, as Slanger does.
    pub id: Option<String>,
    /// Public app key, used in `/app/{key}` and before the colon of every `auth` value.
    pub key: String,
    /// Secret that keys every HMAC signature.
    pub secret: Secret,
    /// Whether clients may publish `client-` events on private and presence channels.
    pub client_events: bool,
}

impl AppConfig {
    /// Creates an app with client events enabled and no fixed id.
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: None,
            key: key.into(),
            secret: Secret::new(secret),
            client_events: true,
        }
    }
}

/// Resource limits. Each limit reached produces a defined error for the client or caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size in bytes of one inbound WebSocket text frame (close 1009 above it).
    pub max_frame_bytes: usize,
    /// Maximum size in bytes of an event's `data` (API 413; client events get `pusher:error`).
    pub max_event_data_bytes: usize,
    /// Maximum length in bytes of an event name.
    pub max_event_name_bytes: usize,
    /// Maximum length in bytes of a channel name, prefix included.
    pub max_channel_name_bytes: usize,
    /// Maximum number of channels in one `POST /events` request.
    pub max_channels_per_trigger: usize,
    /// Maximum number of events in one `POST /batch_events` request.
    pub max_batch_events: usize,
    /// Maximum size in bytes of an HTTP API request body (413 above it).
    pub max_api_body_bytes: usize,
    /// Maximum number of distinct users in one presence channel.
    pub max_presence_members: usize,
    /// Maximum size in bytes of a presence member's `user_info` as JSON text.
    pub max_presence_user_info_bytes: usize,
    /// Maximum length in bytes of a presence `user_id`.
    pub max_presence_user_id_bytes: usize,
    /// Maximum number of channels one connection may be subscribed to at once.
    pub max_channels_per_connection: usize,
    /// Maximum number of client events one connection may send per second.
    pub max_client_events_per_second: u32,
    /// Maximum number of open connections on the node (4100 above it).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_event_data_bytes: 10 * 1024,
            max_event_name_bytes: 200,
            max_channel_name_bytes: 200,
            max_channels_per_trigger: 100,
            max_batch_events: 10,
            max_api_body_bytes: 256 * 1024,
            max_presence_members: 100,
            max_presence_user_info_bytes: 1024,
            max_presence_user_id_bytes: 128,
            max_channels_per_connection: 100,
            max_client_events_per_second: 10,
            max_connections: 100_000,
        }
    }
}

/// Everything a [`Node`](crate::Node) needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The app this node serves.
    pub app: AppConfig,
    /// Silence after which clients should ping, sent in `connection_established`. The node
    /// also probes a connection that has been silent this long.
    pub activity_timeout: Duration,
    /// Time a probed connection has to send any frame before it is closed with 4201.
    pub pong_timeout: Duration,
    /// Resource limits.
    pub limits: Limits,
    /// Cluster mode settings; `None` runs a single node with all state in memory.
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    /// Creates a configuration with Pusher's defaults: 120 s activity timeout, 30 s pong
    /// timeout and the default [`Limits`].
    pub fn new(app: AppConfig) -> Self {
        Self {
            app,
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            cluster: None,
        }
    }

    /// Checks the values a node cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.app.key.is_empty() {
            return Err(ConfigError::MissingAppKey);
        }
        if !self.app.key.bytes().all(is_url_path_byte) {
            return Err(ConfigError::InvalidAppKey);
        }
        if self.app.secret.expose().is_empty() {
            return Err(ConfigError::MissingSecret);
        }
        if matches!(&self.app.id, Some(id) if id.is_empty() || !id.bytes().all(is_url_path_byte)) {
            return Err(ConfigError::InvalidAppId);
        }
        let secs = self.activity_timeout.as_secs();
        if secs == 0 || secs > u64::from(u32::MAX) {
            return Err(ConfigError::InvalidActivityTimeout);
        }
        // The node adds the pong timeout to an `Instant`, which panics on overflow.
        let pong_secs = self.pong_timeout.as_secs();
        if self.pong_timeout.is_zero() || pong_secs > u64::from(u32::MAX) {
            return Err(ConfigError::InvalidPongTimeout);
        }
        if let Some(cluster) = &self.cluster {
            let heartbeat = cluster.heartbeat_interval;
            if heartbeat.is_zero() || cluster.node_timeout <= heartbeat {
                return Err(ConfigError::InvalidClusterTimeouts);
            }
            if cluster.node_timeout.as_secs() > u64::from(u32::MAX) {
                return Err(ConfigError::InvalidClusterTimeouts);
            }
        }
        Ok(())
    }
}

/// Bytes that may appear in an app key or id without percent-encoding in a URL path.
fn is_url_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~')
}
