//! Measures the resident memory that a crier daemon uses per idle WebSocket
//! connection subscribed to a public channel.
//!
//! Run `idle-memory --help` for the options. Figures go to stdout as
//! `key=value` lines, progress and errors to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crier_bench::client::{self, PusherSocket};
use crier_bench::proc_status::{MemoryStatus, read_memory_status};
use crier_bench::server::{CrierProcess, default_crier_path};
use futures_util::StreamExt;
use futures_util::stream;
use rustix::process::{Resource, getrlimit};

const APP_KEY: &str = "bench-key";
const APP_SECRET: &str = "bench-secret";
const APP_ID: &str = "1";

/// Connections opened and closed before the baseline, so that one-time
/// allocations in crier, such as the first growth of its maps and buffer
/// pools, are not counted per connection.
const WARM_UP_CONNECTIONS: usize = 50;

/// Upper bound for `--connections`. Each connection uses one file descriptor
/// in this process and one in crier, and both inherit this process's
/// open-file limit. [`check_fd_limit`] checks the actual limit, and this cap
/// keeps a run within a common limit of 20,000 with room to spare.
const MAX_CONNECTIONS: usize = 18_000;

/// File descriptors this process needs besides its client sockets.
const RESERVED_FDS: u64 = 64;

/// Time limit for the whole run, from starting crier to its exit.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// Time limit for crier to print its listening line.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for crier to exit after SIGTERM.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for one connection to connect, handshake and subscribe.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for one connection's closing handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after the warm-up connections are closed, before the baseline.
const WARM_UP_SETTLE: Duration = Duration::from_secs(1);

const USAGE: &str = "\
Usage: idle-memory [OPTIONS]

Starts crier, opens idle WebSocket connections subscribed to public channels,
and prints crier's resident memory (VmRSS) per connection.

Options:
  --crier PATH          crier binary [default: target/release/crier in this workspace]
  --connections N       idle connections to open, 1 to 18000 [default: 10000]
  --concurrency N       connections being opened at the same time [default: 200]
  --channels N          distinct public channels; connection i joins bench-(i mod N) [default: 100]
  --settle-secs SECS    pause before reading VmRSS once all connections are open [default: 3]
  -h, --help            print this help
";

struct Options {
    crier: PathBuf,
    connections: usize,
    concurrency: usize,
    channels: usize,
    settle: Duration,
}

/// Memory figures of one run.
struct Report {
    connections: usize,
    channels: usize,
    baseline: MemoryStatus,
    loaded: MemoryStatus,
}

fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("idle-memory: {message}\nRun `idle-memory --help` for the options.");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("idle-memory: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line. Returns `Ok(None)` when help was requested.
fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        crier: default_crier_path(),
        connections: 10_000,
        concurrency: 200,
        channels: 100,
        settle: Duration::from_secs(3),
    };
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline_value) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("missing value for {name}"))
        };
        match name.as_str() {
            "--crier" => options.crier = PathBuf::from(value()?),
            "--connections" => options.connections = parse_count(&name, &value()?)?,
            "--concurrency" => options.concurrency = parse_count(&name, &value()?)?,
            "--channels" => options.channels = parse_count(&name, &value()?)?,
            "--settle-secs" => {
                let secs = parse_count(&name, &value()?)?;
                options.settle = Duration::from_secs(secs as u64);
            }
            _ => return Err(format!("unknown argument {name:?}")),
        }
    }
    if options.connections > MAX_CONNECTIONS {
        return Err(format!(
            "--connections {} is above the maximum of {MAX_CONNECTIONS}: this process and crier \
             each hold one file descriptor per connection, and the open-file limit \
             (ulimit -n) applies to both",
            options.connections
        ));
    }
    Ok(Some(options))
}

fn parse_count(name: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(count) if count > 0 => Ok(count),
        _ => Err(format!(
            "invalid value {value:?} for {name}: expected a positive integer"
        )),
    }
}

/// Fails early if the open-file limit cannot hold all client sockets.
fn check_fd_limit(connections: usize) -> Result<()> {
    let needed = connections as u64 + RESERVED_FDS;
    let limit = getrlimit(Resource::Nofile);
    match limit.current {
        Some(current) if current < needed => bail!(
            "the open-file limit (ulimit -n) is {current}, but {connections} connections need at \
             least {needed}: raise the limit or lower --connections"
        ),
        _ => Ok(()),
    }
}

/// Starts crier, measures it, prints the report and stops crier.
fn run(options: &Options) -> Result<()> {
    check_fd_limit(options.connections)?;
    let started = Instant::now();
    let args = [
        "-k",
        APP_KEY,
        "-s",
        APP_SECRET,
        "--app_id",
        APP_ID,
        "-w",
        "127.0.0.1:0",
        "-a",
        "127.0.0.1:0",
    ];
    let mut server = CrierProcess::start(&options.crier, args, LISTEN_TIMEOUT)?;
    eprintln!(
        "crier (pid {}) listening on {}",
        server.pid(),
        server.websocket_addr()
    );

    // The measurement stays within RUN_TIMEOUT with room left for SIGTERM.
    let measure_timeout = RUN_TIMEOUT
        .saturating_sub(started.elapsed())
        .saturating_sub(TERMINATE_TIMEOUT);
    let measured = smol::block_on(client::with_timeout(
        measure_timeout,
        "the benchmark run",
        measure(options, &mut server),
    ));
    match measured {
        Ok(report) => {
            // Print before stopping crier, so a failed shutdown keeps the figures.
            print_report(&report);
            server.terminate(TERMINATE_TIMEOUT)
        }
        Err(error) => {
            // Dropping `server` kills it. Report crier's exit if that caused
            // the failure, since its stderr usually explains it.
            if let Err(exit) = server.check_running() {
                return Err(error.context(format!("{exit:#}")));
            }
            Err(error)
        }
    }
}

