//! Herald's document collaboration: Yjs documents for the stock `y-socket.io` client
//! (`COLLAB.md`), on `yrs`.
//!
//! Each document is a dynamic namespace `/yjs|<name>`. A socket that joins gets the
//! server's `sync-step-1` (its answer is applied) and every awareness state; its
//! `sync-step-1` is answered with what it lacks; its `sync-update`s are applied, stored,
//! and sent on to the others, merged per window and never back to it; its awareness is
//! kept per socket, removed when it leaves, and sent on merged per window (renewals that
//! change nothing wait longer). Events that come while a document loads wait for it, in
//! order: nothing is lost.
//!
//! Updates are appended to the store (the same as IM's) within `flush`; a document is
//! compacted into its snapshot after `compact_updates` rows and when it is unloaded,
//! `idle_unload` after its last socket left.
//!
//! # Layout
//!
//! - [`config`]: [`Config`], the `[docs]` section.
//! - [`awareness`]: the awareness codec and what one document keeps of it.
//! - `doc`: one document in memory, its sync and its fan-out.
//! - `store_io`: loading, the writer of updates, compaction, unloading.
//! - [`api`]: what the HTTP API for backends does.
//! - [`stats`]: the counters, [`CollabStats`].

pub mod api;
pub mod awareness;
pub mod config;
pub mod stats;

mod doc;
mod relay;
mod store_io;
mod validate;

use std::sync::{Arc, OnceLock};
use tokio::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use socketio::{Binary, Builder, ConnectError, ConnectRequest, SocketRef};
use store::Store;

pub use config::Config;
pub use stats::CollabStats;

use crate::doc::{Document, Member, Op, Origin, Out, Phase, Refused, State};

/// The prefix of document namespaces: `/yjs|<document name>`.
pub const PREFIX: &str = "/yjs|";

/// What a socket may do with its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read it and edit it.
    Edit,
    /// Read it only: its updates are refused.
    Read,
}

/// Decides whether the client behind a CONNECT may open the document (its name given):
/// its access, or the refusal.
pub type Authorize =
    Arc<dyn Fn(&ConnectRequest, &str) -> Result<Access, ConnectError> + Send + Sync>;

/// The document service. Cheap to clone.
#[derive(Clone)]
pub struct Collab {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Collab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collab")
            .field("loaded", &self.inner.docs.len())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) docs: DashMap<Arc<str>, Arc<Document>>,
    /// Documents with unsaved updates.
    pub(crate) dirty: Mutex<Vec<Arc<Document>>>,
    /// Held by a write of unsaved updates from taking them to their commit, and by a
    /// delete around its own: a delete never runs between the two, so no row of a
    /// deleted document outlives it.
    pub(crate) writing: tokio::sync::Mutex<()>,
    pub(crate) stats: Arc<CollabStats>,
    pub(crate) io: OnceLock<socketio::Server>,
}

impl Collab {
    /// The service on `store`, its background tasks started (a Tokio runtime must run).
    pub fn new(config: Config, store: Store, stats: Arc<CollabStats>) -> Collab {
        let inner = Arc::new(Inner {
            config,
            store,
            docs: DashMap::new(),
            dirty: Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
            stats,
            io: OnceLock::new(),
        });
        tokio::spawn(store_io::writer(Arc::downgrade(&inner)));
        tokio::spawn(store_io::maintenance(Arc::downgrade(&inner)));
        Collab { inner }
    }

    /// The store documents are kept in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The service's counters.
    pub fn stats(&self) -> &Arc<CollabStats> {
        &self.inner.stats
    }

    /// Documents in memory now.
    pub fn loaded(&self) -> usize {
        self.inner.docs.len()
    }

    /// The Socket.IO server is built: the service may forget namespaces of unloaded
    /// documents.
    pub fn started(&self, io: &socketio::Server) {
        let _ = self.inner.io.set(io.clone());
    }

