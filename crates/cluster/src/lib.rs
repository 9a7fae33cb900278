//! Herald nodes in a cluster over Redis, wire-compatible with the npm
//! `@socket.io/redis-adapter` (8.x, classic and sharded) and `@socket.io/redis-emitter`: Herald
//! nodes, Node `socket.io` servers and emitters share one Redis and reach each other's
//! clients (`PROTOCOL.md` §4).
//!
//! # Layout
//!
//! - [`bus`]: the node's one RESP3 connection: subscriptions by interest, pipelined
//!   publishes, reconnects and resubscription.
//! - [`classic`]: the classic adapter, one per namespace: broadcasts, requests and
//!   responses as Node's adapter writes them.
//! - [`sharded`]: the sharded adapter (Redis 7 sharded pub/sub), one per namespace: the
//!   cluster messages of Node's `ClusterAdapter`.
//! - [`value`]: msgpack and JSON values, converted both ways, binary included.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() {
//! use std::sync::Arc;
//! let cluster = cluster::RedisCluster::new(cluster::Options::new("redis://127.0.0.1:6379")).unwrap();
//! let server = socketio::Server::builder()
//!     .adapter(Arc::new(cluster.clone()))
//!     .ns("/", |_, _| {})
//!     .build(socketio::Config::default());
//! # }
//! ```

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use socketio::{Adapter, AdapterFactory, Namespace};

pub mod bus;
pub mod classic;
mod pending;
pub mod sharded;
pub mod value;

pub use bus::BusStats;
pub use sharded::SubscriptionMode;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// `redis://host:port/db` (RESP3 is asked for whatever the URL says).
    pub url: String,
    /// The prefix of every channel (Node's `key`, default `socket.io`). Nodes that
    /// share it form one cluster.
    pub key_prefix: String,
    /// How long requests to the other nodes wait for their answers (Node's
    /// `requestsTimeout`, 5 s).
    pub request_timeout: Duration,
    /// The adapter: Node's classic one (`createAdapter`, the default), or its sharded one
    /// (`createShardedAdapter`, Redis 7 sharded pub/sub) with its subscription mode.
    pub sharded: Option<SubscriptionMode>,
}

impl Options {
    /// The defaults, with Node's key prefix, on `url`.
    pub fn new(url: impl Into<String>) -> Options {
        Options {
            url: url.into(),
            key_prefix: "socket.io".into(),
            request_timeout: Duration::from_secs(5),
            sharded: None,
        }
    }
}

/// Errors made before any connection is tried.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL does not parse.
    #[error("invalid redis url: {0}")]
    Url(String),
}

/// A node's membership of the cluster: makes the adapter of each namespace. Cheap to
/// clone. Starts at once even when Redis is down (the node then runs alone, and joins
/// when Redis answers).
#[derive(Clone)]
pub struct RedisCluster {
    bus: Arc<bus::Bus>,
    timeout: Duration,
    sharded: Option<SubscriptionMode>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("prefix", &self.bus.prefix)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RedisCluster {
    /// Starts the link to Redis on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Url`] when the URL does not parse.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn new(options: Options) -> Result<RedisCluster, ClusterError> {
        let url = with_resp3(&options.url);
        let client =
            redis::Client::open(url.as_str()).map_err(|e| ClusterError::Url(e.to_string()))?;
        Ok(RedisCluster {
            bus: bus::Bus::start(client, options.key_prefix, options.sharded.is_some()),
            timeout: options.request_timeout,
            sharded: options.sharded,
        })
    }

    /// Whether the connection to Redis is up.
    pub fn is_connected(&self) -> bool {
        self.bus.stats.connected.load(Ordering::Acquire)
    }

    /// Whether the connection is up and every channel this node wants is subscribed on
    /// it: it hears the other nodes (just after a reconnect it may not yet).
    pub fn is_subscribed(&self) -> bool {
        self.bus.is_subscribed()
    }

    /// The link's counters.
    pub fn stats(&self) -> &BusStats {
        &self.bus.stats
    }

    /// Announces this node to the other Herald nodes every `every`: `info()` (an
    /// object: connections, load, ...) with the node's `id` added. Until it stops (when
    /// the returned handle is dropped, or the cluster is).
    pub fn announce(
        &self,
        id: String,
        every: Duration,
        info: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        self.bus.want(self.bus.nodes_channel.clone());
        let bus = Arc::downgrade(&self.bus);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(bus) = bus.upgrade() else { return };
                let mut beat = info();
                if let Some(fields) = beat.as_object_mut() {
                    fields.insert("uid".into(), serde_json::Value::from(id.as_str()));
                }
                bus.publish(bus.nodes_channel.clone(), beat.to_string().into_bytes());
            }
        })
    }

    /// The Herald nodes heard from within `within` (this one included once its own
    /// heartbeat came back through Redis): each one's last heartbeat, with
    /// `last_heartbeat_ms` (how long ago it came). Older ones are forgotten.
    pub fn nodes(&self, within: Duration) -> Vec<serde_json::Value> {
        let mut nodes = self.bus.nodes.lock();
        nodes.retain(|_, (_, at)| at.elapsed() <= within);
        let mut out: Vec<serde_json::Value> = nodes
            .values()
            .map(|(beat, at)| {
                let mut beat = beat.clone();
                if let Some(fields) = beat.as_object_mut() {
                    let ms = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
                    fields.insert("last_heartbeat_ms".into(), serde_json::Value::from(ms));
                }
                beat
            })
            .collect();
        out.sort_by(|a, b| a["uid"].as_str().cmp(&b["uid"].as_str()));
        out
    }

    /// How many connections subscribe the request channel of `nsp` (on the sharded
    /// adapter: its channel): the servers of the namespace, Node ones included (`None`
    /// when Redis does not answer).
    pub async fn server_count(&self, nsp: &str) -> Option<usize> {
        let channel = match self.sharded {
            Some(_) => format!("{}#{nsp}#", self.bus.prefix),
            None => format!("{}-request#{nsp}#", self.bus.prefix),
        };
        self.bus.numsub(&channel).await
    }
}

impl AdapterFactory for RedisCluster {
    fn create(&self, name: &str, ns: Weak<Namespace>) -> Arc<dyn Adapter> {
        match self.sharded {
            Some(mode) => {
                sharded::ShardedAdapter::new(self.bus.clone(), name, ns, self.timeout, mode)
            }
            None => classic::ClassicAdapter::new(self.bus.clone(), name, ns, self.timeout),
        }
    }
}

/// `url` with `protocol=resp3` (pushes on the command connection need it).
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        return url.replace("protocol=resp2", "protocol=resp3");
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}protocol=resp3")
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_ask_for_resp3() {
        assert_eq!(
            super::with_resp3("redis://h:1"),
            "redis://h:1?protocol=resp3"
        );
        assert_eq!(
            super::with_resp3("redis://h:1/0?x=1"),
            "redis://h:1/0?x=1&protocol=resp3"
        );
        assert_eq!(
            super::with_resp3("redis://h?protocol=resp2"),
            "redis://h?protocol=resp3"
        );
    }
}
