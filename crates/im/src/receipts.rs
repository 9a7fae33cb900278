//! Watermarks (read, delivered) move in memory at once. The receipts they cause go out
//! once per window: at most one per (conversation, user) per `im.receipt_window`,
//! however many messages were read or delivered in it (`IM.md`, Receipts). Each
//! conversation has its own phase in the window (one of [`SLOTS`]), and a tick every
//! window / [`SLOTS`] announces one phase: a busy server's receipts go out as a steady
//! stream, not as one burst per window that holds the acks and pushes queued behind it
//! (in a 10,000-client mixed run that burst was most of the ack p99). By conversation,
//! not by reader, so that an author's receipts from all the readers of a conversation
//! still leave together, in one write.
//! They are
//! written to the store behind, once per `im.watermark_flush` (at most one row per
//! (conversation, user) per flush, in jobs of a bounded size so that sends are not held
//! behind one long write): a crash loses at most that much of their moves, never a
//! message, and a client's next `read` moves them again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use socketio::{SocketRef, SHARED_ACK_IDS};
use store::{ConversationId, Kind, Watermark};

use crate::cache::advance;
use crate::Inner;

/// Phases of the receipt window: each (conversation, user) is announced in one of them.
pub(crate) const SLOTS: usize = 10;

type Moves = HashMap<(ConversationId, Arc<str>), Moved>;

/// Watermarks moved: not announced yet (by phase), not written yet. parking_lot
/// mutexes: held to note or take them.
#[derive(Default)]
pub(crate) struct Receipts {
    dirty: [Mutex<Moves>; SLOTS],
    unsaved: Mutex<HashMap<(ConversationId, Arc<str>), Unsaved>>,
}

/// A (conversation, user)'s watermarks to write.
#[derive(Default, Clone, Copy)]
struct Unsaved {
    read: Option<u64>,
    delivered: Option<u64>,
}

/// Watermark rows one store job writes at most.
const ROWS_PER_JOB: usize = 250;

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
        let slot = conversation.rem_euclid(SLOTS as i64) as usize;
        let mut dirty = self.dirty[slot].lock();
        let m = dirty.entry((conversation, user.clone())).or_insert(Moved {
            from,
            read: None,
            delivered: None,
        });
        m.from = m.from.min(from);
        m.read = m.read.max(read);
        m.delivered = m.delivered.max(delivered);
        drop(dirty);
        self.unsaved_moved(conversation, user, read, delivered);
    }

    fn unsaved_moved(
        &self,
        conversation: ConversationId,
        user: &Arc<str>,
        read: Option<u64>,
        delivered: Option<u64>,
    ) {
        let mut unsaved = self.unsaved.lock();
        let u = unsaved.entry((conversation, user.clone())).or_default();
        u.read = u.read.max(read);
        u.delivered = u.delivered.max(delivered);
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

/// Announces the moved watermarks, a phase of the window at a time, and writes them
/// every flush interval, until the service is gone.
pub(crate) async fn run(inner: Weak<Inner>) {
    let (window, every) = match inner.upgrade() {
        Some(i) => (i.config.receipt_window, i.config.watermark_flush),
        None => return,
    };
    let mut tick = tokio::time::interval((window / SLOTS as u32).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut saved = tokio::time::Instant::now();
    for slot in (0..SLOTS).cycle() {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        announce(&inner, slot..slot + 1).await;
        if saved.elapsed() >= every {
            saved = tokio::time::Instant::now();
            save(&inner).await;
        }
    }
}

/// Announces and writes everything held: for the drain.
pub(crate) async fn flush(inner: &Inner) {
    announce(inner, 0..SLOTS).await;
    save(inner).await;
}

/// Writes the watermarks moved since the last write, in jobs of [`ROWS_PER_JOB`]; a
/// write that fails keeps its rows for the next.
async fn save(inner: &Inner) {
    let unsaved: Vec<((ConversationId, Arc<str>), Unsaved)> =
        std::mem::take(&mut *inner.receipts.unsaved.lock())
            .into_iter()
            .collect();
    // One job after the other: the sends that come meanwhile are committed between
    // them, not behind all of them.
    for chunk in unsaved.chunks(ROWS_PER_JOB) {
        let marks = chunk
            .iter()
            .map(|((conversation, user), u)| Watermark {
                conversation: *conversation,
                user: user.to_string(),
                read: u.read,
                delivered: u.delivered,
            })
            .collect();
        if let Err(e) = inner.store.watermarks(marks).await {
            tracing::warn!(error = %e, rows = chunk.len(), "im: watermarks not written; kept for the next flush");
            for ((conversation, user), u) in chunk {
                inner
                    .receipts
                    .unsaved_moved(*conversation, user, u.read, u.delivered);
            }
        }
    }
}

/// Receipts sent between two yields to the runtime: a window's receipts (one per user
/// who moved, tens of thousands on a busy server) must not hold a worker thread for
/// long.
const RECEIPTS_PER_YIELD: usize = 256;

/// Sends the receipts the watermarks moved in the window cause, for the phases `slots`.
async fn announce(inner: &Inner, slots: std::ops::Range<usize>) {
    let mut moved: Vec<((ConversationId, Arc<str>), Moved)> = Vec::new();
    for slot in slots {
        moved.extend(std::mem::take(&mut *inner.receipts.dirty[slot].lock()));
    }
    if moved.is_empty() {
        return;
    }
    let Some(ns) = inner.ns.get() else { return };
    // Large groups: one `receipt.counts` per covered author per conversation per window.
    let mut counts: HashMap<ConversationId, HashMap<Arc<str>, u64>> = HashMap::new();
    for (n, ((conversation, user), m)) in moved.into_iter().enumerate() {
        if n % RECEIPTS_PER_YIELD == RECEIPTS_PER_YIELD - 1 {
            tokio::task::yield_now().await;
        }
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
            // A move over the reader's own messages only (sending reads up to the
            // message sent) tells the other member nothing.
            if let Some(other) = other.filter(|o| conv.covers_message_of(o, m.from)) {
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
