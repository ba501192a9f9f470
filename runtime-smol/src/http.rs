//! The HTTP API over async-h1: reads a bounded body, hands the request to the driver and
//! writes its JSON response.

use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_channel::Sender;
use crier_core::ApiResponse;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use http_types::{Request, Response, StatusCode};
use log::debug;
use smol::{Async, Timer};

use crate::driver::{Event, OwnedApiRequest};

/// A TCP stream that async-h1 can clone for its reader and writer halves.
#[derive(Clone)]
pub struct SharedStream(pub Arc<Async<TcpStream>>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

/// Serves HTTP/1.1 requests on one connection until the client closes it.
pub async fn serve(stream: Async<TcpStream>, events: Sender<Event>, max_body_bytes: usize) {
    // async-h1 closes the connection without a reply on HTTP/1.0 or a missing Host header,
    // so the first request head is checked here and those get a clear error instead.
    match check_first_request(&stream).await {
        Ok(()) => {}
        Err(Some((status, message))) => {
            debug!("http request rejected before parsing: {status} {message}");
            let _ = write_plain_error(&stream, status, message).await;
            return;
        }
        Err(None) => return,
    }
    let stream = SharedStream(Arc::new(stream));
    let result = async_h1::accept(stream, |request| {
        let events = events.clone();
        async move { Ok(respond(request, &events, max_body_bytes).await) }
    })
    .await;
    if let Err(error) = result {
        debug!("http connection ended with an error: {error}");
    }
}

/// Turns every request into a response; async-h1 drops the connection when a handler fails,
/// so no error escapes from here.
async fn respond(mut request: Request, events: &Sender<Event>, max_body_bytes: usize) -> Response {
    let url = request.url();
    let path = url.path().to_owned();
    let query = url.query().unwrap_or("").to_owned();
    let method = request.method().to_string();

    let mut body = Vec::new();
    let limit = u64::try_from(max_body_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    if let Err(error) = request.take_body().take(limit).read_to_end(&mut body).await {
        return error_response(400, &format!("Cannot read request body: {error}"));
    }
    if body.len() > max_body_bytes {
        return error_response(
            413,
            &format!("Request body is larger than {max_body_bytes} bytes"),
        );
    }

    let (reply, response) = async_channel::bounded(1);
    let api = OwnedApiRequest {
        method,
        path,
        query,
        body,
    };
    if events
        .send(Event::Api {
            request: api,
            reply,
        })
        .await
        .is_err()
    {
        return error_response(503, "Server is shutting down");
    }
    match response.recv().await {
        Ok(ApiResponse { status, body }) => json_response(status, &body),
        Err(_) => error_response(503, "Server is shutting down"),
    }
}

/// Longest request head peeked at; longer heads are left to async-h1, which rejects them.
const MAX_PEEKED_HEAD: usize = 8 * 1024;

/// Time a client has to send its first request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Peeks at the first request head without consuming it. `Err(Some(..))` is a status and
/// message to answer with; `Err(None)` means the client went away or sent nothing in time.
async fn check_first_request(stream: &Async<TcpStream>) -> Result<(), Option<(u16, &'static str)>> {
    let mut buffer = vec![0u8; MAX_PEEKED_HEAD];
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut seen = 0;
    loop {
        let read = stream.peek(&mut buffer).await.map_err(|_| None)?;
        if read == 0 {
            return Err(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer[..read]) {
            Ok(httparse::Status::Complete(_)) => {
                if request.version == Some(0) {
                    let message = "HTTP/1.0 is not supported, send HTTP/1.1 requests";
                    return Err(Some((505, message)));
                }
                let has_host = request
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("host"));
                if !has_host {
                    return Err(Some((400, "HTTP/1.1 requests need a Host header")));
                }
                return Ok(());
            }
            // Malformed or oversized heads are answered by async-h1 itself.
            Ok(httparse::Status::Partial) if read == buffer.len() => return Ok(()),
            Err(_) => return Ok(()),
            Ok(httparse::Status::Partial) => {}
        }
        if Instant::now() >= deadline {
            return Err(None);
        }
        if read == seen {
            // Peeking again at once would return the same bytes.
            Timer::after(Duration::from_millis(5)).await;
        }
        seen = read;
    }
}

/// Writes a JSON error response and closes, for requests async-h1 cannot answer.
async fn write_plain_error(
    stream: &Async<TcpStream>,
    status: u16,
    message: &str,
) -> std::io::Result<()> {
    let body = serde_json::json!({ "error": message }).to_string();
    let reason = if status == 505 {
        "HTTP Version Not Supported"
    } else {
        "Bad Request"
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut writer = stream;
    writer.write_all(head.as_bytes()).await?;
    writer.write_all(body.as_bytes()).await?;
    writer.flush().await
}

fn error_response(status: u16, message: &str) -> Response {
    json_response(status, &serde_json::json!({ "error": message }).to_string())
}

fn json_response(status: u16, body: &str) -> Response {
    let status = StatusCode::try_from(status).unwrap_or(StatusCode::InternalServerError);
    let mut response = Response::new(status);
    response.insert_header("Content-Type", "application/json");
    response.set_body(body);
    response
}
