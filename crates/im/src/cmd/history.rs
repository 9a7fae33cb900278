//! `history` `{ conversation, before?, after?, limit? }` → `{ ok, messages, more }`,
//! oldest first: with `after`, the oldest `limit` above it; otherwise the newest `limit`
//! below `before` (or the end).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketio::{Event, SocketRef};
use store::{ConversationId, Message};

use super::{args, member_conv, spawn_answer};
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
    );
    spawn_answer(ev, async move {
        let h = parsed?;
        member_conv(&inner, h.conversation, &user).await?;
        let (messages, more) = page(&inner, h.conversation, h.before, h.after, h.limit).await?;
        let out: Vec<_> = messages.iter().map(MessageOut).collect();
        Ok(json!({ "messages": out, "more": more }))
    });
}

/// A page of conversation `id`'s messages, oldest first, and whether there are more.
///
/// # Errors
///
/// `bad_request` for a limit out of 1..[`MAX_LIMIT`]; `unavailable`.
pub(crate) async fn page(
    inner: &Inner,
    id: ConversationId,
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
) -> Result<(Vec<Message>, bool), ImError> {
    let limit = match limit {
        Some(l) if l == 0 || l > MAX_LIMIT => {
            return Err(ImError::BadRequest(format!("limit is 1 to {MAX_LIMIT}")))
        }
        l => l.unwrap_or(DEFAULT_LIMIT),
    };
    // One more than asked: whether there is more.
    let mut messages = inner.store.messages(id, after, before, limit + 1).await?;
    let more = messages.len() > limit;
    if more {
        if after.is_some() {
            messages.truncate(limit);
        } else {
            messages.remove(0);
        }
    }
    Ok((messages, more))
}
