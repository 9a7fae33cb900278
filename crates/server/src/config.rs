//! Configuration: defaults, then a TOML file, then the environment, then command-line
//! flags, merged into [`RawConfig`] and validated into [`Config`] before anything binds.
//!
//! Every key can be set from the environment as `HERALD_<SECTION>__<KEY>` (upper case,
//! double underscore between levels). Errors name the key and where its value came
//! from. `docs/configuration.md` lists every key with its unit and default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::Tier;

/// The prefix of the environment variables Herald reads.
pub const ENV_PREFIX: &str = "HERALD_";

/// The environment variable that names the config file (as `--config` does); it is not
/// a config key.
pub const ENV_CONFIG_FILE: &str = "HERALD_CONFIG";

// === raw configuration: what the sources say, before validation ===

/// The whole configuration as the sources give it. Unknown keys are errors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`: where Herald listens.
    pub server: ServerSection,
    /// `[socketio]`: the Socket.IO options, named as the Node server names them.
    pub socketio: SocketIoSection,
    /// `[limits]`: bounds on connections and on what one client may hold or send.
    pub limits: LimitsSection,
    /// `[access]`: networks allowed past the per-address limits, and denied.
    pub access: AccessSection,
    /// `[tiers]`: connection tiers.
    pub tiers: TiersSection,
    /// `[drain]`: graceful shutdown.
    pub drain: DrainSection,
    /// `[tls]`: HTTPS and WSS on the listener.
    pub tls: TlsSection,
    /// `[auth]`: JWT verification and anonymous clients.
    pub auth: AuthSection,
    /// `[api]`: the HTTP API for backends.
    pub api: ApiSection,
    /// `[demo]`: the demo page at `/`.
    pub demo: DemoSection,
    /// `[log]`: logging.
    pub log: LogSection,
    /// `[im]`: the IM service on namespace `/im`.
    pub im: ImSection,
    /// `[docs]`: Yjs documents on namespaces `/yjs|<name>`.
    pub docs: DocsSection,
    /// `[cluster]`: nodes sharing rooms and broadcasts over Redis.
    pub cluster: ClusterSection,
}

/// `[cluster]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Redis to share with the other nodes (`redis://host:port/db`). Defaults to none:
    /// the node runs alone, in-process.
    pub redis_url: String,
    /// `classic` (Node's `createAdapter`, plain pub/sub) or `sharded`
    /// (`createShardedAdapter`, Redis 7 sharded pub/sub). Defaults to `classic`.
    pub adapter: ClusterAdapterName,
    /// The sharded adapter's `subscriptionMode`: `dynamic` (a channel per room that is
    /// not a socket's own), `dynamic-private` (per room, sockets' own too) or `static`
    /// (two per namespace). Defaults to `dynamic`, as Node.
    pub subscription_mode: String,
    /// The prefix of the Redis channels; nodes (Herald or Node) sharing it form one
    /// cluster. Defaults to `socket.io`, as Node's adapter.
    pub key_prefix: String,
    /// How long requests to the other nodes wait for their answers, in milliseconds.
    /// Defaults to 5000, as Node's `requestsTimeout`.
    pub request_timeout_ms: u64,
    /// Whether `/readyz` answers 503 while Redis is unreachable (the node then serves
    /// its own clients only). Defaults to true.
    pub ready_requires_redis: bool,
}

/// The cluster adapter's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterAdapterName {
    /// `@socket.io/redis-adapter`'s `createAdapter`.
    Classic,
    /// `@socket.io/redis-adapter`'s `createShardedAdapter`.
    Sharded,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            redis_url: String::new(),
            adapter: ClusterAdapterName::Classic,
            subscription_mode: "dynamic".to_owned(),
            key_prefix: "socket.io".to_owned(),
            request_timeout_ms: 5000,
            ready_requires_redis: true,
        }
    }
}

/// The cluster, validated.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How the node joins.
    pub options: cluster::Options,
    /// Whether `/readyz` needs Redis.
    pub ready_requires_redis: bool,
}

impl ClusterSection {
    fn check(&self, c: &mut Checker) -> Option<ClusterConfig> {
        if self.redis_url.is_empty() {
            return None;
        }
        if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
            c.fail(
                "cluster.redis_url",
                format!("{:?} is not a redis:// URL", self.redis_url),
            );
        }
        let mode = cluster::SubscriptionMode::parse(&self.subscription_mode);
        if mode.is_none() {
            c.fail(
                "cluster.subscription_mode",
                format!(
                    "{:?} is not one of dynamic, dynamic-private, static",
                    self.subscription_mode
                ),
            );
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains('#') {
            c.fail(
                "cluster.key_prefix",
                format!("{:?} must be non-empty and without '#'", self.key_prefix),
            );
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            c.fail(
                "cluster.request_timeout_ms",
                format!("{} is not between 100 and 600000", self.request_timeout_ms),
            );
        }
        let mut options = cluster::Options::new(self.redis_url.clone());
        options.key_prefix = self.key_prefix.clone();
        options.request_timeout = Duration::from_millis(self.request_timeout_ms);
        if self.adapter == ClusterAdapterName::Sharded {
            options.sharded = Some(mode.unwrap_or_default());
        }
        Some(ClusterConfig {
            options,
            ready_requires_redis: self.ready_requires_redis,
        })
    }
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Address to bind: an IP address or `localhost`. Defaults to `127.0.0.1`.
    pub host: String,
    /// TCP port; 0 picks a free one. Defaults to 3000.
    pub port: u16,
    /// Proxies (CIDR) whose `X-Forwarded-For` names the client. Defaults to none.
    #[serde(deserialize_with = "list")]
    pub trusted_proxies: Vec<String>,
    /// Whether loopback peers (127.0.0.0/8, ::1) are trusted proxies and exempt from the
    /// per-address limits (a proxy on the same host, a load test from it). Defaults to
    /// true.
    pub trust_loopback: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            host: "127.0.0.1".to_owned(),
            port: 3000,
            trusted_proxies: Vec::new(),
            trust_loopback: true,
        }
    }
}

impl ServerSection {
    /// The address to bind (`None` when `host` is not one), and the trusted proxies.
    fn check(&self, c: &mut Checker) -> (Option<IpAddr>, Vec<IpNet>) {
        let ip = match self.host.as_str() {
            "localhost" => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            host => match host.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    c.fail(
                        "server.host",
                        format!("{host:?} is not an IP address (or `localhost`)"),
                    );
                    None
                }
            },
        };
        let mut proxies = c.nets("server.trusted_proxies", &self.trusted_proxies);
        if self.trust_loopback {
            proxies.extend(crate::admission::loopback_nets());
        }
        (ip, proxies)
    }
}

/// A transport (`socketio.transports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportName {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// A packet parser (`socketio.parser`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParserName {
    /// The default parser: JSON text, binary attachments.
    Default,
    /// `socket.io-msgpack-parser`.
    Msgpack,
}

impl From<ParserName> for socketio::Parser {
    fn from(p: ParserName) -> socketio::Parser {
        match p {
            ParserName::Default => socketio::Parser::Default,
            ParserName::Msgpack => socketio::Parser::Msgpack,
        }
    }
}

/// `[socketio]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoSection {
    /// Path served, as the client's `path` option. Defaults to `/socket.io/`.
    pub path: String,
    /// Milliseconds between pings (`pingInterval`). Defaults to 25,000.
    pub ping_interval_ms: u64,
    /// Milliseconds to wait for a pong (`pingTimeout`). Defaults to 20,000.
    pub ping_timeout_ms: u64,
    /// Largest message or polling body, in bytes (`maxHttpBufferSize`). Defaults to
    /// 1,000,000.
    pub max_http_buffer_size: u64,
    /// Transports allowed (`transports`): `polling`, `websocket`. Defaults to both.
    #[serde(deserialize_with = "list")]
    pub transports: Vec<TransportName>,
    /// Milliseconds a client has to finish an upgrade (`upgradeTimeout`). Defaults to
    /// 10,000.
    pub upgrade_timeout_ms: u64,
    /// Milliseconds a connection has to join a namespace (`connectTimeout`). Defaults to
    /// 45,000.
    pub connect_timeout_ms: u64,
    /// Packet parser: `default` or `msgpack` (clients must use the same). Defaults to
    /// `default`.
    pub parser: ParserName,
    /// Origins allowed to use the polling transport from a browser (`cors.origin`);
    /// `*` allows any. Defaults to none (same origin only).
    #[serde(deserialize_with = "list")]
    pub cors_origins: Vec<String>,
    /// Whether cross-origin requests may carry credentials (`cors.credentials`).
    /// Defaults to false.
    pub cors_credentials: bool,
}

impl Default for SocketIoSection {
    /// The Socket.IO and Engine.IO layers' own defaults (the Node server's).
    fn default() -> Self {
        let io = socketio::Config::default();
        let engine = &io.engine;
        let ms = |d: Duration| d.as_millis() as u64;
        let mut transports = Vec::new();
        if engine.polling {
            transports.push(TransportName::Polling);
        }
        if engine.websocket {
            transports.push(TransportName::Websocket);
        }
        SocketIoSection {
            path: engine.path.clone(),
            ping_interval_ms: ms(engine.ping_interval),
            ping_timeout_ms: ms(engine.ping_timeout),
            max_http_buffer_size: engine.max_payload as u64,
            transports,
            upgrade_timeout_ms: ms(engine.upgrade_timeout),
            connect_timeout_ms: ms(io.connect_timeout),
            parser: match io.parser {
                socketio::Parser::Default => ParserName::Default,
                socketio::Parser::Msgpack => ParserName::Msgpack,
            },
            cors_origins: Vec::new(),
            cors_credentials: false,
        }
    }
}

