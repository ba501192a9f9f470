//! Cluster mode over Redis: one pub/sub channel carries the core's cluster messages.
//!
//! A RESP3 `ConnectionManager` both publishes and receives: it reconnects with backoff and
//! resubscribes by itself, and each confirmed subscription makes the node to announce its
//! state again, so the cluster converges after Redis restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_channel::{Receiver, Sender, TrySendError};
use futures_lite::future;
use log::{debug, info, warn};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use smol::Timer;

use crate::driver::Event;

/// Time allowed for the first connection and subscription before start-up fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages received from Redis and not yet handed to the driver; more are dropped.
const INBOUND_CAPACITY: usize = 16_384;

/// Messages waiting to be published; more are dropped while Redis is slow or away.
pub const OUTBOUND_CAPACITY: usize = 16_384;

/// Shortest and longest pause between reconnection attempts.
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Received from Redis, in arrival order.
enum Inbound {
    Message(String),
    Subscribed,
    Disconnected,
}

/// Connects to Redis, subscribes to `channel`, and starts the tasks that move messages
/// between Redis and the driver. Returns the queue that [`Output::Publish`] payloads go to.
///
/// [`Output::Publish`]: crier_core::Output::Publish
pub async fn start(
    address: &str,
    channel: String,
    events: Sender<Event>,
    executor: &smol::Executor<'static>,
) -> Result<Sender<Arc<str>>, String> {
    let info = address
        .into_connection_info()
        .map_err(|error| format!("invalid redis address {address:?}: {error}"))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(settings))
        .map_err(|error| format!("invalid redis address {address:?}: {error}"))?;

    let (inbound, received) = async_channel::bounded(INBOUND_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    let push_channel = channel.clone();
    let push_dropped = dropped.clone();
    let config = ConnectionManagerConfig::new()
        .set_push_sender(move |push: PushInfo| {
            forward_push(&inbound, &push_channel, &push_dropped, push);
            Ok::<(), ()>(())
        })
        .set_automatic_resubscription()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT))
        .set_min_delay(MIN_RECONNECT_DELAY)
        .set_max_delay(MAX_RECONNECT_DELAY);

    let connect = async {
        let mut manager = ConnectionManager::new_with_config(client, config).await?;
        manager.subscribe(&channel).await?;
        Ok::<_, redis::RedisError>(manager)
    };
    let timeout = async {
        Timer::after(CONNECT_TIMEOUT * 2).await;
        Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out")))
    };
    let manager = future::or(connect, timeout)
        .await
        .map_err(|error| format!("cannot connect to redis at {address}: {error}"))?;
    info!("redis connected: {address}, channel {channel}");

    let (publish, outbound) = async_channel::bounded(OUTBOUND_CAPACITY);
    executor
        .spawn(publish_loop(manager, channel, outbound))
        .detach();
    executor
        .spawn(receive_loop(received, events, dropped))
        .detach();
    Ok(publish)
}

/// Sorts one push from Redis. It runs on the connection's task, so it only uses `try_send`.
fn forward_push(inbound: &Sender<Inbound>, channel: &str, dropped: &AtomicU64, push: PushInfo) {
    let item = match push.kind {
        PushKind::Message => match push.data.as_slice() {
            [name, Value::BulkString(payload)] if is_channel(name, channel) => {
                match String::from_utf8(payload.clone()) {
                    Ok(payload) => Inbound::Message(payload),
                    Err(_) => {
                        warn!("ignoring a cluster message that is not UTF-8");
                        return;
                    }
                }
            }
            _ => return,
        },
        PushKind::Subscribe => Inbound::Subscribed,
        PushKind::Disconnection => Inbound::Disconnected,
        _ => return,
    };
    if let Err(TrySendError::Full(_)) = inbound.try_send(item) {
        let count = dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            warn!("cluster messages dropped because the node is overloaded: {count} so far");
        }
    }
}

fn is_channel(value: &Value, channel: &str) -> bool {
    matches!(value, Value::BulkString(name) if name == channel.as_bytes())
}

/// Hands received messages to the driver, waiting while its channel is full. After messages
/// were dropped it makes the node announce its state and request everyone else's, because
/// a lost `Leave` would otherwise leave a ghost member.
async fn receive_loop(received: Receiver<Inbound>, events: Sender<Event>, dropped: Arc<AtomicU64>) {
    let mut connected = true;
    let mut dropped_seen = 0;
    while let Ok(item) = received.recv().await {
        let event = match item {
            Inbound::Message(payload) => Event::Cluster(payload),
            Inbound::Subscribed => {
                if !connected {
                    info!("redis connection restored, announcing this node's state");
                }
                connected = true;
                Event::ClusterConnected
            }
            Inbound::Disconnected => {
                if connected {
                    warn!("redis connection lost; local clients keep working, reconnecting");
                }
                connected = false;
                continue;
            }
        };
        if events.send(event).await.is_err() {
            break;
        }
        let dropped_now = dropped.load(Ordering::Relaxed);
        if dropped_now != dropped_seen && received.is_empty() {
            dropped_seen = dropped_now;
            if events.send(Event::ClusterConnected).await.is_err() {
                break;
            }
        }
    }
}

/// Publishes the node's cluster messages in order. A message that fails is dropped: Redis is
/// away, and the node announces its whole state again once the subscription is back.
async fn publish_loop(
    mut manager: ConnectionManager,
    channel: String,
    outbound: Receiver<Arc<str>>,
) {
    let mut failures: u64 = 0;
    while let Ok(payload) = outbound.recv().await {
        let result: redis::RedisResult<usize> = manager.publish(&channel, payload.as_ref()).await;
        match result {
            Ok(_) => {
                if failures > 0 {
                    debug!("redis publish works again after {failures} failures");
                }
                failures = 0;
            }
            Err(error) => {
                failures += 1;
                if failures.is_power_of_two() {
                    warn!("redis publish failed ({failures} in a row): {error}");
                }
            }
        }
    }
}
