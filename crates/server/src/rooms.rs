//! What clients may do on namespace `/`: every socket joins `user:<sub>`; the events
//! `subscribe` (room), `unsubscribe` (room) and `publish` (room, event, data...) are
//! checked against the client's token and answered by an ack, `{ ok: true }` or
//! `{ ok: false, error: { code, message, retryAfterMs? } }`.
//!
//! Rooms named `user:...` are joined by the server only: a client is in its own and can
//! never subscribe to another; publishing to one needs a pattern that names `user:`
//! itself. Every socket is also in the room of its own id (as in the Node server); a
//! client cannot subscribe to a room named like a socket id. A publish reaches every socket in the room, the sender's included when it is
//! subscribed: its data is passed on as it came (binary too), encoded once for every
//! recipient, followed by one argument the server adds, `{ from }`, the publisher's
//! user id (`null` when anonymous), which no client can forge.
//!
//! The connect middleware also applies drain, tier caps and eviction; the namespace's
//! rate-limited handler answers events over the per-socket rate.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use governor::clock::{Clock, DefaultClock};
use serde_json::json;
use socketio::{Builder, ConnectError, ConnectRequest, Event, RateLimited, RawArgs, SocketRef};

use crate::admission::Ticket;
use crate::auth::{Identity, Tier};
use crate::service::{connect_refusal, Context, Service};
use crate::state::{Client, Shared};
use crate::tiers::TierRefusal;

/// The prefix of the rooms the server puts each user's sockets in.
pub const USER_PREFIX: &str = "user:";

/// The room of user `id`.
pub fn user_room(id: &str) -> String {
    format!("{USER_PREFIX}{id}")
}

/// A refused client request: its code and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `bad_request`, `forbidden`, `too_many_rooms`, `rate_limited`, `token_expired`.
    pub code: &'static str,
    /// Human-readable.
    pub message: String,
    /// When trying again may work.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new("bad_request", message)
    }

    fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal::new("forbidden", message)
    }

    fn rate_limited(retry_after: Duration) -> Refusal {
        Refusal {
            code: "rate_limited",
            message: "too many requests; slow down".to_owned(),
            retry_after: Some(retry_after),
        }
    }
}

/// The ack body for an outcome.
fn reply(outcome: &Result<(), Refusal>) -> serde_json::Value {
    match outcome {
        Ok(()) => json!({ "ok": true }),
        Err(r) => {
            let mut error = json!({ "code": r.code, "message": r.message });
            if let Some(after) = r.retry_after {
                error["retryAfterMs"] = json!(after.as_millis().max(1) as u64);
            }
            json!({ "ok": false, "error": error })
        }
    }
}

/// The rooms app: namespace `/` with its connect middleware and client events.
#[derive(Debug)]
pub struct Rooms {
    ctx: Context,
}

impl Rooms {
    /// Makes the service (see [`crate::default_services`]).
    pub fn factory() -> crate::service::Factory {
        Box::new(|ctx: &Context| {
            Ok(Some(
                Arc::new(Rooms { ctx: ctx.clone() }) as Arc<dyn Service>
            ))
        })
    }
}

impl Service for Rooms {
    fn name(&self) -> &'static str {
        "rooms"
    }

    fn install(&self, builder: Builder) -> Builder {
        install(builder, &self.ctx)
    }
}

/// Adds namespace `/` with the connect middleware and the client events.
fn install(builder: Builder, ctx: &Context) -> Builder {
    let shared = ctx.shared.clone();
    let on_connect = shared.clone();
    let gate = ctx.clone();
    let sub = shared.clone();
    let unsub = shared.clone();
    let publ = shared.clone();
    let limited = shared;
    builder
        .ns("/", move |socket, _req| connected(&on_connect, socket))
        .middleware(move |req| admit(&gate, req))
        .on("subscribe", move |socket, ev| {
            let outcome = subscribe(&sub, socket, &ev);
            answer(&sub, &ev, &outcome);
        })
        .on("unsubscribe", move |socket, ev| {
            let outcome = unsubscribe(&unsub, socket, &ev);
            answer(&unsub, &ev, &outcome);
        })
        .on("publish", move |socket, ev| {
            let outcome = publish(&publ, socket, &ev);
            answer(&publ, &ev, &outcome);
        })
        .on_rate_limited(move |socket, ev, info| rate_limited(&limited, socket, &ev, info))
        // The tier place goes back when the socket leaves, whoever still holds it.
        .on_disconnect(|socket, _reason| {
            socket.with_data::<Client, _>(|c| {
                if let Some(c) = c {
                    c.slot.release();
                }
            });
        })
}

