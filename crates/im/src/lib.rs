//! Herald's IM service, on namespace `/im` (the client contract is `IM.md`; what this
//! build serves of it is in `docs/im.md`): conversations, messages stored before they
//! are acknowledged, history, sync, read watermarks and unread counts, delivery
//! confirmed by the devices' acks.
//!
//! Every socket of user `u` is in room `user:u`, and in room `conv:c` of each
//! conversation `c` it is a member of (the service joins and leaves them).
//!
//! # Layout
//!
//! - [`api`]: what the HTTP API for backends does.
//! - [`config`]: [`Config`], the `[im]` section.
//! - [`error`]: [`ImError`], the ack's codes.
//! - `cache`: the conversations in use (members, watermarks, heads, push order).
//! - `wire`: the objects clients send and receive.
//! - `cmd`: one module per client event, each with its parse and its apply.
//! - `receipts`: watermarks written behind, receipts pushed, in windows.
//! - `typing`: the typers of each conversation, pushed once per window when they change.
//! - `presence`: each user's connected devices, pushed to their watchers when that
//!   changes (damped); the device policy; the send buckets.
//! - `limit`: token buckets (a user's sends, a conversation's fan-out).
//! - [`stats`]: [`ImStats`], the service's counters.

pub mod api;
pub mod config;
pub mod error;
pub mod stats;

mod cache;
mod cmd;
mod limit;
mod presence;
mod receipts;
mod relay;
mod typing;
mod wire;

use std::sync::{Arc, OnceLock};

use serde_json::json;
use socketio::{
    Builder, ConnectError, ConnectRequest, DisconnectReason, Event, Namespace, SocketRef,
};
use store::{ConversationId, Store, StoreStats};

pub use config::{Config, DevicePolicy};
pub use error::ImError;
pub use stats::ImStats;

/// The namespace the service serves.
pub const NAMESPACE: &str = "/im";

/// Decides who the client behind a CONNECT to `/im` is: the user id, or the refusal.
pub type Authenticate =
    Arc<dyn Fn(&ConnectRequest) -> Result<Arc<str>, ConnectError> + Send + Sync>;

/// Who a socket of `/im` is (set by the connect middleware).
#[derive(Debug, Clone)]
pub(crate) struct ImUser {
    pub(crate) user: Arc<str>,
    /// `auth.device`; the socket id when the client gave none.
    pub(crate) device: Option<Arc<str>>,
    /// `auth.platform`.
    pub(crate) platform: presence::Platform,
}

/// What a client may say of its device in the CONNECT's auth (the token is read by the
/// server's authentication).
#[derive(serde::Deserialize)]
struct DeviceAuth {
    #[serde(default)]
    device: Option<serde_json::Value>,
    #[serde(default)]
    platform: Option<serde_json::Value>,
}

/// The device and platform of a CONNECT, or the refusal (`bad_request`) that says what
/// is wrong with them.
fn device_of(req: &ConnectRequest) -> Result<(Option<Arc<str>>, presence::Platform), ConnectError> {
    let refuse = |message: &str| {
        ConnectError::new(message).with_data(json!({ "code": "bad_request", "message": message }))
    };
    // An auth that is not an object (or none) says nothing of the device.
    let auth = req.auth::<DeviceAuth>().unwrap_or(DeviceAuth {
        device: None,
        platform: None,
    });
    let device = match auth.device {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(d))
            if !d.is_empty()
                && d.len() <= 64
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)) =>
        {
            Some(Arc::from(d))
        }
        Some(_) => {
            return Err(refuse(
                "auth.device is a string of 1 to 64 characters of [A-Za-z0-9_.:-]",
            ))
        }
    };
    let platform = match auth.platform {
        None | Some(serde_json::Value::Null) => presence::Platform::Other,
        Some(serde_json::Value::String(p)) => presence::Platform::parse(&p)
            .ok_or_else(|| refuse("auth.platform is one of web, desktop, ios, android, other"))?,
        Some(_) => {
            return Err(refuse(
                "auth.platform is one of web, desktop, ios, android, other",
            ))
        }
    };
    Ok((device, platform))
}

