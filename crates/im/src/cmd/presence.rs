//! `presence.subscribe` `{ users }` → `{ ok, presence: { [user]: { online, last_seen,
//! devices } } }` and `presence.unsubscribe` `{ users }` → `{ ok }`: a socket watches a
//! user by being in room `presence:u` ([`crate::presence`] pushes there), at most
//! `im.max_presence_subscriptions` users at once.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map};
use socketio::{Event, SocketRef};

use super::{args, check_user, spawn_answer};
use crate::presence::{watchers_room, Snapshot, WATCHERS_PREFIX};
use crate::{ImError, Inner};

#[derive(Deserialize)]
struct Users {
    users: Vec<String>,
}

/// The distinct users of `ev`'s `{ users }`, checked.
fn users(ev: &Event, event: &str, cap: usize) -> Result<BTreeSet<String>, ImError> {
    let Users { users } = args::<Users>(ev, &format!("{event} takes {{ users: [user ids] }}"))?;
    for u in &users {
        check_user(u, "each of users")?;
    }
    let users: BTreeSet<String> = users.into_iter().collect();
    if users.len() > cap {
        return Err(ImError::TooLarge(format!(
            "{event} takes at most {cap} users at once"
        )));
    }
    Ok(users)
}

pub(crate) fn subscribe(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let cap = inner.config.max_presence_subscriptions;
    let parsed = users(&ev, "presence.subscribe", cap).and_then(|users| {
        let watched: BTreeSet<String> = socket
            .rooms()
            .iter()
            .filter_map(|r| r.as_str().strip_prefix(WATCHERS_PREFIX).map(str::to_owned))
            .collect();
        let new = users.iter().filter(|u| !watched.contains(*u)).count();
        if watched.len() + new > cap {
            return Err(ImError::TooLarge(format!(
                "a socket watches at most {cap} users; this one watches {} and asked for {new} more",
                watched.len()
            )));
        }
        // Joined before the state is read: a change after the read is pushed.
        for u in &users {
            socket.join(watchers_room(u));
        }
        Ok(users)
    });
    spawn_answer(ev, async move {
        let users = parsed?;
        let found = snapshots(
            &inner,
            users.iter().map(|u| Arc::from(u.as_str())).collect(),
        )
        .await?;
        let mut presence = Map::with_capacity(found.len());
        for (user, s) in found {
            presence.insert(user.to_string(), s.to_json());
        }
        Ok(json!({ "presence": presence }))
    });
}

pub(crate) fn unsubscribe(inner: Arc<Inner>, socket: SocketRef, ev: Event) {
    let cap = inner.config.max_presence_subscriptions;
    let outcome = users(&ev, "presence.unsubscribe", cap).map(|users| {
        for u in &users {
            socket.leave(&watchers_room(u).into());
        }
        json!({})
    });
    crate::answer(&ev, outcome);
}

/// What watchers see of each of `users` now: from memory, or the store's `last_seen`
/// for users not seen lately (`null` for those never seen).
pub(crate) async fn snapshots(
    inner: &Inner,
    users: Vec<Arc<str>>,
) -> Result<Vec<(Arc<str>, Snapshot)>, ImError> {
    let mut out = Vec::with_capacity(users.len());
    let mut missing = Vec::new();
    for user in users {
        match inner.presence.snapshot(&user) {
            Some(s) => out.push((user, s)),
            None => missing.push(user),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let stored = inner
        .store
        .last_seen_of(missing.iter().map(|u| u.to_string()).collect())
        .await?;
    inner.presence.remember(&stored);
    let stored: std::collections::HashMap<String, i64> = stored.into_iter().collect();
    for user in missing {
        let last_seen = stored.get(&*user).copied();
        out.push((
            user,
            Snapshot {
                last_seen,
                ..Snapshot::NEVER_SEEN
            },
        ));
    }
    Ok(out)
}