    /// Adds the document namespaces to `builder`; `authorize` decides each CONNECT.
    pub fn install(&self, builder: Builder, authorize: Authorize) -> Builder {
        let on_limit = self.inner.clone();
        let on_node = self.inner.clone();
        let (on_connect, on_step1, on_update, on_awareness, on_leave) = (
            self.inner.clone(),
            self.inner.clone(),
            self.inner.clone(),
            self.inner.clone(),
            self.inner.clone(),
        );
        let max_message = self.inner.config.max_message_bytes;
        builder
            .dynamic_ns(
                |name| name.strip_prefix(PREFIX).is_some_and(valid_name),
                move |socket, _req| {
                    let access = socket.data::<Access>().unwrap_or(Access::Read);
                    // The first sync carries whole documents, both ways.
                    let conn = socket.connection();
                    conn.raise_limits(max_message, max_message.saturating_mul(2));
                    conn.data().raise_attachment_bytes(max_message);
                    on_connect.join(socket.clone(), access);
                },
            )
            .middleware(move |req| {
                let name = req.nsp().strip_prefix(PREFIX).unwrap_or_default();
                let access = authorize(req, name)?;
                req.set_data(access);
                Ok(())
            })
            .on("sync-step-1", move |socket, event| {
                on_step1.event(socket, Op::Step1(event));
            })
            .on("sync-update", move |socket, event| {
                match event.data::<Binary>() {
                    Ok(b) => on_update.event(socket, Op::Update(socket.clone(), b.0)),
                    Err(_) => on_update.bad(socket, "sync-update without a binary update"),
                }
            })
            .on("awareness-update", move |socket, event| {
                match event.data::<Binary>() {
                    Ok(b) => on_awareness.event(socket, Op::Awareness(socket.clone(), b.0)),
                    Err(_) => on_awareness.bad(socket, "awareness-update without binary"),
                }
            })
            .on_disconnect(move |socket, _reason| on_leave.leave(socket))
            .on_server_side_emit(move |ns, ev| relay::received(&on_node, ns, ev))
            .event_rate(self.inner.config.event_rate)
            .on_rate_limited(move |socket, _event, _limited| {
                // Never drop an update (the copies would part): the client reconnects
                // and syncs.
                CollabStats::add(&on_limit.stats.rate_limited, 1);
                tracing::debug!(socket = %socket.id(), "document socket over its event rate: closed");
                socket.close();
            })
    }

    /// On many nodes: the cluster's bus is up again (`true`): every document in memory
    /// asks the others for what it missed meanwhile.
    pub fn cluster_bus(&self, up: bool) {
        if !up || !self.inner.config.clustered {
            return;
        }
        let names: Vec<Arc<str>> = self.inner.docs.iter().map(|d| d.key().clone()).collect();
        for name in names {
            tokio::spawn(relay::sync(self.inner.clone(), name));
        }
    }

