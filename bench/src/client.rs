//! A minimal Pusher Channels WebSocket client for load generation.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use futures_util::StreamExt;
use serde_json::Value;
use smol::{Async, Timer};

/// A client WebSocket connection over a smol TCP stream.
pub type PusherSocket = WebSocketStream<Async<TcpStream>>;

/// Read and write buffer size per client connection, in bytes.
///
/// tungstenite 0.30 allocates 128 KiB per connection by default. Pusher
/// frames during setup and shutdown are below 1 KiB, so 4 KiB keeps the load
/// generator small when it keeps thousands of connections open.
const CLIENT_BUFFER_BYTES: usize = 4096;

/// Maximum number of frames read while waiting for one expected frame.
///
/// The server sends at most a few frames before each reply this client waits
/// for, so a longer sequence means the exchange went wrong.
const MAX_FRAMES_PER_REPLY: usize = 16;

/// Opens a WebSocket to `addr` at `path` (for example
/// `/app/KEY?protocol=7`) and waits for `pusher:connection_established`.
pub async fn connect(addr: SocketAddr, path: &str) -> Result<PusherSocket> {
    let stream = Async::<TcpStream>::connect(addr)
        .await
        .with_context(|| format!("TCP connect to {addr} failed"))?;
    let url = format!("ws://{addr}{path}");
    let config = WebSocketConfig::default()
        .read_buffer_size(CLIENT_BUFFER_BYTES)
        .write_buffer_size(CLIENT_BUFFER_BYTES)
        .max_write_buffer_size(4 * CLIENT_BUFFER_BYTES);
    let (mut socket, _response) =
        async_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
            .await
            .with_context(|| format!("WebSocket handshake with {url} failed"))?;

    let first = next_event(&mut socket).await?;
    if first.name != "pusher:connection_established" {
        bail!(
            "expected pusher:connection_established as the first frame, got {}",
            first.text
        );
    }
    Ok(socket)
}

/// Subscribes to the public channel `channel` and waits for
/// `pusher_internal:subscription_succeeded` on it.
pub async fn subscribe(socket: &mut PusherSocket, channel: &str) -> Result<()> {
    let request = serde_json::json!({
        "event": "pusher:subscribe",
        "data": { "auth": "", "channel": channel },
    });
    socket
        .send(Message::text(request.to_string()))
        .await
        .with_context(|| format!("failed to send pusher:subscribe for {channel}"))?;

    for _ in 0..MAX_FRAMES_PER_REPLY {
        let event = next_event(socket).await?;
        match event.name.as_str() {
            "pusher_internal:subscription_succeeded"
                if event.channel.as_deref() == Some(channel) =>
            {
                return Ok(());
            }
            "pusher:error" | "pusher:subscription_error" => {
                bail!("subscription to {channel} failed: {}", event.text);
            }
            _ => {}
        }
    }
    bail!(
        "no pusher_internal:subscription_succeeded for {channel} within {MAX_FRAMES_PER_REPLY} frames"
    )
}

/// Sends a close frame with code 1000 and reads until the server closes the
/// connection.
///
/// Fails if the server had closed the connection with another code, or sent
/// `pusher:error`, since such a connection was not idle and open until now.
pub async fn close(mut socket: PusherSocket) -> Result<()> {
    socket
        .close(None)
        .await
        .context("failed to send the close frame")?;
    for _ in 0..MAX_FRAMES_PER_REPLY {
        let Some(message) = socket.next().await else {
            return Ok(());
        };
        match message {
            Ok(Message::Close(Some(frame))) if frame.code != CloseCode::Normal => {
                bail!(
                    "server closed the connection with code {}: {}",
                    frame.code,
                    frame.reason
                );
            }
            Ok(Message::Text(text)) if text.contains("\"pusher:error\"") => {
                bail!("server sent {text}");
            }
            Ok(_) => {}
            // async-tungstenite ends the stream (the `None` above) once the
            // closing handshake completes, so an error here is a real fault,
            // such as a reset without a close frame.
            Err(error) => return Err(error).context("failed to read the server's close frame"),
        }
    }
    bail!("server sent more than {MAX_FRAMES_PER_REPLY} frames after the close frame")
}

/// Runs `future` and fails with a message naming `operation` if it takes longer
/// than `timeout`.
pub async fn with_timeout<T>(
    timeout: Duration,
    operation: &str,
    future: impl Future<Output = Result<T>>,
) -> Result<T> {
    let expired = async {
        Timer::after(timeout).await;
        Err(anyhow!(
            "{operation} timed out after {} s",
            timeout.as_secs_f64()
        ))
    };
    smol::future::or(future, expired).await
}

/// A decoded Pusher frame.
struct Event {
    name: String,
    channel: Option<String>,
    /// The frame as received, for error messages.
    text: String,
}

/// Reads frames until a text frame arrives and decodes it.
///
/// Control frames are skipped (tungstenite replies to pings itself). A close
/// frame, a binary frame or the end of the stream is an error.
async fn next_event(socket: &mut PusherSocket) -> Result<Event> {
    for _ in 0..MAX_FRAMES_PER_REPLY {
        let message = socket
            .next()
            .await
            .ok_or_else(|| anyhow!("server closed the connection without a close frame"))?
            .context("failed to read a WebSocket frame")?;
        match message {
            Message::Text(text) => return decode_event(text.as_str()),
            Message::Close(frame) => bail!("server closed the connection: {frame:?}"),
            Message::Binary(_) => bail!("server sent a binary frame"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    bail!("server sent {MAX_FRAMES_PER_REPLY} control frames in a row")
}

fn decode_event(text: &str) -> Result<Event> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("server sent invalid JSON: {text}"))?;
    let name = value
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("server sent a frame without a string `event` field: {text}"))?;
    let channel = value.get("channel").and_then(Value::as_str);
    Ok(Event {
        name: name.to_owned(),
        channel: channel.map(str::to_owned),
        text: text.to_owned(),
    })
}
