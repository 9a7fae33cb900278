//! What the service keeps in memory of the conversations in use: their members, roles
//! and watermarks, their head (last sequence number and message), and the order in which
//! their messages are pushed. The hot path (`send` to a conversation in use) reads
//! nothing from the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use store::{ConversationId, Kind, MembersChanged, Message, Role, Store, StoreError};

use crate::limit::Bucket;

/// A member, as cached.
#[derive(Debug)]
pub(crate) struct CachedMember {
    pub(crate) role: Role,
    pub(crate) read_seq: AtomicU64,
    pub(crate) delivered_seq: AtomicU64,
}

/// A conversation in use.
pub(crate) struct Conv {
    pub(crate) id: ConversationId,
    pub(crate) kind: Kind,
    pub(crate) title: Option<String>,
    /// parking_lot lock: read to describe the group, written when its owner leaves.
    pub(crate) owner: RwLock<Option<Arc<str>>>,
    pub(crate) created_ms: i64,
    /// The last sequence number committed.
    pub(crate) last_seq: AtomicU64,
    /// The last sequence number when the conversation was cached: the authors of the
    /// messages up to it are not noted.
    pub(crate) loaded_seq: u64,
    /// Every member. parking_lot lock: held for a lookup or an update, never across
    /// `.await`.
    pub(crate) members: RwLock<HashMap<Arc<str>, CachedMember>>,
    /// The last message, once known. parking_lot mutex: a clone in or out.
    pub(crate) last: Mutex<Option<Arc<Message>>>,
    /// The authors of a group's recent messages, by sequence number (at most
    /// [`AUTHORS_KEPT`]): whom a watermark's move concerns. parking_lot mutex: held to
    /// note or read.
    pub(crate) authors: Mutex<BTreeMap<u64, Arc<str>>>,
    /// A direct conversation's members with the last message each wrote since it was
    /// cached: a receipt tells the other member something only when it covers one of
    /// theirs. parking_lot mutex: held to note or read.
    pub(crate) latest_by: Mutex<Vec<(Arc<str>, u64)>>,
    /// Messages committed but not pushed yet, because one before them is still on its
    /// way: pushes go out in sequence order. parking_lot mutex: held to queue or take.
    pub(crate) pushes: Mutex<Pushes>,
    /// When it was last used, on the cache's coarse clock (seconds).
    used: AtomicU64,
    /// Someone may be typing in it: a send takes the typing lock only then (set and
    /// cleared under that lock, by [`crate::typing::Typing`]).
    pub(crate) typing: AtomicBool,
    /// The fan-out budget (`im.conversation_fanout_rate`): each message costs its member
    /// count. `None` until the first send. parking_lot mutex: held to take from it.
    pub(crate) budget: Mutex<Option<Bucket>>,
    /// On many nodes: a look at a gap in the pushes is scheduled (one at a time).
    pub(crate) gap_check: AtomicBool,
}

/// The recent messages of a group whose authors are kept for its receipts: a watermark
/// that moves past older ones tells their authors nothing (their counts stay readable
/// with `receipts`).
pub(crate) const AUTHORS_KEPT: usize = 256;

/// The pushes of a conversation waiting for their turn.
pub(crate) struct Pushes {
    /// The sequence number to push next.
    pub(crate) next: u64,
    pub(crate) waiting: BTreeMap<u64, Box<dyn FnOnce() + Send>>,
    /// Whether a caller is running the ready pushes now.
    pub(crate) running: bool,
}

impl Conv {
    /// The member `user`'s role, if a member.
    pub(crate) fn role(&self, user: &str) -> Option<Role> {
        self.members.read().get(user).map(|m| m.role)
    }

    /// Notes that `author` wrote message `seq` (groups only: a direct conversation's
    /// receipts go to the other member).
    pub(crate) fn note_author(&self, seq: u64, author: &str) {
        if self.kind == Kind::Direct {
            let mut latest = self.latest_by.lock();
            match latest.iter_mut().find(|(a, _)| &**a == author) {
                Some(found) => found.1 = found.1.max(seq),
                None => latest.push((Arc::from(author), seq)),
            }
            return;
        }
        // The members' own key: no allocation per message.
        let Some(key) = self
            .members
            .read()
            .get_key_value(author)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let mut authors = self.authors.lock();
        authors.insert(seq, key);
        while authors.len() > AUTHORS_KEPT {
            authors.pop_first();
        }
    }

