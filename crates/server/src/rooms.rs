//! What clients may do on namespace `/`: every socket joins `user:<sub>`; the events
//! `subscribe` (room), `unsubscribe` (room) and `publish` (room, event, data) are checked
//! against the client's token and answered by an ack, `{ ok: true }` or
//! `{ ok: false, error: { code, message } }`.
//!
//! Rooms named `user:...` are joined by the server only: a client is in its own and can
//! never subscribe to another. A publish reaches every socket in the room, the sender's
//! included when it is subscribed, and its data is passed on as it came (binary too),
//! encoded once for every recipient.

use std::sync::Arc;

use serde_json::json;
use socketio::{Builder, ConnectError, ConnectRequest, Event, SocketRef};

use crate::auth::Identity;
use crate::state::Shared;

/// The prefix of the rooms the server puts each user's sockets in.
pub const USER_PREFIX: &str = "user:";

/// The room of user `id`.
pub fn user_room(id: &str) -> String {
    format!("{USER_PREFIX}{id}")
}

/// A refused client request: its code and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `bad_request`, `forbidden`, `too_many_rooms`.
    pub code: &'static str,
    /// Human-readable.
    pub message: String,
}

impl Refusal {
    fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal {
            code: "bad_request",
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal {
            code: "forbidden",
            message: message.into(),
        }
    }
}

/// The ack body for an outcome.
fn reply(outcome: &Result<(), Refusal>) -> serde_json::Value {
    match outcome {
        Ok(()) => json!({ "ok": true }),
        Err(r) => json!({ "ok": false, "error": { "code": r.code, "message": r.message } }),
    }
}

/// Adds namespace `/` with the connect middleware and the client events.
pub(crate) fn install(builder: Builder, shared: Arc<Shared>) -> Builder {
    let auth = shared.clone();
    let sub = shared.clone();
    let unsub = shared.clone();
    let publ = shared;
    builder
        .ns("/", |socket, _req| {
            if let Some(user) = identity(socket).user.as_deref() {
                socket.join(user_room(user));
            }
        })
        .middleware(move |req| authenticate(&auth, req))
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

/// The connect middleware: the token in the auth payload (`{ token }`) decides who the
/// client is, or why it is refused.
fn authenticate(shared: &Shared, req: &ConnectRequest) -> Result<(), ConnectError> {
    let auth = req.auth_json();
    let token = match auth.get("token") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t.as_str()),
        Some(_) => {
            let e = crate::auth::AuthError::Malformed("`token` must be a string".to_owned());
            return Err(refuse(shared, &e));
        }
    };
    match shared.verifier.authenticate(token) {
        Ok(identity) => {
            req.set_data(identity);
            Ok(())
        }
        Err(e) => Err(refuse(shared, &e)),
    }
}

fn refuse(shared: &Shared, e: &crate::auth::AuthError) -> ConnectError {
    shared.stats.auth_refused(e.code());
    tracing::debug!(code = e.code(), error = %e, "connection refused");
    ConnectError::new(e.to_string())
        .with_data(json!({ "code": e.code(), "message": e.to_string() }))
}

/// The socket's identity (set by the middleware on every accepted connection).
fn identity(socket: &SocketRef) -> Arc<Identity> {
    socket
        .data::<Arc<Identity>>()
        .unwrap_or_else(|| Arc::new(Identity::nobody()))
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
    if !identity(socket).rooms.matches(&room) {
        return Err(Refusal::forbidden(format!(
            "your token does not allow subscribing to {room:?}"
        )));
    }
    let rooms = socket.rooms();
    if rooms.iter().any(|r| r.as_str() == room) {
        return Ok(());
    }
    let own = rooms
        .iter()
        .filter(|r| !r.as_str().starts_with(USER_PREFIX))
        .count();
    let max = shared.limits.max_rooms_per_socket;
    if own >= max {
        return Err(Refusal {
            code: "too_many_rooms",
            message: format!("a socket may subscribe to at most {max} rooms"),
        });
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
    let usage = || Refusal::bad_request("publish takes (room, event, data)");
    let (room, event) = ev.args::<(String, String)>().map_err(|_| usage())?;
    check_room(shared, &room)?;
    check_event(shared, &event)?;
    if !identity(socket).publish.matches(&room) {
        return Err(Refusal::forbidden(format!(
            "your token does not allow publishing to {room:?}"
        )));
    }
    let data = ev.raw_args_after(2).ok_or_else(usage)?;
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
