//! Sans-IO state machine for the Pusher Channels protocol.
//!
//! `crier-core` contains every rule of the protocol (framing, channels, subscription signatures,
//! presence, client events, the HTTP API and its request signatures) and performs no IO. It
//! never reads a clock, spawns a thread or touches a socket: the host passes the current time
//! into every call and carries out the outputs the node queues.
//!
//! # The host loop
//!
//! 1. Create one [`Node`] per app with [`Node::new`], giving it a [`Config`] and a random seed.
//! 2. When a WebSocket upgrade arrives, parse its target with [`ConnectRequest::parse`]. A
//!    `None` means the path is not a Pusher endpoint, so answer HTTP 404 without upgrading.
//!    After the upgrade call [`Node::open`]. On `Err`, send [`ConnectError::frame`] and close
//!    the socket with [`ConnectError::close_code`].
//! 3. Feed every inbound event to the node: [`Node::handle_text`] for text frames,
//!    [`Node::handle_binary`], [`Node::handle_activity`] for WebSocket Ping and Pong frames,
//!    [`Node::handle_disconnect`] when the socket is gone, and [`Node::handle_api`] for HTTP
//!    API requests, which returns the response directly.
//! 4. After any `handle_*` call, drain [`Node::poll_output`] until it returns `None` and carry
//!    out each [`Output`] in order, then read [`Node::poll_timeout`]: call
//!    [`Node::handle_timeout`] at that instant (`None` means no timer is armed).
//!
//! Outputs addressed to one connection must be delivered in the order they were polled. A
//! frame broadcast to many connections is serialized once and shared as an `Arc<str>`.
//!
//! The same inputs in the same order, with the same seed, always produce the same outputs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod auth;
mod channel;
mod cluster;
mod config;
mod connection;
mod error;
mod frame;
mod node;
mod presence;
mod rng;
mod timer;

pub use api::{ApiRequest, ApiResponse};
pub use auth::{sign_api_request, sign_channel, sign_hex, verify_hex};
pub use channel::{ChannelKind, ChannelName};
pub use cluster::ClusterConfig;
pub use config::{AppConfig, Config, Limits, Secret};
pub use connection::{ConnectRequest, ConnectionId, SocketId};
pub use error::{
    ApiError, ChannelNameError, ConfigError, ConnectError, ProtocolError, SubscribeError,
};
pub use frame::ClientFrame;
pub use node::{Node, NodeStats, Output};
