//! The node's link to Redis: one RESP3 connection that carries the subscriptions and
//! the publishes, kept up across Redis restarts.
//!
//! - **One connection per node** subscribes every channel (`PROTOCOL.md` §4.4 rule 2:
//!   the Node adapters count servers by subscribed connections). RESP3 lets the same
//!   connection publish and run commands while subscribed.
//! - **Subscriptions by interest.** Adapters say which channels they want
//!   ([`Bus::want`], [`Bus::unwant`]); a task turns the changes into batched SUBSCRIBE
//!   and UNSUBSCRIBE commands. After a reconnect every wanted channel is subscribed
//!   again at once.
//! - **Publishes** are queued ([`Bus::publish`] never waits) and sent in order by one
//!   task, pipelined: the batch grows while the previous one is in flight.
//! - **Reconnects** are tried every 100 ms to 500 ms, so a node is back within a second
//!   of Redis; a ping every second finds a connection that stopped answering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tokio::sync::{mpsc, Notify};

/// What an adapter does with the messages of its namespace's channels.
pub(crate) trait Inbound: Send + Sync {
    /// A message on `<prefix>#<nsp>#<rest>`.
    fn on_broadcast(&self, rest: &str, payload: &[u8]) -> Result<(), String>;
    /// A message on `<prefix>-request#<nsp>#`.
    fn on_request(&self, payload: &[u8]) -> Result<(), String>;
    /// A message on `<prefix>-response#<nsp>#...`.
    fn on_response(&self, payload: &[u8]) -> Result<(), String>;
}

/// At most this many publishes wait for Redis; beyond it (Redis down or too slow) new
/// ones are dropped and counted.
const MAX_QUEUED: usize = 100_000;
/// Channels per SUBSCRIBE or UNSUBSCRIBE command.
const SUBSCRIBE_CHUNK: usize = 1_000;
/// Publishes per pipeline.
const PUBLISH_BATCH: usize = 512;

/// Counters of the link, for metrics and `/api/cluster`.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Whether the connection is up.
    pub connected: AtomicBool,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
    /// Messages published.
    pub published: AtomicU64,
    /// Deliveries Redis reported for them (the receivers of each PUBLISH, summed).
    pub redis_deliveries: AtomicU64,
    /// Publishes dropped: Redis down, a failed pipeline, or the queue full.
    pub publish_failures: AtomicU64,
    /// Messages received on subscribed channels.
    pub received: AtomicU64,
    /// Received messages that did not decode, or were for no known namespace.
    pub malformed: AtomicU64,
    /// Channels subscribed now.
    pub subscriptions: AtomicUsize,
    /// Times Redis closed the connection for its output buffer limit (a subscriber too
    /// slow for what it is sent), seen in `INFO stats` after a reconnect (Redis 7.2+).
    pub buffer_overflows: AtomicU64,
    /// Times Redis closed this node's connection while it kept running (the same
    /// `run_id` after the reconnect): a subscriber too slow for its output buffer limit
    /// (`client-output-buffer-limit pubsub`), or a `CLIENT KILL`. Logged as such.
    pub dropped: AtomicU64,
}

struct Sub {
    wanted: bool,
    subscribed: bool,
}

#[derive(Default)]
struct Subs {
    channels: HashMap<Box<str>, Sub>,
    /// Channels whose state may differ from what is wanted.
    changed: Vec<Box<str>>,
}

struct Publish {
    channel: String,
    payload: Vec<u8>,
}

