//! `typing` `{ conversation, typing: true | false }`: no ack needed (one is answered if
//! asked: `{ ok }`, or the error). Only a member may type; the set goes out in the next
//! window ([`crate::typing`]).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketio::{Event, SocketRef};
use store::ConversationId;
use tokio::time::Instant;

use super::{args, member_conv, spawn_answer};
use crate::cache::Conv;
use crate::Inner;

#[derive(Deserialize)]
struct Typing {
    conversation: ConversationId,
    typing: bool,
}

pub(crate) fn typing(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    let parsed = args::<Typing>(
        &ev,
        "typing takes { conversation, typing } (a number and a boolean)",
    );
    // A member of a conversation in use is noted here, without a task.
    if let Ok(t) = &parsed {
        if let Some(conv) = inner.cache.peek(t.conversation) {
            if conv.role(&user).is_some() {
                note(&inner, &conv, t, &user);
                crate::answer(&ev, Ok(json!({})));
                return;
            }
        }
    }
    spawn_answer(ev, async move {
        let t = parsed?;
        let conv = member_conv(&inner, t.conversation, &user).await?;
        note(&inner, &conv, &t, &user);
        Ok(json!({}))
    });
}

fn note(inner: &Inner, conv: &Conv, t: &Typing, user: &Arc<str>) {
    if t.typing {
        let until = Instant::now() + inner.config.typing_ttl;
        inner.typing.started(conv, user, until);
    } else {
        inner.typing.stopped(conv, user);
    }
    crate::relay::typing(inner, conv.id, user, t.typing);
}
