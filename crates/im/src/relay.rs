//! The service on many nodes (`[cluster]`, with PostgreSQL as the shared store): what a
//! node tells the others, as server-side emits on `/im` (the adapter carries them to
//! every node), and what it does with what they tell it.
//!
//! - **Messages.** The node that commits a message pushes it to its own sockets and
//!   tells the others ([`MESSAGE`], the message whole); each pushes it to its own
//!   sockets of the conversation, in sequence order, through the same queue as its own
//!   messages. A message waiting behind one whose news has not come after [`GAP_WAIT`]
//!   has the missing ones read from the store and pushed first (the store's sequence
//!   numbers are contiguous: a committed `n` means every message before it is
//!   committed), and one whose turn has passed is not pushed again: so every member
//!   online on any node gets every message, in order, once. When the bus comes back
//!   after an outage ([`crate::Im::cluster_bus`]), every conversation with members
//!   here is read from the store after the last message pushed here.
//! - **Members.** A change of a conversation's members ([`MEMBERS`]): the nodes that
//!   hold it read its members again (the rooms follow by the adapter's `socketsJoin`).
//! - **Typing** ([`TYPING`]): each node keeps every conversation's typers and pushes the
//!   set to its own sockets, once per window.
//! - **Presence** ([`UP`], [`DOWN`], [`SESSIONS`], [`ALIVE`]): each node keeps every
//!   user's sessions on every node, applies the device policy to its own sockets (the
//!   newest session wins, whichever node it is on), and pushes to its own watchers. The
//!   sessions of a node not heard from for [`NODE_SILENT`] are dropped; when the bus
//!   comes back, the nodes tell each other their sessions again.
//!
//! A node tells the others everything it commits, not only those with members of the
//! conversation: each message costs one delivery per node on the bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{json, Value};
use socketio::{Namespace, ServerEvent, Sid};
use store::{Body, ConversationId, Message};
use tokio::time::Instant;

use crate::cache::Conv;
use crate::presence::{Platform, RemoteSession};
use crate::{conv_room, Inner};

/// A message committed: `{ c, i, s, f, k, t, j | b }` (conversation, id, sequence
/// number, sender, cid, time, the JSON body's text or the binary body in base64).
pub(crate) const MESSAGE: &str = "herald:im:message";
/// A conversation's members changed: `{ c }`.
pub(crate) const MEMBERS: &str = "herald:im:members";
/// A user typed or stopped: `{ c, u, on }` (`on` again every half TTL while typing).
pub(crate) const TYPING: &str = "herald:im:typing";
/// A session connected: `{ n, u, sid, d, p, at }` (node, user, socket, device, platform,
/// connect time in ms).
pub(crate) const UP: &str = "herald:im:up";
/// A session left: `{ n, u, sid, closed }`.
pub(crate) const DOWN: &str = "herald:im:down";
/// A node's sessions, all of them: `{ n, s: [[u, sid, d, p, at]], again }`, answered with
/// the others' (when the bus comes up; `again` when it comes back: the others then catch
/// up from the store too).
pub(crate) const SESSIONS: &str = "herald:im:sessions";
/// A node is alive: `{ n }`, every [`BEAT`].
pub(crate) const ALIVE: &str = "herald:im:alive";

/// How long a push waits for the news of a message before it, before the store is read.
pub(crate) const GAP_WAIT: Duration = Duration::from_millis(100);
/// How often a node says it is alive.
pub(crate) const BEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is gone: its sessions are dropped.
pub(crate) const NODE_SILENT: Duration = Duration::from_secs(5);
/// Messages read from the store at a time to fill a gap.
const FILL_PAGE: usize = 200;

/// What the node knows of the others.
pub(crate) struct Relay {
    /// This node's id in what it tells.
    pub(crate) node: Arc<str>,
    /// When each other node was last heard from. parking_lot mutex: held to note or
    /// sweep.
    heard: Mutex<HashMap<Arc<str>, Instant>>,
    /// Whether this node's bus is up: while it is down, silence says nothing of the
    /// others.
    bus_up: AtomicBool,
    /// The nodes dropped for their silence. parking_lot mutex: held to note or take one.
    dropped: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Whether the bus was ever up here (a later `back` is a return).
    was_up: AtomicBool,
    /// When the others were last told that a user types in a conversation (see
    /// [`typing`]). parking_lot mutex: held to look up or note one; swept every beat.
    typing_told: Mutex<HashMap<(ConversationId, Arc<str>), Instant>>,
}

