//! Admission control: who may open a connection. Checked on every handshake (a request
//! to the Socket.IO path without a session id), before the engine sees it:
//!
//! 1. draining: 503 to everyone;
//! 2. the deny list (CIDR): 403;
//! 3. the global cap (`limits.max_connections` plus a little headroom, so that a
//!    higher-tier client can still reach CONNECT and evict a degraded one): 503;
//! 4. per client address, unless it is on the allow list: concurrent connections
//!    (`limits.max_connections_per_ip`, 429) and the connect rate
//!    (`limits.connect_rate_per_ip` with a burst, GCRA by `governor`, 429).
//!
//! Refusals carry `Retry-After` where waiting helps, and are counted by reason. The
//! client address is the peer's, or the one a trusted proxy names in
//! `X-Forwarded-For` (`server.trusted_proxies`); a forwarded-for header from any other
//! peer is ignored. The access lists change at run time through `POST /api/access`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use parking_lot::RwLock;

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server is shutting down.
    Draining,
    /// The address is on the deny list.
    Denied,
    /// The server holds as many connections as it may.
    ServerFull,
    /// The address holds as many connections as one address may.
    IpConnections,
    /// The address opens connections faster than allowed.
    IpRate,
}

impl Refusal {
    /// Every reason, in the order of [`Refusal::index`].
    pub const ALL: [Refusal; 5] = [
        Refusal::Draining,
        Refusal::Denied,
        Refusal::ServerFull,
        Refusal::IpConnections,
        Refusal::IpRate,
    ];

    /// Position in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The code in the answer's body and in metrics.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Draining => "server_shutting_down",
            Refusal::Denied => "address_denied",
            Refusal::ServerFull => "server_full",
            Refusal::IpConnections => "too_many_connections_from_address",
            Refusal::IpRate => "connect_rate_exceeded",
        }
    }

    /// The HTTP status of the answer.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Denied => 403,
            Refusal::Draining | Refusal::ServerFull => 503,
            Refusal::IpConnections | Refusal::IpRate => 429,
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Draining => "the server is shutting down; connect to another one",
            Refusal::Denied => "connections from this address are not accepted",
            Refusal::ServerFull => "the server is full; try again later",
            Refusal::IpConnections => "too many connections from this address",
            Refusal::IpRate => "too many new connections from this address; slow down",
        }
    }
}

/// A refused handshake: why, and when trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub reason: Refusal,
    /// When to try again, if waiting helps.
    pub retry_after: Option<Duration>,
}

/// Allowed and denied networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLists {
    /// Exempt from the per-address limits.
    pub allow: Vec<IpNet>,
    /// Refused.
    pub deny: Vec<IpNet>,
}

/// Parses networks in CIDR form; a bare address is a network of one.
///
/// # Errors
///
/// The first entry that is neither, with the reason.
pub fn parse_nets(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| canonical_net(n.trunc()))
                .map_err(|_| {
                    format!("{s:?} is not an address or a network (CIDR, e.g. 10.0.0.0/8)")
                })
        })
        .collect()
}

/// The loopback networks, 127.0.0.0/8 and ::1.
pub fn loopback_nets() -> [IpNet; 2] {
    [
        IpNet::V4(
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default(),
        ),
        IpNet::V6(ipnet::Ipv6Net::new(std::net::Ipv6Addr::LOCALHOST, 128).unwrap_or_default()),
    ]
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// Networks inside `::ffff:0:0/96` (IPv4 mapped into IPv6) are their IPv4 selves, as the
/// addresses they are matched against are (see [`canonical`]).
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// IPv4 addresses mapped into IPv6 (`::ffff:a.b.c.d`) are their IPv4 selves.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What admission is set up with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connections the server holds at most (sockets; handshakes get some headroom).
    pub max_connections: usize,
    /// Connections one address holds at most; 0 for no limit.
    pub max_per_ip: u32,
    /// New connections per second and burst per address; `None` for no limit.
    pub rate_per_ip: Option<(f64, u32)>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// IPv6 clients are counted by network of this prefix length (one host commonly
    /// holds a whole /64); IPv4 clients by address.
    pub ipv6_prefix_len: u8,
    /// The lists at start.
    pub lists: AccessLists,
    /// Loopback clients (127.0.0.0/8, ::1) are exempt from the per-address limits: a
    /// proxy on the same host, or a load test from it, would otherwise count every
    /// client as one address. (They are trusted proxies too; see `server.trust_loopback`.)
    pub exempt_loopback: bool,
}