    /// Whether a watermark of a direct conversation that moved from `from` covers a
    /// message of `other`'s. Messages from before the conversation was cached have
    /// authors not noted here: a move over them counts as yes.
    pub(crate) fn covers_message_of(&self, other: &str, from: u64) -> bool {
        from < self.loaded_seq
            || self
                .latest_by
                .lock()
                .iter()
                .any(|(a, seq)| &**a == other && *seq > from)
    }

    /// The authors of the messages after `from` up to `to` (of those kept), but
    /// `reader`, each with the latest of theirs in the range.
    pub(crate) fn authors_between(&self, from: u64, to: u64, reader: &str) -> Vec<(Arc<str>, u64)> {
        if to <= from {
            return Vec::new();
        }
        let mut out: Vec<(Arc<str>, u64)> = Vec::new();
        for (seq, author) in self.authors.lock().range(from + 1..=to) {
            if &**author == reader {
                continue;
            }
            match out.iter_mut().find(|(a, _)| a == author) {
                Some(found) => found.1 = *seq,
                None => out.push((author.clone(), *seq)),
            }
        }
        out
    }

    /// How many members but `author` have message `seq` delivered (or read), and read:
    /// one pass over the members.
    pub(crate) fn count_at(&self, seq: u64, author: Option<&str>) -> (u64, u64) {
        let members = self.members.read();
        let (mut delivered, mut read) = (0, 0);
        for (user, m) in members.iter() {
            if Some(&**user) == author {
                continue;
            }
            let r = m.read_seq.load(Ordering::Acquire);
            let d = m.delivered_seq.load(Ordering::Acquire).max(r);
            delivered += u64::from(d >= seq);
            read += u64::from(r >= seq);
        }
        (delivered, read)
    }

    /// Makes the cached members what the store made them. Runs on the store's writer,
    /// in order with the sends it checks.
    pub(crate) fn apply(&self, change: &MembersChanged) {
        let mut members = self.members.write();
        for user in &change.removed {
            members.remove(&**user);
        }
        for m in &change.added {
            members
                .entry(Arc::from(m.user.as_str()))
                .or_insert(CachedMember {
                    role: m.role,
                    read_seq: AtomicU64::new(m.read_seq),
                    delivered_seq: AtomicU64::new(m.delivered_seq),
                });
        }
        for (user, role) in &change.roles {
            if let Some(m) = members.get_mut(&**user) {
                m.role = *role;
            }
        }
        drop(members);
        *self.owner.write() = change.conversation.owner.as_deref().map(Arc::from);
    }

    /// Message `seq` was committed elsewhere while nobody here is in the conversation:
    /// its turn passes with nothing pushed (a member who joins later starts after it,
    /// not from a stale place).
    pub(crate) fn passed(&self, seq: u64) {
        let mut p = self.pushes.lock();
        if seq >= p.next && !p.running {
            p.next = seq + 1;
            p.waiting.retain(|s, _| *s > seq);
        }
    }

    /// Runs `push` (the push of message `seq`) once every message before it has been
    /// pushed, and then any that waited for it. One caller at a time runs the pushes
    /// that are ready (the others only queue theirs), so they go out in order even
    /// though they run outside the lock. Returns whether pushes are left waiting for
    /// one before them (on many nodes, a message whose news has not come: see
    /// `relay`).
    ///
    /// A message whose turn has passed is pushed at once when it was stored before this
    /// copy was loaded (its news came after the load), and not at all when it came
    /// after (it was pushed: news of a message can come twice on many nodes, from its
    /// node and from the store).
    pub(crate) fn push_in_order(&self, seq: u64, push: Box<dyn FnOnce() + Send>) -> bool {
        {
            let mut p = self.pushes.lock();
            if seq < p.next {
                drop(p);
                if seq <= self.loaded_seq {
                    push();
                }
                return false;
            }
            p.waiting.insert(seq, push);
            if p.running {
                return false;
            }
            p.running = true;
        }
        loop {
            let ready = {
                let mut p = self.pushes.lock();
                let mut ready = Vec::new();
                loop {
                    let at = p.next;
                    let Some(next) = p.waiting.remove(&at) else {
                        break;
                    };
                    ready.push(next);
                    p.next += 1;
                }
                if ready.is_empty() {
                    p.running = false;
                    return !p.waiting.is_empty();
                }
                ready
            };
            // Outside the lock: a push encodes and queues, and may close slow sockets.
            for push in ready {
                push();
            }
        }
    }
}

/// Stripes of the locks that make a conversation's first use load it once.
const LOAD_STRIPES: usize = 256;