/// The link to Redis of one node.
pub(crate) struct Bus {
    pub(crate) prefix: String,
    conn: RwLock<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    /// The generation of the connection on which every wanted channel is subscribed.
    subscribed: AtomicU64,
    subs: Mutex<Subs>,
    resubscribe: Notify,
    lost: Notify,
    out: mpsc::UnboundedSender<Publish>,
    queued: AtomicUsize,
    routes: RwLock<HashMap<String, Weak<dyn Inbound>>>,
    /// Sharded pub/sub (`SSUBSCRIBE`, `SPUBLISH`, `SHARDNUMSUB`) rather than the classic.
    pub(crate) sharded: bool,
    /// `<prefix>-herald-nodes#`: Herald nodes' heartbeats (Node servers never use it).
    pub(crate) nodes_channel: String,
    /// The last heartbeat of each Herald node, by node id.
    pub(crate) nodes: Mutex<HashMap<String, (serde_json::Value, tokio::time::Instant)>>,
    pub(crate) stats: BusStats,
}

/// Hands the connection's pushes to the inbound task, tagged with the connection's
/// generation (a closed connection's last words are told apart from the new one's).
struct Pushes {
    generation: u64,
    tx: mpsc::UnboundedSender<(u64, PushInfo)>,
}

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        self.tx
            .send((self.generation, info))
            .map_err(|_| redis::aio::SendError)
    }
}

impl Bus {
    /// Starts the link's tasks on the current runtime; the first connection is tried at
    /// once and retried until Redis answers.
    pub(crate) fn start(client: redis::Client, prefix: String, sharded: bool) -> Arc<Bus> {
        let (out, out_rx) = mpsc::unbounded_channel();
        let bus = Arc::new(Bus {
            nodes_channel: format!("{prefix}-herald-nodes#"),
            nodes: Mutex::new(HashMap::new()),
            prefix,
            conn: RwLock::new(None),
            generation: AtomicU64::new(0),
            subscribed: AtomicU64::new(0),
            subs: Mutex::new(Subs::default()),
            resubscribe: Notify::new(),
            lost: Notify::new(),
            out,
            queued: AtomicUsize::new(0),
            routes: RwLock::new(HashMap::new()),
            sharded,
            stats: BusStats::default(),
        });
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        tokio::spawn(connect_loop(Arc::downgrade(&bus), client, push_tx));
        tokio::spawn(subscriber(Arc::downgrade(&bus)));
        tokio::spawn(publisher(Arc::downgrade(&bus), out_rx));
        tokio::spawn(inbound(Arc::downgrade(&bus), push_rx));
        bus
    }

    /// Whether the connection is up and every wanted channel subscribed on it (after a
    /// reconnect, the node hears the others again only then).
    pub(crate) fn is_subscribed(&self) -> bool {
        self.stats.connected.load(Ordering::Acquire)
            && self.subscribed.load(Ordering::Acquire) == self.generation.load(Ordering::Acquire)
    }