impl Relay {
    pub(crate) fn new() -> Relay {
        Relay {
            node: Arc::from(format!("{:016x}", rand::random::<u64>()).as_str()),
            heard: Mutex::default(),
            bus_up: AtomicBool::new(false),
            dropped: Mutex::default(),
            was_up: AtomicBool::new(false),
            typing_told: Mutex::default(),
        }
    }

    /// The bus went down or came up; up, every node known gets a new [`NODE_SILENT`] to
    /// be heard from.
    pub(crate) fn bus(&self, up: bool) {
        self.bus_up.store(up, Ordering::Release);
        if up {
            let now = Instant::now();
            for at in self.heard.lock().values_mut() {
                *at = now;
            }
        }
    }

    /// Notes `node` heard from now; whether it is back after it was dropped for its
    /// silence (its sessions are then asked again).
    fn heard(&self, node: &str) -> bool {
        let now = Instant::now();
        let mut heard = self.heard.lock();
        match heard.get_mut(node) {
            Some(at) => {
                *at = now;
                false
            }
            None => {
                heard.insert(Arc::from(node), now);
                drop(heard);
                self.dropped.lock().remove(node)
            }
        }
    }

    /// The nodes not heard from for [`NODE_SILENT`], forgotten (none while the bus is
    /// down).
    fn silent(&self) -> Vec<Arc<str>> {
        if !self.bus_up.load(Ordering::Acquire) {
            return Vec::new();
        }
        let now = Instant::now();
        let mut gone = Vec::new();
        self.heard.lock().retain(|node, at| {
            let alive = now.duration_since(*at) < NODE_SILENT;
            if !alive {
                gone.push(node.clone());
            }
            alive
        });
        self.dropped.lock().extend(gone.iter().cloned());
        gone
    }
}

/// Tells the other nodes, when there are any to tell.
fn tell(inner: &Inner, event: &str, body: Value) {
    if !inner.config.clustered {
        return;
    }
    if let Some(ns) = inner.ns.get() {
        if let Err(e) = ns.server_side_emit(event, (body,)) {
            tracing::warn!(error = %e, event, "im: the other nodes were not told");
        }
    }
}

/// A message was committed here.
pub(crate) fn committed(inner: &Inner, m: &Message) {
    if !inner.config.clustered {
        return;
    }
    let mut out = json!({
        "c": m.conversation, "i": m.id, "s": m.seq, "f": m.sender, "k": m.cid, "t": m.ts_ms,
    });
    match &m.body {
        Body::Json(text) => out["j"] = Value::from(text.as_str()),
        Body::Binary(b) => {
            out["b"] = Value::from(base64::engine::general_purpose::STANDARD.encode(b));
        }
    }
    tell(inner, MESSAGE, out);
}

