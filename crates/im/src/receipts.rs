//! Watermarks (read, delivered) move in memory at once and are written behind, with the
//! receipts they cause, once per window: at most one write and one receipt per
//! (conversation, user) per `im.receipt_window`, however many messages were read or
//! delivered in it (`IM.md`, Receipts).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde_json::json;
use socketio::{SocketRef, SHARED_ACK_IDS};
use store::{ConversationId, Kind, Watermark};

use crate::cache::advance;
use crate::Inner;

/// Watermarks moved and not written yet. parking_lot mutex: held to note or take them.
#[derive(Default)]
pub(crate) struct Receipts {
    dirty: Mutex<HashMap<(ConversationId, Arc<str>), Moved>>,
}

#[derive(Clone, Copy)]
struct Moved {
    /// The lowest watermark moved from in the window: the messages after it, up to the
    /// new watermarks, are those newly covered.
    from: u64,
    read: Option<u64>,
    delivered: Option<u64>,
}

impl Receipts {
    /// Notes that `user`'s watermarks in `conversation` moved from `from` to these.
    pub(crate) fn moved(
        &self,
        conversation: ConversationId,
        user: &Arc<str>,
        from: u64,
        read: Option<u64>,
        delivered: Option<u64>,
    ) {
        let mut dirty = self.dirty.lock();
        let m = dirty.entry((conversation, user.clone())).or_insert(Moved {
            from,
            read: None,
            delivered: None,
        });
        m.from = m.from.min(from);
        m.read = m.read.max(read);
        m.delivered = m.delivered.max(delivered);
    }
}

/// A device acked a `message` (its shared ack id names the message): the user's
/// delivered watermark moves to it.
pub(crate) fn delivered(inner: &Inner, socket: &SocketRef, id: u64) {
    let Some(message) = id.checked_sub(SHARED_ACK_IDS) else {
        return;
    };
    let Some((conversation, seq)) = inner.recent.get(&(message as i64)) else {
        // Older than the cache remembers: the device's next read tells.
        return;
    };
    let (Some(user), Some(conv)) = (crate::user_of(socket), inner.cache.peek(conversation)) else {
        return;
    };
    let moved = conv.members.read().get(&*user).map(|m| {
        let before = m.delivered_seq.load(Ordering::Acquire);
        (before, advance(&m.delivered_seq, seq))
    });
    if let Some((before, now)) = moved {
        if now > before {
            inner
                .receipts
                .moved(conversation, &user, before, None, Some(now));
        }
    }
}

/// Writes and announces the moved watermarks every window, until the service is gone.
pub(crate) async fn run(inner: Weak<Inner>) {
    let window = match inner.upgrade() {
        Some(i) => i.config.receipt_window,
        None => return,
    };
    let mut tick = tokio::time::interval(window);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        flush(&inner).await;
    }
}

/// Writes the moved watermarks in one store job and sends the receipts they cause. A
/// write that fails keeps them for the next window.
pub(crate) async fn flush(inner: &Inner) {
    let moved: Vec<((ConversationId, Arc<str>), Moved)> =
        std::mem::take(&mut *inner.receipts.dirty.lock())
            .into_iter()
            .collect();
    if moved.is_empty() {
        return;
    }
    let marks = moved
        .iter()
        .map(|((conversation, user), m)| Watermark {
            conversation: *conversation,
            user: user.to_string(),
            read: m.read,
            delivered: m.delivered,
        })
        .collect();
    if let Err(e) = inner.store.watermarks(marks).await {
        tracing::warn!(error = %e, "im: watermarks not written; kept for the next window");
        for ((conversation, user), m) in moved {
            inner
                .receipts
                .moved(conversation, &user, m.from, m.read, m.delivered);
        }
        return;
    }
    let Some(ns) = inner.ns.get() else { return };
    // Large groups: one `receipt.counts` per covered author per conversation per window.
    let mut counts: HashMap<ConversationId, HashMap<Arc<str>, u64>> = HashMap::new();
    for ((conversation, user), m) in moved {
        let Some(conv) = inner.cache.peek(conversation) else {
            continue;
        };
        let (read, delivered) = {
            let members = conv.members.read();
            let Some(me) = members.get(&*user) else {
                continue;
            };
            (
                me.read_seq.load(Ordering::Acquire),
                me.delivered_seq
                    .load(Ordering::Acquire)
                    .max(me.read_seq.load(Ordering::Acquire)),
            )
        };
        let receipt = json!({
            "conversation": conversation,
            "user": &*user,
            "delivered_seq": delivered,
            "read_seq": read,
        });
        if conv.kind == Kind::Direct {
            let other = conv.members.read().keys().find(|u| ***u != *user).cloned();
            if let Some(other) = other {
                let _ = ns.to(crate::user_room(&other)).emit("receipt", (&receipt,));
            }
            continue;
        }
        // The authors of the messages the move covers, but the reader.
        let authors = conv.authors_between(m.from, delivered, &user);
        if authors.is_empty() {
            continue;
        }
        if conv.members.read().len() <= inner.config.receipt_detail_limit {
            let mut to = ns.broadcast();
            for (author, _) in &authors {
                to = to.to(crate::user_room(author));
            }
            let _ = to.emit("receipt", (&receipt,));
        } else {
            let latest = counts.entry(conversation).or_default();
            for (author, seq) in authors {
                let at = latest.entry(author).or_insert(seq);
                *at = (*at).max(seq);
            }
        }
    }
    for (conversation, authors) in counts {
        let Some(conv) = inner.cache.peek(conversation) else {
            continue;
        };
        for (author, seq) in authors {
            let (delivered, read) = conv.count_at(seq, Some(&author));
            let push = json!({
                "conversation": conversation,
                "seq": seq,
                "delivered": delivered,
                "read": read,
            });
            let _ = ns
                .to(crate::user_room(&author))
                .emit("receipt.counts", (&push,));
        }
    }
}
