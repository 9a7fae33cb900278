//! Presence and devices (`IM.md`, Presence and Devices), kept per user in memory: the
//! user's connected `/im` sockets (each with its device and platform), what their
//! watchers were last told, and their send bucket.
//!
//! A user is online while any of their sockets is connected. A socket closed with a
//! Socket.IO disconnect leaves at once; one whose connection was lost (closed, reset,
//! ping timeout: the engine's heartbeat notices a silent peer, with no timer per
//! socket) still counts for `im.presence_grace`, so a quick reconnect changes nothing
//! anyone sees. Watchers (room `presence:u`) get `presence` when what they see (online,
//! devices) changed, at most twice per `im.presence_flap_window`: a user who flaps has
//! the state at the end of the window pushed, not every change.
//!
//! The changes are looked at by one task ([`run`]), in the order they are due: a change
//! is noted under the user's shard lock, and its push goes out on the next tick (every
//! [`TICK`]). A user with no socket left is forgotten once nothing of theirs is pending
//! (their `last_seen` stays in a cache and in the store).
//!
//! The device policy is applied when a socket connects, under the same lock: the sockets
//! in the way of the new device are taken out of the user's sockets at once (so a
//! hundred concurrent logins under `single` leave exactly one, the last), then told
//! `kicked` and disconnected by the caller.

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use socketio::Sid;
use tokio::time::Instant;

use crate::config::DevicePolicy;
use crate::limit::Bucket;
use crate::{Config, ImStats, Inner};

/// How often due changes are looked at: an offline after a Socket.IO disconnect goes
/// out within it.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Shards of the users' map: concurrent connects of different users rarely wait.
const SHARDS: usize = 64;

/// A client's platform (`auth.platform`), for the device policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Platform {
    Web,
    Desktop,
    Ios,
    Android,
    #[default]
    Other,
}

impl Platform {
    pub(crate) fn parse(name: &str) -> Option<Platform> {
        Some(match name {
            "web" => Platform::Web,
            "desktop" => Platform::Desktop,
            "ios" => Platform::Ios,
            "android" => Platform::Android,
            "other" => Platform::Other,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Platform::Web => "web",
            Platform::Desktop => "desktop",
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Other => "other",
        }
    }
}

/// What watchers see of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Shown {
    online: bool,
    devices: u32,
}

/// A user's presence as answered and pushed: `{ online, last_seen, devices }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) online: bool,
    pub(crate) devices: u32,
    /// Ms since the epoch of the user's last connect or disconnect; `None` if never seen.
    pub(crate) last_seen: Option<i64>,
}

impl Snapshot {
    pub(crate) const NEVER_SEEN: Snapshot = Snapshot {
        online: false,
        devices: 0,
        last_seen: None,
    };

    pub(crate) fn to_json(self) -> Value {
        json!({ "online": self.online, "last_seen": self.last_seen, "devices": self.devices })
    }
}

struct Session {
    sid: Sid,
    device: Arc<str>,
    platform: Platform,
    /// When its connection was lost: it counts until `lost + grace`.
    lost: Option<Instant>,
    /// When it connected, in ms since the epoch: of two sessions in each other's way on
    /// different nodes, the later stays.
    at_ms: i64,
    /// The node it is on, on many nodes; `None` for this one's.
    node: Option<Arc<str>>,
}

impl Session {
    /// The order of sessions on different nodes: the later wins.
    fn key(&self) -> (i64, Sid) {
        (self.at_ms, self.sid)
    }
}

/// A session on another node, as it told (see `relay`); or one of this node's, to tell.
#[derive(Debug, Clone)]
pub(crate) struct RemoteSession {
    pub(crate) user: Arc<str>,
    pub(crate) sid: Sid,
    pub(crate) device: Arc<str>,
    pub(crate) platform: Platform,
    pub(crate) at_ms: i64,
    pub(crate) node: Arc<str>,
}

struct User {
    sessions: Vec<Session>,
    last_seen: Option<i64>,
    /// What watchers were last told.
    announced: Shown,
    /// The last two pushes' times: a third within the flap window waits.
    pushed: [Option<Instant>; 2],
    /// The earliest look at this user already queued.
    due: Option<Instant>,
    /// `im.send_rate` / `im.send_burst`; made full on first use.
    sends: Option<Bucket>,
}

