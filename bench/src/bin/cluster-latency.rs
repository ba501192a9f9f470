//! Measures the delivery latency of events triggered through crier's HTTP API: on one node
//! without Redis, and on two nodes sharing a redis-server, both to subscribers of the node
//! that took the trigger and to subscribers of the other node.
//!
//! Run `cluster-latency --help` for the options. Figures go to stdout as a table and
//! `key=value` lines, progress and errors to stderr.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use async_tungstenite::tungstenite::Message;
use crier_bench::api::{ApiClient, App};
use crier_bench::client::{self, PusherSocket};
use crier_bench::redis_server::RedisServer;
use crier_bench::server::{CrierProcess, default_crier_path};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::Value;
use smol::Timer;

const APP_KEY: &str = "bench-key";
const APP_SECRET: &str = "bench-secret";
const APP_ID: &str = "1";
const CHANNEL: &str = "bench-latency";

/// Event names. Warm-up events are not measured, and the end event marks for subscribers that
/// every measured event was sent before it.
const MEASURED_EVENT: &str = "latency";
const WARM_UP_EVENT: &str = "latency-warm-up";
const END_EVENT: &str = "latency-end";

/// Time limit for crier and redis-server to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for a cluster node to log its Redis subscription.
const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time limit for crier and redis-server to exit after SIGTERM.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for one subscriber to connect and subscribe.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for every subscriber to receive a warm-up event.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum time a subscriber waits for its next frame before it fails.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed on top of the measured seconds for connecting, warming up and draining.
const PHASE_OVERHEAD: Duration = Duration::from_secs(60);

const MAX_RATE: u32 = 5_000;
const MAX_SECONDS: u32 = 300;
const MAX_SUBSCRIBERS: usize = 1_000;

const USAGE: &str = "\
Usage: cluster-latency [OPTIONS]

Starts crier alone, then redis-server and two crier nodes in cluster mode. Holds WebSocket
subscribers on one public channel, triggers events at a steady rate through the HTTP API of
the first node, and prints the p50, p99 and maximum latency from the trigger to each
subscriber: single node, same node in cluster mode, and the other node in cluster mode.

Options:
  --crier PATH          crier binary [default: target/release/crier in this workspace]
  --redis-server PATH   redis-server binary [default: redis-server from PATH]
  --rate N              events per second, 1 to 5000 [default: 200]
  --seconds N           measured seconds per phase, 1 to 300 [default: 10]
  --subscribers N       subscribers per node, 1 to 1000 [default: 10]
  -h, --help            print this help
";

struct Options {
    crier: PathBuf,
    redis_server: PathBuf,
    rate: u32,
    seconds: u32,
    subscribers: usize,
}

impl Options {
    fn events(&self) -> u64 {
        u64::from(self.rate) * u64::from(self.seconds)
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.rate
    }
}

/// Subscribers of one node, measured together.
struct Group {
    scenario: &'static str,
    addr: SocketAddr,
}

/// Latencies and duplicate count of one subscriber.
#[derive(Default)]
struct Receipt {
    /// Latency of each measured event, indexed by sequence number, or `None` when the event
    /// did not arrive.
    latencies: Vec<Option<Duration>>,
    duplicates: u64,
}

/// Figures of one scenario.
struct ScenarioReport {
    scenario: &'static str,
    nodes: usize,
    subscribers: usize,
    events: u64,
    deliveries: u64,
    lost: u64,
    duplicates: u64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Figures of one phase: its scenarios and the HTTP API response times.
struct PhaseReport {
    scenarios: Vec<ScenarioReport>,
    api_p50: Duration,
    api_p99: Duration,
    late_sends: u64,
}

fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("cluster-latency: {message}\nRun `cluster-latency --help` for the options.");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cluster-latency: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line. Returns `Ok(None)` when help was requested.
fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        crier: default_crier_path(),
        redis_server: PathBuf::from("redis-server"),
        rate: 200,
        seconds: 10,
        subscribers: 10,
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
            "--redis-server" => options.redis_server = PathBuf::from(value()?),
            "--rate" => options.rate = parse_bounded(&name, &value()?, MAX_RATE as usize)? as u32,
            "--seconds" => {
                options.seconds = parse_bounded(&name, &value()?, MAX_SECONDS as usize)? as u32;
            }
            "--subscribers" => {
                options.subscribers = parse_bounded(&name, &value()?, MAX_SUBSCRIBERS)?;
            }
            _ => return Err(format!("unknown argument {name:?}")),
        }
    }
    Ok(Some(options))
}