/// A message as another node told it.
fn message_in(v: &Value) -> Option<Message> {
    let body = match (
        v.get("j").and_then(Value::as_str),
        v.get("b").and_then(Value::as_str),
    ) {
        (Some(text), None) => Body::Json(text.to_owned()),
        (None, Some(b64)) => {
            Body::Binary(base64::engine::general_purpose::STANDARD.decode(b64).ok()?)
        }
        _ => return None,
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(Message {
        id: v.get("i")?.as_i64()?,
        conversation: v.get("c")?.as_i64()?,
        seq: v.get("s")?.as_u64().filter(|s| *s > 0)?,
        sender: text("f"),
        cid: text("k"),
        body,
        ts_ms: v.get("t")?.as_i64()?,
    })
}

/// Conversation `id`'s members changed here.
pub(crate) fn members_changed(inner: &Inner, id: ConversationId) {
    tell(inner, MEMBERS, json!({ "c": id }));
}

/// `user` typed (`on`) or stopped in conversation `id`, here.
///
/// A typer's `typing: true` comes at every keystroke or so; the others are told once,
/// then again every half of `im.typing_ttl` while it goes on (each node counts a typer
/// for the TTL after the last news).
pub(crate) fn typing(inner: &Inner, id: ConversationId, user: &Arc<str>, on: bool) {
    if !inner.config.clustered {
        return;
    }
    let now = Instant::now();
    {
        let mut told = inner.relay.typing_told.lock();
        if on {
            let every = inner.config.typing_ttl / 2;
            match told.get_mut(&(id, user.clone())) {
                Some(at) if now.duration_since(*at) < every => return,
                Some(at) => *at = now,
                None => {
                    told.insert((id, user.clone()), now);
                }
            }
        } else {
            told.remove(&(id, user.clone()));
        }
    }
    tell(inner, TYPING, json!({ "c": id, "u": &**user, "on": on }));
}

/// A session of `user` connected here.
pub(crate) fn up(
    inner: &Inner,
    user: &str,
    sid: Sid,
    device: &str,
    platform: Platform,
    at_ms: i64,
) {
    tell(
        inner,
        UP,
        json!({ "n": &*inner.relay.node, "u": user, "sid": sid.as_str(), "d": device,
                "p": platform.as_str(), "at": at_ms }),
    );
}

/// A session of `user` left here.
pub(crate) fn down(inner: &Inner, user: &str, sid: Sid, closed: bool) {
    tell(
        inner,
        DOWN,
        json!({ "n": &*inner.relay.node, "u": user, "sid": sid.as_str(), "closed": closed }),
    );
}

/// A session as told: `[u, sid, d, p, at]`.
fn session_in(v: &Value, node: &Arc<str>) -> Option<RemoteSession> {
    let a = v.as_array()?;
    Some(RemoteSession {
        user: Arc::from(a.first()?.as_str()?),
        sid: Sid::parse(a.get(1)?.as_str()?)?,
        device: Arc::from(a.get(2)?.as_str()?),
        platform: Platform::parse(a.get(3)?.as_str()?)?,
        at_ms: a.get(4)?.as_i64()?,
        node: node.clone(),
    })
}

fn sessions_out(inner: &Inner) -> Value {
    let list: Vec<Value> = inner
        .presence
        .local_sessions()
        .into_iter()
        .map(|s| {
            json!([
                &*s.user,
                s.sid.as_str(),
                &*s.device,
                s.platform.as_str(),
                s.at_ms
            ])
        })
        .collect();
    json!({ "n": &*inner.relay.node, "s": list })
}

/// A node's whole list of sessions (`{ n, s, again }`): replaces what was known of it.
fn sessions_in(inner: &Arc<Inner>, v: &Value) {
    let Some(node) = v.get("n").and_then(Value::as_str).map(Arc::<str>::from) else {
        return;
    };
    if node == inner.relay.node {
        return;
    }
    inner.relay.heard(&node);
    let list: Vec<RemoteSession> = v
        .get("s")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| session_in(s, &node)).collect())
        .unwrap_or_default();
    let kicked = inner
        .presence
        .replace_node(&node, list, Instant::now(), crate::cmd::now_ms());
    kick(inner, kicked);
}

/// Tells the local sockets put out by a session on another node `kicked`, and
/// disconnects them.
fn kick(inner: &Inner, kicked: Vec<(crate::presence::Kicked, Value)>) {
    let Some(ns) = inner.ns.get() else { return };
    for (crate::presence::Kicked(sid), notice) in kicked {
        if let Some(old) = ns.socket(sid) {
            tracing::debug!(old = %sid, "im: device put out by the device policy (a newer one on another node)");
            let _ = old.emit("kicked", (&notice,));
            old.disconnect();
        }
    }
}

