//! Helpers for benchmarks that run the crier daemon as a child process and
//! drive it with Pusher Channels WebSocket clients.

pub mod api;
pub mod client;
pub mod proc_status;
pub mod redis_server;
pub mod server;