fn parse_bounded(name: &str, value: &str, max: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(count) if (1..=max).contains(&count) => Ok(count),
        _ => Err(format!(
            "invalid value {value:?} for {name}: expected an integer from 1 to {max}"
        )),
    }
}

fn crier_args(redis_url: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
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
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(url) = redis_url {
        args.extend(["-r".to_owned(), url.to_owned()]);
    }
    args
}

fn app() -> App {
    App {
        id: APP_ID.to_owned(),
        key: APP_KEY.to_owned(),
        secret: APP_SECRET.to_owned(),
    }
}

/// Runs the single-node phase, then the cluster phase, and prints the report.
fn run(options: &Options) -> Result<()> {
    let origin = Instant::now();

    eprintln!("phase 1: one crier node without Redis");
    let mut single = CrierProcess::start(&options.crier, crier_args(None), START_TIMEOUT)?;
    let groups = [Group {
        scenario: "single",
        addr: single.websocket_addr(),
    }];
    let measured = measure_phase(options, &groups, single.websocket_addr(), origin);
    let single_report = finish_phase(measured, &mut single)?;
    single.terminate(TERMINATE_TIMEOUT)?;

    eprintln!("phase 2: redis-server and two crier nodes in cluster mode");
    let redis = RedisServer::start(&options.redis_server, START_TIMEOUT)?;
    eprintln!("redis-server (pid {}) at {}", redis.pid(), redis.url());
    let mut first = start_cluster_node(options, &redis)?;
    let mut second = start_cluster_node(options, &redis)?;
    let groups = [
        Group {
            scenario: "cluster_same",
            addr: first.websocket_addr(),
        },
        Group {
            scenario: "cluster_cross",
            addr: second.websocket_addr(),
        },
    ];
    let measured = measure_phase(options, &groups, first.websocket_addr(), origin);
    let cluster_report = finish_phase(measured, &mut first)?;
    second.check_running()?;
    first.terminate(TERMINATE_TIMEOUT)?;
    second.terminate(TERMINATE_TIMEOUT)?;
    redis.terminate(TERMINATE_TIMEOUT)?;

    print_report(options, &single_report, &cluster_report);
    let failures: Vec<String> = single_report
        .scenarios
        .iter()
        .chain(&cluster_report.scenarios)
        .filter(|report| report.lost > 0 || report.duplicates > 0)
        .map(|report| {
            format!(
                "{}: {} lost, {} duplicate deliveries",
                report.scenario, report.lost, report.duplicates
            )
        })
        .collect();
    if !failures.is_empty() {
        bail!(
            "deliveries went wrong, so the figures are invalid: {}",
            failures.join("; ")
        );
    }
    Ok(())
}

/// Adds crier's exit to the error when the node died during the phase.
fn finish_phase(measured: Result<PhaseReport>, node: &mut CrierProcess) -> Result<PhaseReport> {
    match measured {
        Ok(report) => Ok(report),
        Err(error) => match node.check_running() {
            Err(exit) => Err(error.context(format!("{exit:#}"))),
            Ok(()) => Err(error),
        },
    }
}