/// The conversations in use.
///
/// The changes of a conversation's members are applied to the cached copy by the store's
/// writer ([`Conv::apply`]), so a membership change gets the conversation first and holds
/// it until the writer is done. A conversation leaves the cache only when nothing but the
/// cache holds it and it has not been used for the idle time ([`Cache::evict_idle`]):
/// so no change, send or push in flight can find the copy it holds replaced by another,
/// and a copy loaded after an eviction reads what the store committed.
pub(crate) struct Cache {
    convs: DashMap<ConversationId, Arc<Conv>>,
    /// Seconds since the cache began, moved by [`Cache::tick`]: what a use stamps.
    clock: AtomicU64,
    /// A conversation loads under the lock of its stripe: concurrent first uses wait for
    /// one load, not one each.
    loading: Box<[tokio::sync::Mutex<()>]>,
    /// On many nodes: for conversations not cached, the last sequence number when a
    /// member's socket joined their room here (the lowest such): a load starts its pushes
    /// after it, so what was committed on other nodes meanwhile, and whose news was lost
    /// with the bus, is pushed from the store (see `relay`).
    baselines: DashMap<ConversationId, u64>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            convs: DashMap::new(),
            clock: AtomicU64::new(0),
            loading: (0..LOAD_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            baselines: DashMap::new(),
        }
    }
}

impl Cache {
    /// The conversation `id`, loaded from the store on first use.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when it does not exist; `Unavailable`.
    pub(crate) async fn get(
        &self,
        store: &Store,
        id: ConversationId,
    ) -> Result<Arc<Conv>, StoreError> {
        if let Some(c) = self.convs.get(&id) {
            return Ok(self.used(c.value()));
        }
        let _loading = self.loading[id.unsigned_abs() as usize % LOAD_STRIPES]
            .lock()
            .await;
        if let Some(c) = self.convs.get(&id) {
            return Ok(self.used(c.value()));
        }
        let row = store.conversation(id).await?.ok_or(StoreError::NotFound)?;
        let mut members = HashMap::with_capacity(row.member_count as usize);
        let mut after: Option<String> = None;
        loop {
            let page = store.members(id, after.clone(), 1000).await?;
            let done = page.len() < 1000;
            after = page.last().map(|m| m.user.clone());
            for m in page {
                members.insert(
                    Arc::from(m.user.as_str()),
                    CachedMember {
                        role: m.role,
                        read_seq: AtomicU64::new(m.read_seq),
                        delivered_seq: AtomicU64::new(m.delivered_seq),
                    },
                );
            }
            if done {
                break;
            }
        }
        let last = match row.last_seq {
            0 => None,
            _ => store.messages(id, None, None, 1).await?.pop().map(Arc::new),
        };
        let base = self
            .baselines
            .remove(&id)
            .map_or(row.last_seq, |(_, b)| b.min(row.last_seq));
        let conv = Arc::new(Conv {
            id,
            kind: row.kind,
            title: row.title,
            owner: RwLock::new(row.owner.as_deref().map(Arc::from)),
            created_ms: row.created_ms,
            last_seq: AtomicU64::new(row.last_seq),
            loaded_seq: base,
            members: RwLock::new(members),
            last: Mutex::new(last),
            authors: Mutex::new(BTreeMap::new()),
            latest_by: Mutex::new(Vec::new()),
            pushes: Mutex::new(Pushes {
                next: base + 1,
                waiting: BTreeMap::new(),
                running: false,
            }),
            used: AtomicU64::new(self.clock.load(Ordering::Relaxed)),
            typing: AtomicBool::new(false),
            budget: Mutex::new(None),
            gap_check: AtomicBool::new(false),
        });
        self.convs.insert(id, conv.clone());
        Ok(conv)
    }

    /// Drops conversation `id` from the cache: its next use loads it again.
    pub(crate) fn forget(&self, id: ConversationId) {
        self.convs.remove(&id);
    }

    /// The conversation `id` if it is in use.
    pub(crate) fn peek(&self, id: ConversationId) -> Option<Arc<Conv>> {
        self.convs.get(&id).map(|c| self.used(c.value()))
    }

    /// Stamps `conv` as used now (written only when the clock moved: a send or an ack
    /// to a busy conversation does not dirty the line each time); a clone for the caller.
    fn used(&self, conv: &Arc<Conv>) -> Arc<Conv> {
        let now = self.clock.load(Ordering::Relaxed);
        if conv.used.load(Ordering::Relaxed) != now {
            conv.used.store(now, Ordering::Relaxed);
        }
        conv.clone()
    }

