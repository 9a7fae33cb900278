//! `history` `{ conversation, before?, after?, limit? }` → `{ ok, messages, more }`,
//! oldest first: with `after`, the oldest `limit` above it; otherwise the newest `limit`
//! below `before` (or the end).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketio::{Event, SocketRef};
use store::ConversationId;

use super::{args, spawn_answer};
use crate::wire::MessageOut;
use crate::{ImError, Inner};

#[derive(Deserialize)]
struct History {
    conversation: ConversationId,
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// Messages a page holds at most, and by default.
pub(crate) const MAX_LIMIT: usize = 200;
const DEFAULT_LIMIT: usize = 50;

pub(crate) fn history(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    let parsed = args::<History>(
        &ev,
        "history takes { conversation, before?, after?, limit? } (numbers)",
    )
    .and_then(|h| match h.limit {
        Some(l) if l == 0 || l > MAX_LIMIT => {
            Err(ImError::BadRequest(format!("limit is 1 to {MAX_LIMIT}")))
        }
        _ => Ok(h),
    });
    spawn_answer(ev, async move {
        let h = parsed?;
        let conv = inner
            .cache
            .get(&inner.store, h.conversation)
            .await
            .map_err(|_| ImError::no_conversation())?;
        if conv.role(&user).is_none() {
            return Err(ImError::no_conversation());
        }
        let limit = h.limit.unwrap_or(DEFAULT_LIMIT);
        // One more than asked: whether there is more.
        let mut messages = inner
            .store
            .messages(h.conversation, h.after, h.before, limit + 1)
            .await?;
        let more = messages.len() > limit;
        if more {
            if h.after.is_some() {
                messages.truncate(limit);
            } else {
                messages.remove(0);
            }
        }
        let out: Vec<_> = messages.iter().map(MessageOut).collect();
        Ok(json!({ "messages": out, "more": more }))
    });
}