/// Starts one crier node with `-r` and waits until it logs its Redis subscription.
fn start_cluster_node(options: &Options, redis: &RedisServer) -> Result<CrierProcess> {
    let url = redis.url();
    let mut node = CrierProcess::start(&options.crier, crier_args(Some(&url)), START_TIMEOUT)?;
    let deadline = Instant::now() + CLUSTER_CONNECT_TIMEOUT;
    while !node.stderr_tail().contains("cluster connected") {
        node.check_running()?;
        if Instant::now() >= deadline {
            bail!(
                "crier (pid {}) did not log `cluster connected` within {} s; its stderr ended with:\n{}",
                node.pid(),
                CLUSTER_CONNECT_TIMEOUT.as_secs(),
                node.stderr_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "crier (pid {}) listening on {}, joined the cluster",
        node.pid(),
        node.websocket_addr()
    );
    Ok(node)
}

/// Connects `options.subscribers` subscribers to each group's node, triggers the events
/// through the API at `trigger_addr`, and collects every subscriber's receipt.
fn measure_phase(
    options: &Options,
    groups: &[Group],
    trigger_addr: SocketAddr,
    origin: Instant,
) -> Result<PhaseReport> {
    let timeout = Duration::from_secs(u64::from(options.seconds)) + PHASE_OVERHEAD;
    let phase = async {
        let sockets = open_subscribers(options, groups).await?;
        eprintln!(
            "{} subscribers per node connected; warming up",
            options.subscribers
        );

        let warm = Cell::new(0_usize);
        let receivers = sockets
            .into_iter()
            .map(|socket| receive(socket, options.events(), origin, &warm));
        let sender = send(options, trigger_addr, origin, &warm, receivers.len());
        let (sent, receipts) = futures_util::future::join(sender, join_all(receivers)).await;
        let (api_latencies, late_sends) = sent?;
        let receipts = receipts.into_iter().collect::<Result<Vec<_>>>()?;

        // Receipts are in group order, `options.subscribers` per group.
        let scenarios = groups
            .iter()
            .zip(receipts.chunks(options.subscribers))
            .map(|(group, receipts)| summarize(group.scenario, groups.len(), options, receipts))
            .collect();
        let api_latencies = sorted(api_latencies);
        Ok(PhaseReport {
            scenarios,
            api_p50: percentile(&api_latencies, 50.0),
            api_p99: percentile(&api_latencies, 99.0),
            late_sends,
        })
    };
    smol::block_on(client::with_timeout(
        timeout,
        "the measurement phase",
        phase,
    ))
}

/// Opens the subscribers of every group, in group order, each subscribed to [`CHANNEL`].
async fn open_subscribers(options: &Options, groups: &[Group]) -> Result<Vec<PusherSocket>> {
    let path = format!("/app/{APP_KEY}?protocol=7&client=bench&version=0");
    let mut sockets = Vec::with_capacity(options.subscribers * groups.len());
    for group in groups {
        for _ in 0..options.subscribers {
            let open = async {
                let mut socket = client::connect(group.addr, &path).await?;
                client::subscribe(&mut socket, CHANNEL).await?;
                Ok(socket)
            };
            let socket = client::with_timeout(OPEN_TIMEOUT, "connect and subscribe", open)
                .await
                .with_context(|| format!("opening a subscriber of {} failed", group.addr))?;
            sockets.push(socket);
        }
    }
    Ok(sockets)
}

/// Sends warm-up events until every subscriber received one, then the measured events at a
/// steady rate, then the end event. Returns the API response times and the number of events
/// sent more than one interval behind schedule.
async fn send(
    options: &Options,
    trigger_addr: SocketAddr,
    origin: Instant,
    warm: &Cell<usize>,
    total_subscribers: usize,
) -> Result<(Vec<Duration>, u64)> {
    let mut api = ApiClient::connect(trigger_addr, app()).await?;
    let interval = options.interval();

    let warm_up_deadline = Instant::now() + WARM_UP_TIMEOUT;
    while warm.get() < total_subscribers {
        if Instant::now() >= warm_up_deadline {
            bail!(
                "only {} of {total_subscribers} subscribers received a warm-up event within {} s",
                warm.get(),
                WARM_UP_TIMEOUT.as_secs()
            );
        }
        trigger(&mut api, WARM_UP_EVENT, &serde_json::json!({}).to_string()).await?;
        Timer::after(interval).await;
    }
    eprintln!(
        "sending {} events at {} per second",
        options.events(),
        options.rate
    );

    let mut api_latencies = Vec::with_capacity(options.events() as usize);
    let mut late_sends = 0;
    let start = Instant::now();
    for sequence in 0..options.events() {
        let scheduled = start + interval * sequence as u32;
        Timer::at(scheduled).await;
        if scheduled.elapsed() > interval {
            late_sends += 1;
        }
        let sent_at = origin.elapsed();
        let data = serde_json::json!({ "seq": sequence, "t_ns": sent_at.as_nanos() as u64 });
        trigger(&mut api, MEASURED_EVENT, &data.to_string()).await?;
        api_latencies.push(origin.elapsed() - sent_at);
    }
    trigger(&mut api, END_EVENT, "{}").await?;
    Ok((api_latencies, late_sends))
}

async fn trigger(api: &mut ApiClient, name: &str, data: &str) -> Result<()> {
    let body = serde_json::json!({ "name": name, "channel": CHANNEL, "data": data }).to_string();
    let response = api.post_events(&body).await?;
    if response.status != 200 {
        bail!(
            "POST events returned HTTP {}: {}",
            response.status,
            response.body
        );
    }
    Ok(())
}

/// Reads frames until the end event and records the latency of every measured event.
async fn receive(
    mut socket: PusherSocket,
    events: u64,
    origin: Instant,
    warm: &Cell<usize>,
) -> Result<Receipt> {
    let mut receipt = Receipt {
        latencies: vec![None; events as usize],
        duplicates: 0,
    };
    let mut is_warm = false;
    loop {
        let message = client::with_timeout(FRAME_TIMEOUT, "waiting for an event", async {
            socket
                .next()
                .await
                .ok_or_else(|| anyhow!("the server closed the connection"))?
                .context("failed to read a WebSocket frame")
        })
        .await?;
        let received_at = origin.elapsed();
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => bail!("the server closed the connection: {frame:?}"),
            _ => continue,
        };
        let frame: Value = serde_json::from_str(text.as_str())
            .with_context(|| format!("the server sent invalid JSON: {text}"))?;
        match frame.get("event").and_then(Value::as_str) {
            Some(MEASURED_EVENT) => {
                let (sequence, sent_at) = decode_measured(&frame)?;
                let slot = receipt
                    .latencies
                    .get_mut(sequence as usize)
                    .ok_or_else(|| anyhow!("event sequence {sequence} is out of range"))?;
                if slot.is_some() {
                    receipt.duplicates += 1;
                } else {
                    *slot = Some(received_at.saturating_sub(sent_at));
                }
            }
            Some(WARM_UP_EVENT) if !is_warm => {
                is_warm = true;
                warm.set(warm.get() + 1);
            }
            Some(END_EVENT) => break,
            Some("pusher:error") => bail!("the server sent {text}"),
            _ => {}
        }
    }
    // Best effort: the node is stopped right after the phase anyway.
    let _ = client::with_timeout(Duration::from_secs(5), "closing", client::close(socket)).await;
    Ok(receipt)
}

/// Returns the sequence number and send time carried in a measured event's `data`.
fn decode_measured(frame: &Value) -> Result<(u64, Duration)> {
    let data = frame
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("measured event without string data: {frame}"))?;
    let data: Value = serde_json::from_str(data).context("measured event data is not JSON")?;
    let sequence = data.get("seq").and_then(Value::as_u64);
    let sent_ns = data.get("t_ns").and_then(Value::as_u64);
    match (sequence, sent_ns) {
        (Some(sequence), Some(sent_ns)) => Ok((sequence, Duration::from_nanos(sent_ns))),
        _ => bail!("measured event data without seq and t_ns: {data}"),
    }
}

