//! `send` `{ conversation, cid, body }` → `{ ok, id, seq, ts }` once the message is
//! committed; the conversation's other sockets get `message`, in sequence order, with an
//! ack that confirms delivery to the device.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketio::{Event, SocketRef, SHARED_ACK_IDS};
use store::{ConversationId, Message, NewMessage, StoreError};
use tokio::time::Instant;

use super::{args, member_conv, now_ms, spawn_answer};
use crate::cache::advance;
use crate::cache::Conv;
use crate::limit::Bucket;
use crate::wire::{BodyIn, MessageOut};
use crate::{conv_room, ImError, Inner};

#[derive(Deserialize)]
struct Send {
    conversation: ConversationId,
    cid: String,
    body: BodyIn,
}

/// The longest cid, in bytes.
pub(crate) const MAX_CID: usize = 64;

pub(crate) fn send(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    // Storm control first, before anything is parsed: a flood is refused at the least
    // cost, on this task, and nothing of it is stored.
    if let Err(wait) = inner.presence.take_send(&user, Instant::now()) {
        inner
            .stats
            .rate_limited_user
            .fetch_add(1, Ordering::Relaxed);
        crate::answer(
            &ev,
            Err(ImError::RateLimited {
                message: format!(
                    "over the send rate ({}/s, bursts of {}); try again later",
                    inner.config.send_rate, inner.config.send_burst
                ),
                retry_after: wait,
            }),
        );
        return;
    }
    let parsed = args::<Send>(&ev, "send takes { conversation, cid, body }").and_then(|s| {
        if s.cid.is_empty() || s.cid.len() > MAX_CID {
            return Err(ImError::BadRequest(format!("cid is 1 to {MAX_CID} bytes")));
        }
        let body = s.body.into_store().ok_or_else(|| {
            ImError::BadRequest(
                "binary data is accepted as the whole body, not inside a JSON value".into(),
            )
        })?;
        if body.len() > inner.config.max_body_bytes {
            return Err(ImError::TooLarge(format!(
                "a body is at most {} bytes encoded",
                inner.config.max_body_bytes
            )));
        }
        Ok(NewMessage {
            conversation: s.conversation,
            sender: Some(user.to_string()),
            cid: Some(s.cid),
            body,
            ts_ms: now_ms(),
        })
    });
    let message = match parsed {
        Ok(m) => m,
        Err(e) => return crate::answer(&ev, Err(e)),
    };
    // A conversation in use is checked and the message queued for the store here, in
    // the order the socket sent them; another is loaded first. Either way the sender's
    // membership is checked again on the store's writer, where membership changes are
    // made: a member removed stores nothing after the removal.
    let cached = inner.cache.peek(message.conversation);
    let early = match &cached {
        Some(conv) if conv.role(&user).is_some() => {
            if let Err(e) = within_budget(&inner, conv) {
                return crate::answer(&ev, Err(e));
            }
            Some(append(&inner, conv, Some(&user), message.clone()))
        }
        _ => None,
    };
    spawn_answer(ev, async move {
        let conv = match cached {
            Some(c) => c,
            None => member_conv(&inner, message.conversation, &user).await?,
        };
        if conv.role(&user).is_none() {
            return Err(ImError::no_conversation());
        }
        let stored = match early {
            Some(appending) => appending.await,
            None => {
                within_budget(&inner, &conv)?;
                append(&inner, &conv, Some(&user), message.clone()).await
            }
        };
        // Nothing fanned out (not stored, or stored before): the budget is given back.
        let stored = stored.inspect_err(|_| give_back(&inner, &conv))?;
        let reply = json!({ "id": stored.id, "seq": stored.seq, "ts": stored.ts_ms });
        if stored.duplicate {
            give_back(&inner, &conv);
        } else {
            committed(&inner, &conv, message, &stored, Some(socket.id().as_str()));
        }
        Ok(reply)
    });
}

/// A message is committed: the conversation's head and the sender's watermark move, and
/// the message is pushed, in sequence order, to every socket of the conversation but
/// `except` (the sending one); on many nodes, the others are told.
pub(crate) fn committed(
    inner: &Arc<Inner>,
    conv: &Arc<Conv>,
    message: NewMessage,
    stored: &store::Stored,
    except: Option<&str>,
) {
    let message = Arc::new(Message {
        id: stored.id,
        conversation: message.conversation,
        seq: stored.seq,
        sender: message.sender,
        cid: message.cid,
        body: message.body,
        ts_ms: stored.ts_ms,
    });
    crate::relay::committed(inner, &message);
    noted(inner, conv, &message, true);
    push(inner, conv, message, except.map(str::to_owned));
}