async fn measure(options: &Options, server: &mut CrierProcess) -> Result<Report> {
    let addr = server.websocket_addr();

    let warm_up = open_connections(addr, WARM_UP_CONNECTIONS, options, false).await?;
    close_connections(warm_up, options.concurrency).await?;
    smol::Timer::after(WARM_UP_SETTLE).await;
    server.check_running()?;
    let baseline = read_memory_status(server.pid())?;
    eprintln!(
        "baseline VmRSS {} KiB after {WARM_UP_CONNECTIONS} warm-up connections",
        baseline.rss_kib
    );

    let opening = Instant::now();
    let sockets = open_connections(addr, options.connections, options, true).await?;
    eprintln!(
        "opened {} connections in {:.1} s; waiting {} s before measuring",
        sockets.len(),
        opening.elapsed().as_secs_f64(),
        options.settle.as_secs()
    );
    smol::Timer::after(options.settle).await;
    server.check_running()?;
    let loaded = read_memory_status(server.pid())?;

    close_connections(sockets, options.concurrency).await?;
    server.check_running()?;
    Ok(Report {
        connections: options.connections,
        channels: options.channels,
        baseline,
        loaded,
    })
}

/// Opens `count` connections with at most `options.concurrency` handshakes in
/// flight, each subscribed to one of `options.channels` public channels.
async fn open_connections(
    addr: SocketAddr,
    count: usize,
    options: &Options,
    show_progress: bool,
) -> Result<Vec<PusherSocket>> {
    let path = format!("/app/{APP_KEY}?protocol=7&client=bench&version=0");
    let path = path.as_str();
    let mut opened = stream::iter(0..count)
        .map(|index| {
            let channel = format!("bench-{}", index % options.channels);
            async move {
                let open = async {
                    let mut socket = client::connect(addr, path).await?;
                    client::subscribe(&mut socket, &channel).await?;
                    Ok(socket)
                };
                client::with_timeout(OPEN_TIMEOUT, "connect and subscribe", open)
                    .await
                    .with_context(|| {
                        format!("opening connection {index} (channel {channel}) failed")
                    })
            }
        })
        .buffer_unordered(options.concurrency);

    let progress_step = (count / 10).max(1);
    let mut sockets = Vec::with_capacity(count);
    while let Some(result) = opened.next().await {
        sockets.push(result?);
        if show_progress && sockets.len() % progress_step == 0 {
            eprintln!("  {}/{count} connections subscribed", sockets.len());
        }
    }
    Ok(sockets)
}

/// Runs the closing handshake on every socket, `concurrency` at a time.
async fn close_connections(sockets: Vec<PusherSocket>, concurrency: usize) -> Result<()> {
    let total = sockets.len();
    let mut closed = stream::iter(sockets)
        .map(|socket| {
            client::with_timeout(CLOSE_TIMEOUT, "closing a connection", client::close(socket))
        })
        .buffer_unordered(concurrency);
    let mut failures = 0;
    let mut first_failure = None;
    while let Some(result) = closed.next().await {
        if let Err(error) = result {
            failures += 1;
            first_failure.get_or_insert(error);
        }
    }
    match first_failure {
        None => Ok(()),
        Some(error) => Err(error.context(format!(
            "{failures} of {total} connections did not close cleanly; the first failure follows"
        ))),
    }
}

fn print_report(report: &Report) {
    let baseline_kib = report.baseline.rss_kib as i64;
    let loaded_kib = report.loaded.rss_kib as i64;
    let per_connection_bytes = (loaded_kib - baseline_kib) * 1024 / report.connections as i64;

    println!(
        "{:>11}  {:>16}  {:>14}  {:>10}  {:>24}",
        "connections",
        "baseline_rss_kib",
        "loaded_rss_kib",
        "vm_hwm_kib",
        "rss_per_connection_bytes"
    );
    println!(
        "{:>11}  {:>16}  {:>14}  {:>10}  {:>24}",
        report.connections,
        baseline_kib,
        loaded_kib,
        report.loaded.peak_rss_kib,
        per_connection_bytes
    );
    println!("connections={}", report.connections);
    println!("channels={}", report.channels);
    println!("baseline_rss_kib={baseline_kib}");
    println!("loaded_rss_kib={loaded_kib}");
    println!("vm_hwm_kib={}", report.loaded.peak_rss_kib);
    println!("idle_rss_per_connection_bytes={per_connection_bytes}");
}