impl User {
    fn shown(&self) -> Shown {
        // Distinct device ids: a session counts when no earlier one has its device (a
        // user has a handful of sessions; nothing is allocated).
        let s = &self.sessions;
        let devices = (0..s.len())
            .filter(|&i| !s[..i].iter().any(|e| e.device == s[i].device))
            .count();
        Shown {
            online: !s.is_empty(),
            devices: devices as u32,
        }
    }

    fn snapshot(&self) -> Snapshot {
        let shown = self.shown();
        Snapshot {
            online: shown.online,
            devices: shown.devices,
            last_seen: self.last_seen,
        }
    }

    fn live(&self) -> bool {
        self.sessions.iter().any(|s| s.lost.is_none())
    }
}

/// A socket of `user` taken out by the device policy: it is told `kicked` and
/// disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kicked(pub(crate) Sid);

/// A push due to a user's watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Push {
    pub(crate) user: Arc<str>,
    pub(crate) now: Snapshot,
}

/// One shard of the users: parking_lot mutex, held to note or look, never across
/// `.await`.
type Shard = Mutex<HashMap<Arc<str>, User>>;

/// Users to look at, earliest first.
type Due = BinaryHeap<Reverse<(Instant, Arc<str>)>>;

/// Every user with a socket on `/im` (or something pending).
pub(crate) struct Presence {
    shards: Box<[Shard]>,
    /// Users to look at, by when. parking_lot mutex, taken after a shard's, never
    /// before one.
    due: Mutex<Due>,
    /// `last_seen` of users not held above, as recently known.
    seen: moka::sync::Cache<Arc<str>, i64>,
    /// `last_seen` times not written to the store yet.
    unsaved: Mutex<Vec<(String, i64)>>,
    grace: Duration,
    flap_window: Duration,
    policy: DevicePolicy,
    send_rate: f64,
    send_burst: f64,
    stats: Arc<ImStats>,
}

impl Presence {
    pub(crate) fn new(config: &Config, stats: Arc<ImStats>) -> Presence {
        Presence {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            due: Mutex::default(),
            seen: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            unsaved: Mutex::default(),
            grace: config.presence_grace,
            flap_window: config.presence_flap_window,
            policy: config.device_policy,
            send_rate: config.send_rate,
            send_burst: config.send_burst,
            stats,
        }
    }

    fn shard(&self, user: &str) -> &Shard {
        let mut h = DefaultHasher::new();
        user.hash(&mut h);
        &self.shards[h.finish() as usize % SHARDS]
    }

    fn schedule(&self, u: &mut User, user: &Arc<str>, at: Instant) {
        if u.due.is_some_and(|d| d <= at) {
            return;
        }
        u.due = Some(at);
        self.due.lock().push(Reverse((at, user.clone())));
    }