fn answer(shared: &Shared, ev: &Event, outcome: &Result<(), Refusal>) {
    if let Err(r) = outcome {
        shared.stats.refused_event(r.code);
        tracing::debug!(code = r.code, message = %r.message, "client request refused");
    }
    if ev.wants_ack() {
        let _ = ev.ack((reply(outcome),));
    }
}

/// Tells a socket why, then disconnects it (the client does not reconnect by itself).
pub(crate) fn force_disconnect(shared: &Shared, socket: &SocketRef, reason: &str, message: &str) {
    shared.stats.forced(reason);
    tracing::info!(socket = %socket.id(), reason, "disconnecting a socket");
    let _ = socket.emit(
        "forced_disconnect",
        (json!({ "reason": reason, "message": message }),),
    );
    socket.disconnect();
    socket.close();
}

/// The connect middleware: who the client is (drain, then its token), then the tier's
/// place.
fn admit(ctx: &Context, req: &ConnectRequest) -> Result<(), ConnectError> {
    let shared = &ctx.shared;
    let identity = ctx.authenticate(req)?;
    let (slot, victim) = shared.tiers.admit(identity.tier).map_err(|r| {
        let (code, message) = match r {
            TierRefusal::ServerFull => ("server_full", "the server is full; try again later"),
            TierRefusal::TierFull => ("tier_full", "no room left in this connection tier"),
        };
        shared.stats.connect_refused(code);
        connect_refusal(code, message, Some(Duration::from_secs(10)))
    })?;
    if let Some(victim) = victim {
        force_disconnect(
            shared,
            &victim,
            "evicted",
            "the server is full and needs room for a connection of a higher tier",
        );
    }
    req.set_data(Client {
        identity,
        slot,
        publish_violations: Default::default(),
    });
    Ok(())
}

/// A socket joined `/`: its user room, its tier's ping interval, eviction order.
fn connected(shared: &Shared, socket: &SocketRef) {
    let (user, tier) = socket.with_data::<Client, _>(|c| {
        c.map_or((None, Tier::Standard), |c| {
            (c.identity.user.clone(), c.slot.tier())
        })
    });
    if let Some(user) = user {
        socket.join(user_room(&user));
    }
    if let Some(interval) = shared.tiers_config().ping_interval[tier.index()] {
        socket.connection().set_ping_interval(interval);
    }
    if tier == Tier::Degraded {
        shared.tiers.track(socket);
    }
}

/// The socket's identity (set by the middleware on every accepted connection).
fn identity(socket: &SocketRef) -> Arc<Identity> {
    socket
        .with_data::<Client, _>(|c| c.map(|c| c.identity.clone()))
        .unwrap_or_else(|| Arc::new(Identity::nobody()))
}

/// The token's rights end when it expires, also for a socket that is still connected.
fn check_expiry(shared: &Shared, identity: &Identity) -> Result<(), Refusal> {
    if identity.expired(shared.verifier.leeway_s()) {
        return Err(Refusal::new(
            "token_expired",
            "your token has expired: reconnect with a new one",
        ));
    }
    Ok(())
}

fn check_room(shared: &Shared, room: &str) -> Result<(), Refusal> {
    if room.is_empty() {
        return Err(Refusal::bad_request("the room name is empty"));
    }
    let max = shared.limits.max_room_name_chars;
    if too_long(room, max) {
        return Err(Refusal::bad_request(format!(
            "the room name is {} characters; at most {max}",
            room.chars().count()
        )));
    }
    Ok(())
}