    /// The connection, when Redis is up.
    pub(crate) fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn.read().as_ref().map(|(_, c)| c.clone())
    }

    /// Routes the namespace's messages to `adapter`.
    pub(crate) fn register(&self, nsp: &str, adapter: Weak<dyn Inbound>) {
        self.routes.write().insert(nsp.to_owned(), adapter);
    }

    pub(crate) fn unregister(&self, nsp: &str) {
        self.routes.write().remove(nsp);
    }

    /// Subscribes `channel` (soon, batched with other changes).
    pub(crate) fn want(&self, channel: String) {
        let key: Box<str> = channel.into();
        let mut subs = self.subs.lock();
        let sub = subs.channels.entry(key.clone()).or_insert(Sub {
            wanted: false,
            subscribed: false,
        });
        if sub.wanted {
            return;
        }
        sub.wanted = true;
        if !sub.subscribed {
            subs.changed.push(key);
            drop(subs);
            self.resubscribe.notify_one();
        }
    }

    /// Unsubscribes `channel` (soon).
    pub(crate) fn unwant(&self, channel: &str) {
        let mut subs = self.subs.lock();
        let Some((key, sub)) = subs.channels.get_key_value(channel) else {
            return;
        };
        if sub.subscribed {
            let key = key.clone();
            if let Some(sub) = subs.channels.get_mut(channel) {
                sub.wanted = false;
            }
            subs.changed.push(key);
            drop(subs);
            self.resubscribe.notify_one();
        } else {
            subs.channels.remove(channel);
        }
    }

    /// Queues a publish; never waits. Dropped (and counted) when Redis is down or too
    /// far behind.
    pub(crate) fn publish(&self, channel: String, payload: Vec<u8>) {
        if !self.stats.connected.load(Ordering::Relaxed)
            || self.queued.load(Ordering::Relaxed) >= MAX_QUEUED
        {
            self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.out.send(Publish { channel, payload }).is_err() {
            self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many connections subscribe `channel` (`PUBSUB NUMSUB`, or `SHARDNUMSUB` on
    /// sharded pub/sub); `None` when Redis does not answer.
    pub(crate) async fn numsub(&self, channel: &str) -> Option<usize> {
        // Asked again when the answer is not a count: a node counted as alone would end
        // a request at once, without asking the others.
        for _ in 0..3 {
            let mut conn = self.connection()?;
            let reply = redis::cmd("PUBSUB")
                .arg(if self.sharded {
                    "SHARDNUMSUB"
                } else {
                    "NUMSUB"
                })
                .arg(channel)
                .query_async::<redis::Value>(&mut conn)
                .await;
            // RESP2 answers [channel, n], RESP3 may answer a map {channel: n}.
            let n = match &reply {
                Ok(redis::Value::Array(items)) => items.get(1).and_then(int),
                Ok(redis::Value::Map(pairs)) => pairs.first().and_then(|(_, v)| int(v)),
                _ => None,
            };
            match n.and_then(|n| usize::try_from(n).ok()) {
                Some(n) => return Some(n),
                None => {
                    tracing::debug!(
                        ?reply,
                        channel,
                        "cluster: a server count not read; asking again"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        None
    }

    fn route(&self, channel: &[u8], payload: Vec<u8>) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if channel == self.nodes_channel.as_bytes() {
            self.heartbeat(&payload);
            return;
        }
        let Some((kind, nsp, rest)) = std::str::from_utf8(channel)
            .ok()
            .and_then(|c| parse_channel(&self.prefix, c))
        else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let adapter = self.routes.read().get(nsp).and_then(Weak::upgrade);
        let Some(adapter) = adapter else {
            return;
        };
        let handled = match kind {
            Kind::Broadcast => adapter.on_broadcast(rest, &payload),
            Kind::Request => adapter.on_request(&payload),
            Kind::Response => adapter.on_response(&payload),
        };
        if let Err(e) = handled {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(channel = %String::from_utf8_lossy(channel), error = %e, "cluster message ignored");
        }
    }

    fn heartbeat(&self, payload: &[u8]) {
        let beat: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
        let Some((uid, beat)) = beat.and_then(|b| Some((b.get("uid")?.as_str()?.to_owned(), b)))
        else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.nodes
            .lock()
            .insert(uid, (beat, tokio::time::Instant::now()));
    }

    /// A new connection: every wanted channel is to be subscribed on it.
    fn connected(&self, conn: MultiplexedConnection) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        {
            let mut subs = self.subs.lock();
            subs.channels.retain(|_, s| s.wanted);
            for sub in subs.channels.values_mut() {
                sub.subscribed = false;
            }
            let all: Vec<Box<str>> = subs.channels.keys().cloned().collect();
            subs.changed = all;
        }
        self.stats.subscriptions.store(0, Ordering::Relaxed);
        *self.conn.write() = Some((generation, conn));
        self.stats.connected.store(true, Ordering::Release);
        self.resubscribe.notify_one();
        generation
    }

    fn disconnected(&self, generation: u64) {
        let mut conn = self.conn.write();
        if conn.as_ref().is_some_and(|(g, _)| *g == generation) {
            *conn = None;
            self.stats.connected.store(false, Ordering::Release);
            self.stats.subscriptions.store(0, Ordering::Relaxed);
        }
    }
}

fn int(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(n) => Some(*n),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Broadcast,
    Request,
    Response,
}

/// `<prefix>#<nsp>#<room>#`, `<prefix>-request#<nsp>#`, `<prefix>-response#<nsp>#<uid>#`
/// split into their kind, namespace and what follows the namespace's `#` (the room or
/// the uid with its trailing `#`, or nothing).
pub(crate) fn parse_channel<'a>(
    prefix: &str,
    channel: &'a str,
) -> Option<(Kind, &'a str, &'a str)> {
    let rest = channel.strip_prefix(prefix)?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix('#') {
        (Kind::Broadcast, r)
    } else if let Some(r) = rest.strip_prefix("-request#") {
        (Kind::Request, r)
    } else if let Some(r) = rest.strip_prefix("-response#") {
        (Kind::Response, r)
    } else {
        return None;
    };
    let (nsp, tail) = rest.split_once('#')?;
    Some((kind, nsp, tail))
}

async fn connect_loop(
    bus: Weak<Bus>,
    client: redis::Client,
    pushes: mpsc::UnboundedSender<(u64, PushInfo)>,
) {
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut overflows_seen: Option<u64> = None;
    let mut last_run_id: Option<String> = None;
    loop {
        let Some(next) = bus
            .upgrade()
            .map(|b| b.generation.load(Ordering::Acquire) + 1)
        else {
            return;
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_push_sender(Pushes {
                generation: next,
                tx: pushes.clone(),
            });
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut conn) => {
                delay = Duration::from_millis(100);
                let overflows = output_buffer_disconnections(&mut conn).await;
                let run_id = server_run_id(&mut conn).await;
                let Some(bus) = bus.upgrade() else { return };
                if !first && run_id.is_some() && run_id == last_run_id {
                    bus.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "cluster: redis closed this node's connection while it kept running: \
                         most likely the output buffer limit of a subscriber too slow for what it \
                         is sent (client-output-buffer-limit pubsub), or a CLIENT KILL; messages \
                         sent meanwhile were lost; resubscribing"
                    );
                }
                last_run_id = run_id.or(last_run_id);
                if let (Some(before), Some(now)) = (overflows_seen, overflows) {
                    if now > before {
                        bus.stats
                            .buffer_overflows
                            .fetch_add(now - before, Ordering::Relaxed);
                        tracing::warn!(
                            count = now - before,
                            "redis closed subscriber connections for their output buffer limit (a node too slow for its subscriptions); resubscribing"
                        );
                    }
                }
                overflows_seen = overflows.or(overflows_seen);
                let generation = bus.connected(conn.clone());
                if first {
                    tracing::info!("cluster: connected to redis");
                } else {
                    bus.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        down_ms = failing_since.map(|t| t.elapsed().as_millis()),
                        "cluster: reconnected to redis"
                    );
                }
                first = false;
                watch(&bus, &mut conn).await;
                bus.disconnected(generation);
                tracing::warn!("cluster: lost the connection to redis; reconnecting");
                failing_since = Some(tokio::time::Instant::now());
            }
            Err(e) => {
                if failing_since.is_none() {
                    failing_since = Some(tokio::time::Instant::now());
                    tracing::warn!(error = %e, "cluster: redis is not reachable; the node runs alone until it is");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Returns when the connection is lost: told by the library, or a ping unanswered.
async fn watch(bus: &Bus, conn: &mut MultiplexedConnection) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = bus.lost.notified() => return,
            _ = tick.tick() => {
                let ping = redis::cmd("PING");
                match tokio::time::timeout(Duration::from_secs(2), ping.query_async::<redis::Value>(conn)).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
            }
        }
    }
}

/// `run_id` of `INFO server`: a new one means Redis restarted.
async fn server_run_id(conn: &mut MultiplexedConnection) -> Option<String> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
}

/// `client_output_buffer_limit_disconnections` of `INFO stats` (Redis 7.2+).
async fn output_buffer_disconnections(conn: &mut MultiplexedConnection) -> Option<u64> {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("client_output_buffer_limit_disconnections:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Turns the wanted channels into subscriptions.
async fn subscriber(bus: Weak<Bus>) {
    loop {
        let Some(strong) = bus.upgrade() else { return };
        // Wake on changes, and every second to retry what failed.
        let _ = tokio::time::timeout(Duration::from_secs(1), strong.resubscribe.notified()).await;
        // A short pause gathers the changes of a burst (many sockets joining) into one
        // command.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let Some((generation, mut conn)) = strong.conn.read().clone() else {
            continue;
        };
        let (add, remove) = {
            let mut subs = strong.subs.lock();
            let changed = std::mem::take(&mut subs.changed);
            let mut add = Vec::new();
            let mut remove = Vec::new();
            for channel in changed {
                match subs.channels.get(&channel) {
                    Some(s) if s.wanted && !s.subscribed => add.push(channel),
                    Some(s) if !s.wanted && s.subscribed => remove.push(channel),
                    _ => {}
                }
            }
            add.sort_unstable();
            add.dedup();
            remove.sort_unstable();
            remove.dedup();
            (add, remove)
        };
        let mut all_ok = true;
        for chunk in add.chunks(SUBSCRIBE_CHUNK) {
            let names: Vec<&str> = chunk.iter().map(|c| &**c).collect();
            let done = if strong.sharded {
                shard_subscription(&mut conn, "SSUBSCRIBE", &names).await
            } else {
                conn.subscribe(&names).await
            };
            all_ok &= done.is_ok();
            settle(&strong, generation, chunk, done.is_ok(), true);
        }
        for chunk in remove.chunks(SUBSCRIBE_CHUNK) {
            let names: Vec<&str> = chunk.iter().map(|c| &**c).collect();
            let done = if strong.sharded {
                shard_subscription(&mut conn, "SUNSUBSCRIBE", &names).await
            } else {
                conn.unsubscribe(&names).await
            };
            settle(&strong, generation, chunk, done.is_ok(), false);
        }
        // The first batch on a connection holds every channel wanted then: once it went
        // through, the node hears the others (later batches are the changes since).
        if all_ok && strong.generation.load(Ordering::Acquire) == generation {
            strong.subscribed.store(generation, Ordering::Release);
        }
    }
}

/// `SSUBSCRIBE` or `SUNSUBSCRIBE` of `channels` on the command connection. The client
/// library has no such call on a standalone connection (only on its cluster client); in
/// RESP3 the server confirms each channel with a push, and the library counts those
/// confirmations as the command's replies: the call waits for one per channel, so none is
/// left over to be taken for the reply of the next command on the connection.
async fn shard_subscription(
    conn: &mut MultiplexedConnection,
    command: &str,
    channels: &[&str],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.cmd(command).arg(channels);
    let replies = conn.send_packed_commands(&pipe, 0, channels.len()).await?;
    match replies
        .iter()
        .find(|r| matches!(r, redis::Value::ServerError(_)))
    {
        Some(redis::Value::ServerError(e)) => Err(e.clone().into()),
        _ => Ok(()),
    }
}

/// Records the outcome of a SUBSCRIBE (`subscribe`) or UNSUBSCRIBE on the connection
/// of `generation`; what changed meanwhile, or failed, is looked at again.
fn settle(bus: &Bus, generation: u64, channels: &[Box<str>], ok: bool, subscribe: bool) {
    if bus.generation.load(Ordering::Acquire) != generation {
        // Another connection since: it subscribes everything wanted anyway.
        return;
    }
    let mut subs = bus.subs.lock();
    let mut retry = Vec::new();
    // Counted as they change (a scan of every channel per batch would cost O(sockets)).
    let mut changed = 0usize;
    for channel in channels {
        if !ok {
            retry.push(channel.clone());
            continue;
        }
        let sub = subs.channels.entry(channel.clone()).or_insert(Sub {
            wanted: false,
            subscribed: false,
        });
        changed += usize::from(sub.subscribed != subscribe);
        sub.subscribed = subscribe;
        if sub.wanted != sub.subscribed {
            retry.push(channel.clone());
        } else if !sub.wanted {
            subs.channels.remove(channel);
        }
    }
    subs.changed.extend(retry);
    // Under the lock, so that a reconnect's reset to 0 cannot fall between.
    if subscribe {
        bus.stats
            .subscriptions
            .fetch_add(changed, Ordering::Relaxed);
    } else {
        let _ = bus
            .stats
            .subscriptions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(changed))
            });
    }
    drop(subs);
    if !ok {
        tracing::debug!(subscribe, "cluster: a subscription change failed; retrying");
    }
}