    /// Socket `sid` of `user` connected, from `device` on `platform`: the sockets the
    /// device policy puts out (to be told `kicked` and disconnected). On many nodes, that
    /// may be this one, when a later session in its way is on another node.
    #[cfg(test)]
    pub(crate) fn connected(
        &self,
        user: &Arc<str>,
        sid: Sid,
        device: Arc<str>,
        platform: Platform,
        now: Instant,
        now_ms: i64,
    ) -> Vec<Kicked> {
        self.connected_noticed(user, sid, device, platform, now, now_ms)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// As `connected`, each socket put out with the notice it is told (who won).
    pub(crate) fn connected_noticed(
        &self,
        user: &Arc<str>,
        sid: Sid,
        device: Arc<str>,
        platform: Platform,
        now: Instant,
        now_ms: i64,
    ) -> Vec<(Kicked, Value)> {
        let session = Session {
            sid,
            device,
            platform,
            lost: None,
            at_ms: now_ms,
            node: None,
        };
        self.arrive(user, session, now, now_ms)
    }

    /// A session on another node connected: this node's sockets the device policy puts
    /// out, each with the notice they get (`kicked`).
    pub(crate) fn connected_remote(
        &self,
        s: RemoteSession,
        now: Instant,
        now_ms: i64,
    ) -> Vec<(Kicked, Value)> {
        let session = Session {
            sid: s.sid,
            device: s.device,
            platform: s.platform,
            lost: None,
            at_ms: s.at_ms,
            node: Some(s.node),
        };
        self.arrive(&s.user, session, now, now_ms)
    }

    /// Adds `new` to `user`'s sessions under the device policy; returns this node's
    /// sockets put out, with their notices.
    fn arrive(
        &self,
        user: &Arc<str>,
        new: Session,
        now: Instant,
        now_ms: i64,
    ) -> Vec<(Kicked, Value)> {
        let mut shard = self.shard(user).lock();
        let u = shard.entry(user.clone()).or_insert_with(|| User {
            // Most users have one device connected.
            sessions: Vec::with_capacity(1),
            last_seen: None,
            announced: Shown::default(),
            pushed: [None, None],
            due: None,
            sends: None,
        });
        let policy = self.policy;
        let in_way = |s: &Session| {
            s.device != new.device
                && match policy {
                    DevicePolicy::Multiple => false,
                    DevicePolicy::OnePerPlatform => s.platform == new.platform,
                    DevicePolicy::Single => true,
                }
        };
        let notice = |winner: &Session| {
            json!({
                "reason": "login_elsewhere",
                "device": &*winner.device,
                "platform": winner.platform.as_str(),
            })
        };
        let mut kicked = Vec::new();
        // A later session in the way on another node: the new one is out (that node
        // puts out its own sockets; this one, the new socket, if it is here).
        let beaten = u
            .sessions
            .iter()
            .find(|s| in_way(s) && s.lost.is_none() && s.node != new.node && s.key() > new.key());
        if let Some(winner) = beaten {
            if new.node.is_none() {
                kicked.push((Kicked(new.sid), notice(winner)));
            }
        } else {
            u.sessions.retain(|s| {
                // A lost connection of the same device is this one again, as is the same
                // socket told twice; one in the way of the new device is gone without a
                // word (its client is not there).
                let replaced = (s.lost.is_some() && s.device == new.device) || s.sid == new.sid;
                let out = in_way(s);
                if out && s.lost.is_none() && s.node.is_none() {
                    kicked.push((Kicked(s.sid), notice(&new)));
                }
                !(replaced || out)
            });
            u.sessions.push(new);
        }
        u.last_seen = Some(now_ms);
        self.schedule(u, user, now);
        self.stats
            .kicked
            .fetch_add(kicked.len() as u64, Ordering::Relaxed);
        kicked
    }

    /// The sessions of `node` are those of `list` now (it told them all): the others of
    /// it are dropped, the new ones added. This node's sockets put out by them.
    pub(crate) fn replace_node(
        &self,
        node: &Arc<str>,
        list: Vec<RemoteSession>,
        now: Instant,
        now_ms: i64,
    ) -> Vec<(Kicked, Value)> {
        let listed: std::collections::HashSet<Sid> = list.iter().map(|s| s.sid).collect();
        self.drop_sessions(now, |s| {
            s.node.as_ref() == Some(node) && !listed.contains(&s.sid)
        });
        let mut kicked = Vec::new();
        for s in list {
            let known = self
                .shard(&s.user)
                .lock()
                .get(&s.user)
                .is_some_and(|u| u.sessions.iter().any(|k| k.sid == s.sid));
            if !known {
                kicked.extend(self.connected_remote(s, now, now_ms));
            }
        }
        kicked
    }

    /// Drops the sessions of `node` (gone silent); how many.
    pub(crate) fn drop_node(&self, node: &str, now: Instant) -> usize {
        self.drop_sessions(now, |s| s.node.as_deref() == Some(node))
    }

    fn drop_sessions(&self, now: Instant, gone: impl Fn(&Session) -> bool) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let mut touched = Vec::new();
            for (user, u) in shard.iter_mut() {
                let before = u.sessions.len();
                u.sessions.retain(|s| !gone(s));
                if u.sessions.len() != before {
                    dropped += before - u.sessions.len();
                    touched.push(user.clone());
                }
            }
            for user in touched {
                if let Some(u) = shard.get_mut(&user) {
                    self.schedule(u, &user, now);
                }
            }
        }
        dropped
    }

    /// This node's connected sessions (to tell the other nodes).
    pub(crate) fn local_sessions(&self) -> Vec<RemoteSession> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (user, u) in shard.lock().iter() {
                for s in u
                    .sessions
                    .iter()
                    .filter(|s| s.node.is_none() && s.lost.is_none())
                {
                    out.push(RemoteSession {
                        user: user.clone(),
                        sid: s.sid,
                        device: s.device.clone(),
                        platform: s.platform,
                        at_ms: s.at_ms,
                        node: Arc::from(""),
                    });
                }
            }
        }
        out
    }

    /// Socket `sid` of `user` left: at once when `closed` (a Socket.IO disconnect, or the
    /// server's), after the grace otherwise; `local` when the socket was this node's (a
    /// session on another node is told by it). Whether the user has no connected socket
    /// left anywhere (they type nowhere).
    pub(crate) fn disconnected(
        &self,
        user: &Arc<str>,
        sid: Sid,
        closed: bool,
        now: Instant,
        now_ms: i64,
        local: bool,
    ) -> bool {
        let mut shard = self.shard(user).lock();
        let Some(u) = shard.get_mut(user) else {
            return true;
        };
        let Some(i) = u.sessions.iter().position(|s| s.sid == sid) else {
            // Put out by the device policy already.
            return !u.live();
        };
        if closed {
            u.sessions.swap_remove(i);
        } else {
            u.sessions[i].lost = Some(now);
        }
        u.last_seen = Some(now_ms);
        let at = if closed { now } else { now + self.grace };
        self.schedule(u, user, at);
        let alone = !u.live();
        if alone && local {
            // Written behind whether or not anyone is told (a quick reconnect is not).
            self.unsaved.lock().push((user.to_string(), now_ms));
        }
        alone
    }

    /// Takes one send from `user`'s bucket, or says how long until one is there.
    pub(crate) fn take_send(&self, user: &str, now: Instant) -> Result<(), Duration> {
        let (rate, burst) = (self.send_rate, self.send_burst);
        if rate <= 0.0 {
            return Ok(());
        }
        let mut shard = self.shard(user).lock();
        // A user without a socket here (a race with their disconnect) has nothing to send
        // from: their send fails on its own.
        let Some(u) = shard.get_mut(user) else {
            return Ok(());
        };
        u.sends
            .get_or_insert_with(|| Bucket::full(burst, now))
            .take(1.0, rate, burst, now)
    }

    /// What `user`'s watchers see now, if known here (held, or recently seen).
    pub(crate) fn snapshot(&self, user: &str) -> Option<Snapshot> {
        if let Some(u) = self.shard(user).lock().get(user) {
            return Some(u.snapshot());
        }
        self.seen.get(user).map(|ms| Snapshot {
            last_seen: Some(ms),
            ..Snapshot::NEVER_SEEN
        })
    }

    /// Notes `last_seen` times read from the store (for users not known here).
    pub(crate) fn remember(&self, seen: &[(String, i64)]) {
        for (user, ms) in seen {
            // A time noted meanwhile (the user came and went during the read) is newer.
            if self.seen.get(user.as_str()).is_none_or(|known| known < *ms) {
                self.seen.insert(Arc::from(user.as_str()), *ms);
            }
        }
    }

    /// Puts back `last_seen` times whose write failed: the next one takes them.
    fn unsave(&self, seen: Vec<(String, i64)>) {
        let mut unsaved = self.unsaved.lock();
        // Bounded: a store down for long keeps the latest 100,000.
        if unsaved.len() < 100_000 {
            unsaved.extend(seen);
        }
    }

    /// Looks at the users due by `now`: the pushes to make.
    pub(crate) fn tick(&self, now: Instant) -> Vec<Push> {
        let mut ready = Vec::new();
        {
            let mut due = self.due.lock();
            while due.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                let Some(Reverse((_, user))) = due.pop() else {
                    break;
                };
                ready.push(user);
            }
        }
        let mut pushes = Vec::new();
        for user in ready {
            if let Some(p) = self.look(&user, now) {
                pushes.push(p);
            }
        }
        pushes
    }

    fn look(&self, user: &Arc<str>, now: Instant) -> Option<Push> {
        let mut shard = self.shard(user).lock();
        let u = shard.get_mut(user)?;
        if u.due.is_some_and(|d| d > now) {
            // Queued again for later: looked at then.
            return None;
        }
        u.due = None;
        let grace = self.grace;
        u.sessions
            .retain(|s| s.lost.is_none_or(|at| at + grace > now));
        let mut next: Option<Instant> = u
            .sessions
            .iter()
            .filter_map(|s| s.lost.map(|at| at + grace))
            .min();
        let shown = u.shown();
        let mut push = None;
        if shown != u.announced {
            match u.pushed[0] {
                Some(oldest) if now < oldest + self.flap_window => {
                    let at = oldest + self.flap_window;
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
                _ => {
                    u.pushed = [u.pushed[1], Some(now)];
                    if shown.online != u.announced.online {
                        let delta = if shown.online { 1 } else { -1 };
                        self.stats.online_users.fetch_add(delta, Ordering::Relaxed);
                    }
                    u.announced = shown;
                    push = Some(Push {
                        user: user.clone(),
                        now: u.snapshot(),
                    });
                }
            }
        }
        if u.sessions.is_empty() && u.announced == Shown::default() {
            // Kept while its flap window or its send bucket still matter.
            let mut keep = u.pushed[1].map(|t| t + self.flap_window);
            if let Some(b) = u.sends.as_ref().filter(|_| self.send_rate > 0.0) {
                let full = b.full_at(self.send_rate, self.send_burst);
                keep = Some(keep.map_or(full, |k| k.max(full)));
            }
            match keep.filter(|k| *k > now) {
                Some(k) => next = Some(next.map_or(k, |n| n.min(k))),
                None if next.is_none() => {
                    if let Some(ms) = u.last_seen {
                        self.seen.insert(user.clone(), ms);
                    }
                    shard.remove(user);
                    return push;
                }
                None => {}
            }
        }
        if let Some(at) = next {
            self.schedule(u, user, at);
        }
        push
    }

    /// The `last_seen` times to write to the store; with `all`, also of every user
    /// online now (the server is stopping).
    pub(crate) fn take_unsaved(&self, all: bool, now_ms: i64) -> Vec<(String, i64)> {
        let mut out = std::mem::take(&mut *self.unsaved.lock());
        if all {
            for shard in self.shards.iter() {
                for (user, u) in shard.lock().iter() {
                    if u.sessions.iter().any(|s| s.node.is_none()) {
                        out.push((user.to_string(), now_ms));
                    }
                }
            }
        }
        out
    }

    /// Users held in memory now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// What the rooms of watchers start with.
pub(crate) const WATCHERS_PREFIX: &str = "presence:";

/// The room of `user`'s watchers.
pub(crate) fn watchers_room(user: &str) -> String {
    format!("{WATCHERS_PREFIX}{user}")
}

/// Pushes the presence changes as they fall due, and writes `last_seen` behind (about
/// once a second), until the service is gone.
pub(crate) async fn run(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    // One write of the last seen times at a time.
    let saving = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let pushes = inner.presence.tick(Instant::now());
        if let Some(ns) = inner.ns.get() {
            for p in pushes {
                inner.stats.presence_pushes.fetch_add(1, Ordering::Relaxed);
                let mut body = p.now.to_json();
                body["user"] = json!(&*p.user);
                // On many nodes each pushes to its own watchers (each knows every node's
                // sessions).
                let mut to = ns.to(watchers_room(&p.user));
                if inner.config.clustered {
                    to = to.local();
                }
                let _ = to.emit("presence", (body,));
            }
        }
        ticks += 1;
        // On a task of its own: a slow store never holds the pushes back.
        if ticks % 10 == 0 && !saving.load(Ordering::Acquire) {
            saving.store(true, Ordering::Release);
            let (inner, saving) = (inner.clone(), saving.clone());
            tokio::spawn(async move {
                save(&inner, false).await;
                saving.store(false, Ordering::Release);
            });
        }
    }
}