/// Whether `s` has more than `max` characters (counted only when its bytes could be).
pub(crate) fn too_long(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().count() > max
}

fn room_arg(ev: &Event, what: &str) -> Result<String, Refusal> {
    ev.data::<String>()
        .map_err(|_| Refusal::bad_request(format!("{what} takes a room name (a string)")))
}

fn subscribe(shared: &Shared, socket: &SocketRef, ev: &Event) -> Result<(), Refusal> {
    let room = room_arg(ev, "subscribe")?;
    check_room(shared, &room)?;
    if room.starts_with(USER_PREFIX) {
        return Err(Refusal::forbidden(
            "user rooms are joined by the server: you are in your own",
        ));
    }
    if is_socket_room(socket, &room) {
        // Each socket is in the room of its own id (as in the Node server); joining
        // another socket's would read what is meant for that socket alone.
        return Err(Refusal::forbidden(
            "that room is a socket's own (its socket id): only the server sends there",
        ));
    }
    let identity = identity(socket);
    check_expiry(shared, &identity)?;
    if !identity.rooms.matches(&room) {
        return Err(Refusal::forbidden(format!(
            "your token does not allow subscribing to {room:?}"
        )));
    }
    let rooms = socket.joined_rooms();
    if rooms.iter().any(|r| r.as_str() == room) {
        return Ok(());
    }
    let own = rooms
        .iter()
        .filter(|r| !r.as_str().starts_with(USER_PREFIX))
        .count();
    let max = shared.limits.max_rooms_per_socket;
    if own >= max {
        return Err(Refusal::new(
            "too_many_rooms",
            format!("a socket may subscribe to at most {max} rooms"),
        ));
    }
    socket.join(room);
    shared.stats.add(&shared.stats.subscribes);
    Ok(())
}

fn unsubscribe(shared: &Shared, socket: &SocketRef, ev: &Event) -> Result<(), Refusal> {
    let room = room_arg(ev, "unsubscribe")?;
    check_room(shared, &room)?;
    if room.starts_with(USER_PREFIX) {
        return Err(Refusal::forbidden("user rooms cannot be left"));
    }
    socket.leave(&socketio::Str::from(room));
    Ok(())
}

fn publish(shared: &Shared, socket: &SocketRef, ev: &Event) -> Result<(), Refusal> {
    let usage = || Refusal::bad_request("publish takes (room, event, data...)");
    let (room, event) = ev.args::<(String, String)>().map_err(|_| usage())?;
    check_room(shared, &room)?;
    check_event(shared, &event)?;
    let identity = identity(socket);
    check_expiry(shared, &identity)?;
    let allowed = if room.starts_with(USER_PREFIX) {
        identity.publish.matches_under(USER_PREFIX, &room)
    } else {
        identity.publish.matches(&room)
    };
    if !allowed {
        return Err(Refusal::forbidden(format!(
            "your token does not allow publishing to {room:?}"
        )));
    }
    if is_socket_room(socket, &room) {
        // As user rooms: clients do not address one socket of someone else's.
        return Err(Refusal::forbidden(
            "that room is a socket's own (its socket id): only the server sends there",
        ));
    }
    let limiter = shared.user_publishes.as_ref().filter(|_| {
        // Anonymous clients count per address: loopback ones, when loopback is trusted,
        // are exempt as from the other per-address limits.
        identity.user.is_some()
            || !(shared.admission.settings().exempt_loopback && client_addr(socket).is_loopback())
    });
    if let Some(limiter) = limiter {
        let key: Arc<str> = match &identity.user {
            Some(user) => user.clone(),
            None => Arc::from(format!("ip:{}", client_ip(socket))),
        };
        if let Err(not_until) = limiter.check_key(&key) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let violations = socket.with_data::<Client, _>(|c| {
                c.map_or(0, |c| {
                    c.publish_violations.fetch_add(1, Ordering::Relaxed) + 1
                })
            });
            let max = shared.limits.max_rate_violations;
            if max > 0 && violations >= max {
                force_disconnect(shared, socket, "rate_limited", "rate limited");
            }
            return Err(Refusal::rate_limited(wait));
        }
        socket.with_data::<Client, _>(|c| {
            if let Some(c) = c {
                c.publish_violations.store(0, Ordering::Relaxed);
            }
        });
    }
    let data = ev.raw_args_after(2).ok_or_else(usage)?;
    let data = with_sender(data, identity.user.as_deref());
    let delivered = socket
        .namespace()
        .to(room)
        .emit(&event, data)
        .map_err(|e| Refusal::bad_request(format!("cannot relay the data: {e}")))?;
    shared.stats.add(&shared.stats.publishes);
    shared
        .stats
        .add_n(&shared.stats.deliveries, delivered as u64);
    Ok(())
}