impl SocketIoSection {
    /// The Socket.IO layer's configuration (the outbound budget and the event rate come
    /// from `[limits]`).
    fn check(&self, c: &mut Checker) -> socketio::Config {
        if !self.path.starts_with('/') {
            c.fail("socketio.path", "must start with `/`");
        }
        let own_routes = ["/api", "/livez", "/readyz", "/metrics", "/demo"];
        let trimmed = self.path.trim_end_matches('/');
        if trimmed.is_empty()
            || own_routes
                .iter()
                .any(|r| trimmed == *r || trimmed.starts_with(&format!("{r}/")))
        {
            c.fail(
                "socketio.path",
                format!(
                    "{:?} would hide Herald's own routes (/, {}); use a path of its own",
                    self.path,
                    own_routes.join(", ")
                ),
            );
        }
        c.positive("socketio.ping_interval_ms", self.ping_interval_ms);
        c.positive("socketio.ping_timeout_ms", self.ping_timeout_ms);
        c.positive("socketio.max_http_buffer_size", self.max_http_buffer_size);
        c.at_most(
            "socketio.max_http_buffer_size",
            self.max_http_buffer_size,
            1 << 30,
        );
        // Clients wait ping_interval + ping_timeout with a JavaScript timer, and a timer
        // longer than 2^31 - 1 ms fires at once: every client would drop at its first ping.
        c.at_most(
            "socketio.ping_interval_ms",
            self.ping_interval_ms,
            MAX_TIMER_MS / 2,
        );
        c.at_most(
            "socketio.ping_timeout_ms",
            self.ping_timeout_ms,
            MAX_TIMER_MS / 2,
        );
        c.positive("socketio.upgrade_timeout_ms", self.upgrade_timeout_ms);
        c.at_most(
            "socketio.upgrade_timeout_ms",
            self.upgrade_timeout_ms,
            MAX_TIMER_MS,
        );
        c.positive("socketio.connect_timeout_ms", self.connect_timeout_ms);
        c.at_most(
            "socketio.connect_timeout_ms",
            self.connect_timeout_ms,
            MAX_TIMER_MS,
        );
        if self.transports.is_empty() {
            c.fail("socketio.transports", "at least one transport is needed");
        }
        for origin in &self.cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                c.fail(
                    "socketio.cors_origins",
                    format!("{origin:?} is not an origin (`https://host[:port]`) or `*`"),
                );
            }
        }
        if self.cors_credentials && self.cors_origins.iter().any(|o| o == "*") {
            c.fail(
                "socketio.cors_credentials",
                "credentials need a list of origins, not `*`",
            );
        }
        let mut path = self.path.clone();
        if !path.ends_with('/') {
            path.push('/');
        }
        let cors = (!self.cors_origins.is_empty()).then(|| engineio::Cors {
            origins: if self.cors_origins.iter().any(|o| o == "*") {
                Vec::new()
            } else {
                self.cors_origins.clone()
            },
            credentials: self.cors_credentials,
        });
        socketio::Config {
            engine: engineio::Config {
                path,
                ping_interval: Duration::from_millis(self.ping_interval_ms),
                ping_timeout: Duration::from_millis(self.ping_timeout_ms),
                max_payload: self.max_http_buffer_size as usize,
                upgrade_timeout: Duration::from_millis(self.upgrade_timeout_ms),
                polling: self.transports.contains(&TransportName::Polling),
                websocket: self.transports.contains(&TransportName::Websocket),
                cors,
                ..engineio::Config::default()
            },
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            parser: self.parser.into(),
            ..socketio::Config::default()
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Bytes a connection may have queued for sending; past it, volatile packets are
    /// dropped and anything else disconnects it (slow consumer). Defaults to 4 MiB.
    pub outbound_buffer_bytes: u64,
    /// Rooms a socket may subscribe to, its own user room not counted. Defaults to 100.
    pub max_rooms_per_socket: u64,
    /// Longest room name, in characters. Defaults to 200.
    pub max_room_name_chars: u64,
    /// Longest event name a client may publish, in characters. Defaults to 100.
    pub max_event_name_chars: u64,
    /// Connections the server holds; 0 for the open-file limit less 256. Defaults to 0.
    pub max_connections: u64,
    /// Connections one client address holds; 0 for no limit. Defaults to 1,000.
    pub max_connections_per_ip: u64,
    /// IPv6 clients are counted per network of this many leading bits. Defaults to 64.
    pub ipv6_prefix_len: u64,
    /// New connections per second from one address; 0 for no limit. Defaults to 50.
    pub connect_rate_per_ip: f64,
    /// New connections one address may open at once. Defaults to 100.
    pub connect_burst_per_ip: u64,
    /// Events per second one socket may send; 0 for no limit. Defaults to 50.
    pub events_per_second: f64,
    /// Events one socket may send at once. Defaults to 100.
    pub events_burst: u64,
    /// Refusals by a rate before the socket is disconnected (reason `rate
    /// limited`); 0 never disconnects. Defaults to 50.
    pub max_rate_violations: u64,
    /// Publishes per second one user may make across all its sockets; 0 for no limit.
    /// Defaults to 20.
    pub user_publishes_per_second: f64,
    /// Publishes one user may make at once. Defaults to 50.
    pub user_publishes_burst: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            outbound_buffer_bytes: engineio::Config::default().max_buffered_bytes as u64,
            max_rooms_per_socket: 100,
            max_room_name_chars: 200,
            max_event_name_chars: 100,
            max_connections: 0,
            max_connections_per_ip: 1000,
            ipv6_prefix_len: 64,
            connect_rate_per_ip: 50.0,
            connect_burst_per_ip: 100,
            events_per_second: 50.0,
            events_burst: 100,
            max_rate_violations: 50,
            user_publishes_per_second: 20.0,
            user_publishes_burst: 50,
        }
    }
}

/// `[limits]`, checked.
struct CheckedLimits {
    limits: Limits,
    outbound_buffer_bytes: usize,
    event_rate: Option<socketio::RateLimit>,
    connect_rate: Option<(f64, u32)>,
}

impl LimitsSection {
    fn check(&self, c: &mut Checker) -> CheckedLimits {
        c.positive("limits.outbound_buffer_bytes", self.outbound_buffer_bytes);
        c.at_most(
            "limits.outbound_buffer_bytes",
            self.outbound_buffer_bytes,
            1 << 30,
        );
        c.at_most(
            "limits.max_rooms_per_socket",
            self.max_rooms_per_socket,
            100_000,
        );
        c.positive("limits.max_room_name_chars", self.max_room_name_chars);
        c.at_most(
            "limits.max_room_name_chars",
            self.max_room_name_chars,
            65_536,
        );
        c.positive("limits.max_event_name_chars", self.max_event_name_chars);
        c.at_most(
            "limits.max_event_name_chars",
            self.max_event_name_chars,
            65_536,
        );
        c.at_most("limits.max_connections", self.max_connections, 100_000_000);
        let connect_rate = c.rate(
            "limits.connect_rate_per_ip",
            self.connect_rate_per_ip,
            "limits.connect_burst_per_ip",
            self.connect_burst_per_ip,
        );
        let event_rate = c.rate(
            "limits.events_per_second",
            self.events_per_second,
            "limits.events_burst",
            self.events_burst,
        );
        let user_publish_rate = c.rate(
            "limits.user_publishes_per_second",
            self.user_publishes_per_second,
            "limits.user_publishes_burst",
            self.user_publishes_burst,
        );
        c.at_most(
            "limits.max_connections_per_ip",
            self.max_connections_per_ip,
            u64::from(u32::MAX),
        );
        c.at_most("limits.ipv6_prefix_len", self.ipv6_prefix_len, 128);
        c.at_most(
            "limits.max_rate_violations",
            self.max_rate_violations,
            u64::from(u32::MAX),
        );
        CheckedLimits {
            limits: Limits {
                max_rooms_per_socket: self.max_rooms_per_socket as usize,
                max_room_name_chars: self.max_room_name_chars as usize,
                max_event_name_chars: self.max_event_name_chars as usize,
                max_rate_violations: self.max_rate_violations as u32,
                user_publish_rate,
            },
            outbound_buffer_bytes: self.outbound_buffer_bytes as usize,
            event_rate: event_rate
                .map(|(per_second, burst)| socketio::RateLimit { per_second, burst }),
            connect_rate,
        }
    }
}

/// `[access]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessSection {
    /// Networks (CIDR) exempt from the per-address limits. Defaults to none.
    #[serde(deserialize_with = "list")]
    pub allow: Vec<String>,
    /// Networks (CIDR) whose connections are refused. Defaults to none.
    #[serde(deserialize_with = "list")]
    pub deny: Vec<String>,
}

impl AccessSection {
    fn check(&self, c: &mut Checker) -> crate::admission::AccessLists {
        crate::admission::AccessLists {
            allow: c.nets("access.allow", &self.allow),
            deny: c.nets("access.deny", &self.deny),
        }
    }
}

/// `[tiers]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TiersSection {
    /// The tier of clients without a token. Defaults to `standard`.
    pub anonymous: Tier,
    /// Critical connections held at most; 0 for no cap of its own. Defaults to 0.
    pub critical_max_connections: u64,
    /// Standard connections held at most; 0 for no cap of its own. Defaults to 0.
    pub standard_max_connections: u64,
    /// Degraded connections held at most; 0 for no cap of its own. Defaults to 0.
    pub degraded_max_connections: u64,
    /// Ping interval of critical connections, in ms; 0 for `socketio.ping_interval_ms`.
    pub critical_ping_interval_ms: u64,
    /// Ping interval of standard connections, in ms; 0 for `socketio.ping_interval_ms`.
    pub standard_ping_interval_ms: u64,
    /// Ping interval of degraded connections, in ms; 0 for `socketio.ping_interval_ms`.
    pub degraded_ping_interval_ms: u64,
}

impl Default for TiersSection {
    fn default() -> Self {
        TiersSection {
            anonymous: Tier::Standard,
            critical_max_connections: 0,
            standard_max_connections: 0,
            degraded_max_connections: 0,
            critical_ping_interval_ms: 0,
            standard_ping_interval_ms: 0,
            degraded_ping_interval_ms: 0,
        }
    }
}

impl TiersSection {
    /// The tiers; their ping intervals may not exceed the Socket.IO one.
    fn check(&self, c: &mut Checker, socketio_ping_interval_ms: u64) -> TiersConfig {
        let mut ping_interval = [None; 3];
        for (i, (key, ms)) in [
            (
                "tiers.critical_ping_interval_ms",
                self.critical_ping_interval_ms,
            ),
            (
                "tiers.standard_ping_interval_ms",
                self.standard_ping_interval_ms,
            ),
            (
                "tiers.degraded_ping_interval_ms",
                self.degraded_ping_interval_ms,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            if ms > socketio_ping_interval_ms {
                c.fail(
                    key,
                    format!(
                        "must be at most socketio.ping_interval_ms ({socketio_ping_interval_ms}): \
                         clients take a longer silence for a dead server"
                    ),
                );
            }
            ping_interval[i] = (ms > 0).then(|| Duration::from_millis(ms));
        }
        TiersConfig {
            anonymous: self.anonymous,
            max_connections: [
                self.critical_max_connections as usize,
                self.standard_max_connections as usize,
                self.degraded_max_connections as usize,
            ],
            ping_interval,
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file with the certificate chain (leaf first). Defaults to none (plain HTTP).
    pub cert_file: String,
    /// PEM file with the private key. Defaults to none.
    pub key_file: String,
}

impl TlsSection {
    /// The certificate and key files (loaded once here to check them).
    fn check(&self, c: &mut Checker) -> Option<(PathBuf, PathBuf)> {
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, true) => None,
            (false, false) => {
                let files = (
                    PathBuf::from(&self.cert_file),
                    PathBuf::from(&self.key_file),
                );
                match crate::tls::load(&files.0, &files.1) {
                    Ok(_) => Some(files),
                    Err(e) => {
                        c.fail("tls.cert_file", e);
                        None
                    }
                }
            }
            (true, false) => {
                c.fail(
                    "tls.cert_file",
                    "tls.key_file is set: set the certificate too",
                );
                None
            }
            (false, true) => {
                c.fail("tls.key_file", "tls.cert_file is set: set the key too");
                None
            }
        }
    }
}

/// `[drain]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainSection {
    /// Milliseconds over which connections are closed, in paced batches. Defaults to
    /// 10,000.
    pub window_ms: u64,
    /// The `retryAfterMs` hint of the `server_shutdown` event. Defaults to 2,000.
    pub retry_after_ms: u64,
    /// Milliseconds each later phase of the drain may take (the last packets going out,
    /// the services flushing their stores, leaving the cluster) before it is cut short.
    /// Defaults to 5,000.
    pub grace_ms: u64,
}

