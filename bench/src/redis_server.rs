//! A private redis-server child process on a free loopback port, for benchmarks of
//! crier's cluster mode.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal, kill_process};

/// redis-server prints this once it accepts connections.
const READY_LINE: &str = "Ready to accept connections";

/// Interval between checks for the child's exit after SIGTERM.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running redis-server without persistence. Dropping it without calling
/// [`RedisServer::terminate`] kills the process with SIGKILL and reaps it.
pub struct RedisServer {
    child: Child,
    port: u16,
    reaped: bool,
}

impl RedisServer {
    /// Starts `binary` on a free port of 127.0.0.1 with saving and the append-only file
    /// turned off, and waits up to `ready_timeout` for it to accept connections.
    pub fn start(binary: &Path, ready_timeout: Duration) -> Result<Self> {
        let port = free_port()?;
        let spawned = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == ErrorKind::NotFound => bail!(
                "redis-server not found at {}: install it (`apt-get install redis-server`) or pass --redis-server PATH",
                binary.display()
            ),
            Err(error) => {
                return Err(error).with_context(|| format!("failed to start {}", binary.display()));
            }
        };

        // A thread reads stdout until the process exits, so redis-server does not block on
        // a full pipe, and reports the ready line.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready_sender, ready_receiver) = mpsc::channel();
        thread::Builder::new()
            .name("redis-stdout".to_owned())
            .spawn(move || {
                let mut ready_sender = Some(ready_sender);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if line.contains(READY_LINE)
                        && let Some(sender) = ready_sender.take()
                    {
                        // The receiver is gone only if `start` already gave up.
                        let _ = sender.send(());
                    }
                }
            })
            .context("failed to start the redis-server stdout reader thread")?;

        let mut server = RedisServer {
            child,
            port,
            reaped: false,
        };
        match ready_receiver.recv_timeout(ready_timeout) {
            Ok(()) => Ok(server),
            Err(RecvTimeoutError::Timeout) => bail!(
                "redis-server on port {port} did not print {READY_LINE:?} within {} s",
                ready_timeout.as_secs()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = server
                    .child
                    .wait()
                    .context("failed to wait for redis-server")?;
                server.reaped = true;
                bail!(
                    "redis-server on port {port} exited with {status} before accepting connections"
                )
            }
        }
    }

    /// Returns the URL that crier's `--redis_address` takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit. After that the
    /// process is killed with SIGKILL (when `self` is dropped) and the call fails.
    pub fn terminate(mut self, timeout: Duration) -> Result<()> {
        let pid = Pid::from_child(&self.child);
        kill_process(pid, Signal::TERM)
            .with_context(|| format!("failed to send SIGTERM to redis-server (pid {pid})"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .child
                .try_wait()
                .context("failed to poll redis-server")?
                .is_some()
            {
                self.reaped = true;
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "redis-server (pid {pid}) did not exit within {} s of SIGTERM and was killed with SIGKILL",
                    timeout.as_secs()
                );
            }
            thread::sleep(EXIT_POLL_INTERVAL);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // Both calls fail only if the child was already reaped, which `reaped` rules out.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns a port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("failed to find a free port")?;
    let port = listener
        .local_addr()
        .context("failed to read the address of a bound socket")?
        .port();
    Ok(port)
}
