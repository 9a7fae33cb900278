//! Typing (`IM.md`, Typing), aggregated on the server: a `typing` event only changes a
//! set in memory; once per `im.typing_window` the conversations whose set of typers
//! changed get it, whole, as one volatile push to their room. Fifty members typing in a
//! conversation of a thousand cost the others one push per window, not one per
//! keystroke each.
//!
//! A user stops counting as typing on `typing: false`, on sending (any message of theirs
//! committed to the conversation), when the last of their sockets leaves `/im`,
//! `im.typing_ttl` after their last `typing: true`, and when they are no longer a
//! member.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use store::ConversationId;
use tokio::time::Instant;

use crate::cache::Conv;
use crate::Inner;

/// The typers of every conversation where someone types. parking_lot mutex: held to
/// note a change or to take a window's pushes, never across `.await`.
#[derive(Default)]
pub(crate) struct Typing {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    convs: HashMap<ConversationId, ConvTyping>,
    /// Conversations whose typers changed since the last window.
    changed: HashSet<ConversationId>,
}

#[derive(Default)]
struct ConvTyping {
    /// Who types, and until when (`typing_ttl` after their last `true`); sorted, so the
    /// set goes out in one order.
    typers: BTreeMap<Arc<str>, Instant>,
    /// The set last pushed: a window whose set is the same pushes nothing.
    announced: Vec<Arc<str>>,
}

impl Typing {
    /// `user` typed (`typing: true`) in `conv`: typing until `until`.
    pub(crate) fn started(&self, conv: &Conv, user: &Arc<str>, until: Instant) {
        let conversation = conv.id;
        let mut s = self.state.lock();
        conv.typing.store(true, Ordering::Relaxed);
        let c = s.convs.entry(conversation).or_default();
        if c.typers.insert(user.clone(), until).is_none() {
            s.changed.insert(conversation);
        }
    }

    /// `user` stopped typing in `conv` (`typing: false`, or a message sent). Without a
    /// lock when nobody types there.
    pub(crate) fn stopped(&self, conv: &Conv, user: &str) {
        if !conv.typing.load(Ordering::Relaxed) {
            return;
        }
        let conversation = conv.id;
        let mut s = self.state.lock();
        let removed = s
            .convs
            .get_mut(&conversation)
            .is_some_and(|c| c.typers.remove(user).is_some());
        if removed {
            s.changed.insert(conversation);
        }
    }

    /// The last of `user`'s sockets left: they type nowhere.
    pub(crate) fn gone(&self, user: &str) {
        let mut s = self.state.lock();
        let State { convs, changed } = &mut *s;
        for (id, c) in convs.iter_mut() {
            if c.typers.remove(user).is_some() {
                changed.insert(*id);
            }
        }
    }

    /// Ends one window at `now`: drops the typers whose time is up or who are no longer
    /// members (`is_member`), and returns each conversation whose set is not the one last
    /// pushed, with its set now.
    fn window(
        &self,
        now: Instant,
        is_member: impl Fn(ConversationId, &str) -> bool,
        untracked: impl Fn(ConversationId),
    ) -> Vec<(ConversationId, Vec<Arc<str>>)> {
        let mut s = self.state.lock();
        let State { convs, changed } = &mut *s;
        for (id, c) in convs.iter_mut() {
            let before = c.typers.len();
            c.typers
                .retain(|user, until| *until > now && is_member(*id, user));
            if c.typers.len() != before {
                changed.insert(*id);
            }
        }
        let mut out = Vec::with_capacity(changed.len());
        for id in changed.drain() {
            let Some(c) = convs.get_mut(&id) else {
                continue;
            };
            let now_typing: Vec<Arc<str>> = c.typers.keys().cloned().collect();
            if now_typing != c.announced {
                c.announced = now_typing.clone();
                out.push((id, now_typing));
            }
            if c.typers.is_empty() && c.announced.is_empty() {
                convs.remove(&id);
                untracked(id);
            }
        }
        out
    }

    /// Conversations where someone types or whose last push was not an empty set.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().convs.len()
    }
}