impl Default for DrainSection {
    fn default() -> Self {
        DrainSection {
            window_ms: 10_000,
            retry_after_ms: 2_000,
            grace_ms: 5_000,
        }
    }
}

impl DrainSection {
    fn check(&self, c: &mut Checker) -> DrainConfig {
        c.at_most("drain.window_ms", self.window_ms, 3_600_000);
        c.at_most("drain.grace_ms", self.grace_ms, 3_600_000);
        DrainConfig {
            window: Duration::from_millis(self.window_ms),
            retry_after: Duration::from_millis(self.retry_after_ms),
            grace: Duration::from_millis(self.grace_ms),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Shared secret for HS256 tokens (at least 32 bytes). Defaults to none.
    pub jwt_secret: String,
    /// PEM file with the public key for RS256 or ES256 tokens. Defaults to none.
    pub public_key_file: String,
    /// Required `iss` claim. Defaults to none (not checked).
    pub issuer: String,
    /// Required `aud` claim. Defaults to none: tokens that carry an audience are refused.
    pub audience: String,
    /// Seconds of clock skew allowed on `exp` and `nbf`. Defaults to 30.
    pub leeway_s: u64,
    /// Whether tokens must carry `exp`. Defaults to true.
    pub require_exp: bool,
    /// Whether clients without a token may connect when auth is configured. Defaults to
    /// false. (With no auth configured every client is anonymous.)
    pub allow_anonymous: bool,
    /// Room patterns anonymous clients may subscribe to. Defaults to `["*"]`.
    #[serde(deserialize_with = "list")]
    pub anonymous_rooms: Vec<String>,
    /// Room patterns anonymous clients may publish to. Defaults to `["*"]`.
    #[serde(deserialize_with = "list")]
    pub anonymous_publish: Vec<String>,
    /// Verified tokens kept, each until it expires; 0 turns the cache off. Defaults to
    /// 100,000.
    pub cache_size: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            jwt_secret: String::new(),
            public_key_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway_s: 30,
            require_exp: true,
            allow_anonymous: false,
            anonymous_rooms: vec!["*".to_owned()],
            anonymous_publish: vec!["*".to_owned()],
            cache_size: 100_000,
        }
    }
}

impl AuthSection {
    /// Whether a way to verify tokens is configured.
    fn configured(&self) -> bool {
        !self.jwt_secret.is_empty() || !self.public_key_file.is_empty()
    }