/// The IM service. Cheap to clone.
#[derive(Clone)]
pub struct Im {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) cache: cache::Cache,
    /// Recent messages' conversation and sequence number, by message id: what a
    /// device's delivery ack names.
    pub(crate) recent: moka::sync::Cache<i64, (ConversationId, u64)>,
    pub(crate) receipts: receipts::Receipts,
    pub(crate) typing: typing::Typing,
    pub(crate) presence: presence::Presence,
    pub(crate) stats: Arc<ImStats>,
    /// Namespace `/im`, once the Socket.IO server is built.
    pub(crate) ns: OnceLock<Arc<Namespace>>,
    /// On many nodes: this node's id and what it heard of the others.
    pub(crate) relay: relay::Relay,
}

impl std::fmt::Debug for Im {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Im")
            .field("conversations_cached", &self.inner.cache.len())
            .finish_non_exhaustive()
    }
}

impl Im {
    /// Opens the store (creating and migrating it as needed).
    ///
    /// # Errors
    ///
    /// The store's, when it cannot be opened.
    pub fn open(
        config: Config,
        store_stats: Arc<StoreStats>,
        stats: Arc<ImStats>,
    ) -> Result<Im, ImError> {
        let store = Store::open(&config.store, store_stats)?;
        Ok(Im::with_store(config, store, stats))
    }

    /// The service on a store already open (shared with other services); `config.store`
    /// is not read.
    pub fn with_store(config: Config, store: Store, stats: Arc<ImStats>) -> Im {
        Im {
            inner: Arc::new(Inner {
                presence: presence::Presence::new(&config, stats.clone()),
                stats,
                recent: moka::sync::Cache::builder()
                    .max_capacity(1_000_000)
                    .time_to_live(std::time::Duration::from_secs(300))
                    .build(),
                receipts: receipts::Receipts::default(),
                typing: typing::Typing::default(),
                config,
                store,
                cache: cache::Cache::default(),
                ns: OnceLock::new(),
                relay: relay::Relay::new(),
            }),
        }
    }

    /// The store's counters.
    pub fn store_stats(&self) -> &Arc<StoreStats> {
        self.inner.store.stats()
    }

    /// The message store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Adds namespace `/im`: `authenticate` decides who each client is (anonymous
    /// clients must be refused there with `token_missing`).
    pub fn install(&self, builder: Builder, authenticate: Authenticate) -> Builder {
        let on_connect = self.inner.clone();
        let mut builder = builder
            .ns(NAMESPACE, move |socket, _req| {
                cmd::connected(&on_connect, socket)
            })
            .middleware(move |req| {
                let user = authenticate(req)?;
                let (device, platform) = device_of(req)?;
                req.set_data(ImUser {
                    user,
                    device,
                    platform,
                });
                Ok(())
            });
        for (event, handler) in cmd::HANDLERS {
            let inner = self.inner.clone();
            builder = builder.on(event, move |socket, ev| {
                let inner = inner.clone();
                // The store's reads and writes are counted per event (`/metrics`).
                inner.store.stats().request(event);
                store::stats::sync_counted(event, || handler(inner, socket.clone(), ev));
            });
        }
        let gone = self.inner.clone();
        let acks = self.inner.clone();
        let told = self.inner.clone();
        builder
            .on_server_side_emit(move |ns, ev| relay::received(&told, ns, ev))
            .on_disconnect(move |socket, reason| {
                let Some(user) = user_of(socket) else { return };
                // A Socket.IO disconnect (the client's or the server's) leaves at once;
                // anything else counts for the grace, an Engine.IO `close` without a
                // Socket.IO disconnect included (a page reload with the client's
                // `closeOnBeforeunload`: the grace hides it).
                let closed = matches!(
                    reason,
                    DisconnectReason::ClientNamespaceDisconnect
                        | DisconnectReason::ServerNamespaceDisconnect
                );
                let alone = gone.presence.disconnected(
                    &user,
                    socket.id(),
                    closed,
                    tokio::time::Instant::now(),
                    cmd::now_ms(),
                    true,
                );
                relay::down(&gone, &user, socket.id(), closed);
                // The user's last socket on `/im` left: they type nowhere.
                if alone {
                    gone.typing.gone(&user);
                }
            })
            .on_ack(move |socket, id, _ack| receipts::delivered(&acks, socket, id))
    }

    /// The Socket.IO server is built: the service takes its namespace and starts writing
    /// watermarks behind.
    pub fn started(&self, io: &socketio::Server) {
        if let Some(ns) = io.of(NAMESPACE) {
            let _ = self.inner.ns.set(ns);
        }
        tokio::spawn(store::stats::counted(
            "watermarks",
            receipts::run(Arc::downgrade(&self.inner)),
        ));
        tokio::spawn(sweep_cache(Arc::downgrade(&self.inner)));
        tokio::spawn(typing::run(Arc::downgrade(&self.inner)));
        tokio::spawn(presence::run(Arc::downgrade(&self.inner)));
        if self.inner.config.clustered {
            tokio::spawn(relay::run(Arc::downgrade(&self.inner)));
        }
    }