    /// Stores every update received so far (the drain's flush step). Resolves when all
    /// are stored, or after three failed writes.
    pub async fn flush(&self) {
        for _ in 0..3 {
            if store_io::write_once(&self.inner).await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// Takes `update` as the service takes a client's (checked, decoded, applied to a new
/// document), then sends the document to a client that knows `state_vector`; `false`
/// when the update is refused. For fuzzing: it must never panic.
pub fn take_update(update: &[u8], state_vector: &[u8]) -> bool {
    let mut st = Document::loading(Arc::from("fuzz")).state.into_inner();
    let taken = st.apply(update).is_ok();
    let _ = st.diff(state_vector);
    if taken {
        let _ = doc::merge(&[update, update]);
    }
    taken
}

/// Whether `name` may name a document: not empty, at most 512 bytes, no control
/// characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 512 && !name.chars().any(char::is_control)
}

impl Inner {
    /// Runs `f` on the document `name` (loading it if needed), under its lock.
    pub(crate) fn with_doc<R>(
        self: &Arc<Self>,
        name: &str,
        mut f: impl FnMut(&Arc<Document>, &mut State) -> R,
    ) -> R {
        loop {
            let doc = self.open(name);
            let mut st = doc.state.lock();
            if matches!(st.phase, Phase::Gone) {
                continue;
            }
            let result = f(&doc, &mut st);
            let out = std::mem::take(&mut st.out);
            drop(st);
            self.deliver(&doc.name, out);
            return result;
        }
    }

    /// Does what the document's state left to do for sockets (its lock released).
    pub(crate) fn deliver(self: &Arc<Self>, name: &str, out: Vec<Out>) {
        for o in out {
            match o {
                Out::RelayUpdate(u) => relay::tell(self, name, relay::UPDATE, "u", &u),
                Out::RelayAwareness(a) => relay::tell(self, name, relay::AWARENESS, "a", &a),
                Out::Send(socket, packet) => {
                    let _ = socket.send_encoded(&packet);
                }
                Out::Ack(event, update) => {
                    let _ = event.ack((Binary(Bytes::from(update)),));
                }
                Out::Sync(socket, sv, awareness) => self.sync(&socket, sv, awareness),
                Out::Close(socket) => socket.close(),
                Out::Disconnect(socket) => socket.disconnect(),
            }
        }
    }

    /// Runs `f` under the lock of `doc`, then delivers what it left to send.
    pub(crate) fn locked<R>(
        self: &Arc<Self>,
        doc: &Arc<Document>,
        f: impl FnOnce(&mut State) -> R,
    ) -> R {
        let mut st = doc.state.lock();
        let result = f(&mut st);
        let out = std::mem::take(&mut st.out);
        drop(st);
        self.deliver(&doc.name, out);
        result
    }

    /// The document `name` in memory; made (and its load started) when it is not.
    fn open(self: &Arc<Self>, name: &str) -> Arc<Document> {
        if let Some(d) = self.docs.get(name) {
            return d.value().clone();
        }
        let mut made = None;
        let doc = self
            .docs
            .entry(Arc::from(name))
            .or_insert_with(|| {
                let d = Arc::new(Document::loading(Arc::from(name)));
                made = Some(d.clone());
                d
            })
            .clone();
        if let Some(d) = made {
            CollabStats::add(&self.stats.loaded, 1);
            tokio::spawn(store_io::load(self.clone(), d));
        }
        doc
    }

    fn name_of(socket: &SocketRef) -> &str {
        socket.nsp().strip_prefix(PREFIX).unwrap_or_default()
    }

    fn join(self: &Arc<Self>, socket: SocketRef, access: Access) {
        let name = Self::name_of(&socket).to_owned();
        self.with_doc(&name, |doc, st| {
            st.members.push(Member {
                socket: socket.clone(),
                access,
                bad: 0,
            });
            self.run(doc, st, Op::Join(socket.clone()));
        });
    }

    fn event(self: &Arc<Self>, socket: &SocketRef, op: Op) {
        let name = Self::name_of(socket).to_owned();
        let mut op = Some(op);
        self.with_doc(&name, |doc, st| {
            if let Some(op) = op.take() {
                self.run(doc, st, op);
            }
        });
    }

    fn leave(self: &Arc<Self>, socket: &SocketRef) {
        let name = Self::name_of(socket).to_owned();
        let Some(doc) = self.docs.get(name.as_str()).map(|d| d.value().clone()) else {
            return;
        };
        let id = socket.id();
        self.locked(&doc, |st| {
            st.members.retain(|m| m.socket.id() != id);
            if let Phase::Loading(ops) = &mut st.phase {
                ops.retain(|op| !matches!(op, Op::Join(s) if s.id() == id));
            }
            if st.awareness.remove_owned_by(id) > 0 {
                // Told at once: nobody keeps a ghost cursor.
                let frames = st.send_awareness(Instant::now(), self.config.clustered);
                CollabStats::add(&self.stats.awareness_frames_out, frames);
            }
            if st.members.is_empty() {
                st.idle_since = Instant::now();
            }
        });
    }

    /// Counts a malformed thing from `socket`; past the limit, disconnects it.
    fn bad(self: &Arc<Self>, socket: &SocketRef, what: &str) {
        let name = Self::name_of(socket);
        match self.docs.get(name).map(|d| d.value().clone()) {
            Some(doc) => self.locked(&doc, |st| self.bad_locked(st, socket, what)),
            None => CollabStats::add(&self.stats.updates_refused, 1),
        }
    }

    /// Does `op` on a document, or keeps it for when the document is loaded.
    pub(crate) fn run(self: &Arc<Self>, doc: &Arc<Document>, st: &mut State, op: Op) {
        if let Phase::Loading(ops) = &mut st.phase {
            ops.push(op);
            return;
        }
        let now = Instant::now();
        match op {
            Op::Join(socket) => self.start_sync(st, &socket),
            Op::Step1(event) => {
                let sv = event.data::<Binary>().ok();
                match sv.and_then(|sv| st.diff(&sv)) {
                    Some(diff) => st.out.push(Out::Ack(event, diff)),
                    None => {
                        let socket = event.socket().clone();
                        self.bad_locked(st, &socket, "sync-step-1 without a state vector");
                    }
                }
            }
            Op::Update(socket, update) => {
                let access = st.member(socket.id()).map(|m| m.access);
                if access != Some(Access::Edit) {
                    CollabStats::add(&self.stats.updates_refused, 1);
                    return;
                }
                self.apply(
                    doc,
                    st,
                    Origin::Socket(socket.id()),
                    Some(&socket),
                    update,
                    now,
                );
            }
            Op::Apply(update) => self.apply(doc, st, Origin::Api, None, update, now),
            Op::Remote(update) => self.apply(doc, st, Origin::Node, None, update, now),
            Op::RemoteAwareness(update) => {
                if let Ok(entries) = awareness::decode(&update) {
                    let applied = st.awareness.apply(awareness::remote(), entries, now);
                    if applied.changed > 0 {
                        self.schedule_awareness(doc, st, std::time::Duration::ZERO, now);
                    } else if applied.renewed > 0 {
                        let delay = doc::renewal_delay(self.config.awareness_timeout);
                        self.schedule_awareness(doc, st, delay, now);
                    }
                }
            }
            Op::Awareness(socket, update) => match awareness::decode(&update) {
                Ok(entries) => {
                    CollabStats::add(&self.stats.awareness_in, 1);
                    let applied = st.awareness.apply(socket.id(), entries, now);
                    if applied.changed > 0 {
                        self.schedule_awareness(doc, st, std::time::Duration::ZERO, now);
                    } else if applied.renewed > 0 {
                        let delay = doc::renewal_delay(self.config.awareness_timeout);
                        self.schedule_awareness(doc, st, delay, now);
                    }
                }
                Err(e) => self.bad_locked(st, &socket, &e.to_string()),
            },
        }
    }

    fn bad_locked(self: &Arc<Self>, st: &mut State, socket: &SocketRef, what: &str) {
        CollabStats::add(&self.stats.updates_refused, 1);
        let limit = self.config.max_bad_events;
        let too_many = st.member(socket.id()).is_some_and(|m| {
            m.bad += 1;
            m.bad > limit
        });
        tracing::debug!(document = Self::name_of(socket), what, "refused");
        if too_many {
            CollabStats::add(&self.stats.abusers, 1);
            tracing::warn!(
                document = Self::name_of(socket),
                socket = %socket.id(),
                what,
                "disconnected: repeated malformed input"
            );
            st.out.push(Out::Disconnect(socket.clone()));
        }
    }

    /// The server's side of the sync with a socket that joined: its `sync-step-1` (the
    /// answer is what the server lacks) and every awareness state.
    fn start_sync(self: &Arc<Self>, st: &mut State, socket: &SocketRef) {
        let sv = st.state_vector();
        let awareness = st.awareness.full();
        st.out.push(Out::Sync(socket.clone(), sv, awareness));
    }

    /// Sends the server's `sync-step-1` and the awareness to `socket` (not under the
    /// document's lock), and applies the answer when it comes.
    fn sync(self: &Arc<Self>, socket: &SocketRef, sv: Vec<u8>, awareness: Vec<u8>) {
        let answer = socket.emit_with_ack(
            "sync-step-1",
            (Binary(Bytes::from(sv)),),
            self.config.sync_timeout,
        );
        let _ = socket.emit("awareness-update", (Binary(Bytes::from(awareness)),));
        let (this, socket) = (self.clone(), socket.clone());
        tokio::spawn(async move {
            let Ok(response) = answer.await else {
                return;
            };
            match response.args::<(Binary,)>() {
                Ok((update,)) => this.event(&socket, Op::Update(socket.clone(), update.0)),
                Err(_) => this.bad(&socket, "the answer to sync-step-1 is not an update"),
            }
        });
    }

    /// Applies an update (from the socket `from`, the API, or another node), then has it
    /// sent, and stored unless another node told it (that node stores it).
    fn apply(
        self: &Arc<Self>,
        doc: &Arc<Document>,
        st: &mut State,
        origin: Origin,
        from: Option<&SocketRef>,
        update: Bytes,
        now: Instant,
    ) {
        let applied = if origin == Origin::Node {
            st.apply_relayed(&update)
        } else {
            st.apply(&update)
        };
        match applied {
            Ok(false) => {}
            Ok(true) => {
                CollabStats::add(&self.stats.updates_in, 1);
                st.outbox.push((origin, update.clone()));
                if origin != Origin::Node {
                    st.unsaved.push(update);
                    if !st.dirty {
                        st.dirty = true;
                        self.dirty.lock().push(doc.clone());
                    }
                }
                self.schedule_updates(doc, st, now);
            }
            Err(Refused::Malformed) => match from {
                Some(socket) => self.bad_locked(st, socket, "malformed Yjs update"),
                None => CollabStats::add(&self.stats.updates_refused, 1),
            },
            Err(Refused::Broken) => {
                CollabStats::add(&self.stats.updates_refused, 1);
                tracing::warn!(
                    document = &*doc.name,
                    "an update broke the document in memory: it is reloaded"
                );
                self.reload(doc, st);
            }
        }
    }

    /// Drops the document from memory (what is unsaved is still written) and closes its
    /// sockets' connections: their clients reconnect and sync with the reloaded copy.
    fn reload(self: &Arc<Self>, doc: &Arc<Document>, st: &mut State) {
        st.phase = Phase::Gone;
        self.docs.remove_if(&doc.name, |_, d| Arc::ptr_eq(d, doc));
        CollabStats::add(&self.stats.unloads, 1);
        self.stats
            .loaded
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        for m in std::mem::take(&mut st.members) {
            st.out.push(Out::Close(m.socket));
        }
    }

    fn schedule_updates(self: &Arc<Self>, doc: &Arc<Document>, st: &mut State, now: Instant) {
        let window = self.config.update_window;
        if st.out_due.is_some() {
            return;
        }
        let quiet = st.last_out.is_none_or(|t| now.duration_since(t) >= window);
        if quiet {
            let frames = st.send_updates(now, self.config.clustered);
            CollabStats::add(&self.stats.update_frames_out, frames);
            return;
        }
        let due = st.last_out.map_or(now, |t| t + window);
        st.out_due = Some(due);
        let (this, doc) = (self.clone(), doc.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            this.locked(&doc, |st| {
                if st.out_due.is_some_and(|d| d <= Instant::now()) {
                    let frames = st.send_updates(Instant::now(), this.config.clustered);
                    CollabStats::add(&this.stats.update_frames_out, frames);
                }
            });
        });
    }

    /// Has the awareness changes go out `delay` from now at the earliest (zero for
    /// changes, longer for renewals only), and never sooner than a window after the
    /// last time they went out.
    pub(crate) fn schedule_awareness(
        self: &Arc<Self>,
        doc: &Arc<Document>,
        st: &mut State,
        delay: std::time::Duration,
        now: Instant,
    ) {
        let window = self.config.awareness_window;
        let quiet = st
            .last_aware
            .is_none_or(|t| now.duration_since(t) >= window);
        if delay.is_zero() && quiet && st.aware_due.is_none() {
            let frames = st.send_awareness(now, self.config.clustered);
            CollabStats::add(&self.stats.awareness_frames_out, frames);
            return;
        }
        let earliest = st.last_aware.map_or(now, |t| t + window);
        let due = (now + delay).max(earliest);
        if st.aware_due.is_some_and(|d| d <= due) {
            return;
        }
        st.aware_due = Some(due);
        let (this, doc) = (self.clone(), doc.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            this.locked(&doc, |st| {
                if st.aware_due.is_some_and(|d| d <= Instant::now()) {
                    let frames = st.send_awareness(Instant::now(), this.config.clustered);
                    CollabStats::add(&this.stats.awareness_frames_out, frames);
                }
            });
        });
    }
}