/// What another node told (the namespace's server-side emits).
pub(crate) fn received(inner: &Arc<Inner>, ns: &Arc<Namespace>, ev: ServerEvent) {
    let Some(body) = ev.args.first() else { return };
    let node = body.get("n").and_then(Value::as_str);
    if node == Some(&*inner.relay.node) {
        return;
    }
    if let Some(node) = node {
        if inner.relay.heard(node) && ev.name != SESSIONS {
            // Back after it was dropped (a stall too short for Redis to close its
            // connection): the two exchange sessions again, and catch up.
            tracing::info!(%node, "im: a node silent for long is heard again; exchanging sessions");
            tokio::spawn(back(inner.clone()));
        }
    }
    match ev.name.as_str() {
        MESSAGE => {
            let Some(m) = message_in(body) else {
                tracing::warn!("im: a malformed message from another node ignored");
                return;
            };
            let id = m.conversation;
            if ns.room_len(&conv_room(id).into()) == 0 {
                // Nobody here to push to: a copy held here still learns its head.
                if let Some(conv) = inner.cache.peek(id) {
                    let seq = m.seq;
                    crate::cmd::send::noted(inner, &conv, &Arc::new(m), false);
                    conv.passed(seq);
                }
                return;
            }
            match inner.cache.peek(id) {
                Some(conv) => remote_message(inner, &conv, m),
                None => {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        match inner.cache.get(&inner.store, id).await {
                            Ok(conv) => remote_message(&inner, &conv, m),
                            Err(e) => {
                                tracing::warn!(conversation = id, error = %e, "im: a message from another node not pushed here")
                            }
                        }
                    });
                }
            }
        }
        MEMBERS => {
            let Some(conv) = body
                .get("c")
                .and_then(Value::as_i64)
                .and_then(|id| inner.cache.peek(id))
            else {
                return;
            };
            let inner = inner.clone();
            tokio::spawn(async move {
                if let Err(e) = inner.cache.reload_members(&inner.store, &conv).await {
                    // The copy is dropped: the next use reads the store.
                    tracing::warn!(conversation = conv.id, error = %e, "im: members changed elsewhere not read; the copy is dropped");
                    inner.cache.forget(conv.id);
                }
            });
        }
        TYPING => {
            let (Some(id), Some(user), Some(on)) = (
                body.get("c").and_then(Value::as_i64),
                body.get("u").and_then(Value::as_str).map(Arc::<str>::from),
                body.get("on").and_then(Value::as_bool),
            ) else {
                return;
            };
            if ns.room_len(&conv_room(id).into()) == 0 {
                return;
            }
            let note = move |inner: &Inner, conv: &Conv| {
                if on {
                    inner
                        .typing
                        .started(conv, &user, Instant::now() + inner.config.typing_ttl);
                } else {
                    inner.typing.stopped(conv, &user);
                }
            };
            match inner.cache.peek(id) {
                Some(conv) => note(inner, &conv),
                None => {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        if let Ok(conv) = inner.cache.get(&inner.store, id).await {
                            note(&inner, &conv);
                        }
                    });
                }
            }
        }
        UP => {
            let Some(node) = node.map(Arc::<str>::from) else {
                return;
            };
            let parsed = (|| {
                Some(RemoteSession {
                    user: Arc::from(body.get("u")?.as_str()?),
                    sid: Sid::parse(body.get("sid")?.as_str()?)?,
                    device: Arc::from(body.get("d")?.as_str()?),
                    platform: Platform::parse(body.get("p")?.as_str()?)?,
                    at_ms: body.get("at")?.as_i64()?,
                    node,
                })
            })();
            let Some(session) = parsed else {
                tracing::warn!("im: a malformed session from another node ignored");
                return;
            };
            let kicked =
                inner
                    .presence
                    .connected_remote(session, Instant::now(), crate::cmd::now_ms());
            kick(inner, kicked);
        }
        DOWN => {
            let (Some(user), Some(sid), Some(closed)) = (
                body.get("u").and_then(Value::as_str).map(Arc::<str>::from),
                body.get("sid").and_then(Value::as_str).and_then(Sid::parse),
                body.get("closed").and_then(Value::as_bool),
            ) else {
                return;
            };
            let alone = inner.presence.disconnected(
                &user,
                sid,
                closed,
                Instant::now(),
                crate::cmd::now_ms(),
                false,
            );
            if alone {
                inner.typing.gone(&user);
            }
        }
        SESSIONS => {
            sessions_in(inner, body);
            if let Some(ack) = ev.ack {
                ack(sessions_out(inner));
                // The asking node's bus was down: what it committed meanwhile never
                // came here, nor its member changes.
                if body.get("again").and_then(Value::as_bool) == Some(true) {
                    tokio::spawn(catch_up(inner.clone()));
                }
            }
        }
        // ALIVE said who it is (noted above); anything else is not for this build.
        _ => {}
    }
}

/// A message another node committed, for this node's sockets.
fn remote_message(inner: &Arc<Inner>, conv: &Arc<Conv>, m: Message) {
    let m = Arc::new(m);
    crate::cmd::send::noted(inner, conv, &m, false);
    crate::cmd::send::push(inner, conv, m, None);
}

/// Pushes waited behind a gap in `conv`: unless its news comes within [`GAP_WAIT`], the
/// store is read.
pub(crate) fn gap(inner: &Arc<Inner>, conv: &Arc<Conv>) {
    if !inner.config.clustered || conv.gap_check.swap(true, Ordering::AcqRel) {
        return;
    }
    let (inner, conv) = (inner.clone(), conv.clone());
    tokio::spawn(async move {
        tokio::time::sleep(GAP_WAIT).await;
        conv.gap_check.store(false, Ordering::Release);
        let waiting = {
            let p = conv.pushes.lock();
            p.waiting.keys().next().is_some_and(|first| *first > p.next)
        };
        if waiting {
            if let Err(e) = fill(&inner, &conv).await {
                tracing::warn!(conversation = conv.id, error = %e, "im: a gap in the pushes not filled from the store; retried");
                gap(&inner, &conv);
            }
        }
    });
}

