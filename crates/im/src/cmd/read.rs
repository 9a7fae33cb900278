//! `read` `{ conversation, seq }` → `{ ok, read_seq, unread }`: the read watermark moves
//! forward only (a lower `seq` changes nothing, one past the last message is clamped to
//! it); the reader's other devices get `read`, the others a receipt in the next window.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketio::{Event, SocketRef};
use store::ConversationId;

use super::{args, member_conv, spawn_answer};
use crate::cache::advance;
use crate::wire::ConversationOut;
use crate::{user_room, ImError, Inner};

#[derive(Deserialize)]
struct Read {
    conversation: ConversationId,
    seq: u64,
}

pub(crate) fn read(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    let parsed = args::<Read>(&ev, "read takes { conversation, seq } (numbers)");
    spawn_answer(ev, async move {
        let r = parsed?;
        let conv = member_conv(&inner, r.conversation, &user).await?;
        let last = conv.last_seq.load(Ordering::Acquire);
        let moved = {
            let members = conv.members.read();
            let m = members.get(&*user).ok_or_else(ImError::no_conversation)?;
            let before = m.read_seq.load(Ordering::Acquire);
            (before, advance(&m.read_seq, r.seq.min(last)))
        };
        let (read_seq, unread) = ConversationOut::read_and_unread(&conv, &user);
        if moved.1 > moved.0 {
            inner
                .receipts
                .moved(r.conversation, &user, moved.0, Some(moved.1), None);
            if let Some(ns) = inner.ns.get() {
                let push = json!({
                    "conversation": r.conversation,
                    "read_seq": read_seq,
                    "unread": unread,
                });
                let _ = ns
                    .to(user_room(&user))
                    .except(socket.id().as_str().to_owned())
                    .emit("read", (&push,));
            }
        }
        Ok(json!({ "read_seq": read_seq, "unread": unread }))
    });
}
