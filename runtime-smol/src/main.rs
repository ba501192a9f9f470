//! `crier`: a Pusher Channels server. Parses the configuration, binds the listeners, runs the
//! driver and shuts down cleanly on SIGINT or SIGTERM.

mod driver;
mod http;
mod mailbox;
mod redis;
mod server;
mod ws;

use std::hash::{BuildHasher, RandomState};
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_signal::{Signal, Signals};
use crier_core::Node;
use futures_lite::StreamExt;
use log::{error, info};
use smol::{Async, Executor, Timer};

use crate::server::{Role, Services};
use crier_smol::config::{self, Command, HELP, Settings};

/// Time given to open connections to receive their 4200 close before the process exits.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let settings = match config::parse_args(std::env::args_os().skip(1).collect()) {
        Ok(Some(Command::Run(settings))) => *settings,
        Ok(Some(Command::Version)) => {
            println!("crier {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("crier: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(settings.verbose);
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: bool) {
    // Verbose logging is for this server's own events; libraries stay at info.
    let level = if verbose {
        "info,crier=debug,crier_core=debug"
    } else {
        "info"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
}

fn run(settings: Settings) -> Result<(), String> {
    // Installed before the listeners are announced, so a signal sent as soon as the address
    // is logged still shuts down cleanly.
    let signals = Signals::new([Signal::Term, Signal::Int])
        .map_err(|error| format!("cannot install signal handlers: {error}"))?;
    let listeners = bind(&settings)?;
    if let Some(path) = &settings.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|error| format!("cannot write pid file {}: {error}", path.display()))?;
    }
    let seed = RandomState::new().hash_one(SystemTime::now());
    let limits = settings.core.limits.clone();
    let node = Node::new(settings.core, seed)
        .map_err(|error| format!("invalid configuration: {error}"))?;
    info!(
        "serving app key {} (app id {}), client events {}",
        node.config().app.key,
        node.config().app.id.as_deref().unwrap_or("any"),
        if node.config().app.client_events {
            "on"
        } else {
            "off"
        },
    );

    let executor = Arc::new(Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for _ in 1..threads {
        let executor = executor.clone();
        let stopped = stopped.clone();
        std::thread::spawn(move || smol::block_on(executor.run(stopped.recv())));
    }

    let (events, inbox) = async_channel::bounded(driver::EVENT_CAPACITY);
    // Shared, so each connection task keeps one pointer instead of a copy.
    let services = Arc::new(Services {
        events,
        websocket: ws::websocket_config(limits.max_frame_bytes),
        max_body_bytes: limits.max_api_body_bytes,
        live: Arc::new(AtomicUsize::new(0)),
    });
    let redis_address = settings.redis_address.clone();
    let result = smol::block_on(executor.run(async {
        let publish = match &redis_address {
            Some(address) => {
                let channel = format!("crier:{}", node.config().app.key);
                let events = services.events.clone();
                Some(redis::start(address, channel, events, &executor).await?)
            }
            None => None,
        };
        executor
            .spawn(driver::run(node, inbox, publish.clone()))
            .detach();
        // Logged only now, so tests and operators connect once Redis is reachable too.
        for (_, role, local) in &listeners {
            if matches!(role, Role::WebSocket | Role::Both) {
                info!("websocket listening on {local}");
            }
            if matches!(role, Role::Api | Role::Both) {
                info!("http api listening on {local}");
            }
        }
        let accept_tasks: Vec<_> = listeners
            .into_iter()
            .map(|(listener, role, _)| {
                let task = server::accept_loop(listener, role, services.clone(), executor.clone());
                executor.spawn(task)
            })
            .collect();
        let signal = wait_for_signal(signals).await?;
        info!("received {signal:?}, shutting down");
        for task in accept_tasks {
            task.cancel().await;
        }
        shut_down(&services).await;
        if let Some(publish) = publish {
            // Give the `Bye` message a moment to reach Redis, so other nodes drop this
            // node's members at once instead of after the node timeout.
            let deadline = Instant::now() + Duration::from_secs(1);
            while !publish.is_empty() && Instant::now() < deadline {
                Timer::after(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }));
    drop(stop);
    if let Some(path) = &settings.pid_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Binds every listener before anything starts, so a taken port fails fast.
fn bind(settings: &Settings) -> Result<Vec<(Async<TcpListener>, Role, SocketAddr)>, String> {
    let mut plan = vec![(settings.websocket_host.as_str(), Role::WebSocket)];
    if settings.api_host == settings.websocket_host {
        plan[0].1 = Role::Both;
    } else {
        plan.push((settings.api_host.as_str(), Role::Api));
    }
    let mut listeners = Vec::new();
    for (address, role) in plan {
        let listener = TcpListener::bind(address)
            .and_then(Async::new)
            .map_err(|error| format!("cannot listen on {address}: {error}"))?;
        let local = listener
            .get_ref()
            .local_addr()
            .map_err(|error| format!("cannot read the address of {address}: {error}"))?;
        listeners.push((listener, role, local));
    }
    Ok(listeners)
}

async fn wait_for_signal(mut signals: Signals) -> Result<Signal, String> {
    match signals.next().await {
        Some(Ok(signal)) => Ok(signal),
        Some(Err(error)) => Err(format!("cannot wait for signals: {error}")),
        None => Err("signal stream ended".to_owned()),
    }
}

/// Closes every connection with 4200 and waits, up to a limit, for the closes to be sent.
async fn shut_down(services: &Services) {
    let (done, finished) = async_channel::bounded(1);
    if services
        .events
        .send(driver::Event::Shutdown { done })
        .await
        .is_ok()
    {
        let _ = finished.recv().await;
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while services.live.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        Timer::after(Duration::from_millis(20)).await;
    }
    let left = services.live.load(Ordering::SeqCst);
    if left > 0 {
        info!("exiting with {left} connections still closing");
    }
}
