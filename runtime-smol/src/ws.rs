//! One task per WebSocket connection: the upgrade, then a loop that forwards inbound frames
//! to the driver and writes what the driver queues in the connection's mailbox.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_channel::Sender;
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{
    Bytes, Error as WsError, Message, Utf8Bytes, error::CapacityError,
};
use crier_core::{ConnectRequest, ConnectionId};
use futures_lite::{StreamExt, future};
use log::{debug, trace};
use smol::{Async, Timer};

use crate::driver::{Event, Outbound};
use crate::mailbox::Mailbox;

/// Time a client has to complete the WebSocket upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time one write may stay blocked on a client that does not read before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Time to wait for the client's close frame after sending ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Initial capacity of a connection's read buffer. Pusher frames are small, and an idle
/// connection keeps this buffer, so it is sized for memory rather than throughput.
const READ_BUFFER_BYTES: usize = 256;

type Socket = WebSocketStream<Async<TcpStream>>;

/// Builds the WebSocket limits: messages and frames above `max_frame_bytes` are refused, and
/// each message is written at once instead of being buffered.
pub fn websocket_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max_frame_bytes * 4)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Serves one accepted TCP connection as a Pusher WebSocket until it closes.
///
/// `live` counts open connections from the upgrade on, so shutdown waits for their closes but
/// not for half-done handshakes.
pub async fn serve(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    events: Sender<Event>,
    config: WebSocketConfig,
    live: &AtomicUsize,
) {
    // Boxed, so the handshake's state is freed once the connection is open: an idle
    // connection then holds only the state of `run`.
    if let Some((socket, id, mailbox)) = Box::pin(open(stream, peer, &events, config)).await {
        live.fetch_add(1, Ordering::SeqCst);
        run(socket, id, mailbox, events).await;
        live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Upgrades the connection and registers it with the node. A rejected connection gets its
/// `pusher:error` and close code here.
async fn open(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    events: &Sender<Event>,
    config: WebSocketConfig,
) -> Option<(Socket, ConnectionId, Arc<Mailbox>)> {
    let (mut socket, request) = upgrade(stream, peer, config).await?;
    let (reply, opened) = async_channel::bounded(1);
    events.send(Event::Open { request, reply }).await.ok()?;
    match opened.recv().await.ok()? {
        Ok((id, mailbox)) => Some((socket, id, mailbox)),
        Err(error) => {
            let _ = socket.send(Message::text(error.frame())).await;
            close(&mut socket, error.close_code(), error.message()).await;
            None
        }
    }
}

/// Performs the upgrade, replying 404 without upgrading when the path is not `/app/{key}`.
// tungstenite fixes the callback's error type: a whole HTTP response.
#[allow(clippy::result_large_err)]
async fn upgrade(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    config: WebSocketConfig,
) -> Option<(Socket, ConnectRequest)> {
    let mut target = None;
    let callback = |request: &Request, response: Response| {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let Some(parsed) = ConnectRequest::parse(path) else {
            let mut rejection = ErrorResponse::new(Some("Not found\n".to_owned()));
            *rejection.status_mut() = StatusCode::NOT_FOUND;
            return Err(rejection);
        };
        target = Some(parsed);
        Ok(select_subprotocol(request, response))
    };
    let handshake = async_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let timeout = async {
        Timer::after(HANDSHAKE_TIMEOUT).await;
        Err(WsError::ConnectionClosed)
    };
    match future::or(handshake, timeout).await {
        Ok(socket) => Some((socket, target?)),
        Err(error) => {
            debug!("websocket upgrade failed: peer={peer} {error}");
            None
        }
    }
}

/// Selects an offered `pusher-channels-protocol-N` subprotocol; Apple's stack checks the
/// reply. Other offered subprotocols are ignored rather than rejected.
fn select_subprotocol(request: &Request, mut response: Response) -> Response {
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find(|name| name.starts_with("pusher-channels-protocol-"));
    if let Some(value) = offered.and_then(|name| HeaderValue::from_str(name).ok()) {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    response
}

enum Step {
    Inbound(Option<Result<Message, WsError>>),
    Outbound(Outbound),
}

/// Forwards frames both ways until either side closes.
async fn run(mut socket: Socket, id: ConnectionId, mailbox: Arc<Mailbox>, events: Sender<Event>) {
    let mut reading = true;
    loop {
        let outbound = async { Step::Outbound(mailbox.pop().await) };
        let step = if reading {
            future::or(outbound, async { Step::Inbound(socket.next().await) }).await
        } else {
            outbound.await
        };
        let event = match step {
            Step::Inbound(Some(Ok(message))) => match message {
                Message::Text(text) => Event::Text(id, text),
                Message::Binary(data) => Event::Binary(id, data.len()),
                Message::Ping(_) | Message::Pong(_) => Event::Activity(id),
                Message::Close(_) | Message::Frame(_) => {
                    finish_close(&mut socket).await;
                    break;
                }
            },
            Step::Inbound(Some(Err(WsError::Capacity(CapacityError::MessageTooLong {
                ..
            })))) => {
                // The connection's state is unusable after this; wait for the driver's close.
                reading = false;
                Event::Oversized(id)
            }
            Step::Inbound(Some(Err(error))) => {
                trace!("websocket read failed: connection={} {error}", id.0);
                // Protocol violations get the close code RFC 6455 names for them; other
                // errors mean the connection is gone.
                match error {
                    WsError::Utf8(_) => close(&mut socket, 1007, "Invalid UTF-8").await,
                    WsError::Protocol(_) => close(&mut socket, 1002, "Protocol error").await,
                    _ => {}
                }
                break;
            }
            Step::Inbound(None) => break,
            Step::Outbound(Outbound::Close(code, reason)) => {
                close(&mut socket, code, reason).await;
                break;
            }
            Step::Outbound(outbound) => {
                if write(&mut socket, outbound).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if events.send(event).await.is_err() {
            break;
        }
    }
    let _ = events.send(Event::Disconnect(id)).await;
}

async fn write(socket: &mut Socket, outbound: Outbound) -> Result<(), WsError> {
    let message = match outbound {
        Outbound::Text(frame) => Message::Text(shared_text(frame)),
        Outbound::Ping => Message::Ping(Bytes::new()),
        Outbound::Close(..) => return Ok(()),
    };
    let timeout = async {
        Timer::after(WRITE_TIMEOUT).await;
        Err(WsError::ConnectionClosed)
    };
    future::or(socket.send(message), timeout).await
}

/// Wraps a frame shared by many connections without copying it.
fn shared_text(frame: Arc<str>) -> Utf8Bytes {
    struct Owner(Arc<str>);
    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    let bytes = Bytes::from_owner(Owner(frame));
    // The bytes come from a `str`, so they are valid UTF-8 and the check cannot fail.
    Utf8Bytes::try_from(bytes).unwrap_or_default()
}

/// Sends the reply tungstenite queued for the client's close frame: reading on flushes it,
/// and the stream then ends.
async fn finish_close(socket: &mut Socket) {
    let flush = async { while let Some(Ok(_)) = socket.next().await {} };
    let timeout = async {
        Timer::after(CLOSE_TIMEOUT).await;
    };
    future::or(flush, timeout).await;
}

/// Sends a close frame and waits briefly for the client's, so the close code arrives intact.
async fn close(socket: &mut Socket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(reason),
    };
    let closing = async {
        if socket.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    };
    let timeout = async {
        Timer::after(CLOSE_TIMEOUT).await;
    };
    future::or(closing, timeout).await;
}
