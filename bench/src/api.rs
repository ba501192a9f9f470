//! A client for crier's HTTP API that signs its requests as the Pusher server
//! libraries do (auth_version 1.0) and keeps one HTTP/1.1 connection open.

use std::net::{SocketAddr, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use md5::{Digest, Md5};
use smol::Async;
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Maximum response body size accepted. crier's API responses are a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Maximum number of response header lines accepted.
const MAX_HEADER_LINES: usize = 64;

/// An app's credentials as given to crier with `-k`, `-s` and `--app_id`.
#[derive(Clone, Debug)]
pub struct App {
    pub id: String,
    pub key: String,
    pub secret: String,
}

/// One keep-alive HTTP/1.1 connection to crier's API listener.
pub struct ApiClient {
    addr: SocketAddr,
    app: App,
    stream: BufReader<Async<TcpStream>>,
}

/// Status and body of an HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl ApiClient {
    /// Opens a TCP connection to the API listener at `addr`.
    pub async fn connect(addr: SocketAddr, app: App) -> Result<Self> {
        let stream = Async::<TcpStream>::connect(addr)
            .await
            .with_context(|| format!("TCP connect to the HTTP API at {addr} failed"))?;
        stream
            .get_ref()
            .set_nodelay(true)
            .context("failed to set TCP_NODELAY")?;
        Ok(Self {
            addr,
            app,
            stream: BufReader::new(stream),
        })
    }

    /// Sends `POST /apps/{id}/events` with the JSON `body` and returns the
    /// response. The request is signed with the current Unix time.
    pub async fn post_events(&mut self, body: &str) -> Result<Response> {
        let path = format!("/apps/{}/events", self.app.id);
        let query = signed_query(&self.app, "POST", &path, body, unix_secs()?)?;
        let request = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .context("failed to send the HTTP request")?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<Response> {
        let mut line = String::new();
        self.stream
            .read_line(&mut line)
            .await
            .context("failed to read the HTTP status line")?;
        if line.is_empty() {
            bail!("the server closed the connection without a response");
        }
        let status = parse_status_line(&line)?;

        let mut content_length = None;
        for _ in 0..MAX_HEADER_LINES {
            line.clear();
            self.stream
                .read_line(&mut line)
                .await
                .context("failed to read an HTTP header")?;
            let header = line.trim_end();
            if header.is_empty() {
                let length = content_length
                    .ok_or_else(|| anyhow!("HTTP {status} response without Content-Length"))?;
                return self.read_body(status, length).await;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                let length: usize = value
                    .trim()
                    .parse()
                    .with_context(|| format!("invalid Content-Length {:?}", value.trim()))?;
                content_length = Some(length);
            }
        }
        bail!("HTTP response with more than {MAX_HEADER_LINES} header lines")
    }

    async fn read_body(&mut self, status: u16, length: usize) -> Result<Response> {
        if length > MAX_RESPONSE_BYTES {
            bail!("HTTP response body of {length} bytes is above {MAX_RESPONSE_BYTES}");
        }
        let mut body = vec![0; length];
        self.stream
            .read_exact(&mut body)
            .await
            .context("failed to read the HTTP response body")?;
        let body = String::from_utf8(body).context("HTTP response body is not UTF-8")?;
        Ok(Response { status, body })
    }
}

/// Builds the query string of a signed API request, `auth_signature` last.
pub fn signed_query(
    app: &App,
    method: &str,
    path: &str,
    body: &str,
    timestamp: u64,
) -> Result<String> {
    let body_md5: String = Md5::digest(body.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    // Already in the sorted order the signature requires.
    let unsigned = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}",
        app.key
    );
    let signature = crier_core::sign_api_request(&app.secret, method, path, &unsigned)
        .ok_or_else(|| anyhow!("cannot sign the query {unsigned:?}"))?;
    Ok(format!("{unsigned}&auth_signature={signature}"))
}

fn parse_status_line(line: &str) -> Result<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("invalid HTTP status line {:?}", line.trim_end());
    }
    status
        .parse()
        .with_context(|| format!("invalid HTTP status line {:?}", line.trim_end()))
}

fn unix_secs() -> Result<u64> {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_pusher_libraries() {
        // The expected query is what the pusher Node library 5.3.4 (createSignedQueryString
        // in lib/requests.js) produces for POST /apps/1/events with body {} at this time.
        let app = App {
            id: "1".to_owned(),
            key: "bench-key".to_owned(),
            secret: "bench-secret".to_owned(),
        };
        let query = signed_query(&app, "POST", "/apps/1/events", "{}", 1_700_000_000).unwrap();
        assert_eq!(
            query,
            "auth_key=bench-key&auth_timestamp=1700000000&auth_version=1.0\
             &body_md5=99914b932bd37a50b983c5e7c90ae93b\
             &auth_signature=ea3cec5a3575db8fe5e95c633f67cbe7085263f84042ec0c6376c72b55e16823"
        );
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK\r\n").unwrap(), 200);
        assert_eq!(
            parse_status_line("HTTP/1.1 401 Unauthorized\r\n").unwrap(),
            401
        );
        assert!(parse_status_line("SSH-2.0\r\n").is_err());
    }
}