    /// Token verification (the public key read once here), with `anonymous_tier` for
    /// clients without a token.
    fn check(&self, c: &mut Checker, anonymous_tier: Tier) -> AuthConfig {
        let hmac_secret =
            (!self.jwt_secret.is_empty()).then(|| self.jwt_secret.as_bytes().to_vec());
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < 32 {
            c.fail(
                "auth.jwt_secret",
                format!(
                    "is {} bytes; HS256 needs a secret of at least 32 bytes (RFC 7518 §3.2)",
                    self.jwt_secret.len()
                ),
            );
        }
        let public_key = if self.public_key_file.is_empty() {
            None
        } else {
            let path = PathBuf::from(&self.public_key_file);
            match std::fs::read(&path) {
                Ok(pem) => match crate::auth::key_family(&pem) {
                    Ok(_) => Some((path, pem)),
                    Err(e) => {
                        c.fail("auth.public_key_file", format!("{}: {e}", path.display()));
                        None
                    }
                },
                Err(e) => {
                    c.fail(
                        "auth.public_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        };
        c.at_most("auth.leeway_s", self.leeway_s, 3600);
        c.patterns("auth.anonymous_rooms", &self.anonymous_rooms);
        c.patterns("auth.anonymous_publish", &self.anonymous_publish);
        // With auth on, anonymous clients get only the rights the operator spelled out:
        // the defaults (every room) are meant for protected mode on loopback.
        if self.configured() && self.allow_anonymous {
            for key in ["auth.anonymous_rooms", "auth.anonymous_publish"] {
                if c.is_default(key) {
                    c.fail(
                        key,
                        "must be set (to [] for none) when auth.allow_anonymous lets clients \
                         without a token in",
                    );
                }
            }
        }
        AuthConfig {
            hmac_secret,
            public_key,
            issuer: (!self.issuer.is_empty()).then(|| self.issuer.clone()),
            audience: (!self.audience.is_empty()).then(|| self.audience.clone()),
            leeway_s: self.leeway_s,
            require_exp: self.require_exp,
            allow_anonymous: self.allow_anonymous,
            anonymous_rooms: self.anonymous_rooms.clone(),
            anonymous_publish: self.anonymous_publish.clone(),
            anonymous_tier,
            cache_size: self.cache_size,
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Bearer key of the HTTP API (`Authorization: Bearer <key>`). Defaults to none: the
    /// API refuses every call.
    pub key: String,
}

/// `[demo]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSection {
    /// Whether `/` serves the demo page. Defaults to true.
    pub enabled: bool,
    /// A local copy of the socket.io client (`socket.io.min.js` from the npm package
    /// `socket.io-client`) for the demo page; without one, the page loads it from a CDN.
    /// Defaults to none.
    pub client_js: String,
    /// A local ES-module bundle of `yjs` and the `y-socket.io` provider (exports `Y`,
    /// `SocketIOProvider`, `msgpackParser`) for the demo page's editor; without one, the
    /// page loads them from a CDN. Defaults to none.
    pub docs_js: String,
}

impl Default for DemoSection {
    fn default() -> Self {
        DemoSection {
            enabled: true,
            client_js: String::new(),
            docs_js: String::new(),
        }
    }
}

impl DemoSection {
    /// The demo page (the local scripts read once here).
    fn check(&self, c: &mut Checker) -> DemoConfig {
        DemoConfig {
            enabled: self.enabled,
            client_js: read_script(c, "demo.client_js", &self.client_js),
            docs_js: read_script(c, "demo.docs_js", &self.docs_js),
        }
    }
}

/// The file `path` names (none when empty), or a failure of `key` when it cannot be read.
fn read_script(c: &mut Checker, key: &str, path: &str) -> Option<(PathBuf, bytes::Bytes)> {
    if path.is_empty() {
        return None;
    }
    let path = PathBuf::from(path);
    match std::fs::read(&path) {
        Ok(js) => Some((path, bytes::Bytes::from(js))),
        Err(e) => {
            c.fail(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`. Defaults to `text`.
    pub format: LogFormat,
    /// Filter: a level (`info`) or directives (`info,server=debug`). Defaults to `info`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl LogSection {
    fn check(&self, c: &mut Checker) -> LogConfig {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            c.fail(
                "log.level",
                format!("{:?} is not a filter: {e}", self.level),
            );
        }
        LogConfig {
            format: self.format,
            level: self.level.clone(),
        }
    }
}

/// How a store pushes its commits to the disk (`im.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityName {
    /// Synced at every commit: nothing acknowledged is lost to a power cut.
    Full,
    /// Survives the process (a crash, `kill -9`), not a power cut.
    Normal,
}

/// `[im]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImSection {
    /// Whether `/im` is served. Defaults to true.
    pub enabled: bool,
    /// Where messages are stored: `sqlite://path` (created on first start) or
    /// `postgres://user@host:port/database` (the database must exist; the schema is
    /// created). Defaults to `sqlite://herald-data/herald.db`.
    pub store: String,
    /// `full` (a commit is synced to the disk before it is acknowledged) or `normal`
    /// (it survives the process, not a power cut). Defaults to `full`.
    pub durability: DurabilityName,
    /// Largest message body, in bytes. Defaults to 65,536.
    pub max_body_bytes: u64,
    /// Members a group may have at most. Defaults to 100,000.
    pub max_group_members: u64,
    /// Conversations one user may be in at most. Defaults to 10,000.
    pub max_conversations_per_user: u64,
    /// Milliseconds between receipts (and watermark writes) per conversation and user.
    /// Defaults to 250.
    pub receipt_window_ms: u64,
    /// Groups up to this many members tell each author of a covered message; larger
    /// ones send counts. Defaults to 100.
    pub receipt_detail_limit: u64,
    /// Milliseconds between writes of the watermarks to the store. Defaults to 1,000.
    pub watermark_flush_ms: u64,
    /// Milliseconds the store's writer waits for more sends to commit together.
    /// Defaults to 1.
    pub commit_window_ms: u64,
    /// Sends one commit takes at most. Defaults to 512.
    pub commit_batch: u64,
    /// Milliseconds a cached conversation may go unused before it leaves memory.
    /// Defaults to 600,000 (10 minutes).
    pub cache_idle_ms: u64,
    /// Milliseconds between pushes of a conversation's typers (only when they changed).
    /// Defaults to 100.
    pub typing_window_ms: u64,
    /// Milliseconds a user counts as typing after their last `typing: true`. Defaults
    /// to 5,000.
    pub typing_ttl_ms: u64,
    /// Milliseconds a device whose connection was lost (not closed) still counts as
    /// connected, so that a quick reconnect changes nothing anyone sees. Defaults to
    /// 2,000.
    pub presence_grace_ms: u64,
    /// A user's presence is pushed at most twice per this many milliseconds (a user who
    /// flaps has the state at its end pushed). Defaults to 10,000.
    pub presence_flap_window_ms: u64,
    /// Users one socket may watch with `presence.subscribe`. Defaults to 1,000.
    pub max_presence_subscriptions: u64,
    /// `multiple` (default), `one_per_platform` or `single`: which devices of a user a
    /// new one puts out.
    pub device_policy: im::DevicePolicy,
    /// Messages a user may send per second (0: no limit). Defaults to 20.
    pub send_rate: f64,
    /// Messages a user may send at once above the rate. Defaults to 40.
    pub send_burst: u64,
    /// Member deliveries per second one conversation may cause (each message costs its
    /// member count; 0: no limit). Defaults to 10,000.
    pub conversation_fanout_rate: f64,
}

impl Default for ImSection {
    fn default() -> Self {
        let im = im::Config::default();
        ImSection {
            enabled: true,
            store: im.store.url.clone(),
            durability: match im.store.durability {
                store::Durability::Full => DurabilityName::Full,
                store::Durability::Normal => DurabilityName::Normal,
            },
            max_body_bytes: im.max_body_bytes as u64,
            max_group_members: im.max_group_members as u64,
            max_conversations_per_user: im.max_conversations_per_user as u64,
            receipt_window_ms: im.receipt_window.as_millis() as u64,
            receipt_detail_limit: im.receipt_detail_limit as u64,
            watermark_flush_ms: im.watermark_flush.as_millis() as u64,
            commit_window_ms: im.store.batch_window.as_millis() as u64,
            commit_batch: im.store.batch_max as u64,
            cache_idle_ms: im.cache_idle.as_millis() as u64,
            typing_window_ms: im.typing_window.as_millis() as u64,
            typing_ttl_ms: im.typing_ttl.as_millis() as u64,
            presence_grace_ms: im.presence_grace.as_millis() as u64,
            presence_flap_window_ms: im.presence_flap_window.as_millis() as u64,
            max_presence_subscriptions: im.max_presence_subscriptions as u64,
            device_policy: im.device_policy,
            send_rate: im.send_rate,
            send_burst: im.send_burst as u64,
            conversation_fanout_rate: im.conversation_fanout_rate,
        }
    }
}

impl ImSection {
    /// The IM service's configuration; `None` when it is off.
    fn check(&self, c: &mut Checker) -> Option<im::Config> {
        if let Err(why) = store::check_url(&self.store) {
            c.fail(
                "im.store",
                format!("{:?}: {why}", store::redacted_url(&self.store)),
            );
        }
        c.positive("im.max_body_bytes", self.max_body_bytes);
        c.at_most("im.max_body_bytes", self.max_body_bytes, 64 << 20);
        c.positive("im.max_group_members", self.max_group_members);
        c.at_most("im.max_group_members", self.max_group_members, 10_000_000);
        c.positive(
            "im.max_conversations_per_user",
            self.max_conversations_per_user,
        );
        c.positive("im.receipt_window_ms", self.receipt_window_ms);
        c.at_most("im.receipt_window_ms", self.receipt_window_ms, 60_000);
        c.positive("im.watermark_flush_ms", self.watermark_flush_ms);
        c.at_most("im.watermark_flush_ms", self.watermark_flush_ms, 600_000);
        c.at_most("im.commit_window_ms", self.commit_window_ms, 1_000);
        c.positive("im.commit_batch", self.commit_batch);
        c.at_most("im.commit_batch", self.commit_batch, 100_000);
        c.positive("im.cache_idle_ms", self.cache_idle_ms);
        c.at_most("im.cache_idle_ms", self.cache_idle_ms, 86_400_000);
        c.positive("im.typing_window_ms", self.typing_window_ms);
        c.at_most("im.typing_window_ms", self.typing_window_ms, 10_000);
        c.positive("im.typing_ttl_ms", self.typing_ttl_ms);
        c.at_most("im.typing_ttl_ms", self.typing_ttl_ms, 600_000);
        c.at_most("im.presence_grace_ms", self.presence_grace_ms, 600_000);
        c.at_most(
            "im.presence_flap_window_ms",
            self.presence_flap_window_ms,
            3_600_000,
        );
        c.positive(
            "im.max_presence_subscriptions",
            self.max_presence_subscriptions,
        );
        c.at_most(
            "im.max_presence_subscriptions",
            self.max_presence_subscriptions,
            1_000_000,
        );
        let sends = c.rate(
            "im.send_rate",
            self.send_rate,
            "im.send_burst",
            self.send_burst,
        );
        let fanout = self.conversation_fanout_rate;
        if !fanout.is_finite() || !(0.0..=1e9).contains(&fanout) {
            c.fail(
                "im.conversation_fanout_rate",
                "must be a number of deliveries per second from 0 (no limit) to 1e9",
            );
        }
        self.enabled.then(|| im::Config {
            store: store::Config {
                url: self.store.clone(),
                durability: match self.durability {
                    DurabilityName::Full => store::Durability::Full,
                    DurabilityName::Normal => store::Durability::Normal,
                },
                batch_window: Duration::from_millis(self.commit_window_ms),
                batch_max: self.commit_batch as usize,
                ..store::Config::default()
            },
            max_body_bytes: self.max_body_bytes as usize,
            max_group_members: self.max_group_members as usize,
            max_conversations_per_user: self.max_conversations_per_user as usize,
            receipt_window: Duration::from_millis(self.receipt_window_ms),
            receipt_detail_limit: self.receipt_detail_limit as usize,
            watermark_flush: Duration::from_millis(self.watermark_flush_ms),
            cache_idle: Duration::from_millis(self.cache_idle_ms),
            typing_window: Duration::from_millis(self.typing_window_ms),
            typing_ttl: Duration::from_millis(self.typing_ttl_ms),
            presence_grace: Duration::from_millis(self.presence_grace_ms),
            presence_flap_window: Duration::from_millis(self.presence_flap_window_ms),
            max_presence_subscriptions: self.max_presence_subscriptions as usize,
            device_policy: self.device_policy,
            // 0 turns a limit off.
            send_rate: sends.map_or(0.0, |(rate, _)| rate),
            send_burst: sends.map_or(1.0, |(_, burst)| f64::from(burst)),
            conversation_fanout_rate: fanout.clamp(0.0, 1e9),
            // Set with the cluster's section.
            clustered: false,
        })
    }
}

/// `[docs]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocsSection {
    /// Whether documents are served (`/yjs|<name>`, for the `y-socket.io` client).
    /// Defaults to true.
    pub enabled: bool,
    /// Where documents are stored: a store URL as `im.store`. Defaults to empty: the
    /// IM service's store.
    pub store: String,
    /// Updates arriving within this many milliseconds of the last sent are merged into
    /// one frame per recipient. Defaults to 10.
    pub update_window_ms: u64,
    /// Awareness changes (cursors) of a document are merged per window of this many
    /// milliseconds. Defaults to 50.
    pub awareness_window_ms: u64,
    /// Every update received is stored within this many milliseconds (what a SIGKILL
    /// may lose at most). Defaults to 1,000.
    pub flush_ms: u64,
    /// A document nobody has open leaves memory after this many milliseconds (compacted
    /// first). Defaults to 30,000.
    pub idle_unload_ms: u64,
    /// Stored updates after which a document is compacted into one snapshot. Defaults
    /// to 500.
    pub compact_updates: u64,
    /// Largest message a socket of a document may send or be sent, in bytes (the first
    /// sync carries the whole document). Defaults to 67,108,864 (64 MiB).
    pub max_message_bytes: u64,
    /// Awareness states not renewed within this many milliseconds are removed. Defaults
    /// to 30,000 (as y-protocols).
    pub awareness_timeout_ms: u64,
    /// Malformed updates or events one socket may send before it is disconnected.
    /// Defaults to 10.
    pub max_bad_events: u64,
    /// Events per second one socket of a document may send (updates, cursor moves), in
    /// place of `limits.events_per_second`; over it the connection is closed (the client
    /// reconnects and syncs), never an update dropped. 0 for no limit. Defaults to 500.
    pub events_per_second: f64,
    /// Events one socket of a document may send at once. Defaults to 2,000.
    pub events_burst: u64,
    /// Document patterns clients without a token may edit. Defaults to `["*"]` (with
    /// no auth configured every client is anonymous).
    #[serde(deserialize_with = "list")]
    pub anonymous_edit: Vec<String>,
    /// Document patterns clients without a token may read only. Defaults to none.
    #[serde(deserialize_with = "list")]
    pub anonymous_read: Vec<String>,
}

impl Default for DocsSection {
    fn default() -> Self {
        let d = collab::Config::default();
        DocsSection {
            enabled: true,
            store: String::new(),
            update_window_ms: d.update_window.as_millis() as u64,
            awareness_window_ms: d.awareness_window.as_millis() as u64,
            flush_ms: d.flush.as_millis() as u64,
            idle_unload_ms: d.idle_unload.as_millis() as u64,
            compact_updates: d.compact_updates,
            max_message_bytes: d.max_message_bytes as u64,
            awareness_timeout_ms: d.awareness_timeout.as_millis() as u64,
            max_bad_events: u64::from(d.max_bad_events),
            events_per_second: d.event_rate.map_or(0.0, |r| r.per_second),
            events_burst: d.event_rate.map_or(1, |r| u64::from(r.burst)),
            anonymous_edit: vec!["*".to_owned()],
            anonymous_read: Vec::new(),
        }
    }
}

/// The document service, validated.
#[derive(Debug, Clone)]
pub struct DocsConfig {
    /// The service's own settings (its store included).
    pub collab: collab::Config,
    /// What clients without a token may edit and read.
    pub anonymous_edit: Vec<String>,
    /// See `anonymous_edit`.
    pub anonymous_read: Vec<String>,
}

impl DocsSection {
    /// The document service's configuration; `None` when it is off.
    fn check(&self, c: &mut Checker, im: &ImSection) -> Option<DocsConfig> {
        let url = if self.store.is_empty() {
            im.store.clone()
        } else {
            self.store.clone()
        };
        if let Err(why) = store::check_url(&url) {
            c.fail(
                "docs.store",
                format!("{:?}: {why}", store::redacted_url(&url)),
            );
        }
        c.positive("docs.update_window_ms", self.update_window_ms);
        c.at_most("docs.update_window_ms", self.update_window_ms, 1_000);
        c.positive("docs.awareness_window_ms", self.awareness_window_ms);
        c.at_most("docs.awareness_window_ms", self.awareness_window_ms, 10_000);
        c.positive("docs.flush_ms", self.flush_ms);
        c.at_most("docs.flush_ms", self.flush_ms, 600_000);
        c.positive("docs.idle_unload_ms", self.idle_unload_ms);
        c.at_most("docs.idle_unload_ms", self.idle_unload_ms, 86_400_000);
        c.positive("docs.compact_updates", self.compact_updates);
        c.at_most("docs.compact_updates", self.compact_updates, 10_000_000);
        c.positive("docs.max_message_bytes", self.max_message_bytes);
        c.at_most("docs.max_message_bytes", self.max_message_bytes, 1 << 30);
        c.positive("docs.awareness_timeout_ms", self.awareness_timeout_ms);
        c.at_most(
            "docs.awareness_timeout_ms",
            self.awareness_timeout_ms,
            3_600_000,
        );
        let event_rate = c.rate(
            "docs.events_per_second",
            self.events_per_second,
            "docs.events_burst",
            self.events_burst,
        );
        c.patterns("docs.anonymous_edit", &self.anonymous_edit);
        c.patterns("docs.anonymous_read", &self.anonymous_read);
        c.positive("docs.max_bad_events", self.max_bad_events);
        c.at_most("docs.max_bad_events", self.max_bad_events, 1_000_000);
        let mut store = store::Config {
            url,
            ..store::Config::default()
        };
        if self.store.is_empty() {
            store.durability = match im.durability {
                DurabilityName::Full => store::Durability::Full,
                DurabilityName::Normal => store::Durability::Normal,
            };
        }
        self.enabled.then(|| DocsConfig {
            collab: collab::Config {
                store,
                update_window: Duration::from_millis(self.update_window_ms),
                awareness_window: Duration::from_millis(self.awareness_window_ms),
                flush: Duration::from_millis(self.flush_ms),
                idle_unload: Duration::from_millis(self.idle_unload_ms),
                compact_updates: self.compact_updates,
                max_message_bytes: self.max_message_bytes as usize,
                awareness_timeout: Duration::from_millis(self.awareness_timeout_ms),
                max_bad_events: self.max_bad_events.min(u64::from(u32::MAX)) as u32,
                event_rate: event_rate
                    .map(|(per_second, burst)| socketio::RateLimit { per_second, burst }),
                ..collab::Config::default()
            },
            anonymous_edit: self.anonymous_edit.clone(),
            anonymous_read: self.anonymous_read.clone(),
        })
    }
}

/// A list given as a sequence, or as one comma-separated string (what an environment
/// variable holds: `HERALD_SOCKETIO__TRANSPORTS=polling,websocket`); each item read as
/// a `T` (a string, or one of a closed set).
fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Many(Vec<String>),
        One(String),
    }
    let items = match List::deserialize(d)? {
        List::Many(v) => v,
        List::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    items
        .into_iter()
        .map(|item| {
            T::deserialize(serde::de::value::StringDeserializer::<
                serde::de::value::Error,
            >::new(item))
            .map_err(serde::de::Error::custom)
        })
        .collect()
}

// === validated configuration ===

/// The validated configuration: typed, complete, immutable.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind.
    pub listen: SocketAddr,
    /// The Socket.IO server's options.
    pub socketio: socketio::Config,
    /// Bounds on what one client may hold.
    pub limits: Limits,
    /// Token verification and anonymous access.
    pub auth: AuthConfig,
    /// The HTTP API's bearer key; `None` refuses every API call.
    pub api_key: Option<String>,
    /// The demo page.
    pub demo: DemoConfig,
    /// Logging.
    pub log: LogConfig,
    /// Admission control (the global cap is resolved at start when it is 0).
    pub admission: crate::admission::Settings,
    /// Connection tiers.
    pub tiers: TiersConfig,
    /// Graceful shutdown.
    pub drain: DrainConfig,
    /// TLS certificate and key files, when the listener speaks TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The IM service; `None` when it is off.
    pub im: Option<im::Config>,
    /// The document service; `None` when it is off.
    pub docs: Option<DocsConfig>,
    /// The cluster; `None` for a node on its own.
    pub cluster: Option<ClusterConfig>,
}

/// Connection tiers: caps and ping intervals, indexed by [`Tier`](crate::auth::Tier).
#[derive(Debug, Clone)]
pub struct TiersConfig {
    /// The tier of clients without a token.
    pub anonymous: Tier,
    /// Connections per tier at most; 0 for no cap of its own.
    pub max_connections: [usize; 3],
    /// Ping interval per tier; `None` for the Socket.IO one.
    pub ping_interval: [Option<Duration>; 3],
}

/// Graceful shutdown.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    /// Time over which connections are closed.
    pub window: Duration,
    /// The reconnect hint sent to clients.
    pub retry_after: Duration,
    /// Time for the last packets after the window.
    pub grace: Duration,
}

/// Bounds on what one client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rooms a socket may subscribe to, its user room not counted.
    pub max_rooms_per_socket: usize,
    /// Longest room name, in characters.
    pub max_room_name_chars: usize,
    /// Longest event name a client may publish, in characters.
    pub max_event_name_chars: usize,
    /// Refusals by a rate before a socket is disconnected; 0 never.
    pub max_rate_violations: u32,
    /// Publishes per second and burst per user; `None` for no limit.
    pub user_publish_rate: Option<(f64, u32)>,
}

/// Token verification and anonymous access.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// HS256/384/512 secret.
    pub hmac_secret: Option<Vec<u8>>,
    /// PEM public key for RS*/PS*/ES* tokens, and the file it came from.
    pub public_key: Option<(PathBuf, Vec<u8>)>,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Required audience.
    pub audience: Option<String>,
    /// Clock skew allowed, in seconds.
    pub leeway_s: u64,
    /// Whether tokens must carry `exp`.
    pub require_exp: bool,
    /// Whether clients without a token may connect.
    pub allow_anonymous: bool,
    /// Patterns of rooms anonymous clients may subscribe to.
    pub anonymous_rooms: Vec<String>,
    /// Patterns of rooms anonymous clients may publish to.
    pub anonymous_publish: Vec<String>,
    /// The tier of anonymous clients.
    pub anonymous_tier: crate::auth::Tier,
    /// Verified tokens kept.
    pub cache_size: u64,
}

impl AuthConfig {
    /// Whether any way to verify tokens is configured.
    pub fn enabled(&self) -> bool {
        self.hmac_secret.is_some() || self.public_key.is_some()
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("public_key", &self.public_key.as_ref().map(|(p, _)| p))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

/// The demo page.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Whether `/` serves it.
    pub enabled: bool,
    /// The socket.io client served to it, read at start.
    pub client_js: Option<(PathBuf, bytes::Bytes)>,
    /// The Yjs and y-socket.io bundle served to its editor, read at start.
    pub docs_js: Option<(PathBuf, bytes::Bytes)>,
}

/// Logging.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// The filter directives.
    pub level: String,
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

// === loading ===

/// Values given on the command line, which override every other source.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

/// A configuration that loaded and validated, with what it was made from.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The merged values, as `herald config print` shows them.
    pub raw: RawConfig,
    figment: Figment,
    sources: Vec<String>,
    /// Things worth saying that do not stop Herald (environment variables ignored).
    pub warnings: Vec<String>,
}

impl Loaded {
    /// Where the configuration came from, for the startup log: `defaults`, the file,
    /// the environment variables and flags that were set.
    pub fn sources(&self) -> String {
        self.sources.join(", ")
    }

    /// The merged configuration as TOML, secrets redacted, each value set by something
    /// other than the defaults followed by a comment naming its source.
    pub fn to_toml(&self) -> String {
        let mut raw = self.raw.clone();
        for secret in [&mut raw.auth.jwt_secret, &mut raw.api.key] {
            if !secret.is_empty() {
                *secret = "<redacted>".to_owned();
            }
        }
        raw.im.store = store::redacted_url(&raw.im.store);
        raw.docs.store = store::redacted_url(&raw.docs.store);
        let table = match toml::Table::try_from(&raw) {
            Ok(t) => t,
            Err(e) => return format!("# cannot render the configuration: {e}\n"),
        };
        let mut out = String::new();
        for (section, values) in &table {
            out.push_str(&format!("[{section}]\n"));
            let Some(values) = values.as_table() else {
                continue;
            };
            for (key, value) in values {
                let path = format!("{section}.{key}");
                let origin = origin_of(&self.figment, &path);
                match origin {
                    Some(o) if o != DEFAULTS => {
                        out.push_str(&format!("{key} = {value}  # from {o}\n"));
                    }
                    _ => out.push_str(&format!("{key} = {value}\n")),
                }
            }
            out.push('\n');
        }
        out
    }
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, dotted (`server.port`), when the problem has one.
    pub key: Option<String>,
    /// Where the key's value came from (`environment variable HERALD_SERVER__PORT`).
    pub origin: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {}", self.message)?,
            None => f.write_str(&self.message)?,
        }
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

/// The configuration is unusable: every problem found, each naming its key and source.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "invalid configuration: {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(key: Option<&str>, origin: Option<String>, message: impl Into<String>) -> Self {
        ConfigError(vec![Problem {
            key: key.map(str::to_owned),
            origin,
            message: message.into(),
        }])
    }
}