/// Writes the `last_seen` times held back (with `all`, those of every user online too).
pub(crate) async fn save(inner: &Inner, all: bool) {
    let seen = inner.presence.take_unsaved(all, crate::cmd::now_ms());
    if seen.is_empty() {
        return;
    }
    let n = seen.len();
    if let Err(e) = inner.store.last_seen(seen.clone()).await {
        tracing::warn!(error = %e, users = n, "im: last seen times not stored yet");
        inner.presence.unsave(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u8) -> Sid {
        Sid::from_random([n; 15])
    }

    fn presence(f: impl FnOnce(&mut Config)) -> Presence {
        let mut config = Config::default();
        f(&mut config);
        Presence::new(&config, Arc::default())
    }

    fn user(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn online_then_offline_on_a_disconnect() {
        let p = presence(|_| {});
        let alice = user("alice");
        let t0 = Instant::now();
        assert!(p
            .connected(&alice, sid(1), user("d1"), Platform::Web, t0, 1000)
            .is_empty());
        let pushes = p.tick(t0);
        assert_eq!(pushes.len(), 1);
        assert_eq!(
            pushes[0].now,
            Snapshot {
                online: true,
                devices: 1,
                last_seen: Some(1000)
            }
        );
        // A second socket of the same device: nothing to tell.
        p.connected(&alice, sid(2), user("d1"), Platform::Web, t0, 1001);
        assert!(p.tick(t0 + TICK).is_empty());
        assert!(
            !p.disconnected(&alice, sid(2), true, t0, 1002, true),
            "one is left"
        );
        assert!(p.disconnected(&alice, sid(1), true, t0, 1003, true));
        // The flap window (two pushes per 10 s) is not reached: offline at once.
        let pushes = p.tick(t0 + TICK);
        assert_eq!(pushes.len(), 1);
        assert!(!pushes[0].now.online);
        assert_eq!(pushes[0].now.last_seen, Some(1003));
        assert_eq!(p.take_unsaved(false, 0), vec![("alice".into(), 1003)]);
        // Forgotten once its window and bucket no longer matter; its last_seen stays.
        p.tick(t0 + Duration::from_secs(11));
        assert_eq!(p.held(), 0);
        assert_eq!(
            p.snapshot("alice"),
            Some(Snapshot {
                online: false,
                devices: 0,
                last_seen: Some(1003)
            })
        );
        assert_eq!(p.snapshot("bob"), None);
    }

    #[test]
    fn a_lost_connection_is_kept_for_the_grace() {
        let p = presence(|_| {});
        let alice = user("alice");
        let t0 = Instant::now();
        p.connected(&alice, sid(1), user("d1"), Platform::Web, t0, 1);
        assert_eq!(p.tick(t0).len(), 1);
        // Lost, back within the grace: nobody is told anything.
        assert!(p.disconnected(&alice, sid(1), false, t0, 2, true));
        assert_eq!(p.snapshot("alice").map(|s| s.online), Some(true));
        p.connected(
            &alice,
            sid(2),
            user("d1"),
            Platform::Web,
            t0 + Duration::from_secs(1),
            3,
        );
        assert!(p.tick(t0 + Duration::from_secs(3)).is_empty());
        // Lost for good: offline once the grace is over, not before.
        p.disconnected(&alice, sid(2), false, t0 + Duration::from_secs(4), 4, true);
        assert!(p.tick(t0 + Duration::from_millis(5900)).is_empty());
        let pushes = p.tick(t0 + Duration::from_secs(6));
        assert_eq!(pushes.len(), 1);
        assert!(!pushes[0].now.online);
    }

    #[test]
    fn a_flapping_user_is_pushed_twice_per_window() {
        let p = presence(|_| {});
        let alice = user("alice");
        let t0 = Instant::now();
        let mut pushes = Vec::new();
        // Ten times in ten seconds: on for half a second, off (a clean disconnect) for
        // half a second, looked at every tick.
        let mut t = t0;
        for i in 0..10u8 {
            p.connected(&alice, sid(i), user("d1"), Platform::Web, t, 0);
            for _ in 0..5 {
                pushes.extend(p.tick(t));
                t += TICK;
            }
            p.disconnected(&alice, sid(i), true, t, 0, true);
            for _ in 0..5 {
                pushes.extend(p.tick(t));
                t += TICK;
            }
        }
        assert_eq!(pushes.len(), 2, "{pushes:?}");
        // At the end of the window the state then (offline) goes out, once.
        for _ in 0..20 {
            pushes.extend(p.tick(t));
            t += TICK;
        }
        assert_eq!(pushes.len(), 2, "offline was the last thing pushed");
        assert!(!pushes[1].now.online);
        // Ended online instead: that is pushed when the window allows.
        let p = presence(|_| {});
        let t = t0;
        p.connected(&alice, sid(1), user("d1"), Platform::Web, t, 0);
        p.tick(t);
        p.disconnected(&alice, sid(1), true, t, 0, true);
        p.tick(t + TICK);
        p.connected(&alice, sid(2), user("d1"), Platform::Web, t + TICK * 2, 0);
        assert!(p.tick(t + TICK * 2).is_empty(), "held: two pushes already");
        let pushes = p.tick(t + Duration::from_secs(10));
        assert_eq!(pushes.len(), 1);
        assert!(pushes[0].now.online);
    }

    #[test]
    fn device_policies() {
        let t0 = Instant::now();
        let alice = user("alice");
        // multiple: nobody is put out.
        let p = presence(|_| {});
        p.connected(&alice, sid(1), user("phone"), Platform::Ios, t0, 0);
        assert!(p
            .connected(&alice, sid(2), user("laptop"), Platform::Web, t0, 0)
            .is_empty());
        // single: every other device goes; the same device (a second tab) stays.
        let p = presence(|c| c.device_policy = DevicePolicy::Single);
        p.connected(&alice, sid(1), user("phone"), Platform::Ios, t0, 0);
        p.connected(&alice, sid(2), user("laptop"), Platform::Web, t0, 0);
        let kicked = p.connected(&alice, sid(3), user("laptop"), Platform::Web, t0, 0);
        assert!(kicked.is_empty(), "the same device is not elsewhere");
        let kicked = p.connected(&alice, sid(4), user("tablet"), Platform::Ios, t0, 0);
        assert_eq!(kicked, vec![Kicked(sid(2)), Kicked(sid(3))]);
        // The kicked sockets' disconnects change nothing.
        assert!(!p.disconnected(&alice, sid(2), true, t0, 0, true));
        assert_eq!(p.snapshot("alice").map(|s| s.devices), Some(1));
        // one_per_platform: only the one of the same platform.
        let p = presence(|c| c.device_policy = DevicePolicy::OnePerPlatform);
        p.connected(&alice, sid(1), user("phone"), Platform::Ios, t0, 0);
        p.connected(&alice, sid(2), user("laptop"), Platform::Web, t0, 0);
        let kicked = p.connected(&alice, sid(3), user("phone2"), Platform::Ios, t0, 0);
        assert_eq!(kicked, vec![Kicked(sid(1))]);
        assert_eq!(p.snapshot("alice").map(|s| s.devices), Some(2));
    }

    #[test]
    fn many_logins_under_single_leave_one() {
        let p = Arc::new(presence(|c| c.device_policy = DevicePolicy::Single));
        let alice = user("alice");
        let t0 = Instant::now();
        let mut handles = Vec::new();
        for i in 0..100u8 {
            let (p, alice) = (p.clone(), alice.clone());
            handles.push(std::thread::spawn(move || {
                p.connected(
                    &alice,
                    sid(i),
                    Arc::from(format!("d{i}")),
                    Platform::Web,
                    t0,
                    0,
                )
                .len()
            }));
        }
        let kicked: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(kicked, 99);
        assert_eq!(p.snapshot("alice").map(|s| s.devices), Some(1));
    }

    /// What a connected user (one socket, one device) costs here, from the sizes of
    /// what is kept: the map's slot (key and value, at the load the map keeps), the
    /// sessions' vector (made with room for one). The user id and the device id are the
    /// socket's own (shared, not copied). `docs/benchmarks.md` quotes it.
    #[test]
    fn bytes_per_connected_user() {
        use std::mem::size_of;
        let slot = size_of::<(Arc<str>, User)>() + 1; // hashbrown: one control byte each
        let slot = slot * 8 / 7; // at most 7/8 full
        let sessions = size_of::<Session>();
        let per_user = slot + sessions;
        println!(
            "presence: {per_user} bytes per connected user (User {} B, Session {} B)",
            size_of::<User>(),
            size_of::<Session>()
        );
        assert!(per_user <= 256, "{per_user} bytes per user");
    }

    fn remote(
        user: &str,
        n: u8,
        device: &str,
        platform: Platform,
        at_ms: i64,
        node: &str,
    ) -> RemoteSession {
        RemoteSession {
            user: Arc::from(user),
            sid: sid(n),
            device: Arc::from(device),
            platform,
            at_ms,
            node: Arc::from(node),
        }
    }

    /// On many nodes the later session wins, whichever node it is on: a later one
    /// elsewhere puts out this node's socket; an earlier one told late is itself out
    /// (its node puts it out), and this node's socket stays.
    #[test]
    fn the_later_session_wins_across_nodes() {
        let p = presence(|c| c.device_policy = DevicePolicy::Single);
        let alice = user("alice");
        let t0 = Instant::now();
        assert!(p
            .connected(&alice, sid(1), user("phone"), Platform::Ios, t0, 1000)
            .is_empty());
        // Later, on node b: the phone here is put out, told who won.
        let kicked = p.connected_remote(
            remote("alice", 2, "laptop", Platform::Web, 2000, "b"),
            t0,
            2000,
        );
        assert_eq!(kicked.len(), 1);
        assert_eq!(kicked[0].0, Kicked(sid(1)));
        assert_eq!(kicked[0].1["device"], "laptop");
        assert_eq!(p.snapshot("alice").map(|s| s.devices), Some(1));
        // Earlier (told late), on node c: nothing here is put out, and it is not counted.
        let late = p.connected_remote(
            remote("alice", 3, "tablet", Platform::Ios, 1500, "c"),
            t0,
            2100,
        );
        assert!(late.is_empty());
        assert_eq!(p.snapshot("alice").map(|s| s.devices), Some(1));
        // A socket connecting here while a later one is on node b (clocks apart): the new
        // one is out at once.
        let beaten = p.connected_noticed(&alice, sid(4), user("watch"), Platform::Other, t0, 1900);
        assert_eq!(beaten.len(), 1);
        assert_eq!(beaten[0].0, Kicked(sid(4)));
        assert_eq!(beaten[0].1["device"], "laptop", "told who won");
        assert_eq!(p.snapshot("alice").map(|s| s.devices), Some(1));
    }

    /// A node's whole list replaces what was known of it; a silent node's sessions go;
    /// this node's own sessions are what it tells, and the only ones whose last seen
    /// time it writes.
    #[test]
    fn sessions_of_other_nodes() {
        let p = presence(|_| {});
        let (alice, bob) = (user("alice"), user("bob"));
        let t0 = Instant::now();
        p.connected(&alice, sid(1), user("phone"), Platform::Ios, t0, 10);
        p.connected_remote(remote("bob", 2, "pc", Platform::Desktop, 10, "b"), t0, 10);
        p.connected_remote(remote("alice", 3, "pc", Platform::Desktop, 10, "b"), t0, 10);
        assert_eq!(p.snapshot("alice").map(|s| s.devices), Some(2));
        let mine: Vec<Sid> = p.local_sessions().iter().map(|s| s.sid).collect();
        assert_eq!(mine, vec![sid(1)]);
        // Node b says it has only bob's now (alice's went while the bus was down).
        p.replace_node(
            &Arc::from("b"),
            vec![remote("bob", 2, "pc", Platform::Desktop, 10, "b")],
            t0,
            20,
        );
        assert_eq!(p.snapshot("alice").map(|s| s.devices), Some(1));
        assert_eq!(p.snapshot("bob").map(|s| s.online), Some(true));
        // A remote session's end writes no last seen time here.
        assert!(p.disconnected(&bob, sid(2), true, t0, 30, false));
        assert!(p.take_unsaved(false, 40).is_empty());
        p.connected_remote(remote("bob", 5, "pc", Platform::Desktop, 50, "b"), t0, 50);
        assert_eq!(p.drop_node("b", t0), 1);
        p.tick(t0);
        assert_eq!(p.snapshot("bob").map(|s| s.online), Some(false));
        assert_eq!(p.take_unsaved(true, 70), vec![("alice".to_owned(), 70)]);
    }

    #[test]
    fn sends_are_held_to_the_rate() {
        let p = presence(|c| {
            c.send_rate = 10.0;
            c.send_burst = 5.0;
        });
        let alice = user("alice");
        let t0 = Instant::now();
        p.connected(&alice, sid(1), user("d1"), Platform::Web, t0, 0);
        for _ in 0..5 {
            assert!(p.take_send("alice", t0).is_ok());
        }
        let wait = p.take_send("alice", t0).unwrap_err();
        assert_eq!(crate::limit::retry_ms(wait), 100);
        // Reconnecting does not refill it: the user is kept until it is full again.
        p.disconnected(&alice, sid(1), true, t0, 0, true);
        p.tick(t0);
        p.tick(t0 + TICK);
        p.connected(&alice, sid(2), user("d1"), Platform::Web, t0 + TICK, 0);
        assert!(p.take_send("alice", t0 + TICK).is_ok());
        assert!(p.take_send("alice", t0 + TICK).is_err());
    }
}
