//! The HTTP API over async-h1: reads a bounded body, hands the request to the driver and
//! writes its JSON response.

use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_channel::Sender;
use crier_core::ApiResponse;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, future};
use http_types::{Request, Response, StatusCode};
use log::debug;
use smol::{Async, Timer};

use crate::driver::{Event, OwnedApiRequest};

/// A TCP stream that async-h1 can clone for its reader and writer halves.
///
/// It also caps how much a client may send between two responses. async-h1 buffers a request
/// head until a line feed arrives and checks its 8 KiB head limit only then, so without this
/// cap one connection sending a line without end would grow memory until the process dies.
/// The cap resets whenever a response is written.
#[derive(Clone)]
pub struct SharedStream {
    stream: Arc<Async<TcpStream>>,
    /// Bytes read since the last response was written.
    unanswered: Arc<AtomicUsize>,
    max_unanswered: usize,
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let unanswered = self.unanswered.load(Ordering::Relaxed);
        if unanswered >= self.max_unanswered {
            let error = std::io::Error::other("request larger than the read limit");
            return Poll::Ready(Err(error));
        }
        let room = (self.max_unanswered - unanswered).min(buf.len());
        let poll = Pin::new(&mut &*self.stream).poll_read(cx, &mut buf[..room]);
        if let Poll::Ready(Ok(read)) = &poll {
            self.unanswered.fetch_add(*read, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.unanswered.store(0, Ordering::Relaxed);
        Pin::new(&mut &*self.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.stream).poll_close(cx)
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
    let stream = SharedStream {
        stream: Arc::new(stream),
        unanswered: Arc::new(AtomicUsize::new(0)),
        // A head, a body at the limit, and room for chunked encoding of that body.
        max_unanswered: MAX_PEEKED_HEAD + 2 * max_body_bytes,
    };
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
    let mut reader = request.take_body().take(limit);
    let read = async { Some(reader.read_to_end(&mut body).await) };
    let timeout = async {
        Timer::after(BODY_TIMEOUT).await;
        None
    };
    match future::or(read, timeout).await {
        Some(Ok(_)) => {}
        Some(Err(error)) => {
            return error_response(400, &format!("Cannot read request body: {error}"));
        }
        None => {
            let seconds = BODY_TIMEOUT.as_secs();
            return error_response(
                408,
                &format!("Request body not received within {seconds} s"),
            );
        }
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

/// Maximum size of the first request head; a larger one gets 431.
const MAX_PEEKED_HEAD: usize = 8 * 1024;

/// Time a client has to send its first request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to send a request body once its head arrived.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Peeks at the first request head without consuming it. `Err(Some(..))` is the status and
/// message to reply with; `Err(None)` means the client went away or sent nothing in time.
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
                return check_head(&request);
            }
            Ok(httparse::Status::Partial) if read == buffer.len() => {
                return Err(Some((431, "Request head is larger than 8 KiB")));
            }
            Err(_) => return Err(Some((400, "Malformed HTTP request"))),
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

/// Checks what async-h1 would reject by closing the connection without a reply.
fn check_head(request: &httparse::Request<'_, '_>) -> Result<(), Option<(u16, &'static str)>> {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    };
    if header("host").is_none() {
        return Err(Some((400, "HTTP/1.1 requests need a Host header")));
    }
    let known = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"];
    if !request.method.is_some_and(|method| known.contains(&method)) {
        return Err(Some((501, "Unknown HTTP method")));
    }
    let length = header("content-length");
    if length.is_some() && header("transfer-encoding").is_some() {
        return Err(Some((
            400,
            "Send Content-Length or Transfer-Encoding, not both",
        )));
    }
    let valid_length = |value: &[u8]| {
        std::str::from_utf8(value).is_ok_and(|text| text.trim().parse::<u64>().is_ok())
    };
    if length.is_some_and(|h| !valid_length(h.value)) {
        return Err(Some((400, "Content-Length must be a non-negative integer")));
    }
    Ok(())
}

/// Writes a JSON error response and closes, for requests async-h1 would drop unanswered.
async fn write_plain_error(
    stream: &Async<TcpStream>,
    status: u16,
    message: &str,
) -> std::io::Result<()> {
    let body = serde_json::json!({ "error": message }).to_string();
    let reason = match status {
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Bad Request",
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