/// Pushes, from the store, `conv`'s messages after the last one pushed here; how many.
pub(crate) async fn fill(inner: &Arc<Inner>, conv: &Arc<Conv>) -> Result<usize, store::StoreError> {
    let mut after = conv.pushes.lock().next - 1;
    let mut filled = 0;
    loop {
        let page = inner
            .store
            .messages(conv.id, Some(after), None, FILL_PAGE)
            .await?;
        let n = page.len();
        for m in page {
            after = after.max(m.seq);
            let m = Arc::new(m);
            crate::cmd::send::noted(inner, conv, &m, false);
            crate::cmd::send::push(inner, conv, m, None);
        }
        filled += n;
        if n < FILL_PAGE {
            break;
        }
    }
    if filled > 0 {
        inner
            .stats
            .cluster_filled
            .fetch_add(filled as u64, Ordering::Relaxed);
        tracing::debug!(
            conversation = conv.id,
            filled,
            "im: messages whose news was missed pushed from the store"
        );
    }
    Ok(filled)
}

/// The bus is back (or up for the first time): the nodes tell each other their
/// sessions, and every conversation with members here is caught up from the store.
pub(crate) async fn back(inner: Arc<Inner>) {
    let Some(ns) = inner.ns.get().cloned() else {
        return;
    };
    // Not the first time: the others catch up too (what this node committed while its
    // bus was down never reached them). A node starting has nothing of that kind.
    let again = inner.relay.was_up.swap(true, Ordering::AcqRel);
    let mut asking = sessions_out(&inner);
    asking["again"] = Value::Bool(again);
    match ns
        .server_side_emit_with_ack(SESSIONS, &[asking], Duration::from_secs(5))
        .await
    {
        Ok(acks) => {
            for answer in &acks.responses {
                sessions_in(&inner, answer);
            }
        }
        Err(e) => tracing::warn!(error = %e, "im: sessions not exchanged with the other nodes"),
    }
    catch_up(inner).await;
}

/// Every conversation with members here read from the store after the last message
/// pushed here, and the members of every cached one read again: what other nodes said
/// while the bus was down.
pub(crate) async fn catch_up(inner: Arc<Inner>) {
    let Some(ns) = inner.ns.get().cloned() else {
        return;
    };
    let mut ids: Vec<ConversationId> = ns
        .rooms()
        .into_iter()
        .filter_map(|(room, _)| {
            room.as_str()
                .strip_prefix("conv:")
                .and_then(|id| id.parse().ok())
        })
        .collect();
    ids.extend(inner.cache.ids());
    ids.sort_unstable();
    ids.dedup();
    let mut filled = 0;
    for id in ids {
        let conv = if ns.room_len(&conv_room(id).into()) > 0 {
            inner.cache.get(&inner.store, id).await
        } else {
            match inner.cache.peek(id) {
                Some(c) => Ok(c),
                None => continue,
            }
        };
        if let Ok(conv) = &conv {
            if let Err(e) = inner.cache.reload_members(&inner.store, conv).await {
                tracing::warn!(conversation = id, error = %e, "im: members not read again; the copy is dropped");
                inner.cache.forget(id);
            }
        }
        match conv {
            Ok(conv) => match fill(&inner, &conv).await {
                Ok(n) => filled += n,
                Err(e) => {
                    tracing::warn!(conversation = id, error = %e, "im: not caught up from the store")
                }
            },
            Err(e) => {
                tracing::warn!(conversation = id, error = %e, "im: not caught up from the store")
            }
        }
    }
    tracing::info!(filled, "im: caught up with the other nodes");
}

/// Says this node is alive, and drops the sessions of the nodes gone silent, until the
/// service is gone.
pub(crate) async fn run(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        tell(&inner, ALIVE, json!({ "n": &*inner.relay.node }));
        let ttl = inner.config.typing_ttl;
        inner
            .relay
            .typing_told
            .lock()
            .retain(|_, at| at.elapsed() < ttl);
        for node in inner.relay.silent() {
            let dropped = inner.presence.drop_node(&node, Instant::now());
            tracing::info!(%node, sessions = dropped, "im: a node went silent; its sessions dropped");
        }
        if let Some(ns) = inner.ns.get() {
            inner
                .cache
                .sweep_baselines(|id| ns.room_len(&conv_room(id).into()) > 0);
        }
    }
}