/// Admission control; shared by every connection.
pub struct Admission {
    settings: Settings,
    lists: RwLock<AccessLists>,
    per_ip: Arc<DashMap<IpAddr, u32>>,
    /// TCP connections open per peer address (network, for IPv6), handshake or not.
    sockets_per_ip: Arc<DashMap<IpAddr, u32>>,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    refusals: [AtomicU64; Refusal::ALL.len()],
    log: RefusalLog,
}

/// Lines about refusals, at most one a second per reason, each with how many were not
/// written since: an operator can find out why clients are turned away without a
/// flood of lines when many are.
#[derive(Debug)]
struct RefusalLog {
    epoch: tokio::time::Instant,
    /// When the last line of each reason was written, in ms since `epoch` (plus one: 0
    /// is never).
    last: [AtomicU64; Refusal::ALL.len()],
    /// Refusals of each reason not written since.
    unwritten: [AtomicU64; Refusal::ALL.len()],
}

impl RefusalLog {
    /// Whether a line may be written now for `reason`; if so, how many refusals of that
    /// reason went unwritten before it.
    fn take(&self, reason: Refusal) -> Option<u64> {
        let i = reason.index();
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last[i].load(Ordering::Relaxed);
        if last != 0 && now < last + 1000 {
            self.unwritten[i].fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // One writer per second wins; the others count as unwritten.
        if self.last[i]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.unwritten[i].fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.unwritten[i].swap(0, Ordering::Relaxed))
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Held by a session from its handshake until it closes: its address's count goes down
/// when it is dropped.
#[derive(Debug)]
pub struct Ticket {
    ip: IpAddr,
    /// What the per-address limits count: the address, or its IPv6 network.
    key: IpAddr,
    /// The place in the per-address count (none for addresses on the allow list).
    _counted: Option<Held>,
    /// CONNECTs refused by auth on this connection.
    auth_failures: std::sync::atomic::AtomicU32,
}

impl Ticket {
    fn new(ip: IpAddr, key: IpAddr, counted: Option<Held>) -> Ticket {
        Ticket {
            ip,
            key,
            _counted: counted,
            auth_failures: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The client address the session was admitted for.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// What the per-address limits count the session under: the address, or for IPv6
    /// its network (`limits.ipv6_prefix_len`).
    pub fn key(&self) -> IpAddr {
        self.key
    }

    /// Counts a CONNECT refused by auth on this connection; returns how many so far.
    pub fn auth_failed(&self) -> u32 {
        self.auth_failures.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Admission {
    /// Admission with `settings`.
    pub fn new(settings: Settings) -> Admission {
        let rate = settings.rate_per_ip.and_then(|(per_second, burst)| {
            let period = Duration::from_secs_f64(1.0 / per_second.max(1e-6));
            let burst = NonZeroU32::new(burst.max(1))?;
            Some(DefaultKeyedRateLimiter::keyed(
                Quota::with_period(period)?.allow_burst(burst),
            ))
        });
        Admission {
            lists: RwLock::new(settings.lists.clone()),
            settings,
            per_ip: Arc::new(DashMap::new()),
            sockets_per_ip: Arc::new(DashMap::new()),
            rate,
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            log: RefusalLog {
                epoch: tokio::time::Instant::now(),
                last: std::array::from_fn(|_| AtomicU64::new(0)),
                unwritten: std::array::from_fn(|_| AtomicU64::new(0)),
            },
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The client address of a request from `peer` carrying the `X-Forwarded-For`
    /// header lines `forwarded_for`, in the order received (several lines are one list).
    pub fn client_ip<'a>(
        &self,
        peer: SocketAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = canonical(peer.ip());
        if !contains(&self.settings.trusted_proxies, peer) {
            return peer;
        }
        let hops: Vec<&[u8]> = forwarded_for
            .into_iter()
            .flat_map(|line| line.split(|&b| b == b','))
            .collect();
        // Walk from the right, past the trusted proxies: the first address no trusted
        // proxy is, is the client. Anything to its left was written by the client
        // itself and proves nothing. An entry that is not an address ends the walk: a
        // trusted proxy does not write one, so the hop that passed it on (the last
        // trusted one) is as far as the header can be believed.
        let mut client = peer;
        for hop in hops.iter().rev() {
            let parsed = std::str::from_utf8(hop)
                .ok()
                .and_then(|h| h.trim().parse::<IpAddr>().ok());
            let Some(ip) = parsed.map(canonical) else {
                break;
            };
            client = ip;
            if !contains(&self.settings.trusted_proxies, ip) {
                break;
            }
        }
        client
    }

    /// What the per-address limits count `ip` under: itself, or for IPv6 its network
    /// of `ipv6_prefix_len` bits.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let bits = u32::from(self.settings.ipv6_prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
            v4 => v4,
        }
    }

    /// Decides on a handshake from `ip` while `sessions` connections are open.
    ///
    /// # Errors
    ///
    /// [`Refused`] with the reason and a retry hint.
    pub fn admit(&self, ip: IpAddr, sessions: usize, draining: bool) -> Result<Ticket, Refused> {
        let refuse = |reason: Refusal, retry_after: Option<Duration>| {
            self.refusals[reason.index()].fetch_add(1, Ordering::Relaxed);
            self.log_refusal(reason, ip, false);
            Err(Refused {
                reason,
                retry_after,
            })
        };
        if draining {
            return refuse(Refusal::Draining, Some(Duration::from_secs(5)));
        }
        let (denied, exempt) = {
            let lists = self.lists.read();
            (
                contains(&lists.deny, ip),
                contains(&lists.allow, ip) || self.exempt(ip),
            )
        };
        if denied {
            return refuse(Refusal::Denied, None);
        }
        let max = self.settings.max_connections;
        let headroom = (max / 50).max(16);
        if sessions >= max.saturating_add(headroom) {
            return refuse(Refusal::ServerFull, Some(Duration::from_secs(5)));
        }
        let key = self.key(ip);
        if exempt {
            return Ok(Ticket::new(ip, key, None));
        }
        if let Some(rate) = &self.rate {
            if let Err(not_until) = rate.check_key(&key) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return refuse(Refusal::IpRate, Some(wait.max(Duration::from_millis(1))));
            }
        }
        let max_per_ip = self.settings.max_per_ip;
        if max_per_ip == 0 {
            return Ok(Ticket::new(ip, key, None));
        }
        match Held::take(&self.per_ip, key, max_per_ip) {
            Some(held) => Ok(Ticket::new(ip, key, Some(held))),
            None => refuse(Refusal::IpConnections, Some(Duration::from_secs(10))),
        }
    }

    /// Logs a refusal (at most a line a second per reason) with the address and the
    /// setting that refused it; `tcp` for a connection closed before its handshake.
    fn log_refusal(&self, reason: Refusal, ip: IpAddr, tcp: bool) {
        // The drain refuses everyone; it is logged once, by the drain.
        if reason == Refusal::Draining {
            return;
        }
        // Decided first: under a flood, most refusals write nothing and build nothing.
        let Some(unwritten) = self.log.take(reason) else {
            return;
        };
        let setting = match reason {
            Refusal::Draining => return,
            Refusal::Denied => "access.deny".to_owned(),
            Refusal::ServerFull => format!(
                "limits.max_connections = {} (with headroom {})",
                self.settings.max_connections,
                (self.settings.max_connections / 50).max(16)
            ),
            Refusal::IpConnections if tcp => format!(
                "limits.max_connections_per_ip = {}: TCP connections per address are capped \
                 at {} before their handshake",
                self.settings.max_per_ip,
                self.sockets_per_ip().unwrap_or(0)
            ),
            Refusal::IpConnections => {
                format!(
                    "limits.max_connections_per_ip = {}",
                    self.settings.max_per_ip
                )
            }
            Refusal::IpRate => match self.settings.rate_per_ip {
                Some((rate, burst)) => format!(
                    "limits.connect_rate_per_ip = {rate}/s, limits.connect_burst_per_ip = {burst}"
                ),
                None => "limits.connect_rate_per_ip".to_owned(),
            },
        };
        tracing::info!(
            %ip,
            reason = reason.code(),
            setting = %setting,
            unwritten,
            "connection refused from {ip}: {} ({setting}; {unwritten} more refused since the \
             last such line; see access.allow, server.trusted_proxies)",
            reason.message(),
        );
    }

    /// Whether `ip` is exempt from the per-address limits whatever the lists say.
    fn exempt(&self, ip: IpAddr) -> bool {
        self.settings.exempt_loopback && canonical(ip).is_loopback()
    }

    /// Decides on an Engine.IO handshake (the engine's admission hook): the client's
    /// address (from `X-Forwarded-For` when the peer is a trusted proxy), then
    /// [`Admission::admit`] with `sessions` open. The ticket is the session's guard.
    ///
    /// # Errors
    ///
    /// The refusal as the engine answers it: status, code, message, `Retry-After`.
    pub fn admit_handshake(
        &self,
        handshake: &engineio::Handshake<'_>,
        sessions: usize,
        draining: bool,
    ) -> Result<Option<engineio::Guard>, engineio::Refusal> {
        // Every line of the header, in order, as bytes: an entry that is not text is junk
        // where it stands, and does not spoil the entries a proxy appended after it.
        let forwarded = handshake
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(http::HeaderValue::as_bytes);
        let ip = self.client_ip(handshake.remote, forwarded);
        match self.admit(ip, sessions, draining) {
            Ok(ticket) => Ok(Some(Box::new(ticket))),
            Err(refused) => {
                tracing::debug!(%ip, reason = refused.reason.code(), "handshake refused");
                Err(engineio::Refusal {
                    status: http::StatusCode::from_u16(refused.reason.status())
                        .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
                    code: refused.reason.code().into(),
                    message: refused.reason.message().into(),
                    retry_after: refused.retry_after,
                })
            }
        }
    }

    /// Counts a refusal decided elsewhere (a CONNECT refused because the server is full).
    pub fn count(&self, reason: Refusal) {
        self.refusals[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far, by [`Refusal::index`].
    pub fn refusals(&self) -> [u64; Refusal::ALL.len()] {
        std::array::from_fn(|i| self.refusals[i].load(Ordering::Relaxed))
    }

    /// Connections open from `ip` or, for IPv6, its network (counted ones: not on the
    /// allow list).
    pub fn connections_from(&self, ip: IpAddr) -> u32 {
        self.per_ip.get(&self.key(ip)).map_or(0, |n| *n)
    }

    /// The access lists now.
    pub fn lists(&self) -> AccessLists {
        self.lists.read().clone()
    }

    /// Replaces the lists given.
    pub fn set_lists(&self, allow: Option<Vec<IpNet>>, deny: Option<Vec<IpNet>>) {
        let mut lists = self.lists.write();
        if let Some(allow) = allow {
            lists.allow = allow;
        }
        if let Some(deny) = deny {
            lists.deny = deny;
        }
    }

    /// Forgets rate state of addresses that have been quiet (bounds its memory).
    pub fn tidy(&self) {
        if let Some(rate) = &self.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
        self.per_ip.shrink_to_fit();
        self.sockets_per_ip.shrink_to_fit();
    }

    /// TCP connections one peer address may hold, handshake done or not: room for
    /// its sessions' connections (a polling session can use two, one more while it
    /// upgrades) and a few more. `None` without a per-address limit.
    pub fn sockets_per_ip(&self) -> Option<u32> {
        let max = self.settings.max_per_ip;
        (max > 0).then(|| max.saturating_mul(2).saturating_add(16))
    }

    /// Decides on a TCP connection from `peer` as it is accepted, before any TLS or
    /// HTTP: connections that never finish a handshake are not counted by [`admit`]
    /// and must not pile up either. Trusted proxies and addresses on the allow list
    /// are not counted (behind a proxy every client shares its address).
    ///
    /// [`admit`]: Admission::admit
    ///
    /// # Errors
    ///
    /// [`Refusal::IpConnections`] when the address holds its share already; the
    /// connection is then closed without an answer.
    pub fn accept(&self, peer: IpAddr) -> Result<Option<Held>, Refusal> {
        let Some(max) = self.sockets_per_ip() else {
            return Ok(None);
        };
        let peer = canonical(peer);
        if contains(&self.settings.trusted_proxies, peer)
            || self.exempt(peer)
            || contains(&self.lists.read().allow, peer)
        {
            return Ok(None);
        }
        match Held::take(&self.sockets_per_ip, self.key(peer), max) {
            Some(held) => Ok(Some(held)),
            None => {
                self.count(Refusal::IpConnections);
                self.log_refusal(Refusal::IpConnections, peer, true);
                Err(Refusal::IpConnections)
            }
        }
    }
}

/// One place in a per-address count (sessions, or TCP connections); the count goes
/// down when this is dropped.
#[derive(Debug)]
pub struct Held {
    key: IpAddr,
    map: Arc<DashMap<IpAddr, u32>>,
}

impl Held {
    /// A place under `key` in `map`, unless `key` holds `max` (above 0) already.
    fn take(map: &Arc<DashMap<IpAddr, u32>>, key: IpAddr, max: u32) -> Option<Held> {
        let mut count = map.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Held {
            key,
            map: map.clone(),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Remove the entry with its last place, under the shard's lock.
        self.map.remove_if_mut(&self.key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            max_connections: 100,
            max_per_ip: 2,
            rate_per_ip: Some((1.0, 3)),
            trusted_proxies: parse_nets(&["10.0.0.0/8".into()]).unwrap(),
            ipv6_prefix_len: 64,
            lists: AccessLists::default(),
            exempt_loopback: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Forwarded-for counts only from trusted proxies, and only up to the first hop a
    /// trusted proxy did not add.
    #[test]
    fn client_address() {
        let a = Admission::new(settings());
        let peer = |s: &str| SocketAddr::new(ip(s), 1);
        assert_eq!(
            a.client_ip(peer("1.2.3.4"), ["9.9.9.9".as_bytes()]),
            ip("1.2.3.4")
        );
        assert_eq!(
            a.client_ip(peer("10.0.0.1"), ["9.9.9.9".as_bytes()]),
            ip("9.9.9.9")
        );
        assert_eq!(
            a.client_ip(peer("10.0.0.1"), ["6.6.6.6, 9.9.9.9, 10.0.0.2".as_bytes()]),
            ip("9.9.9.9")
        );
        // Several header lines are one list, in order: the client cannot hide behind a
        // second line (a proxy appends to the last one).
        assert_eq!(
            a.client_ip(
                peer("10.0.0.1"),
                ["6.6.6.6".as_bytes(), "9.9.9.9, 10.0.0.2".as_bytes()]
            ),
            ip("9.9.9.9")
        );
        assert_eq!(
            a.client_ip(
                peer("10.0.0.1"),
                ["9.9.9.9, 10.0.0.2".as_bytes(), "10.0.0.3".as_bytes()]
            ),
            ip("9.9.9.9")
        );
        // Junk ends the walk: nothing left of it is believed, not even a valid address
        // the client wrote further left.
        assert_eq!(
            a.client_ip(peer("10.0.0.1"), ["junk".as_bytes()]),
            ip("10.0.0.1")
        );
        assert_eq!(
            a.client_ip(peer("10.0.0.1"), ["6.6.6.6, junk, 10.0.0.2".as_bytes()]),
            ip("10.0.0.2")
        );
        assert_eq!(
            a.client_ip(peer("10.0.0.1"), ["6.6.6.6, 9.9.9.9 junk".as_bytes()]),
            ip("10.0.0.1")
        );
        // An entry that is not text is junk where it stands: the address the proxy
        // appended after it still counts.
        assert_eq!(
            a.client_ip(peer("10.0.0.1"), [b"\xe9, 9.9.9.9".as_slice()]),
            ip("9.9.9.9")
        );
        // Every hop trusted: the farthest one.
        assert_eq!(
            a.client_ip(peer("10.0.0.1"), ["10.0.0.5, 10.0.0.2".as_bytes()]),
            ip("10.0.0.5")
        );
        assert_eq!(
            a.client_ip(peer("10.0.0.1"), std::iter::empty()),
            ip("10.0.0.1")
        );
        assert_eq!(
            a.client_ip(peer("::ffff:1.2.3.4"), std::iter::empty()),
            ip("1.2.3.4"),
            "mapped addresses are IPv4"
        );
        assert_eq!(
            a.client_ip(peer("::ffff:10.1.1.1"), ["9.9.9.9".as_bytes()]),
            ip("9.9.9.9"),
            "a mapped proxy address is trusted"
        );
    }

    /// IPv6 clients are counted per /64 (one host holds a whole /64); IPv4 per address.
    #[test]
    fn ipv6_networks_count_as_one() {
        let a = Admission::new(Settings {
            rate_per_ip: None,
            ..settings()
        });
        let _t1 = a.admit(ip("2001:db8:1:2::1"), 0, false).unwrap();
        let t2 = a.admit(ip("2001:db8:1:2:ffff::9"), 0, false).unwrap();
        assert_eq!(t2.ip(), ip("2001:db8:1:2:ffff::9"));
        assert_eq!(t2.key(), ip("2001:db8:1:2::"));
        assert_eq!(
            a.admit(ip("2001:db8:1:2::77"), 0, false)
                .unwrap_err()
                .reason,
            Refusal::IpConnections
        );
        assert!(a.admit(ip("2001:db8:1:3::1"), 0, false).is_ok());
        assert_eq!(a.connections_from(ip("2001:db8:1:2::abc")), 2);
        drop(t2);
        assert_eq!(a.connections_from(ip("2001:db8:1:2::1")), 1);
        let per_host = Admission::new(Settings {
            ipv6_prefix_len: 128,
            rate_per_ip: None,
            ..settings()
        });
        assert_eq!(per_host.key(ip("2001:db8::5")), ip("2001:db8::5"));
        let all = Admission::new(Settings {
            ipv6_prefix_len: 0,
            ..settings()
        });
        assert_eq!(all.key(ip("2001:db8::5")), ip("::"));
        assert_eq!(all.key(ip("1.2.3.4")), ip("1.2.3.4"));
    }

    /// Per-address concurrency: tickets count, dropping one frees its place.
    #[test]
    fn per_address_connections() {
        let a = Admission::new(Settings {
            rate_per_ip: None,
            ..settings()
        });
        let x = ip("1.1.1.1");
        let t1 = a.admit(x, 0, false).unwrap();
        let _t2 = a.admit(x, 0, false).unwrap();
        let no = a.admit(x, 0, false).unwrap_err();
        assert_eq!(no.reason, Refusal::IpConnections);
        assert!(no.retry_after.is_some());
        assert!(a.admit(ip("2.2.2.2"), 0, false).is_ok());
        drop(t1);
        assert_eq!(a.connections_from(x), 1);
        assert!(a.admit(x, 0, false).is_ok());
        assert_eq!(a.refusals()[Refusal::IpConnections.index()], 1);
    }

    /// TCP connections per peer address are capped before any handshake, at twice the
    /// per-address limit and 16; trusted proxies and allowed addresses are not counted.
    #[test]
    fn raw_connections_per_address() {
        let a = Admission::new(settings());
        assert_eq!(a.sockets_per_ip(), Some(20));
        let x = ip("5.5.5.5");
        let held: Vec<_> = (0..20).map(|_| a.accept(x).unwrap().unwrap()).collect();
        assert_eq!(a.accept(x).unwrap_err(), Refusal::IpConnections);
        assert_eq!(a.refusals()[Refusal::IpConnections.index()], 1);
        assert!(a.accept(ip("5.5.5.6")).unwrap().is_some());
        drop(held);
        assert!(a.accept(x).unwrap().is_some());
        for _ in 0..50 {
            assert!(a.accept(ip("10.1.2.3")).unwrap().is_none(), "trusted proxy");
        }
        a.set_lists(Some(parse_nets(&["6.6.6.6".into()]).unwrap()), None);
        assert!(a.accept(ip("6.6.6.6")).unwrap().is_none(), "allowed");
        let unlimited = Admission::new(Settings {
            max_per_ip: 0,
            ..settings()
        });
        assert!(unlimited.accept(x).unwrap().is_none());
    }

    /// With `exempt_loopback`, loopback clients (v4, v6, mapped) skip the per-address
    /// connection and rate limits, before and after the handshake; other clients do
    /// not; without it loopback is counted as any address.
    #[test]
    fn loopback_exemption() {
        let a = Admission::new(Settings {
            exempt_loopback: true,
            ..settings()
        });
        let mut held = Vec::new();
        for lo in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            for _ in 0..30 {
                held.push(a.admit(ip(lo), 0, false).unwrap());
                assert!(a.accept(ip(lo)).unwrap().is_none(), "not counted");
            }
        }
        assert_eq!(a.refusals().iter().sum::<u64>(), 0);
        let x = ip("7.7.7.7");
        let _t = (a.admit(x, 0, false).unwrap(), a.admit(x, 0, false).unwrap());
        assert_eq!(
            a.admit(x, 0, false).unwrap_err().reason,
            Refusal::IpConnections
        );
        // The global cap and the deny list still apply.
        assert_eq!(
            a.admit(ip("127.0.0.1"), 116, false).unwrap_err().reason,
            Refusal::ServerFull
        );
        a.set_lists(None, Some(parse_nets(&["127.0.0.9".into()]).unwrap()));
        assert_eq!(
            a.admit(ip("127.0.0.9"), 0, false).unwrap_err().reason,
            Refusal::Denied
        );

        let counted = Admission::new(Settings {
            rate_per_ip: None,
            ..settings()
        });
        let _l = (
            counted.admit(ip("127.0.0.1"), 0, false).unwrap(),
            counted.admit(ip("127.0.0.1"), 0, false).unwrap(),
        );
        assert_eq!(
            counted.admit(ip("127.0.0.1"), 0, false).unwrap_err().reason,
            Refusal::IpConnections
        );
    }

    /// Refusal lines: the first is written, then at most one a second per reason,
    /// saying how many went unwritten; reasons do not hold each other back.
    #[tokio::test(start_paused = true)]
    async fn refusal_lines_are_rate_limited() {
        let a = Admission::new(settings());
        let log = &a.log;
        assert_eq!(log.take(Refusal::IpRate), Some(0));
        for _ in 0..5 {
            assert_eq!(log.take(Refusal::IpRate), None);
        }
        assert_eq!(log.take(Refusal::IpConnections), Some(0));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(log.take(Refusal::IpRate), None);
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(log.take(Refusal::IpRate), Some(6));
        assert_eq!(log.take(Refusal::IpRate), None);
    }

    /// The connect rate allows the burst, then refuses with the wait.
    #[test]
    fn connect_rate() {
        let a = Admission::new(Settings {
            max_per_ip: 0,
            ..settings()
        });
        let x = ip("3.3.3.3");
        for _ in 0..3 {
            a.admit(x, 0, false).unwrap();
        }
        let no = a.admit(x, 0, false).unwrap_err();
        assert_eq!(no.reason, Refusal::IpRate);
        let wait = no.retry_after.unwrap();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    /// Lists: denied addresses are refused, allowed ones skip the per-address limits;
    /// both change at run time. The global cap and draining apply to everyone.
    #[test]
    fn lists_caps_and_draining() {
        let a = Admission::new(settings());
        let x = ip("4.4.4.4");
        a.set_lists(None, Some(parse_nets(&["4.4.0.0/16".into()]).unwrap()));
        assert_eq!(a.admit(x, 0, false).unwrap_err().reason, Refusal::Denied);
        a.set_lists(
            Some(parse_nets(&["4.4.4.4".into()]).unwrap()),
            Some(Vec::new()),
        );
        for _ in 0..10 {
            a.admit(x, 0, false).unwrap();
        }
        assert_eq!(
            a.admit(x, 116, false).unwrap_err().reason,
            Refusal::ServerFull
        );
        assert!(a.admit(x, 115, false).is_ok());
        assert_eq!(a.admit(x, 0, true).unwrap_err().reason, Refusal::Draining);
        assert!(parse_nets(&["300.1.1.1".into()]).is_err());
        assert!(parse_nets(&["::1".into(), "fd00::/8".into()]).is_ok());
        // Mapped networks are written as IPv4 ones, and match IPv4 clients.
        assert_eq!(
            parse_nets(&["::ffff:5.5.0.0/112".into(), "::ffff:6.6.6.6".into()]).unwrap(),
            parse_nets(&["5.5.0.0/16".into(), "6.6.6.6/32".into()]).unwrap()
        );
        a.set_lists(
            None,
            Some(parse_nets(&["::ffff:7.7.0.0/112".into()]).unwrap()),
        );
        assert_eq!(
            a.admit(ip("7.7.1.1"), 0, false).unwrap_err().reason,
            Refusal::Denied
        );
    }
}
