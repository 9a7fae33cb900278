//! `conversation.create` and `conversation.list`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use socketio::{Event, SocketRef};
use store::Kind;

use super::{args, check_user, now_ms, spawn_answer};
use crate::cache::Conv;
use crate::wire::{kind, ConversationOut};
use crate::{conv_room, user_room, ImError, Inner};

#[derive(Deserialize)]
pub(crate) struct Create {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) with: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) members: Option<Vec<String>>,
}

/// The longest group title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// `conversation.create` `{ type: "direct", with }` or `{ type: "group", title?, members }`:
/// a direct conversation is unique per pair (creating it again returns it); the members
/// of a new conversation get `conversation` with `change: "added"`.
pub(crate) fn create(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    let parsed = args::<Create>(
        &ev,
        "conversation.create takes { type: \"direct\", with } or { type: \"group\", title?, members }",
    )
    .and_then(|c| check_create(&inner, &user, c));
    spawn_answer(ev, async move {
        let (kind, with, title, members) = parsed?;
        let mine = inner.store.conversations_of(&user).await?.len();
        if mine >= inner.config.max_conversations_per_user {
            return Err(ImError::TooLarge(format!(
                "a user may be in at most {} conversations",
                inner.config.max_conversations_per_user
            )));
        }
        let conv = make(
            &inner,
            Some(&user),
            (kind, with, title, members),
            Some(socket.id().as_str()),
        )
        .await?;
        Ok(json!({ "conversation": ConversationOut { conv: &conv, user: &user } }))
    });
}

/// Creates the conversation `checked` describes, by `creator` (a group's owner; `None`
/// for the backend: a group without an owner, a direct conversation between `with` and
/// the first member), and tells its members but the socket `except` (`added`, their
/// sockets joined to its room). A direct conversation that exists is returned as it is.
pub(crate) async fn make(
    inner: &Inner,
    creator: Option<&str>,
    checked: Checked,
    except: Option<&str>,
) -> Result<Arc<Conv>, ImError> {
    let (kind, with, title, members) = checked;
    let (row, created) = match kind {
        Kind::Direct => {
            let a = creator
                .or(members.first().map(String::as_str))
                .unwrap_or_default();
            inner
                .store
                .create_direct(a, with.as_deref().unwrap_or_default(), now_ms())
                .await?
        }
        Kind::Group => (
            inner
                .store
                .create_group(creator, title, members, now_ms())
                .await?,
            true,
        ),
    };
    let conv = inner.cache.get(&inner.store, row.id).await?;
    if let Some(ns) = inner.ns.get() {
        let members: Vec<Arc<str>> = conv.members.read().keys().cloned().collect();
        let mut rooms = ns.broadcast();
        for m in &members {
            rooms = rooms.to(user_room(m));
        }
        // Joined before anyone is answered, also when the conversation existed (the
        // other member creating it at the same moment may not have joined yet): every
        // message sent once a creator has the id reaches both.
        rooms.join(conv_room(row.id));
        if created {
            // Every member of a new conversation is at watermark 0: one view for all.
            let view = ConversationOut {
                conv: &conv,
                user: members.first().map_or("", |m| &**m),
            };
            let push = json!({ "conversation": view, "change": "added" });
            if let Some(except) = except {
                rooms = rooms.except(except.to_owned());
            }
            let _ = rooms.emit("conversation", (&push,));
        }
    }
    Ok(conv)
}

pub(crate) type Checked = (Kind, Option<String>, Option<String>, Vec<String>);

pub(crate) fn check_create(inner: &Inner, user: &str, c: Create) -> Result<Checked, ImError> {
    let kind = kind(&c.kind).ok_or_else(|| {
        ImError::BadRequest(format!("type is \"direct\" or \"group\", not {:?}", c.kind))
    })?;
    match kind {
        Kind::Direct => {
            let with = c
                .with
                .ok_or_else(|| ImError::BadRequest("a direct conversation needs `with`".into()))?;
            check_user(&with, "with")?;
            if with == user {
                return Err(ImError::BadRequest(
                    "a direct conversation is with someone else".into(),
                ));
            }
            Ok((kind, Some(with), None, Vec::new()))
        }
        Kind::Group => {
            let members = c
                .members
                .ok_or_else(|| ImError::BadRequest("a group needs `members` (a list)".into()))?;
            if members.len() + 1 > inner.config.max_group_members {
                return Err(ImError::TooLarge(format!(
                    "a group has at most {} members",
                    inner.config.max_group_members
                )));
            }
            for m in &members {
                check_user(m, "each member")?;
            }
            if let Some(t) = &c.title {
                if t.chars().count() > MAX_TITLE_CHARS {
                    return Err(ImError::BadRequest(format!(
                        "a title has at most {MAX_TITLE_CHARS} characters"
                    )));
                }
            }
            Ok((kind, None, c.title, members))
        }
    }
}

/// `conversation.list` `{}`: every conversation of the user, most recently active first.
pub(crate) fn list(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    spawn_answer(ev, async move {
        Ok(json!({ "conversations": summaries(&inner, &user).await? }))
    });
}

/// The user's conversations as objects, most recently active first.
pub(crate) async fn summaries(inner: &Inner, user: &str) -> Result<Vec<Value>, ImError> {
    let rows = inner.store.conversations_of(user).await?;
    let mut convs = Vec::with_capacity(rows.len());
    for (row, _) in rows {
        convs.push(inner.cache.get(&inner.store, row.id).await?);
    }
    let activity = |c: &crate::cache::Conv| {
        c.last
            .lock()
            .as_ref()
            .map_or(c.created_ms, |m| m.ts_ms.max(c.created_ms))
    };
    convs.sort_by_key(|c| std::cmp::Reverse((activity(c), c.id)));
    Ok(convs
        .iter()
        .map(|c| json!(ConversationOut { conv: c, user }))
        .collect())
}