/// Sends the queued publishes in order, pipelined.
async fn publisher(bus: Weak<Bus>, mut rx: mpsc::UnboundedReceiver<Publish>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut warned = false;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < PUBLISH_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let Some(bus) = bus.upgrade() else { return };
        bus.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let n = batch.len() as u64;
        let Some(mut conn) = bus.connection() else {
            bus.stats.publish_failures.fetch_add(n, Ordering::Relaxed);
            batch.clear();
            continue;
        };
        let mut pipe = redis::pipe();
        let publish = if bus.sharded { "SPUBLISH" } else { "PUBLISH" };
        for p in batch.drain(..) {
            pipe.cmd(publish).arg(p.channel).arg(p.payload);
        }
        match pipe.query_async::<Vec<i64>>(&mut conn).await {
            Ok(receivers) => {
                warned = false;
                bus.stats.published.fetch_add(n, Ordering::Relaxed);
                let delivered: i64 = receivers.iter().sum();
                bus.stats
                    .redis_deliveries
                    .fetch_add(u64::try_from(delivered).unwrap_or(0), Ordering::Relaxed);
            }
            Err(e) => {
                bus.stats.publish_failures.fetch_add(n, Ordering::Relaxed);
                if !warned {
                    warned = true;
                    tracing::warn!(error = %e, "cluster: publishing to redis failed");
                }
            }
        }
    }
}