const DEFAULTS: &str = "defaults";
/// The longest time a clients' timer can wait (JavaScript's `setTimeout`), in ms.
const MAX_TIMER_MS: u64 = (1 << 31) - 1;
/// The highest rate a limit takes, per second: a GCRA period shorter than a
/// microsecond is not a limit anyone means.
const MAX_RATE: f64 = 1_000_000.0;
const FLAGS: &str = "command-line flags";
const ENVIRONMENT: &str = "environment";

/// Loads and validates the configuration from the defaults, `file`, the variables of
/// `env` that start with `HERALD_` (except `HERALD_CONFIG`), and `flags`.
///
/// # Errors
///
/// [`ConfigError`] with every problem found: an unreadable or malformed file, unknown
/// keys, values of the wrong type, values out of range.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &Flags,
) -> Result<Loaded, ConfigError> {
    let mut sources = vec![DEFAULTS.to_owned()];
    let defaults = Layer::new(DEFAULTS, dict_of(&RawConfig::default())?, |_| None);
    let mut figment = Figment::new().merge(defaults);
    if let Some(path) = file {
        // Read first: a missing file is an error here, not an empty layer.
        if let Err(e) = std::fs::read(path) {
            return Err(ConfigError::one(
                None,
                None,
                format!("cannot read config file {}: {e}", path.display()),
            ));
        }
        figment = figment.merge(Toml::file_exact(path));
        sources.push(format!("file {}", path.display()));
    }
    let mut warnings = Vec::new();
    let env = env_layer(env, &mut warnings);
    if !env.names.is_empty() {
        sources.push(format!("environment ({})", env.names.join(", ")));
    }
    let env_names = env.names.clone();
    figment = figment.merge(env.layer);
    let flags = flags_layer(flags);
    if !flags.names.is_empty() {
        sources.push(format!("flags ({})", flags.names.join(", ")));
    }
    figment = figment.merge(flags.layer);

    let raw: RawConfig = figment.extract_lossy().map_err(|e| {
        ConfigError(
            e.into_iter()
                .map(|e| name_variable(problem_of(&figment, e), &env_names))
                .collect(),
        )
    })?;
    let config = validate(&raw, &figment)?;
    Ok(Loaded {
        config,
        raw,
        figment,
        sources,
        warnings,
    })
}

fn dict_of<T: Serialize>(value: &T) -> Result<Dict, ConfigError> {
    Value::serialize(value)
        .ok()
        .and_then(Value::into_dict)
        .ok_or_else(|| ConfigError::one(None, None, "cannot represent the defaults"))
}

/// A configuration source: its name, its values, and how to name one of its keys.
struct Layer {
    name: &'static str,
    dict: Dict,
    key_name: fn(&[&str]) -> Option<String>,
}