    /// Moves the coarse clock to `secs` since the cache began.
    pub(crate) fn tick(&self, secs: u64) {
        self.clock.fetch_max(secs, Ordering::Relaxed);
    }

    /// Drops the conversations unused for `idle_secs` that nothing but the cache holds
    /// and `keep` does not keep; returns how many. Each shard is locked for writing while
    /// it is walked, so no one takes a clone of a conversation while its holders are
    /// counted.
    pub(crate) fn evict_idle(
        &self,
        idle_secs: u64,
        keep: impl Fn(ConversationId) -> bool,
    ) -> usize {
        let now = self.clock.load(Ordering::Relaxed);
        let mut evicted = 0;
        self.convs.retain(|id, conv| {
            let kept = Arc::strong_count(conv) > 1
                || now.saturating_sub(conv.used.load(Ordering::Relaxed)) < idle_secs
                || keep(*id);
            evicted += usize::from(!kept);
            kept
        });
        evicted
    }

    /// Notes that a member's socket joined conversation `id`'s room when its last
    /// sequence number was `last_seq` (on many nodes; see [`Cache::baselines`]).
    pub(crate) fn baseline(&self, id: ConversationId, last_seq: u64) {
        if self.convs.contains_key(&id) {
            return;
        }
        self.baselines
            .entry(id)
            .and_modify(|b| *b = (*b).min(last_seq))
            .or_insert(last_seq);
    }

    /// Forgets the baselines `keep` does not keep (their rooms have no member here).
    pub(crate) fn sweep_baselines(&self, keep: impl Fn(ConversationId) -> bool) {
        self.baselines.retain(|id, _| keep(*id));
    }

    /// The ids of the conversations cached.
    pub(crate) fn ids(&self) -> Vec<ConversationId> {
        self.convs.iter().map(|e| *e.key()).collect()
    }