/// Pushes each window's changed sets of typers, until the service is gone.
pub(crate) async fn run(inner: Weak<Inner>) {
    let window = match inner.upgrade() {
        Some(i) => i.config.typing_window,
        None => return,
    };
    let mut tick = tokio::time::interval(window.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let pushes = inner.typing.window(
            Instant::now(),
            |id, user| {
                // A conversation out of the cache has nobody typing in it for long: its
                // typers time out.
                inner
                    .cache
                    .peek(id)
                    .is_none_or(|conv| conv.role(user).is_some())
            },
            // Under the typing lock, as `started` sets it.
            |id| {
                if let Some(conv) = inner.cache.peek(id) {
                    conv.typing.store(false, Ordering::Relaxed);
                }
            },
        );
        let Some(ns) = inner.ns.get() else { continue };
        for (id, users) in pushes {
            let users: Vec<&str> = users.iter().map(|u| &**u).collect();
            let push = json!({ "conversation": id, "users": users });
            inner.stats.typing_pushes.fetch_add(1, Ordering::Relaxed);
            // Volatile: a client that cannot take it now gets the next window's set. On
            // many nodes each pushes to its own sockets (each knows every node's typers).
            let mut to = ns.to(crate::conv_room(id)).volatile();
            if inner.config.clustered {
                to = to.local();
            }
            let _ = to.emit("typing", (&push,));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str) -> Arc<str> {
        Arc::from(u)
    }

    fn names(sets: &[(ConversationId, Vec<Arc<str>>)]) -> Vec<(ConversationId, Vec<String>)> {
        sets.iter()
            .map(|(id, users)| (*id, users.iter().map(|u| u.to_string()).collect()))
            .collect()
    }

    /// The conversations of a test, and the `untracked` of [`Typing::window`] for them.
    fn convs(ids: &[ConversationId]) -> Vec<Conv> {
        ids.iter().map(|&id| Conv::empty(id)).collect()
    }

    fn untrack(convs: &[Conv]) -> impl Fn(ConversationId) + '_ {
        move |id| {
            for c in convs.iter().filter(|c| c.id == id) {
                c.typing.store(false, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn one_push_per_window_and_only_on_change() {
        let t = Typing::default();
        let cs = convs(&[1]);
        let c1 = &cs[0];
        let now = Instant::now();
        let ttl = now + Duration::from_secs(5);
        let all = |_: ConversationId, _: &str| true;
        // Many keystrokes of two users in one window: one push with both.
        for _ in 0..20 {
            t.started(c1, &user("bob"), ttl);
            t.started(c1, &user("ann"), ttl);
        }
        assert!(c1.typing.load(Ordering::Relaxed));
        assert_eq!(
            names(&t.window(now, all, untrack(&cs))),
            [(1, vec!["ann".to_owned(), "bob".to_owned()])]
        );
        // Typing on, the same set: nothing.
        t.started(c1, &user("ann"), ttl);
        assert!(t.window(now, all, untrack(&cs)).is_empty());
        // One stops, starts again within the window: the set is what was pushed.
        t.stopped(c1, "bob");
        t.started(c1, &user("bob"), ttl);
        assert!(t.window(now, all, untrack(&cs)).is_empty());
        // Stopping (or sending): the smaller set.
        t.stopped(c1, "bob");
        assert_eq!(
            names(&t.window(now, all, untrack(&cs))),
            [(1, vec!["ann".to_owned()])]
        );
        // The last socket gone: the empty set goes out, and with it the conversation is
        // no longer tracked: a send there takes no lock.
        t.gone("ann");
        assert!(c1.typing.load(Ordering::Relaxed));
        assert_eq!(names(&t.window(now, all, untrack(&cs))), [(1, vec![])]);
        assert_eq!(t.tracked(), 0);
        assert!(!c1.typing.load(Ordering::Relaxed));
        assert!(t.window(now, all, untrack(&cs)).is_empty());
    }

    #[test]
    fn typers_time_out_and_leave_with_their_membership() {
        let t = Typing::default();
        let cs = convs(&[1, 2, 9]);
        let (c1, c2, c9) = (&cs[0], &cs[1], &cs[2]);
        let now = Instant::now();
        let all = |_: ConversationId, _: &str| true;
        t.started(c1, &user("ann"), now + Duration::from_secs(5));
        t.started(c1, &user("bob"), now + Duration::from_secs(1));
        t.started(c2, &user("cy"), now + Duration::from_secs(5));
        assert_eq!(t.window(now, all, untrack(&cs)).len(), 2);
        // bob's time is up.
        let later = now + Duration::from_secs(2);
        assert_eq!(
            names(&t.window(later, all, untrack(&cs))),
            [(1, vec!["ann".to_owned()])]
        );
        // cy is no longer a member of 2.
        let pushes = t.window(later, |id, u| !(id == 2 && u == "cy"), untrack(&cs));
        assert_eq!(names(&pushes), [(2, vec![])]);
        // Stopping someone who is not typing changes nothing.
        t.stopped(c1, "dan");
        t.stopped(c9, "ann");
        assert!(t.window(later, all, untrack(&cs)).is_empty());
        assert!(c1.typing.load(Ordering::Relaxed) && !c2.typing.load(Ordering::Relaxed));
    }
}