/// Whether `room` is the room of a socket's own id in the namespace (not only shaped
/// like one: a name of 20 URL-safe characters is a fine room name otherwise).
fn is_socket_room(socket: &SocketRef, room: &str) -> bool {
    socketio::Sid::parse(room).is_some_and(|id| socket.namespace().socket(id).is_some())
}

/// The client address the connection was admitted for, as the per-address limits count
/// it (IPv6: its network).
fn client_ip(socket: &SocketRef) -> std::net::IpAddr {
    let conn = socket.connection();
    conn.with_guard::<Ticket, _>(|t| t.map(Ticket::key))
        .unwrap_or_else(|| conn.remote_addr().ip())
}

/// The client address the connection was admitted for (not its IPv6 network).
fn client_addr(socket: &SocketRef) -> std::net::IpAddr {
    let conn = socket.connection();
    conn.with_guard::<Ticket, _>(|t| t.map(Ticket::ip))
        .unwrap_or_else(|| conn.remote_addr().ip())
}

/// Appends the argument the server vouches for: `{ "from": <user id or null> }`.
fn with_sender(args: RawArgs, from: Option<&str>) -> RawArgs {
    match args {
        RawArgs::Json(text, attachments) => {
            let mut out = Vec::with_capacity(text.len() + 32);
            out.extend_from_slice(&text);
            out.push(b',');
            // A JSON value always serializes.
            let _ = serde_json::to_writer(&mut out, &json!({ "from": from }));
            RawArgs::Json(Bytes::from(out), attachments)
        }
        RawArgs::Msgpack(raw, n) => {
            let mut out = BytesMut::with_capacity(raw.len() + 32);
            out.extend_from_slice(&raw);
            out.put_u8(0x81); // a map of one pair
            socketio_proto::msgpack::write_str(&mut out, "from");
            match from {
                Some(user) => socketio_proto::msgpack::write_str(&mut out, user),
                None => out.put_u8(0xc0), // nil
            }
            RawArgs::Msgpack(out.freeze(), n + 1)
        }
    }
}

/// An event over the socket's rate: refused with a retry hint; repeated violations
/// disconnect the socket.
fn rate_limited(shared: &Shared, socket: &SocketRef, ev: &Event, info: RateLimited) {
    shared.stats.add(&shared.stats.rate_limited);
    let outcome = Err(Refusal::rate_limited(info.retry_after));
    answer(shared, ev, &outcome);
    let max = shared.limits.max_rate_violations;
    if max > 0 && info.violations >= max {
        force_disconnect(shared, socket, "rate_limited", "rate limited");
    }
}

/// An event name a client or a backend may emit: not empty, not too long, not one of
/// the names the Socket.IO client keeps for itself.
pub(crate) fn check_event(shared: &Shared, event: &str) -> Result<(), Refusal> {
    if event.is_empty() {
        return Err(Refusal::bad_request("the event name is empty"));
    }
    let max = shared.limits.max_event_name_chars;
    if too_long(event, max) {
        return Err(Refusal::bad_request(format!(
            "the event name is {} characters; at most {max}",
            event.chars().count()
        )));
    }
    if socketio_proto::RESERVED_EVENTS.contains(&event) {
        return Err(Refusal::bad_request(format!(
            "{event:?} is reserved by the Socket.IO client"
        )));
    }
    Ok(())
}