    /// Reads `conv`'s members and owner again from the store (on many nodes, after
    /// another node changed them). Watermarks only move forward.
    pub(crate) async fn reload_members(
        &self,
        store: &Store,
        conv: &Conv,
    ) -> Result<(), StoreError> {
        let row = store
            .conversation(conv.id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut fresh = HashMap::with_capacity(row.member_count as usize);
        let mut after: Option<String> = None;
        loop {
            let page = store.members(conv.id, after.clone(), 1000).await?;
            let done = page.len() < 1000;
            after = page.last().map(|m| m.user.clone());
            fresh.extend(
                page.into_iter()
                    .map(|m| (m.user.clone(), (m.role, m.read_seq, m.delivered_seq))),
            );
            if done {
                break;
            }
        }
        let mut members = conv.members.write();
        members.retain(|user, _| fresh.contains_key(&**user));
        for (user, (role, read, delivered)) in fresh {
            match members.get_mut(user.as_str()) {
                Some(m) => {
                    m.role = role;
                    advance(&m.read_seq, read);
                    advance(&m.delivered_seq, delivered);
                }
                None => {
                    members.insert(
                        Arc::from(user.as_str()),
                        CachedMember {
                            role,
                            read_seq: AtomicU64::new(read),
                            delivered_seq: AtomicU64::new(delivered),
                        },
                    );
                }
            }
        }
        drop(members);
        *conv.owner.write() = row.owner.as_deref().map(Arc::from);
        Ok(())
    }

    /// Conversations cached.
    pub(crate) fn len(&self) -> usize {
        self.convs.len()
    }
}

#[cfg(test)]
impl Conv {
    /// An empty group `id` with no members, for tests.
    pub(crate) fn empty(id: ConversationId) -> Conv {
        Conv {
            id,
            kind: Kind::Group,
            title: None,
            owner: RwLock::new(None),
            created_ms: 0,
            last_seq: AtomicU64::new(0),
            loaded_seq: 0,
            members: RwLock::new(HashMap::new()),
            last: Mutex::new(None),
            authors: Mutex::new(BTreeMap::new()),
            latest_by: Mutex::new(Vec::new()),
            pushes: Mutex::new(Pushes {
                next: 1,
                waiting: BTreeMap::new(),
                running: false,
            }),
            used: AtomicU64::new(0),
            typing: AtomicBool::new(false),
            budget: Mutex::new(None),
            gap_check: AtomicBool::new(false),
        }
    }
}

/// Moves `cell` forward to `seq` (never back); returns the value now.
pub(crate) fn advance(cell: &AtomicU64, seq: u64) -> u64 {
    cell.fetch_max(seq, Ordering::AcqRel).max(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Conv {
        Conv::empty(1)
    }

    /// Pushes go out in sequence order; one behind a gap waits (and says so); one whose
    /// turn has passed goes out at once if it was stored before the copy was loaded,
    /// and not again otherwise (news of a message twice, on many nodes).
    #[test]
    fn pushes_in_order_once() {
        let mut c = conv();
        c.loaded_seq = 3;
        c.pushes.lock().next = 4;
        let out = Arc::new(Mutex::new(Vec::new()));
        let push = |seq: u64| {
            let out = out.clone();
            Box::new(move || out.lock().push(seq)) as Box<dyn FnOnce() + Send>
        };
        assert!(c.push_in_order(6, push(6)), "6 waits for 5");
        assert!(out.lock().is_empty());
        assert!(c.push_in_order(4, push(4)), "4 goes, 6 still waits");
        assert!(!c.push_in_order(5, push(5)));
        assert_eq!(*out.lock(), vec![4, 5, 6]);
        assert!(!c.push_in_order(5, push(5)), "pushed already: dropped");
        assert!(
            !c.push_in_order(2, push(2)),
            "stored before the load: pushed"
        );
        assert_eq!(*out.lock(), vec![4, 5, 6, 2]);
        // Committed elsewhere while nobody here was in it: its turn passes.
        c.passed(7);
        c.passed(8);
        assert!(!c.push_in_order(9, push(9)), "9 is next, not behind a gap");
        assert_eq!(*out.lock(), vec![4, 5, 6, 2, 9]);
    }

    /// A conversation unused for the idle time leaves the cache, and comes back from the
    /// store as it is there now; one still held somewhere stays, however idle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_conversations_leave_and_come_back() {
        let dir = std::env::temp_dir().join(format!("herald-im-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = store::Config {
            url: format!("sqlite://{}/im.db", dir.display()),
            ..store::Config::default()
        };
        let store = Store::open(&config, Arc::default()).unwrap();
        let (a, _) = store.create_direct("ann", "bob", 1).await.unwrap();
        let (b, _) = store.create_direct("ann", "cy", 1).await.unwrap();
        let cache = Cache::default();
        let held = cache.get(&store, a.id).await.unwrap();
        let idle = cache.get(&store, b.id).await.unwrap();
        drop(idle);
        assert_eq!(cache.len(), 2);

        // Not idle long enough: nothing leaves.
        cache.tick(5);
        assert_eq!(cache.evict_idle(10, |_| false), 0);
        // Used at 5: still not idle at 12; idle at 16.
        drop(cache.peek(b.id));
        cache.tick(12);
        assert_eq!(cache.evict_idle(10, |_| false), 0);
        cache.tick(16);
        assert_eq!(
            cache.evict_idle(10, |_| false),
            1,
            "the unused one, not the held one"
        );
        assert!(cache.peek(b.id).is_none());
        assert!(cache.peek(a.id).is_some(), "a held conversation stays");

        // Back on its next use, as the store has it now.
        store
            .append(store::NewMessage {
                conversation: b.id,
                sender: Some("cy".into()),
                cid: Some("c1".into()),
                body: store::Body::Json("1".into()),
                ts_ms: 2,
            })
            .await
            .unwrap();
        let back = cache.get(&store, b.id).await.unwrap();
        assert_eq!(back.last_seq.load(Ordering::Acquire), 1);
        assert_eq!(back.members.read().len(), 2);
        drop(back);
        drop(held);
        cache.tick(100);
        assert_eq!(cache.evict_idle(10, |_| false), 2);
        assert_eq!(cache.len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Sequence numbers handed out in order but pushed from several threads, each
    /// thread in its own order: the pushes run in sequence order, each once.
    #[test]
    fn pushes_go_out_in_order_from_many_threads() {
        const N: u64 = 4000;
        let conv = Arc::new(conv());
        let out = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (conv, out) = (conv.clone(), out.clone());
                std::thread::spawn(move || {
                    let mut mine: Vec<u64> = (1..=N).filter(|s| s % 4 == t).collect();
                    if t % 2 == 1 {
                        mine.reverse();
                    }
                    for seq in mine {
                        let out = out.clone();
                        conv.push_in_order(
                            seq,
                            Box::new(move || {
                                // Slow enough for the others to queue behind it.
                                for _ in 0..500 {
                                    std::hint::spin_loop();
                                }
                                out.lock().push(seq);
                            }),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*out.lock(), (1..=N).collect::<Vec<_>>());
        assert!(!conv.pushes.lock().running);
    }
}
