//! Listeners: accept TCP connections and hand each to the WebSocket or the HTTP API task.
//!
//! When both services share one address, the request line is peeked without consuming it,
//! and the untouched stream goes to the library that serves its path.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use async_channel::Sender;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use log::{debug, warn};
use smol::{Async, Executor, Timer};

use crate::driver::Event;
use crate::{http, ws};

/// The services a listener offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    WebSocket,
    Api,
    Both,
}

/// Shared settings of every accepted connection.
#[derive(Clone)]
pub struct Services {
    pub events: Sender<Event>,
    pub websocket: WebSocketConfig,
    pub max_body_bytes: usize,
    /// WebSocket tasks still running, so shutdown can wait for their 4200 closes. HTTP
    /// connections are not counted: an idle keep-alive connection has nothing to flush.
    pub live: Arc<AtomicUsize>,
}

/// Time a client on a shared port has to send its request line.
const PEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections forever, spawning one task per connection on `executor`.
pub async fn accept_loop(
    listener: Async<TcpListener>,
    role: Role,
    services: Arc<Services>,
    executor: Arc<Executor<'static>>,
) {
    let mut failures: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let services = services.clone();
                executor
                    .spawn(async move { serve(stream, peer, role, &services).await })
                    .detach();
            }
            Err(error) => {
                failures += 1;
                // Powers of two keep a persistent failure visible without flooding the log.
                if failures.is_power_of_two() {
                    warn!("accept failed ({failures} times so far): {error}");
                }
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn serve(stream: Async<TcpStream>, peer: SocketAddr, role: Role, services: &Services) {
    let _ = stream.get_ref().set_nodelay(true);
    let role = match role {
        Role::Both => match peek_with_timeout(&stream).await {
            Ok(true) => Role::WebSocket,
            Ok(false) => Role::Api,
            Err(error) => {
                debug!("no request line from {peer}: {error}");
                return;
            }
        },
        role => role,
    };
    match role {
        // Boxed, so each task holds only the state of the protocol it serves.
        Role::WebSocket => {
            let events = services.events.clone();
            Box::pin(ws::serve(
                stream,
                peer,
                events,
                services.websocket,
                &services.live,
            ))
            .await;
        }
        Role::Api | Role::Both => {
            Box::pin(http::serve(
                stream,
                services.events.clone(),
                services.max_body_bytes,
            ))
            .await;
        }
    }
}

/// Runs [`is_websocket_request`], giving up when the client sends nothing in time.
async fn peek_with_timeout(stream: &Async<TcpStream>) -> io::Result<bool> {
    let timeout = async {
        Timer::after(PEEK_TIMEOUT).await;
        Err(io::ErrorKind::TimedOut.into())
    };
    futures_lite::future::or(is_websocket_request(stream), timeout).await
}

/// Peeks at the request line: a `GET /app/` request is a Pusher WebSocket upgrade.
async fn is_websocket_request(stream: &Async<TcpStream>) -> io::Result<bool> {
    const PREFIX: &[u8] = b"GET /app/";
    let mut buffer = [0u8; PREFIX.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let read = stream.peek(&mut buffer).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if read == buffer.len() || buffer[..read] != PREFIX[..read] {
            return Ok(buffer[..read] == *PREFIX);
        }
        // Part of the line has arrived; peeking again at once would return the same bytes.
        // The pause grows, so clients that trickle bytes cost little CPU.
        Timer::after(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
