//! `receipts` `{ conversation, seq }` → `{ ok, delivered, read }`: how many of the other
//! members (never the message's author) have message `seq` delivered to a device (or
//! read), and read. Any member may ask.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketio::{Event, SocketRef};
use store::ConversationId;

use super::{args, member_conv, spawn_answer};
use crate::{ImError, Inner};

#[derive(Deserialize)]
struct Receipts {
    conversation: ConversationId,
    seq: u64,
}

pub(crate) fn receipts(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    let parsed = args::<Receipts>(&ev, "receipts takes { conversation, seq } (numbers)");
    spawn_answer(ev, async move {
        let r = parsed?;
        let conv = member_conv(&inner, r.conversation, &user).await?;
        let last = conv.last_seq.load(Ordering::Acquire);
        if r.seq == 0 || r.seq > last {
            return Err(ImError::BadRequest(format!(
                "seq is 1 to the conversation's last_seq ({last})"
            )));
        }
        let kept = conv.authors.lock().get(&r.seq).cloned();
        let author = match kept {
            Some(a) => Some(a.to_string()),
            None => inner
                .store
                .messages(r.conversation, Some(r.seq - 1), None, 1)
                .await?
                .pop()
                .and_then(|m| m.sender),
        };
        let (delivered, read) = conv.count_at(r.seq, author.as_deref());
        Ok(json!({ "delivered": delivered, "read": read }))
    });
}