impl Layer {
    fn new(name: &'static str, dict: Dict, key_name: fn(&[&str]) -> Option<String>) -> Layer {
        Layer {
            name,
            dict,
            key_name,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let key_name = self.key_name;
        Metadata::named(self.name).interpolater(move |_: &Profile, keys: &[&str]| {
            key_name(keys).unwrap_or_else(|| keys.join("."))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

struct Named {
    layer: Layer,
    names: Vec<String>,
}

/// The `HERALD_*` variables, values kept as strings (extraction converts them to the
/// key's type), keys split on `__`.
fn env_layer(env: impl IntoIterator<Item = (String, String)>, warnings: &mut Vec<String>) -> Named {
    let mut dict = Dict::new();
    let mut names = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == ENV_CONFIG_FILE {
            continue;
        }
        if !rest.contains("__") {
            // Not a key (every key is SECTION__KEY): orchestrators set HERALD_* variables
            // of their own (Kubernetes service links: HERALD_PORT, HERALD_SERVICE_HOST).
            // A likely typo is pointed out.
            let hint = rest
                .to_ascii_lowercase()
                .split_once('_')
                .map(|(section, key)| format!("{section}.{key}"))
                .filter(|key| default_keys().contains_key(key))
                .map(|key| {
                    format!(
                        "; did you mean {ENV_PREFIX}{}?",
                        key.to_ascii_uppercase().replace('.', "__")
                    )
                })
                .unwrap_or_default();
            warnings.push(format!(
                "environment variable {name} ignored: keys are {ENV_PREFIX}<SECTION>__<KEY>{hint}"
            ));
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        let nested = figment::util::nest(&key, Value::from(value));
        if let Some(nested) = nested.into_dict() {
            dict = merge_dicts(dict, nested);
        }
        names.push(name);
    }
    names.sort();
    Named {
        layer: Layer::new(ENVIRONMENT, dict, |keys| {
            Some(format!(
                "{ENV_PREFIX}{}",
                keys.iter()
                    .map(|k| k.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            ))
        }),
        names,
    }
}

fn merge_dicts(mut into: Dict, from: Dict) -> Dict {
    for (k, v) in from {
        let merged = match (into.remove(&k), v) {
            (Some(Value::Dict(_, a)), Value::Dict(tag, b)) => Value::Dict(tag, merge_dicts(a, b)),
            (_, v) => v,
        };
        into.insert(k, merged);
    }
    into
}

fn flags_layer(flags: &Flags) -> Named {
    let mut dict = Dict::new();
    let mut names = Vec::new();
    let mut set = |section: &str, key: &str, value: Value, flag: &str| {
        let nested = figment::util::nest(&format!("{section}.{key}"), value);
        if let Some(nested) = nested.into_dict() {
            dict = merge_dicts(std::mem::take(&mut dict), nested);
        }
        names.push(flag.to_owned());
    };
    if let Some(host) = &flags.host {
        set("server", "host", Value::from(host.clone()), "--host");
    }
    if let Some(port) = flags.port {
        set("server", "port", Value::from(port), "--port");
    }
    if let Some(format) = &flags.log_format {
        set("log", "format", Value::from(format.clone()), "--log-format");
    }
    if let Some(level) = &flags.log_level {
        set("log", "level", Value::from(level.clone()), "--log-level");
    }
    Named {
        layer: Layer::new(FLAGS, dict, |keys| {
            Some(match keys {
                ["server", "host"] => "--host".to_owned(),
                ["server", "port"] => "--port".to_owned(),
                ["log", "format"] => "--log-format".to_owned(),
                ["log", "level"] => "--log-level".to_owned(),
                _ => return None,
            })
        }),
        names,
    }
}

/// Where the value of `key` (dotted) came from, in words.
fn origin_of(figment: &Figment, key: &str) -> Option<String> {
    let metadata = figment.find_metadata(key)?;
    let keys: Vec<&str> = key.split('.').collect();
    Some(describe(metadata, &keys))
}

fn describe(metadata: &Metadata, keys: &[&str]) -> String {
    if let Some(path) = metadata.source.as_ref().and_then(|s| s.file_path()) {
        return format!("file {}", path.display());
    }
    match &*metadata.name {
        ENVIRONMENT => format!(
            "environment variable {}",
            metadata.interpolate(&Profile::Default, keys)
        ),
        FLAGS => format!("flag {}", metadata.interpolate(&Profile::Default, keys)),
        DEFAULTS => DEFAULTS.to_owned(),
        other => other.to_owned(),
    }
}

/// An unknown section is reported at its own level (`HERALD_APY`): name the variable
/// that set it instead.
fn name_variable(mut p: Problem, names: &[String]) -> Problem {
    let prefix = "environment variable ";
    if let Some(var) = p.origin.as_deref().and_then(|o| o.strip_prefix(prefix)) {
        if !names.iter().any(|n| n == var) {
            if let Some(full) = names.iter().find(|n| n.starts_with(&format!("{var}__"))) {
                p.origin = Some(format!("{prefix}{full}"));
            }
        }
    }
    p
}

fn problem_of(figment: &Figment, e: figment::Error) -> Problem {
    let mut path = e.path.clone();
    let message = match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            if expected.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key; expected one of: {}", expected.join(", "))
            }
        }
        kind => kind.to_string(),
    };
    let keys: Vec<&str> = path.iter().map(String::as_str).collect();
    let origin = e
        .metadata
        .as_ref()
        .map(|m| describe(m, &keys))
        .or_else(|| origin_of(figment, &path.join(".")));
    Problem {
        key: (!path.is_empty()).then(|| path.join(".")),
        origin,
        message,
    }
}

// === validation ===

/// Collects the problems of a configuration, each with its key and where its value
/// came from.
struct Checker<'a> {
    figment: &'a Figment,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: Some(key.to_owned()),
            origin: origin_of(self.figment, key),
            message: message.into(),
        });
    }

    /// Whether `key` keeps its default value (no source set it).
    fn is_default(&self, key: &str) -> bool {
        origin_of(self.figment, key).as_deref() == Some(DEFAULTS)
    }

    fn positive(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.fail(key, "must be greater than 0");
        }
    }

    fn at_most(&mut self, key: &str, value: u64, max: u64) {
        if value > max {
            self.fail(key, format!("must be at most {max}"));
        }
    }

    fn patterns(&mut self, key: &str, patterns: &[String]) {
        for p in patterns {
            if p.is_empty() {
                self.fail(key, "patterns must not be empty strings");
            }
        }
    }

    fn nets(&mut self, key: &str, list: &[String]) -> Vec<IpNet> {
        match crate::admission::parse_nets(list) {
            Ok(nets) => nets,
            Err(e) => {
                self.fail(key, e);
                Vec::new()
            }
        }
    }

    /// A rate (per second) and its burst; `None` when the rate is 0 (no limit).
    fn rate(
        &mut self,
        key: &str,
        per_second: f64,
        burst_key: &str,
        burst: u64,
    ) -> Option<(f64, u32)> {
        if !per_second.is_finite() || per_second < 0.0 {
            self.fail(key, "must be a number of events per second, 0 or more");
            return None;
        }
        if per_second > 0.0 && burst == 0 {
            self.fail(burst_key, "must be at least 1 when the rate is on");
        }
        if per_second > MAX_RATE {
            self.fail(
                key,
                format!("must be at most {MAX_RATE} per second (0 turns the limit off)"),
            );
            return None;
        }
        self.at_most(burst_key, burst, 1_000_000);
        (per_second > 0.0).then_some((per_second, burst.clamp(1, 1_000_000) as u32))
    }
}

/// Checks every section, then what spans sections, and builds the typed configuration.
fn validate(raw: &RawConfig, figment: &Figment) -> Result<Config, ConfigError> {
    let mut c = Checker {
        figment,
        problems: Vec::new(),
    };
    let (ip, trusted_proxies) = raw.server.check(&mut c);
    let mut socketio = raw.socketio.check(&mut c);
    let limits = raw.limits.check(&mut c);
    let lists = raw.access.check(&mut c);
    let tiers = raw.tiers.check(&mut c, raw.socketio.ping_interval_ms);
    let drain = raw.drain.check(&mut c);
    let tls = raw.tls.check(&mut c);
    let auth = raw.auth.check(&mut c, tiers.anonymous);
    let demo = raw.demo.check(&mut c);
    let log = raw.log.check(&mut c);
    let mut im = raw.im.check(&mut c);
    let mut docs = raw.docs.check(&mut c, &raw.im);
    let cluster = raw.cluster.check(&mut c);
    if let Some(docs) = docs.as_mut() {
        docs.collab.clustered = cluster.is_some();
        // Each node would store its documents apart: their copies would part.
        if docs.collab.clustered && docs.collab.store.url.starts_with("sqlite:")
            // With IM on the same store, its own check says it.
            && (!raw.docs.store.is_empty() || !raw.im.enabled)
        {
            c.fail(
                "docs.store",
                "the embedded SQLite store serves one node only, and cluster.redis_url makes \
                 this node one of many: set docs.store to a postgres:// URL shared by every \
                 node (HERALD_DOCS__STORE), or turn documents off (HERALD_DOCS__ENABLED=false)"
                    .to_owned(),
            );
        }
    }
    if let Some(im) = im.as_mut() {
        im.clustered = cluster.is_some();
    }
    // Each node would have a database of its own: conversations would split.
    if cluster.is_some() && raw.im.enabled && raw.im.store.starts_with("sqlite:") {
        c.fail(
            "im.store",
            "the embedded SQLite store serves one node only, and cluster.redis_url makes this \
             node one of many: set im.store to a postgres:// URL shared by every node \
             (HERALD_IM__STORE), or turn the IM service off (HERALD_IM__ENABLED=false)"
                .to_owned(),
        );
    }

    // Protected mode: without auth, only this machine may connect.
    if let Some(ip) = ip {
        if !raw.auth.configured() && !ip.is_loopback() {
            c.fail(
                "server.host",
                format!(
                    "binding {ip} (not a loopback address) without auth would let anyone \
                     connect: set auth.jwt_secret (HERALD_AUTH__JWT_SECRET) or \
                     auth.public_key_file (HERALD_AUTH__PUBLIC_KEY_FILE), or bind 127.0.0.1"
                ),
            );
        }
    }
    if !c.problems.is_empty() {
        return Err(ConfigError(c.problems));
    }

    socketio.engine.max_buffered_bytes = limits.outbound_buffer_bytes;
    socketio.event_rate = limits.event_rate;
    let l = &raw.limits;
    Ok(Config {
        listen: SocketAddr::new(
            ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            raw.server.port,
        ),
        socketio,
        limits: limits.limits,
        auth,
        api_key: (!raw.api.key.is_empty()).then(|| raw.api.key.clone()),
        demo,
        log,
        admission: crate::admission::Settings {
            max_connections: l.max_connections as usize,
            max_per_ip: l.max_connections_per_ip as u32,
            ipv6_prefix_len: l.ipv6_prefix_len.min(128) as u8,
            rate_per_ip: limits.connect_rate,
            trusted_proxies,
            lists,
            exempt_loopback: raw.server.trust_loopback,
        },
        tiers,
        drain,
        tls,
        im,
        docs,
        cluster,
    })
}