    /// On many nodes: the bus went down (`false`), or is up (`true`), for the first time
    /// or again. Up, the nodes tell each other their sessions, and the conversations with
    /// members here are caught up from the store (what the others committed while the
    /// bus was down); while it is down, no node counts as gone for being silent.
    pub fn cluster_bus(&self, up: bool) {
        if !self.inner.config.clustered {
            return;
        }
        self.inner.relay.bus(up);
        if up {
            tokio::spawn(relay::back(self.inner.clone()));
        }
    }

    /// Conversations held in memory now.
    pub fn cached_conversations(&self) -> usize {
        self.inner.cache.len()
    }

    /// Writes what is held in memory (watermarks, the online users' last seen times) to
    /// the store; for the drain.
    pub async fn flush(&self) {
        store::stats::counted("watermarks", receipts::flush(&self.inner)).await;
        store::stats::counted("presence", presence::save(&self.inner, true)).await;
    }

    /// `user`'s presence as `{ online, last_seen, devices }`.
    ///
    /// # Errors
    ///
    /// `bad_request` for a user id that is not one, `unavailable` when the store
    /// cannot be read.
    pub async fn presence_of(&self, user: &str) -> Result<serde_json::Value, ImError> {
        cmd::check_user(user, "the user")?;
        let mut found = cmd::presence::snapshots(&self.inner, vec![Arc::from(user)]).await?;
        Ok(found.pop().map(|(_, s)| s.to_json()).unwrap_or_default())
    }
}

/// Keeps the cache's clock and drops the conversations idle for `im.cache_idle`, until
/// the service is gone.
async fn sweep_cache(inner: std::sync::Weak<Inner>) {
    let idle = match inner.upgrade() {
        Some(i) => i.config.cache_idle.as_secs().max(1),
        None => return,
    };
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut swept = 0;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = started.elapsed().as_secs();
        inner.cache.tick(now);
        inner.stats.cached_conversations.store(
            inner.cache.len() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        // A walk of the cache every tenth of the idle time (at most once a minute).
        if now >= swept + (idle / 10).clamp(1, 60) {
            swept = now;
            // On many nodes a conversation with members here stays: its pushes' order
            // is where the next message's news is checked against.
            let ns = inner.ns.get().filter(|_| inner.config.clustered);
            let evicted = inner.cache.evict_idle(idle, |id| {
                ns.is_some_and(|ns| ns.room_len(&conv_room(id).into()) > 0)
            });
            if evicted > 0 {
                tracing::debug!(
                    evicted,
                    cached = inner.cache.len(),
                    "im: idle conversations left the cache"
                );
            }
        }
    }
}

/// The room of user `u`'s sockets on `/im`.
pub(crate) fn user_room(user: &str) -> String {
    format!("user:{user}")
}

/// The room of conversation `c`'s online members.
pub(crate) fn conv_room(id: ConversationId) -> String {
    format!("conv:{id}")
}

/// A successful answer as the contract writes it: `{ ok: true, ... }`, `ok` first (an
/// answer that is not an object is `{ ok: true }`). The HTTP API answers the same way.
pub fn with_ok(mut v: serde_json::Value) -> serde_json::Value {
    match v.as_object_mut() {
        Some(map) => {
            let mut out = serde_json::Map::with_capacity(map.len() + 1);
            out.insert("ok".to_owned(), json!(true));
            out.extend(std::mem::take(map));
            serde_json::Value::Object(out)
        }
        None => json!({ "ok": true }),
    }
}

/// Answers `ev` with the outcome of a request, if the client asked for an ack.
pub(crate) fn answer(ev: &Event, outcome: Result<serde_json::Value, ImError>) {
    if !ev.wants_ack() {
        return;
    }
    let body = match outcome {
        Ok(v) => with_ok(v),
        Err(e) => {
            tracing::debug!(code = e.code(), error = %e, "im: request refused");
            e.to_ack()
        }
    };
    let _ = ev.ack((body,));
}

/// The user of an `/im` socket.
pub(crate) fn user_of(socket: &SocketRef) -> Option<Arc<str>> {
    socket.with_data::<ImUser, _>(|u| u.map(|u| u.user.clone()))
}