/// What a message committed changes in `conv`'s cached copy: its head, the sender's
/// typing and read watermark (the receipts it causes are announced by the node that
/// committed it: `here`), the message's place for the devices' acks.
pub(crate) fn noted(inner: &Inner, conv: &Conv, message: &Arc<Message>, here: bool) {
    advance(&conv.last_seq, message.seq);
    {
        let mut last = conv.last.lock();
        if last.as_ref().is_none_or(|l| l.seq < message.seq) {
            *last = Some(message.clone());
        }
    }
    // Sending reads the conversation up to the message sent, and ends the sender's typing.
    if let Some(sender) = &message.sender {
        inner.typing.stopped(conv, sender);
        conv.note_author(message.seq, sender);
        // The members' own key for the sender: no allocation per message.
        let moved = conv
            .members
            .read()
            .get_key_value(sender.as_str())
            .map(|(user, m)| {
                (
                    user.clone(),
                    m.read_seq.fetch_max(message.seq, Ordering::AcqRel),
                )
            });
        if let Some((user, from)) = moved.filter(|(_, f)| here && *f < message.seq) {
            inner
                .receipts
                .moved(message.conversation, &user, from, Some(message.seq), None);
        }
    }
    inner
        .recent
        .insert(message.id, (message.conversation, message.seq));
}

/// Pushes `message` to this node's sockets of its conversation but `except`, in
/// sequence order; one encoding, one ack id that names the message.
pub(crate) fn push(
    inner: &Arc<Inner>,
    conv: &Arc<Conv>,
    message: Arc<Message>,
    except: Option<String>,
) {
    let ns = inner.ns.get().cloned();
    let clustered = inner.config.clustered;
    let gap = conv.push_in_order(
        message.seq,
        Box::new(move || {
            let Some(ns) = ns else { return };
            // Every other socket of the conversation, the sender's other devices
            // included; on many nodes, this node's (each pushes to its own).
            let mut to = ns.to(conv_room(message.conversation));
            if clustered {
                to = to.local();
            }
            if let Some(except) = except {
                to = to.except(except);
            }
            let _ = to
                .ack_id(SHARED_ACK_IDS + message.id as u64)
                .emit("message", (MessageOut(&message),));
        }),
    );
    if gap {
        crate::relay::gap(inner, conv);
    }
}

/// Takes a message's fan-out from `conv`'s budget (`im.conversation_fanout_rate`: a
/// message costs its member count, a second's worth at most), or refuses it
/// `rate_limited`: one flooding group is held to its rate, and the others keep theirs.
pub(crate) fn within_budget(inner: &Inner, conv: &Conv) -> Result<(), ImError> {
    let Some((rate, cost)) = fanout(inner, conv) else {
        return Ok(());
    };
    let now = Instant::now();
    let mut budget = conv.budget.lock();
    budget
        .get_or_insert_with(|| Bucket::full(rate, now))
        .take(cost, rate, rate, now)
        .map_err(|wait| {
            inner
                .stats
                .rate_limited_conversation
                .fetch_add(1, Ordering::Relaxed);
            ImError::RateLimited {
                message: "this conversation is over its budget of deliveries per second; \
                          try again later"
                    .to_owned(),
                retry_after: wait,
            }
        })
}

/// Gives a message's fan-out back to `conv`'s budget: it was not stored, or was stored
/// before (a retry), so it goes out to nobody.
pub(crate) fn give_back(inner: &Inner, conv: &Conv) {
    let Some((rate, cost)) = fanout(inner, conv) else {
        return;
    };
    if let Some(budget) = conv.budget.lock().as_mut() {
        budget.give(cost, rate);
    }
}

/// The conversation budget's rate and a message's cost there (its member count), or
/// `None` when `im.conversation_fanout_rate` is 0 (no budget).
fn fanout(inner: &Inner, conv: &Conv) -> Option<(f64, f64)> {
    let rate = inner.config.conversation_fanout_rate;
    (rate > 0.0).then(|| (rate, conv.members.read().len().max(1) as f64))
}

/// Queues `message` for the store, to be stored if its sender (`None` for a system
/// message) is still a member when the writer comes to it.
pub(crate) fn append(
    inner: &Inner,
    conv: &Arc<Conv>,
    sender: Option<&Arc<str>>,
    message: NewMessage,
) -> impl std::future::Future<Output = Result<store::Stored, StoreError>> + std::marker::Send + 'static
{
    let (conv, sender) = (conv.clone(), sender.cloned());
    inner.store.append_if(message, move || match &sender {
        Some(user) if conv.role(user).is_none() => Err(StoreError::NotFound),
        _ => Ok(()),
    })
}
