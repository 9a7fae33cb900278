//! `conversation.members` (add, remove, and, as an extension, promote and demote),
//! `conversation.leave` and `conversation.members.list`.
//!
//! A change is made on the store's writer, in order with the sends: the cached members
//! and the conversation's room change there too, so a member removed neither stores nor
//! receives a message committed after the removal. Then the users concerned are told
//! with `conversation` pushes: `added` and `removed` to those users, `updated` to those
//! whose role changed and, in a group of at most [`LISTED_MEMBERS`] members (whose
//! objects list the members), to every other member.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketio::{Event, Namespace, SocketRef};
use store::{ConversationId, MemberChange, MembersChanged};

use super::{args, check_user, member_conv, spawn_answer};
use crate::cache::Conv;
use crate::wire::{ConversationOut, LISTED_MEMBERS};
use crate::{conv_room, user_room, ImError, Inner};

/// Users one `conversation.members` names at most.
pub(crate) const MAX_NAMED: usize = 10_000;

#[derive(Deserialize)]
struct Change {
    conversation: ConversationId,
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    promote: Vec<String>,
    #[serde(default)]
    demote: Vec<String>,
}

/// `conversation.members` `{ conversation, add?, remove?, promote?, demote? }` →
/// `{ ok, conversation }`.
pub(crate) fn change(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    let parsed = args::<Change>(
        &ev,
        "conversation.members takes { conversation, add?, remove?, promote?, demote? } \
         (lists of user ids)",
    )
    .and_then(|c| {
        Ok((
            c.conversation,
            checked(c.add, c.remove, c.promote, c.demote)?,
        ))
    });
    spawn_answer(ev, async move {
        let (id, change) = parsed?;
        let conv = member_conv(&inner, id, &user).await?;
        let change = MemberChange {
            by: Some(user.to_string()),
            max_members: inner.config.max_group_members as u64,
            ..change
        };
        let changed = apply(&inner, &conv, change).await?;
        announce(&inner, &conv, &changed, Some(&socket));
        Ok(json!({ "conversation": ConversationOut { conv: &conv, user: &user } }))
    });
}

/// The change the lists ask for, once each list's users are valid, each named once,
/// and not too many (`by` and `max_members` left to the caller).
pub(crate) fn checked(
    add: Vec<String>,
    remove: Vec<String>,
    promote: Vec<String>,
    demote: Vec<String>,
) -> Result<MemberChange, ImError> {
    let mut c = MemberChange {
        add,
        remove,
        promote,
        demote,
        ..MemberChange::default()
    };
    let named = c.add.len() + c.remove.len() + c.promote.len() + c.demote.len();
    if named > MAX_NAMED {
        return Err(ImError::TooLarge(format!(
            "one change names at most {MAX_NAMED} users"
        )));
    }
    let mut seen = HashSet::with_capacity(named);
    for list in [&mut c.add, &mut c.remove, &mut c.promote, &mut c.demote] {
        let mut mine = HashSet::with_capacity(list.len());
        list.retain(|u| mine.insert(u.clone()));
        for u in list.iter() {
            check_user(u, "each user")?;
            if !seen.insert(u.clone()) {
                return Err(ImError::BadRequest(format!(
                    "{u:?} is named in two lists of one change"
                )));
            }
        }
    }
    Ok(c)
}

#[derive(Deserialize)]
struct Leave {
    conversation: ConversationId,
}

/// `conversation.leave` `{ conversation }` → `{ ok }`. An owner who leaves hands the
/// group to its longest-standing admin, or else its longest-standing member.
pub(crate) fn leave(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    let parsed = args::<Leave>(&ev, "conversation.leave takes { conversation }");
    spawn_answer(ev, async move {
        let l = parsed?;
        let conv = member_conv(&inner, l.conversation, &user).await?;
        let change = MemberChange {
            by: Some(user.to_string()),
            leave: true,
            max_members: inner.config.max_group_members as u64,
            ..MemberChange::default()
        };
        let changed = apply(&inner, &conv, change).await?;
        announce(&inner, &conv, &changed, Some(&socket));
        Ok(json!({}))
    });
}

#[derive(Deserialize)]
struct List {
    conversation: ConversationId,
    after: Option<String>,
    limit: Option<usize>,
}

