//! The HTTP API over async-h1: reads a bounded body, hands the request to the driver and
//! writes its JSON response.

use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_channel::Sender;
use crier_core::ApiResponse;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use http_types::{Request, Response, StatusCode};
use log::debug;
use smol::Async;

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