/// Every key of the configuration, dotted, with its default value in TOML (for the
/// documentation test).
pub fn default_keys() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(table) = toml::Table::try_from(RawConfig::default()) {
        for (section, values) in table {
            if let Some(values) = values.as_table() {
                for (key, value) in values {
                    out.insert(format!("{section}.{key}"), value.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        load(None, env(pairs), &Flags::default())
    }

    /// The defaults validate, on 127.0.0.1:3000, with no auth and no API key.
    #[test]
    fn defaults() {
        let loaded = load_env(&[]).unwrap();
        let c = &loaded.config;
        assert_eq!(c.listen, "127.0.0.1:3000".parse().unwrap());
        assert!(!c.auth.enabled());
        assert!(c.api_key.is_none());
        assert_eq!(c.socketio.engine.path, "/socket.io/");
        assert_eq!(c.socketio.engine.ping_interval, Duration::from_secs(25));
        assert_eq!(loaded.sources(), "defaults");
    }

    /// Environment variables set nested keys, strings stay strings even when they look
    /// like numbers, and lists come comma-separated.
    #[test]
    fn environment() {
        let loaded = load_env(&[
            ("HERALD_API__KEY", "12345"),
            ("HERALD_SERVER__PORT", "4000"),
            ("HERALD_SOCKETIO__TRANSPORTS", "websocket"),
            (
                "HERALD_SOCKETIO__CORS_ORIGINS",
                "https://a.test, https://b.test",
            ),
            ("HERALD_AUTH__REQUIRE_EXP", "false"),
            ("HERALD_CONFIG", "ignored.toml"),
            ("OTHER", "x"),
        ])
        .unwrap();
        let c = &loaded.config;
        assert_eq!(c.api_key.as_deref(), Some("12345"));
        assert_eq!(c.listen.port(), 4000);
        assert!(c.socketio.engine.websocket && !c.socketio.engine.polling);
        assert_eq!(
            c.socketio.engine.cors.as_ref().unwrap().origins,
            vec!["https://a.test", "https://b.test"]
        );
        assert!(!c.auth.require_exp);
        assert!(loaded.sources().contains("HERALD_SERVER__PORT"));
        assert!(!loaded.sources().contains("HERALD_CONFIG"));
    }

    /// The IM service's live-state settings, from the environment; bad ones refused
    /// with their keys; 0 turns a rate off.
    #[test]
    fn im_live_settings() {
        let loaded = load_env(&[
            ("HERALD_IM__DEVICE_POLICY", "one_per_platform"),
            ("HERALD_IM__PRESENCE_GRACE_MS", "500"),
            ("HERALD_IM__SEND_RATE", "0"),
            ("HERALD_IM__CONVERSATION_FANOUT_RATE", "2500.5"),
        ])
        .unwrap();
        let im = loaded.config.im.as_ref().unwrap();
        assert_eq!(im.device_policy, im::DevicePolicy::OnePerPlatform);
        assert_eq!(im.presence_grace, Duration::from_millis(500));
        assert_eq!(im.send_rate, 0.0, "0: no limit");
        assert_eq!(im.conversation_fanout_rate, 2500.5);
        let defaults = load_env(&[]).unwrap();
        let im = defaults.config.im.as_ref().unwrap();
        assert_eq!(im.device_policy, im::DevicePolicy::Multiple);
        assert_eq!((im.send_rate, im.send_burst), (20.0, 40.0));
        for (key, value, named) in [
            ("HERALD_IM__DEVICE_POLICY", "triple", "device_policy"),
            ("HERALD_IM__SEND_RATE", "-1", "im.send_rate"),
            ("HERALD_IM__SEND_BURST", "0", "im.send_burst"),
            (
                "HERALD_IM__CONVERSATION_FANOUT_RATE",
                "2e9",
                "im.conversation_fanout_rate",
            ),
            (
                "HERALD_IM__MAX_PRESENCE_SUBSCRIPTIONS",
                "0",
                "im.max_presence_subscriptions",
            ),
        ] {
            let err = load_env(&[(key, value)]).unwrap_err();
            assert!(err.to_string().contains(named), "{key}={value}: {err}");
        }
    }

    /// The cluster's keys, and what is refused: a URL that is not Redis's, an unknown
    /// subscription mode, a prefix with `#`, and the IM service on SQLite shared by many
    /// nodes.
    #[test]
    fn cluster_settings() {
        assert!(
            load_env(&[]).unwrap().config.cluster.is_none(),
            "alone by default"
        );
        let pg = (
            "HERALD_IM__STORE",
            "postgres://herald@127.0.0.1:5432/herald",
        );
        let loaded = load_env(&[
            ("HERALD_CLUSTER__REDIS_URL", "redis://127.0.0.1:6379/2"),
            ("HERALD_CLUSTER__KEY_PREFIX", "chat"),
            ("HERALD_CLUSTER__REQUEST_TIMEOUT_MS", "1500"),
            ("HERALD_CLUSTER__READY_REQUIRES_REDIS", "false"),
            pg,
        ])
        .unwrap();
        let cluster = loaded.config.cluster.as_ref().unwrap();
        assert_eq!(cluster.options.url, "redis://127.0.0.1:6379/2");
        assert_eq!(cluster.options.key_prefix, "chat");
        assert_eq!(cluster.options.request_timeout, Duration::from_millis(1500));
        assert!(!cluster.ready_requires_redis);
        assert_eq!(cluster.options.sharded, None);
        let off = ("HERALD_IM__ENABLED", "false");
        let docs_off = ("HERALD_DOCS__ENABLED", "false");
        // Documents on SQLite, IM off: the documents would split between the nodes.
        let split = load_env(&[("HERALD_CLUSTER__REDIS_URL", "redis://r:1"), off]).unwrap_err();
        assert!(format!("{split:?}").contains("docs.store"), "{split:?}");
        let sharded = load_env(&[
            ("HERALD_CLUSTER__REDIS_URL", "redis://r:1"),
            ("HERALD_CLUSTER__ADAPTER", "sharded"),
            ("HERALD_CLUSTER__SUBSCRIPTION_MODE", "dynamic-private"),
            off,
            docs_off,
        ])
        .unwrap();
        assert_eq!(
            sharded.config.cluster.as_ref().unwrap().options.sharded,
            Some(cluster::SubscriptionMode::DynamicPrivate)
        );
        assert!(load_env(&[("HERALD_CLUSTER__REDIS_URL", "redis://r:1"), off, docs_off]).is_ok());
        for (pairs, named) in [
            (
                vec![("HERALD_CLUSTER__REDIS_URL", "http://r:1"), off, docs_off],
                "cluster.redis_url",
            ),
            (
                vec![
                    ("HERALD_CLUSTER__REDIS_URL", "redis://r:1"),
                    ("HERALD_CLUSTER__ADAPTER", "sharded"),
                    ("HERALD_CLUSTER__SUBSCRIPTION_MODE", "shards"),
                    off,
                    docs_off,
                ],
                "cluster.subscription_mode",
            ),
            (
                vec![
                    ("HERALD_CLUSTER__REDIS_URL", "redis://r:1"),
                    ("HERALD_CLUSTER__ADAPTER", "mesh"),
                    off,
                    docs_off,
                ],
                "adapter",
            ),
            (
                vec![
                    ("HERALD_CLUSTER__REDIS_URL", "redis://r:1"),
                    ("HERALD_CLUSTER__KEY_PREFIX", "a#b"),
                    off,
                    docs_off,
                ],
                "cluster.key_prefix",
            ),
            (
                vec![
                    ("HERALD_CLUSTER__REDIS_URL", "redis://r:1"),
                    ("HERALD_CLUSTER__REQUEST_TIMEOUT_MS", "5"),
                    off,
                    docs_off,
                ],
                "cluster.request_timeout_ms",
            ),
            (
                vec![("HERALD_CLUSTER__REDIS_URL", "redis://r:1")],
                "im.store",
            ),
        ] {
            let err = load_env(&pairs).unwrap_err();
            assert!(err.to_string().contains(named), "{pairs:?}: {err}");
        }
    }

    /// A bad value names its key and its environment variable.
    #[test]
    fn bad_value_names_key_and_source() {
        let err = load_env(&[("HERALD_SERVER__PORT", "eighty")]).unwrap_err();
        let p = &err.0[0];
        assert_eq!(p.key.as_deref(), Some("server.port"));
        assert_eq!(
            p.origin.as_deref(),
            Some("environment variable HERALD_SERVER__PORT")
        );
        let err = load_env(&[("HERALD_SERVER__PORT", "70000")]).unwrap_err();
        assert_eq!(err.0[0].key.as_deref(), Some("server.port"));
    }

    /// Unknown keys are refused, at any level, with the name as the user wrote it.
    #[test]
    fn unknown_keys() {
        // Variables that are not SECTION__KEY are not keys: ignored, with a hint.
        let loaded = load_env(&[
            ("HERALD_API_KEY", "x"),
            ("HERALD_PORT", "tcp://10.0.0.1:3000"),
        ])
        .unwrap();
        assert!(loaded.config.api_key.is_none());
        assert_eq!(loaded.warnings.len(), 2);
        assert!(
            loaded.warnings[0].contains("did you mean HERALD_API__KEY?"),
            "{:?}",
            loaded.warnings
        );
        assert!(!loaded.warnings[1].contains("did you mean"));
        let err = load_env(&[("HERALD_APY__KEY", "x")]).unwrap_err();
        assert_eq!(err.0[0].key.as_deref(), Some("apy"));
        assert_eq!(
            err.0[0].origin.as_deref(),
            Some("environment variable HERALD_APY__KEY")
        );
        let err = load_env(&[("HERALD_AUTH__SECRET", "x")]).unwrap_err();
        assert_eq!(err.0[0].key.as_deref(), Some("auth.secret"));
        assert!(
            err.0[0].message.contains("jwt_secret"),
            "{}",
            err.0[0].message
        );
    }

    /// Semantic checks name the key and where its value came from; all problems are
    /// reported at once, across sections.
    #[test]
    fn semantic_checks() {
        let err = load(
            None,
            env(&[
                ("HERALD_SOCKETIO__CORS_ORIGINS", "example.com"),
                ("HERALD_AUTH__JWT_SECRET", "short"),
                ("HERALD_TIERS__DEGRADED_PING_INTERVAL_MS", "99999"),
            ]),
            &Flags {
                host: Some("0.0.0.0".into()),
                ..Flags::default()
            },
        )
        .unwrap_err();
        let keys: Vec<_> = err.0.iter().filter_map(|p| p.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                "socketio.cors_origins",
                "tiers.degraded_ping_interval_ms",
                "auth.jwt_secret",
            ],
            "{err}"
        );
        // (A short secret is a secret: protected mode does not apply.)
        assert_eq!(
            err.0[2].origin.as_deref(),
            Some("environment variable HERALD_AUTH__JWT_SECRET")
        );
    }

    /// Closed sets (transports, parser, log format, tiers) are enums: a value outside
    /// one names its key, its source and the choices.
    #[test]
    fn closed_sets() {
        for (var, value, key, choices) in [
            (
                "HERALD_SOCKETIO__TRANSPORTS",
                "polling,carrier-pigeon",
                "socketio.transports",
                "`polling` or `websocket`",
            ),
            (
                "HERALD_SOCKETIO__PARSER",
                "protobuf",
                "socketio.parser",
                "`default` or `msgpack`",
            ),
            (
                "HERALD_TIERS__ANONYMOUS",
                "vip",
                "tiers.anonymous",
                "`critical`, `standard`, `degraded`",
            ),
        ] {
            let err = load_env(&[(var, value)]).unwrap_err();
            let p = &err.0[0];
            assert_eq!(p.key.as_deref(), Some(key), "{err}");
            assert_eq!(
                p.origin.as_deref(),
                Some(format!("environment variable {var}").as_str())
            );
            assert!(p.message.contains(choices), "{}", p.message);
        }
        let err = load(
            None,
            env(&[]),
            &Flags {
                log_format: Some("xml".into()),
                ..Flags::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.0[0].key.as_deref(), Some("log.format"));
        assert_eq!(err.0[0].origin.as_deref(), Some("flag --log-format"));
        let ok = load_env(&[
            ("HERALD_SOCKETIO__TRANSPORTS", "websocket"),
            ("HERALD_SOCKETIO__PARSER", "msgpack"),
            ("HERALD_TIERS__ANONYMOUS", "degraded"),
            ("HERALD_LOG__FORMAT", "json"),
        ])
        .unwrap();
        let c = &ok.config;
        assert!(c.socketio.engine.websocket && !c.socketio.engine.polling);
        assert_eq!(c.socketio.parser, socketio::Parser::Msgpack);
        assert_eq!(c.tiers.anonymous, Tier::Degraded);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    /// The Socket.IO defaults are the layers' own, and loopback is trusted by default.
    #[test]
    fn layer_defaults() {
        let c = load_env(&[]).unwrap().config;
        let io = socketio::Config::default();
        assert_eq!(c.socketio.engine.ping_interval, io.engine.ping_interval);
        assert_eq!(c.socketio.engine.ping_timeout, io.engine.ping_timeout);
        assert_eq!(c.socketio.engine.max_payload, io.engine.max_payload);
        assert_eq!(c.socketio.engine.upgrade_timeout, io.engine.upgrade_timeout);
        assert_eq!(
            c.socketio.engine.max_buffered_bytes,
            io.engine.max_buffered_bytes
        );
        assert_eq!(c.socketio.connect_timeout, io.connect_timeout);
        assert_eq!(c.socketio.engine.path, io.engine.path);
        assert!(c.admission.exempt_loopback);
        let lo: IpAddr = "127.0.0.5".parse().unwrap();
        assert!(c.admission.trusted_proxies.iter().any(|n| n.contains(&lo)));
        let off = load_env(&[("HERALD_SERVER__TRUST_LOOPBACK", "false")])
            .unwrap()
            .config;
        assert!(!off.admission.exempt_loopback);
        assert!(off.admission.trusted_proxies.is_empty());
    }

    /// Values that would overflow a timer or turn a limit off without saying so are
    /// refused: client timers, GCRA periods, prefix lengths.
    #[test]
    fn bounds() {
        for (var, value, key) in [
            (
                "HERALD_SOCKETIO__PING_INTERVAL_MS",
                "1073741824",
                "socketio.ping_interval_ms",
            ),
            (
                "HERALD_SOCKETIO__PING_TIMEOUT_MS",
                "18446744073709551615",
                "socketio.ping_timeout_ms",
            ),
            (
                "HERALD_SOCKETIO__CONNECT_TIMEOUT_MS",
                "2147483648",
                "socketio.connect_timeout_ms",
            ),
            (
                "HERALD_LIMITS__EVENTS_PER_SECOND",
                "1000000000000",
                "limits.events_per_second",
            ),
            (
                "HERALD_LIMITS__CONNECT_RATE_PER_IP",
                "1000001",
                "limits.connect_rate_per_ip",
            ),
            (
                "HERALD_LIMITS__IPV6_PREFIX_LEN",
                "129",
                "limits.ipv6_prefix_len",
            ),
        ] {
            let err = load_env(&[(var, value)]).unwrap_err();
            assert_eq!(err.0[0].key.as_deref(), Some(key), "{var}={value}");
            assert!(err.0[0].message.contains("at most"), "{}", err.0[0].message);
        }
        let ok = load_env(&[
            ("HERALD_SOCKETIO__PING_INTERVAL_MS", "1073741823"),
            ("HERALD_LIMITS__EVENTS_PER_SECOND", "1000000"),
            ("HERALD_LIMITS__IPV6_PREFIX_LEN", "48"),
        ])
        .unwrap();
        assert_eq!(ok.config.admission.ipv6_prefix_len, 48);
    }

    /// The demo page's local scripts are read at load; a file that cannot be read is a
    /// failure of its own key.
    #[test]
    fn demo_scripts_are_read_at_load() {
        let missing = "/nonexistent/herald-demo-docs.js";
        for (var, key) in [
            ("HERALD_DEMO__CLIENT_JS", "demo.client_js"),
            ("HERALD_DEMO__DOCS_JS", "demo.docs_js"),
        ] {
            let err = load_env(&[(var, missing)]).unwrap_err();
            assert_eq!(err.0[0].key.as_deref(), Some(key));
            assert!(err.0[0].message.contains(missing), "{}", err.0[0].message);
        }
        let dir = std::env::temp_dir().join(format!("herald-demo-js-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("docs.js");
        std::fs::write(&file, "export const Y = 1;\n").unwrap();
        let loaded = load_env(&[("HERALD_DEMO__DOCS_JS", file.to_str().unwrap())]);
        std::fs::remove_dir_all(&dir).unwrap();
        let demo = loaded.unwrap().config.demo;
        assert_eq!(demo.docs_js.unwrap().1.as_ref(), b"export const Y = 1;\n");
        assert!(demo.client_js.is_none());
    }

    /// Paths that would hide Herald's own routes are refused; anonymous rights must be
    /// spelled out when auth is on and anonymous clients are let in.
    #[test]
    fn path_and_anonymous_checks() {
        for bad in ["/", "/api/", "/metrics", "/demo/x/"] {
            let err = load_env(&[("HERALD_SOCKETIO__PATH", bad)]).unwrap_err();
            assert_eq!(err.0[0].key.as_deref(), Some("socketio.path"), "{bad}");
        }
        assert!(load_env(&[("HERALD_SOCKETIO__PATH", "/rt")]).is_ok());
        let secret = (
            "HERALD_AUTH__JWT_SECRET",
            "0123456789abcdef0123456789abcdef",
        );
        let err = load_env(&[secret, ("HERALD_AUTH__ALLOW_ANONYMOUS", "true")]).unwrap_err();
        let keys: Vec<_> = err.0.iter().filter_map(|p| p.key.clone()).collect();
        assert_eq!(keys, vec!["auth.anonymous_rooms", "auth.anonymous_publish"]);
        assert!(load_env(&[
            secret,
            ("HERALD_AUTH__ALLOW_ANONYMOUS", "true"),
            ("HERALD_AUTH__ANONYMOUS_ROOMS", "public:*"),
            ("HERALD_AUTH__ANONYMOUS_PUBLISH", ""),
        ])
        .is_ok());
        // Without auth the defaults stand: every client is anonymous on loopback.
        assert!(load_env(&[("HERALD_AUTH__ALLOW_ANONYMOUS", "true")]).is_ok());
    }

    /// Protected mode: no auth and a non-loopback address is refused, with how to fix it.
    #[test]
    fn protected_mode() {
        let err = load_env(&[("HERALD_SERVER__HOST", "0.0.0.0")]).unwrap_err();
        assert_eq!(err.0[0].key.as_deref(), Some("server.host"));
        assert!(err.0[0].message.contains("HERALD_AUTH__JWT_SECRET"));
        let secret = "0123456789abcdef0123456789abcdef";
        let ok = load_env(&[
            ("HERALD_SERVER__HOST", "0.0.0.0"),
            ("HERALD_AUTH__JWT_SECRET", secret),
        ])
        .unwrap();
        assert!(ok.config.auth.enabled());
        assert!(load_env(&[("HERALD_SERVER__HOST", "::1")]).is_ok());
    }

    /// Flags override the environment, which overrides the file.
    #[test]
    fn precedence() {
        let dir = std::env::temp_dir().join(format!("herald-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("herald.toml");
        std::fs::write(
            &file,
            "[server]\nport = 1111\nhost = \"127.0.0.1\"\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        let loaded = load(
            Some(&file),
            env(&[
                ("HERALD_SERVER__PORT", "2222"),
                ("HERALD_LOG__LEVEL", "warn"),
            ]),
            &Flags {
                port: Some(3333),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(loaded.config.listen.port(), 3333);
        assert_eq!(loaded.config.log.level, "warn");
        let printed = loaded.to_toml();
        assert!(
            printed.contains("port = 3333  # from flag --port"),
            "{printed}"
        );
        assert!(printed.contains("level = \"warn\"  # from environment variable HERALD_LOG__LEVEL"));
        assert!(printed.contains(&format!(
            "host = \"127.0.0.1\"  # from file {}",
            file.display()
        )));

        std::fs::write(&file, "[server]\nport = \"x\"\n").unwrap();
        let err = load(Some(&file), env(&[]), &Flags::default()).unwrap_err();
        assert_eq!(err.0[0].origin, Some(format!("file {}", file.display())));
        std::fs::write(&file, "[server\nport = 1").unwrap();
        let err = load(Some(&file), env(&[]), &Flags::default()).unwrap_err();
        assert!(err.to_string().contains("TOML"), "{err}");
        let missing = dir.join("missing.toml");
        let err = load(Some(&missing), env(&[]), &Flags::default()).unwrap_err();
        assert!(err.to_string().contains("cannot read config file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Secrets never appear in the printed configuration.
    #[test]
    fn print_redacts_secrets() {
        let secret = "0123456789abcdef0123456789abcdef";
        let loaded = load_env(&[
            ("HERALD_AUTH__JWT_SECRET", secret),
            ("HERALD_API__KEY", "api-key-value"),
        ])
        .unwrap();
        let printed = loaded.to_toml();
        assert!(!printed.contains(secret));
        assert!(!printed.contains("api-key-value"));
        assert!(printed.contains("jwt_secret = \"<redacted>\""));
    }
}