/// Members a page holds at most, and by default.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// `conversation.members.list` `{ conversation, after?, limit? }` → `{ ok, members,
/// roles, more }`: members in user id order after `after`; `roles` (an extension) names
/// each listed member's role.
pub(crate) fn list(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let Some(user) = crate::user_of(&socket) else {
        return;
    };
    let parsed = args::<List>(
        &ev,
        "conversation.members.list takes { conversation, after?: user, limit?: 1..1000 }",
    )
    .and_then(|l| match l.limit {
        Some(n) if n == 0 || n > MAX_PAGE => {
            Err(ImError::BadRequest(format!("limit is 1 to {MAX_PAGE}")))
        }
        _ => Ok(l),
    });
    spawn_answer(ev, async move {
        let l = parsed?;
        member_conv(&inner, l.conversation, &user).await?;
        let limit = l.limit.unwrap_or(DEFAULT_PAGE);
        let mut page = inner
            .store
            .members(l.conversation, l.after, limit + 1)
            .await?;
        let more = page.len() > limit;
        page.truncate(limit);
        let roles: serde_json::Map<String, serde_json::Value> = page
            .iter()
            .map(|m| (m.user.clone(), json!(m.role.as_str())))
            .collect();
        let members: Vec<String> = page.into_iter().map(|m| m.user).collect();
        Ok(json!({ "members": members, "roles": roles, "more": more }))
    });
}

/// Makes `change` in the store; on its writer, in order with the sends, the cached
/// members and the conversation's room follow.
pub(crate) async fn apply(
    inner: &Arc<Inner>,
    conv: &Arc<Conv>,
    change: MemberChange,
) -> Result<MembersChanged, ImError> {
    let applied = Arc::new(AtomicBool::new(false));
    let on_writer = {
        let (conv, ns, applied) = (conv.clone(), inner.ns.get().cloned(), applied.clone());
        move |c: &MembersChanged| {
            applied.store(true, Ordering::Release);
            conv.apply(c);
            if let Some(ns) = &ns {
                rooms(ns, conv.id, c);
            }
        }
    };
    match inner.store.change_members(conv.id, change, on_writer).await {
        Ok(c) => {
            crate::relay::members_changed(inner, conv.id);
            Ok(c)
        }
        Err(e) => {
            if applied.load(Ordering::Acquire) {
                // Made in memory, then the commit failed: the cached copy is dropped (the
                // next use loads what the store has); sockets rejoin at reconnect.
                tracing::error!(conversation = conv.id, error = %e, "im: a member change was not committed");
                inner.cache.forget(conv.id);
            }
            Err(e.into())
        }
    }
}

/// The conversation's room follows its members: the sockets of those added join it, of
/// those removed leave it.
fn rooms(ns: &Arc<Namespace>, id: ConversationId, c: &MembersChanged) {
    let room = conv_room(id);
    if !c.added.is_empty() {
        let mut to = ns.broadcast();
        for m in &c.added {
            to = to.to(user_room(&m.user));
        }
        to.join(room.clone());
    }
    if !c.removed.is_empty() {
        let mut to = ns.broadcast();
        for user in &c.removed {
            to = to.to(user_room(user));
        }
        to.leave(room);
    }
}

/// Tells the users concerned (see the module's doc); `by` made the change and has its
/// answer in the ack.
pub(crate) fn announce(inner: &Inner, conv: &Conv, c: &MembersChanged, by: Option<&SocketRef>) {
    let Some(ns) = inner.ns.get() else {
        return;
    };
    let except = |op: socketio::BroadcastOperator| match by {
        Some(s) => op.except(s.id().as_str().to_owned()),
        None => op,
    };
    let push = |user: &str, change: &str| {
        let view = json!({ "conversation": ConversationOut { conv, user }, "change": change });
        let _ = except(ns.to(user_room(user))).emit("conversation", (&view,));
    };
    // The members added start at the same watermark: one view serves them all.
    if let Some(first) = c.added.first() {
        let view = json!({
            "conversation": ConversationOut { conv, user: &first.user },
            "change": "added",
        });
        let mut to = ns.broadcast();
        for m in &c.added {
            to = to.to(user_room(&m.user));
        }
        let _ = except(to).emit("conversation", (&view,));
    }
    for user in &c.removed {
        push(user, "removed");
    }
    let told: HashSet<&str> = c
        .added
        .iter()
        .map(|m| m.user.as_str())
        .chain(c.removed.iter().map(String::as_str))
        .collect();
    let others: Vec<Arc<str>> = {
        let members = conv.members.read();
        if members.len() <= LISTED_MEMBERS {
            members.keys().cloned().collect()
        } else {
            c.roles.iter().map(|(u, _)| Arc::from(u.as_str())).collect()
        }
    };
    for user in others.iter().filter(|u| !told.contains(&***u)) {
        push(user, "updated");
    }
}
