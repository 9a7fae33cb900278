//! `sync` `{ since?: { [conversation]: seq } }` → `{ ok, conversations, messages, more }`:
//! a summary of every conversation first, then the messages after each `since` entry,
//! oldest first per conversation, up to a page; `more` means call again with the
//! advanced `since`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketio::{Event, SocketRef};

use super::{args, spawn_answer};
use crate::wire::MessageOut;
use crate::{ImError, Inner};

#[derive(Deserialize, Default)]
struct Sync {
    /// Conversation ids (as JSON object keys, so strings) to their last seen seq.
    #[serde(default)]
    since: BTreeMap<String, u64>,
}

/// Messages one page of `sync` holds at most, over every conversation.
const PAGE: usize = 500;

pub(crate) fn sync(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    let parsed = if ev.args::<()>().is_ok() {
        Ok(Sync::default())
    } else {
        args::<Sync>(&ev, "sync takes { since?: { [conversation]: seq } }")
    };
    spawn_answer(ev, async move {
        let s = parsed?;
        let mut since = Vec::with_capacity(s.since.len());
        for (k, seq) in s.since {
            let id = k.parse::<i64>().map_err(|_| {
                ImError::BadRequest(format!("since's keys are conversation ids, not {k:?}"))
            })?;
            since.push((id, seq));
        }
        let conversations = super::conversation::summaries(&inner, &user).await?;
        // Only the user's own conversations (a removed member gets nothing new).
        let from: Vec<_> = since
            .into_iter()
            .filter(|(id, _)| {
                inner
                    .cache
                    .peek(*id)
                    .is_some_and(|conv| conv.role(&user).is_some())
            })
            .collect();
        // One read for the page, one more message than fits to know whether there is more.
        let mut messages = inner.store.messages_after(from, PAGE + 1).await?;
        let more = messages.len() > PAGE;
        messages.truncate(PAGE);
        let out: Vec<_> = messages.iter().map(MessageOut).collect();
        Ok(json!({ "conversations": conversations, "messages": out, "more": more }))
    });
}
