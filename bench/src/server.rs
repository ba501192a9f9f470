//! A crier daemon running as a child process.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal, kill_process};

/// Returns the release build of the daemon in this workspace, the benchmarks' default.
pub fn default_crier_path() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench crate sits inside the workspace");
    workspace.join("target/release/crier")
}

/// Text that precedes the bound address in crier's startup log line.
const WEBSOCKET_LISTENING: &str = "websocket listening on ";

/// Number of stderr lines kept for error messages.
const STDERR_TAIL_LINES: usize = 20;

/// Interval between checks for the child's exit after a signal.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running crier process whose stderr is read by a background thread.
///
/// Dropping it without calling [`CrierProcess::terminate`] kills the process
/// with SIGKILL and reaps it.
pub struct CrierProcess {
    child: Child,
    exit_status: Option<ExitStatus>,
    websocket_addr: SocketAddr,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl CrierProcess {
    /// Starts `binary` with `args` and waits up to `listen_timeout` for the
    /// `websocket listening on ADDR` line on its stderr.
    ///
    /// A background thread drains the stderr pipe until the process exits, so
    /// the server does not block on a full pipe.
    pub fn start<I, S>(binary: &Path, args: I, listen_timeout: Duration) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let spawned = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == ErrorKind::NotFound => bail!(
                "crier binary not found at {}: build it with `cargo build --release -p crier-smol` or pass --crier PATH",
                binary.display()
            ),
            Err(error) => {
                return Err(error).with_context(|| format!("failed to start {}", binary.display()));
            }
        };

        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (addr_sender, addr_receiver) = mpsc::channel();
        let tail_for_thread = Arc::clone(&stderr_tail);
        thread::Builder::new()
            .name("crier-stderr".to_owned())
            .spawn(move || drain_stderr(stderr, &tail_for_thread, addr_sender))
            .context("failed to start the stderr reader thread")?;

        let mut process = CrierProcess {
            child,
            exit_status: None,
            websocket_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            stderr_tail,
        };
        match addr_receiver.recv_timeout(listen_timeout) {
            Ok(addr) => {
                process.websocket_addr = addr;
                Ok(process)
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "crier printed no `{}ADDR` line within {} s; its stderr ended with:\n{}",
                WEBSOCKET_LISTENING.trim_end(),
                listen_timeout.as_secs(),
                process.stderr_tail()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                // The reader thread hit end of file, so the process is exiting.
                let status = process.child.wait().context("failed to wait for crier")?;
                process.exit_status = Some(status);
                bail!(
                    "crier exited with {status} before listening; its stderr ended with:\n{}",
                    process.stderr_tail()
                )
            }
        }
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the WebSocket address that crier reported on stderr.
    pub fn websocket_addr(&self) -> SocketAddr {
        self.websocket_addr
    }

    /// Returns the last lines crier wrote to stderr, joined by newlines.
    pub fn stderr_tail(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        lines.join("\n")
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let status = self.child.try_wait().context("failed to poll crier")?;
        if let Some(status) = status {
            self.exit_status = Some(status);
            bail!(
                "crier exited unexpectedly with {status}; its stderr ended with:\n{}",
                self.stderr_tail()
            );
        }
        Ok(())
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    ///
    /// Fails if the process had to be killed with SIGKILL or exited with a
    /// non-zero status.
    pub fn terminate(mut self, timeout: Duration) -> Result<()> {
        if let Some(status) = self.exit_status {
            bail!("crier had already exited with {status}");
        }
        let pid = Pid::from_child(&self.child);
        kill_process(pid, Signal::TERM)
            .with_context(|| format!("failed to send SIGTERM to crier (pid {pid})"))?;

        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().context("failed to poll crier")? {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill_and_reap();
                bail!(
                    "crier (pid {pid}) did not exit within {} s of SIGTERM and was killed with SIGKILL",
                    timeout.as_secs()
                );
            }
            thread::sleep(EXIT_POLL_INTERVAL);
        };
        self.exit_status = Some(status);
        if !status.success() {
            bail!(
                "crier exited with {status} after SIGTERM; its stderr ended with:\n{}",
                self.stderr_tail()
            );
        }
        Ok(())
    }

    fn kill_and_reap(&mut self) {
        if self.exit_status.is_some() {
            return;
        }
        // Both calls fail only if the child was already reaped, which
        // `exit_status` rules out, so their errors carry no information.
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.exit_status = Some(status);
        }
    }
}

impl Drop for CrierProcess {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Reads stderr line by line until end of file, sends the first WebSocket
/// address found, and keeps the last [`STDERR_TAIL_LINES`] lines in `tail`.
fn drain_stderr(
    stderr: ChildStderr,
    tail: &Mutex<VecDeque<String>>,
    addr_sender: mpsc::Sender<SocketAddr>,
) {
    let mut reader = BufReader::new(stderr);
    let mut addr_sender = Some(addr_sender);
    let mut buffer = Vec::new();
    // The loop ends at end of file, which comes when the process exits.
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buffer).trim_end().to_owned();
        if let Some(addr) = parse_websocket_addr(&line)
            && let Some(sender) = addr_sender.take()
        {
            // The receiver is gone only if `start` already gave up.
            let _ = sender.send(addr);
        }
        let mut tail = tail.lock().unwrap_or_else(|poison| poison.into_inner());
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Extracts `ADDR` from a log line containing `websocket listening on ADDR`.
///
/// Anything after the address (a full stop, a colour escape code) is ignored.
pub fn parse_websocket_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(WEBSOCKET_LISTENING)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].trim_end_matches('.').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_log_line() {
        let addr = parse_websocket_addr("websocket listening on 127.0.0.1:41234");
        assert_eq!(addr, Some(SocketAddr::from(([127, 0, 0, 1], 41234))));
    }

    #[test]
    fn parses_line_with_prefix_and_suffix() {
        let line =
            "[2025-01-01T00:00:00Z INFO  crier] websocket listening on 127.0.0.1:8080 (app 1)";
        assert_eq!(
            parse_websocket_addr(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        let line = "websocket listening on 127.0.0.1:8080.";
        assert_eq!(
            parse_websocket_addr(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
    }

    #[test]
    fn parses_ipv6_addr() {
        let addr = parse_websocket_addr("websocket listening on [::1]:9000");
        assert_eq!(addr, Some("[::1]:9000".parse().unwrap()));
    }

    #[test]
    fn ignores_other_lines() {
        assert_eq!(
            parse_websocket_addr("http api listening on 127.0.0.1:4567"),
            None
        );
        assert_eq!(parse_websocket_addr("websocket listening on nowhere"), None);
    }
}