/// Routes what the subscriptions receive.
async fn inbound(bus: Weak<Bus>, mut rx: mpsc::UnboundedReceiver<(u64, PushInfo)>) {
    while let Some((generation, info)) = rx.recv().await {
        let Some(bus) = bus.upgrade() else { return };
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = info.data.into_iter();
                if let (
                    Some(redis::Value::BulkString(channel)),
                    Some(redis::Value::BulkString(payload)),
                ) = (data.next(), data.next())
                {
                    bus.route(&channel, payload);
                }
            }
            PushKind::Disconnection if bus.generation.load(Ordering::Acquire) == generation => {
                bus.lost.notify_one();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_channel, Kind};

    #[test]
    fn channels_split_into_kind_namespace_and_rest() {
        let p = "socket.io";
        assert_eq!(
            parse_channel(p, "socket.io#/#"),
            Some((Kind::Broadcast, "/", ""))
        );
        assert_eq!(
            parse_channel(p, "socket.io#/chat#room 1#"),
            Some((Kind::Broadcast, "/chat", "room 1#"))
        );
        assert_eq!(
            parse_channel(p, "socket.io-request#/#"),
            Some((Kind::Request, "/", ""))
        );
        assert_eq!(
            parse_channel(p, "socket.io-response#/#abcdef#"),
            Some((Kind::Response, "/", "abcdef#"))
        );
        assert_eq!(parse_channel(p, "other#/#"), None);
        assert_eq!(parse_channel(p, "socket.io-other#/#"), None);
        assert_eq!(parse_channel(p, "socket.io#/"), None);
    }
}
