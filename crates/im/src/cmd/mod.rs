//! The client events, one module each: parse the arguments (a bad one is answered
//! `bad_request` and changes nothing), check the user's rights, apply, answer.

pub(crate) mod conversation;
pub(crate) mod history;
pub(crate) mod members;
pub(crate) mod presence;
mod read;
mod receipts;
pub(crate) mod send;
mod sync;
mod typing;

pub(crate) use send::MAX_CID;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use socketio::{Event, SocketRef};

use crate::cache::Conv;
use crate::{ImError, Inner};

/// A client event's handler: runs on the connection's task, and spawns what waits.
pub(crate) type Handler = fn(Arc<Inner>, SocketRef, Event);

/// Every client event of the service.
pub(crate) const HANDLERS: &[(&str, Handler)] = &[
    ("conversation.create", conversation::create),
    ("conversation.list", conversation::list),
    ("conversation.members", members::change),
    ("conversation.leave", members::leave),
    ("conversation.members.list", members::list),
    ("send", send::send),
    ("history", history::history),
    ("read", read::read),
    ("receipts", receipts::receipts),
    ("sync", sync::sync),
    ("typing", typing::typing),
    ("presence.subscribe", presence::subscribe),
    ("presence.unsubscribe", presence::unsubscribe),
];

/// A socket joined `/im`: the device policy, its user's room, and the rooms of its
/// conversations.
pub(crate) fn connected(inner: &Arc<Inner>, socket: &SocketRef) {
    let Some((user, device, platform)) = socket.with_data::<crate::ImUser, _>(|u| {
        u.map(|u| (u.user.clone(), u.device.clone(), u.platform))
    }) else {
        return;
    };
    let device = device.unwrap_or_else(|| Arc::from(socket.id().as_str()));
    let at_ms = now_ms();
    let kicked = inner.presence.connected_noticed(
        &user,
        socket.id(),
        device.clone(),
        platform,
        tokio::time::Instant::now(),
        at_ms,
    );
    // Closed meanwhile (its connection went between the namespace's insert and this):
    // its disconnect may have found nothing to remove, so it is removed here (twice does
    // no harm). The socket leaves its phase before its disconnect handlers run, and both
    // take the user's lock: one of the two sees the other.
    if !socket.connected() {
        inner.presence.disconnected(
            &user,
            socket.id(),
            false,
            tokio::time::Instant::now(),
            now_ms(),
            true,
        );
        return;
    }
    crate::relay::up(inner, &user, socket.id(), &device, platform, at_ms);
    if !kicked.is_empty() {
        // Each told who won: this new device, or (on many nodes) a later one elsewhere
        // when the socket put out is this one.
        for (crate::presence::Kicked(sid), notice) in kicked {
            if let Some(old) = socket.namespace().socket(sid) {
                tracing::debug!(%user, old = %sid, new = %socket.id(), "im: device put out by the device policy");
                // In order on the old socket's connection: the notice, then the disconnect.
                let _ = old.emit("kicked", (&notice,));
                old.disconnect();
            }
        }
    }
    socket.join(crate::user_room(&user));
    let inner = inner.clone();
    let socket = socket.clone();
    inner.store.stats().request("connect");
    tokio::spawn(store::stats::counted("connect", async move {
        match inner.store.conversations_of(&user).await {
            Ok(list) => {
                for (conversation, _) in list {
                    if inner.config.clustered {
                        inner.cache.baseline(conversation.id, conversation.last_seq);
                    }
                    let room = crate::conv_room(conversation.id);
                    socket.join(room.clone());
                    // Removed between the read and the join: the removal's leave may
                    // have come before this join, so the cached members decide.
                    let removed = inner
                        .cache
                        .peek(conversation.id)
                        .is_some_and(|c| c.role(&user).is_none());
                    if removed {
                        socket.leave(&room.into());
                    }
                }
            }
            // Its conversations' pushes are missed until it reconnects; `sync` catches up.
            Err(e) => tracing::warn!(error = %e, %user, "im: conversations not joined"),
        }
    }));
}

/// Conversation `id`, loaded if need be, if `user` is a member of it: `not_found`
/// otherwise, the same as for no such conversation.
pub(crate) async fn member_conv(
    inner: &Inner,
    id: store::ConversationId,
    user: &str,
) -> Result<Arc<Conv>, ImError> {
    let conv = inner.cache.get(&inner.store, id).await?;
    if conv.role(user).is_none() {
        return Err(ImError::no_conversation());
    }
    Ok(conv)
}

/// The first argument of `ev` read as `T`, or `bad_request` saying what `event` takes.
pub(crate) fn args<T: DeserializeOwned>(ev: &Event, takes: &str) -> Result<T, ImError> {
    ev.data::<T>()
        .map_err(|e| ImError::BadRequest(format!("{takes} ({e})")))
}

/// Runs `f` on a task of its own and answers `ev` with its outcome.
pub(crate) fn spawn_answer<F>(ev: Event, f: F)
where
    F: std::future::Future<Output = Result<serde_json::Value, ImError>> + Send + 'static,
{
    // The task counts its store calls as the event that spawned it.
    let op = store::stats::operation();
    tokio::spawn(store::stats::counted(op, async move {
        let outcome = f.await;
        crate::answer(&ev, outcome);
    }));
}

/// Checks a user id given by a client: 1 to 256 bytes, no control characters.
pub(crate) fn check_user(user: &str, what: &str) -> Result<(), ImError> {
    if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
        return Err(ImError::BadRequest(format!(
            "{what} must be a user id of 1 to 256 bytes, without control characters"
        )));
    }
    Ok(())
}

/// The milliseconds since the epoch now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