fn summarize(
    scenario: &'static str,
    nodes: usize,
    options: &Options,
    receipts: &[Receipt],
) -> ScenarioReport {
    let latencies: Vec<Duration> = receipts
        .iter()
        .flat_map(|receipt| receipt.latencies.iter().flatten().copied())
        .collect();
    let expected = options.events() * receipts.len() as u64;
    let deliveries = latencies.len() as u64;
    let latencies = sorted(latencies);
    ScenarioReport {
        scenario,
        nodes,
        subscribers: receipts.len(),
        events: options.events(),
        deliveries,
        lost: expected - deliveries,
        duplicates: receipts.iter().map(|receipt| receipt.duplicates).sum(),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
    }
}

fn sorted(mut values: Vec<Duration>) -> Vec<Duration> {
    values.sort_unstable();
    values
}

/// Returns the nearest-rank percentile of sorted `values`, or zero when there are none.
fn percentile(values: &[Duration], percent: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = (percent / 100.0 * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn micros(duration: Duration) -> u128 {
    duration.as_micros()
}

fn ratio(numerator: Duration, denominator: Duration) -> String {
    if denominator.is_zero() {
        return "inf".to_owned();
    }
    format!("{:.2}", numerator.as_secs_f64() / denominator.as_secs_f64())
}

fn print_report(options: &Options, single: &PhaseReport, cluster: &PhaseReport) {
    let scenarios: Vec<&ScenarioReport> =
        single.scenarios.iter().chain(&cluster.scenarios).collect();
    println!(
        "{:<14} {:>5} {:>11} {:>7} {:>10} {:>6} {:>10} {:>8} {:>8} {:>8}",
        "scenario",
        "nodes",
        "subscribers",
        "events",
        "deliveries",
        "lost",
        "duplicates",
        "p50_us",
        "p99_us",
        "max_us"
    );
    for report in &scenarios {
        println!(
            "{:<14} {:>5} {:>11} {:>7} {:>10} {:>6} {:>10} {:>8} {:>8} {:>8}",
            report.scenario,
            report.nodes,
            report.subscribers,
            report.events,
            report.deliveries,
            report.lost,
            report.duplicates,
            micros(report.p50),
            micros(report.p99),
            micros(report.max)
        );
    }
    println!("rate_per_second={}", options.rate);
    println!("seconds={}", options.seconds);
    println!("subscribers_per_node={}", options.subscribers);
    for report in &scenarios {
        let name = report.scenario;
        println!("{name}_p50_us={}", micros(report.p50));
        println!("{name}_p99_us={}", micros(report.p99));
        println!("{name}_max_us={}", micros(report.max));
        println!("{name}_lost={}", report.lost);
        println!("{name}_duplicates={}", report.duplicates);
    }
    for (phase, report) in [("single", single), ("cluster", cluster)] {
        println!("{phase}_api_p50_us={}", micros(report.api_p50));
        println!("{phase}_api_p99_us={}", micros(report.api_p99));
        println!("{phase}_late_sends={}", report.late_sends);
    }
    let baseline = &single.scenarios[0];
    for report in &cluster.scenarios {
        let name = report.scenario;
        println!(
            "{name}_vs_single_p50_ratio={}",
            ratio(report.p50, baseline.p50)
        );
        println!(
            "{name}_vs_single_p99_ratio={}",
            ratio(report.p99, baseline.p99)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&values, 50.0), Duration::from_micros(50));
        assert_eq!(percentile(&values, 99.0), Duration::from_micros(99));
        assert_eq!(percentile(&values[..1], 99.0), Duration::from_micros(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn options_reject_out_of_range_values() {
        let args = |list: &[&str]| list.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
        assert!(parse_options(args(&["--rate", "0"]).into_iter()).is_err());
        assert!(parse_options(args(&["--rate=5001"]).into_iter()).is_err());
        assert!(parse_options(args(&["--seconds", "x"]).into_iter()).is_err());
        let options = parse_options(args(&["--rate", "100", "--subscribers=3"]).into_iter())
            .unwrap()
            .unwrap();
        assert_eq!(options.events(), 1_000);
        assert_eq!(options.interval(), Duration::from_millis(10));
        assert_eq!(options.subscribers, 3);
    }
}
