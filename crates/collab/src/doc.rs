//! One document in memory: its Yjs document, its awareness, the sockets that have it
//! open, and what waits to be sent to them or written to the store.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use socketio::{Binary, Event, Sid, SocketRef};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::awareness::Awareness;
use crate::Access;

/// A document, loaded or loading.
pub(crate) struct Document {
    pub(crate) name: Arc<str>,
    pub(crate) state: Mutex<State>,
}

impl Document {
    pub(crate) fn loading(name: Arc<str>) -> Document {
        Document {
            name,
            state: Mutex::new(State {
                phase: Phase::Loading(Vec::new()),
                ydoc: new_doc(),
                awareness: Awareness::default(),
                members: Vec::new(),
                outbox: Vec::new(),
                out_due: None,
                last_out: None,
                aware_due: None,
                last_aware: None,
                unsaved: Vec::new(),
                dirty: false,
                since_snapshot: 0,
                compacting: false,
                idle_since: Instant::now(),
                out: Vec::new(),
            }),
        }
    }
}

/// A Yjs document as the server keeps them (garbage collection on: deleted content is
/// dropped, as the Node server does).
pub(crate) fn new_doc() -> Doc {
    Doc::new()
}

/// Where a document is in its life.
pub(crate) enum Phase {
    /// Being read from the store; what arrives meanwhile waits here, in order.
    Loading(Vec<Op>),
    /// In memory.
    Ready,
    /// Unloaded or deleted: whoever holds it looks it up again.
    Gone,
}

/// Something that came for a document while it was loading.
pub(crate) enum Op {
    /// A socket joined: it gets the server's `sync-step-1` and the awareness.
    Join(SocketRef),
    /// A client's `sync-step-1`, to answer.
    Step1(Event),
    /// A client's update.
    Update(SocketRef, Bytes),
    /// An update from the HTTP API.
    Apply(Bytes),
    /// A client's awareness update.
    Awareness(SocketRef, Bytes),
    /// An update another node told (it stores it).
    Remote(Bytes),
    /// An awareness update another node told.
    RemoteAwareness(Bytes),
}

/// A socket that has the document open.
pub(crate) struct Member {
    pub(crate) socket: SocketRef,
    pub(crate) access: Access,
    /// Malformed things it sent.
    pub(crate) bad: u32,
}

/// The mutable part of a document (behind its lock).
pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) ydoc: Doc,
    pub(crate) awareness: Awareness,
    pub(crate) members: Vec<Member>,
    /// Updates applied and not yet sent, with where they came from.
    pub(crate) outbox: Vec<(Origin, Bytes)>,
    /// When the outbox goes out (a timer is set for it).
    pub(crate) out_due: Option<Instant>,
    pub(crate) last_out: Option<Instant>,
    /// When the awareness changes go out (a timer is set for it).
    pub(crate) aware_due: Option<Instant>,
    pub(crate) last_aware: Option<Instant>,
    /// Updates applied and not yet stored, in order.
    pub(crate) unsaved: Vec<Bytes>,
    /// In the service's list of documents with unsaved updates.
    pub(crate) dirty: bool,
    /// Rows stored after the snapshot.
    pub(crate) since_snapshot: u64,
    pub(crate) compacting: bool,
    /// Since when no socket has it open.
    pub(crate) idle_since: Instant,
    /// What to send once the lock is released (sending may close a slow socket, whose
    /// leaving takes the lock again).
    pub(crate) out: Vec<Out>,
}

/// Where an update came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A socket of this node.
    Socket(Sid),
    /// The HTTP API of this node.
    Api,
    /// Another node (stored there, not here; not told on).
    Node,
}

/// Something to do for a socket after the document's lock is released.
pub(crate) enum Out {
    /// Tell the other nodes of this update (merged) of the document.
    RelayUpdate(Vec<u8>),
    /// Tell the other nodes of this awareness update of the document.
    RelayAwareness(Vec<u8>),
    /// A packet.
    Send(SocketRef, socketio::Encoded),
    /// The server's `sync-step-1` with its state vector, and the awareness after it.
    Sync(SocketRef, Vec<u8>, Vec<u8>),
    /// An answer to the socket's `sync-step-1`.
    Ack(Event, Vec<u8>),
    /// Close the connection (its client comes back).
    Close(SocketRef),
    /// Disconnect the socket (its client stays away).
    Disconnect(SocketRef),
}

/// Why an update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a Yjs v1 update.
    Malformed,
    /// Yrs could not integrate it (or failed on it): the document is reloaded.
    Broken,
}

impl State {
    /// Applies a Yjs v1 update from a client or the API (refused beyond [`MAX_CHAINED`]).
    /// `Ok(false)` when it carried nothing (an empty answer to a sync step): nothing to
    /// send or store.
    pub(crate) fn apply(&mut self, update: &[u8]) -> Result<bool, Refused> {
        self.apply_decoded(decode_incoming(update)?)
    }

    /// As [`State::apply`], for an update another node took and merged (its runs may be
    /// longer than a client may send).
    pub(crate) fn apply_relayed(&mut self, update: &[u8]) -> Result<bool, Refused> {
        self.apply_decoded(decode_update(update)?)
    }

    fn apply_decoded(&mut self, decoded: Update) -> Result<bool, Refused> {
        if decoded.is_empty() {
            return Ok(false);
        }
        let ydoc = &self.ydoc;
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut txn = ydoc.transact_mut();
            txn.apply_update(decoded)?;
            // What waits for missing predecessors is encoded and read back (unchecked)
            // into every later sync reply. From some hostile updates `yrs` keeps there
            // what it cannot read back: strings cut inside a character (reading them is
            // undefined behaviour, an abort with debug assertions) or blocks it panics
            // on. Checked now as a client's update is, while this one can still be
            // refused (the copy is then reloaded without it).
            let pending_ok = txn
                .store()
                .pending_update()
                .is_none_or(|p| crate::validate::update_v1(&p.update.encode_v1()).is_ok());
            Ok::<_, yrs::error::UpdateError>(pending_ok)
        }));
        match result {
            Ok(Ok(true)) => Ok(true),
            Ok(Ok(false)) => {
                tracing::debug!("an update left what cannot be read back pending");
                Err(Refused::Broken)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "an update did not integrate");
                Err(Refused::Broken)
            }
            Err(_) => Err(Refused::Broken),
        }
    }

    /// The server's state vector.
    pub(crate) fn state_vector(&self) -> Vec<u8> {
        self.ydoc.transact().state_vector().encode_v1()
    }

    /// What a client with state vector `sv` lacks, as one update; `None` for a malformed
    /// state vector, or when the copy cannot be encoded into an update that reads back
    /// ([`encode_checked`]).
    pub(crate) fn diff(&self, sv: &[u8]) -> Option<Vec<u8>> {
        crate::validate::state_vector_v1(sv).ok()?;
        let sv = std::panic::catch_unwind(|| StateVector::decode_v1(sv))
            .ok()?
            .ok()?;
        encode_checked(&self.ydoc, &sv)
    }

    pub(crate) fn member(&mut self, id: Sid) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.socket.id() == id)
    }

    /// Sends the outbox: every recipient gets the updates of the others, merged into one
    /// frame, never its own; with `clustered`, the other nodes get this node's.
    pub(crate) fn send_updates(&mut self, now: Instant, clustered: bool) -> u64 {
        self.out_due = None;
        self.last_out = Some(now);
        let items = std::mem::take(&mut self.outbox);
        if clustered {
            let ours: Vec<&[u8]> = items
                .iter()
                .filter(|(from, _)| *from != Origin::Node)
                .map(|(_, u)| &u[..])
                .collect();
            if !ours.is_empty() {
                for merged in merge(&ours) {
                    self.out.push(Out::RelayUpdate(merged));
                }
            }
        }
        if items.is_empty() || self.members.is_empty() {
            return 0;
        }
        let ns = self.members[0].socket.namespace().clone();
        let encode = |updates: Vec<&[u8]>| -> Vec<socketio::Encoded> {
            merge(&updates)
                .into_iter()
                .filter_map(|u| ns.encode("sync-update", (Binary(Bytes::from(u)),)).ok())
                .collect()
        };
        let all = encode(items.iter().map(|(_, u)| &u[..]).collect());
        let mut frames = 0;
        for m in &self.members {
            let id = m.socket.id();
            let sent_some = items.iter().any(|(from, _)| *from == Origin::Socket(id));
            let packets = if sent_some {
                let others: Vec<&[u8]> = items
                    .iter()
                    .filter(|(from, _)| *from != Origin::Socket(id))
                    .map(|(_, u)| &u[..])
                    .collect();
                if others.is_empty() {
                    continue;
                }
                encode(others)
            } else {
                all.clone()
            };
            for p in packets {
                self.out.push(Out::Send(m.socket.clone(), p));
                frames += 1;
            }
        }
        frames
    }

    /// Sends the awareness changes to every socket but the one that made them all; with
    /// `clustered`, the other nodes get this node's.
    pub(crate) fn send_awareness(&mut self, now: Instant, clustered: bool) -> u64 {
        self.aware_due = None;
        self.last_aware = Some(now);
        let Some(changes) = self.awareness.take_changes() else {
            return 0;
        };
        if let Some(local) = changes.local.filter(|_| clustered) {
            self.out.push(Out::RelayAwareness(local));
        }
        let (update, only) = (changes.update, changes.only);
        let Some(first) = self.members.first() else {
            return 0;
        };
        let Ok(packet) = first
            .socket
            .namespace()
            .encode("awareness-update", (Binary(Bytes::from(update)),))
        else {
            return 0;
        };
        let mut frames = 0;
        for m in &self.members {
            if Some(m.socket.id()) != only {
                self.out.push(Out::Send(m.socket.clone(), packet.clone()));
                frames += 1;
            }
        }
        frames
    }
}

/// Items of one update that each continue the one before it (a run typed in a row, as a
/// merge of many small updates carries it) a client may send at most. `yrs` integrates such
/// a run in time quadratic in its length (20,000: one second under the document's lock),
/// so an update with more is refused as malformed. A client's own updates carry a few; a
/// whole-state diff carries each run squashed into one item.
pub(crate) const MAX_CHAINED: usize = 2048;

/// Decodes a Yjs v1 update from a client or the API, never panicking: as
/// [`decode_update`], and refused with more than [`MAX_CHAINED`] chained items.
pub(crate) fn decode_incoming(update: &[u8]) -> Result<Update, Refused> {
    match crate::validate::update_v1(update) {
        Ok(chained) if chained <= MAX_CHAINED => decode_checked(update),
        _ => Err(Refused::Malformed),
    }
}

/// Decodes a Yjs v1 update, never panicking (what the store holds: any length of run).
pub(crate) fn decode_update(update: &[u8]) -> Result<Update, Refused> {
    crate::validate::update_v1(update).map_err(|_| Refused::Malformed)?;
    decode_checked(update)
}

fn decode_checked(update: &[u8]) -> Result<Update, Refused> {
    match std::panic::catch_unwind(|| Update::decode_v1(update)) {
        Ok(Ok(u)) => Ok(u),
        _ => Err(Refused::Malformed),
    }
}

/// Updates `yrs` merges in one call at most: its merge takes time quadratic in the
/// number of updates (4,000 small ones: 54 ms; 100,000: half a minute), so more are merged
/// in a tree of such groups.
const MERGE_GROUP: usize = 16;

/// Updates merged into one at most. Integrating an update takes `yrs` time quadratic in
/// the number of items it carries (4,000 one-line edits merged: 81 ms, against 16 ms one
/// by one), so a longer run of updates is given back as several.
const MERGE_MAX: usize = 256;

/// Merges updates into as few as [`MERGE_MAX`] allows (one for a window's worth); when
/// they do not merge, gives them back as they are. Only ever given updates that were
/// checked ([`decode_update`]).
pub(crate) fn merge(updates: &[&[u8]]) -> Vec<Vec<u8>> {
    updates.chunks(MERGE_MAX).flat_map(merge_tree).collect()
}

fn merge_tree(updates: &[&[u8]]) -> Vec<Vec<u8>> {
    if updates.len() == 1 {
        return vec![updates[0].to_vec()];
    }
    if updates.len() > MERGE_GROUP {
        let level: Vec<Vec<u8>> = updates.chunks(MERGE_GROUP).flat_map(merge_tree).collect();
        if level.len() == updates.len() {
            // Nothing merged at this level: no higher one would.
            return level;
        }
        let refs: Vec<&[u8]> = level.iter().map(Vec::as_slice).collect();
        return merge_tree(&refs);
    }
    match std::panic::catch_unwind(|| yrs::merge_updates_v1(updates)) {
        Ok(Ok(merged)) => vec![merged],
        _ => updates.iter().map(|u| u.to_vec()).collect(),
    }
}

/// A document made from what the store has: the snapshot, then each update after it (an
/// update that does not apply is logged and skipped, the others kept).
pub(crate) fn build(name: &str, stored: &store::StoredDocument) -> Doc {
    let doc = new_doc();
    let parts = std::iter::once((stored.snapshot_seq, &stored.snapshot))
        .filter(|(_, s)| !s.is_empty())
        .chain(stored.updates.iter().map(|(seq, u)| (*seq, u)));
    {
        for (seq, bytes) in parts {
            // One transaction per stored update: `yrs` integrates the items of one
            // transaction in time quadratic in their number (80 rows of 250 edits in one:
            // 4.2 s; one each: 40 ms).
            let applied = decode_update(bytes).map(|u| {
                std::panic::catch_unwind(AssertUnwindSafe(|| doc.transact_mut().apply_update(u)))
            });
            if !matches!(applied, Ok(Ok(Ok(())))) {
                tracing::error!(
                    document = name,
                    seq,
                    "a stored update does not apply: skipped"
                );
            }
        }
    }
    doc
}

/// The whole document as one update, checked as a client's update is (what is stored as
/// a snapshot is read back through that check); `None` when it cannot be encoded into an
/// update that reads back ([`encode_checked`]).
pub(crate) fn encode_whole(doc: &Doc) -> Option<Vec<u8>> {
    let whole = encode_checked(doc, &StateVector::default())?;
    crate::validate::update_v1(&whole).ok()?;
    Some(whole)
}

/// What `yrs`'s `encode_state_as_update_v1` gives (the blocks a peer at `sv` lacks, the
/// delete set, and what waits pending, merged), without letting `yrs` read its own output
/// unchecked: when something is pending it decodes the encoding to merge it, and some
/// hostile updates leave blocks whose strings it cut inside a character (reading them back
/// is undefined behaviour). Each part is checked as a client's update is before the merge;
/// `None` when one fails (the copy is broken) or `yrs` panics.
pub(crate) fn encode_checked(doc: &Doc, sv: &StateVector) -> Option<Vec<u8>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let txn = doc.transact();
        let blocks = txn.encode_diff_v1(sv);
        let store = txn.store();
        if store.pending_update().is_none() && store.pending_ds().is_none() {
            return Some(blocks);
        }
        let mut parts = vec![blocks];
        if let Some(p) = store.pending_update() {
            parts.push(p.update.encode_v1());
        }
        if let Some(ds) = store.pending_ds() {
            // An update of no blocks (no clients) and this delete set.
            let mut u = vec![0];
            u.extend_from_slice(&ds.encode_v1());
            parts.push(u);
        }
        if parts.iter().any(|p| crate::validate::update_v1(p).is_err()) {
            return None;
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        yrs::merge_updates_v1(&refs).ok()
    }))
    .ok()
    .flatten()
}

/// When a renewal-only awareness change goes out: a third of the timeout, so that the
/// others' copies never reach it.
pub(crate) fn renewal_delay(timeout: Duration) -> Duration {
    timeout / 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn update_of(f: impl FnOnce(&Doc)) -> Vec<u8> {
        let doc = Doc::new();
        f(&doc);
        encode_whole(&doc).unwrap()
    }

    #[test]
    fn apply_refuses_garbage_and_merges() {
        let mut st = Document::loading("d".into()).state.into_inner();
        assert_eq!(st.apply(&[0xff, 0x01, 0x02]), Err(Refused::Malformed));
        assert_eq!(st.apply(&[0, 0]), Ok(false), "an empty update");
        let a = update_of(|d| {
            let t = d.get_or_insert_text("t");
            t.insert(&mut d.transact_mut(), 0, "hello");
        });
        assert_eq!(st.apply(&a), Ok(true));
        let text = st.ydoc.get_or_insert_text("t");
        assert_eq!(text.get_string(&st.ydoc.transact()), "hello");
        // A client knowing nothing gets it all; one knowing everything gets nothing new.
        let fresh = st.diff(&[0]).unwrap();
        let copy = Doc::new();
        copy.transact_mut()
            .apply_update(Update::decode_v1(&fresh).unwrap())
            .unwrap();
        assert_eq!(
            copy.get_or_insert_text("t").get_string(&copy.transact()),
            "hello"
        );
        assert!(st.diff(&[0xff]).is_none(), "a malformed state vector");
        let merged = merge(&[&a, &update_of(|_| {})]);
        assert_eq!(merged.len(), 1);
    }

    #[test]
    fn many_updates_merge_into_the_same_document() {
        // Two editors typing at once, 1,000 updates each, interleaved: more than one
        // group of the tree, and updates of a client that do not follow each other.
        let (a, b) = (Doc::with_client_id(1), Doc::with_client_id(2));
        let mut updates = Vec::new();
        for i in 0..1000 {
            for d in [&a, &b] {
                let t = d.get_or_insert_text("t");
                let mut txn = d.transact_mut();
                let at = if i % 3 == 0 { 0 } else { t.len(&txn) };
                t.insert(&mut txn, at, "ab");
                updates.push(txn.encode_update_v1());
            }
        }
        let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
        let merged = merge(&refs);
        assert_eq!(
            merged.len(),
            2000usize.div_ceil(MERGE_MAX),
            "merged in runs of MERGE_MAX"
        );
        let (one_by_one, from_merged) = (Doc::with_client_id(9), Doc::with_client_id(9));
        for u in &updates {
            one_by_one
                .transact_mut()
                .apply_update(Update::decode_v1(u).unwrap())
                .unwrap();
        }
        for m in &merged {
            from_merged
                .transact_mut()
                .apply_update(Update::decode_v1(m).unwrap())
                .unwrap();
        }
        let text = |d: &Doc| d.get_or_insert_text("t").get_string(&d.transact());
        assert_eq!(text(&from_merged), text(&one_by_one));
        assert_eq!(text(&from_merged).len(), 4000);
        assert_eq!(
            from_merged.transact().state_vector(),
            one_by_one.transact().state_vector()
        );
    }

    #[test]
    fn long_chained_runs_are_refused_from_clients_but_read_from_the_store() {
        let typed = |n: usize| {
            let d = Doc::with_client_id(5);
            let t = d.get_or_insert_text("t");
            let updates: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let mut txn = d.transact_mut();
                    let at = t.len(&txn);
                    t.insert(&mut txn, at, "k");
                    txn.encode_update_v1()
                })
                .collect();
            let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
            let merged = yrs::merge_updates_v1(&refs).unwrap();
            (merged, encode_whole(&d).unwrap())
        };
        let (long, squashed) = typed(MAX_CHAINED + 100);
        let mut st = Document::loading("d".into()).state.into_inner();
        assert_eq!(
            st.apply(&long),
            Err(Refused::Malformed),
            "a long chained run"
        );
        assert!(
            decode_update(&long).is_ok(),
            "the store's rows are read whatever their runs"
        );
        // The same text as a whole-state diff: one item.
        assert_eq!(st.apply(&squashed), Ok(true));
        let text = st.ydoc.get_or_insert_text("t");
        assert_eq!(text.len(&st.ydoc.transact()) as usize, MAX_CHAINED + 100);
        let (short, _) = typed(MAX_CHAINED);
        let mut st = Document::loading("d".into()).state.into_inner();
        assert_eq!(st.apply(&short), Ok(true), "a run of MAX_CHAINED is taken");
    }

    /// A fuzzer's find: an update `yrs` keeps pending and then panics encoding. It is
    /// refused (the service reloads the document), and a sync reply from the broken copy
    /// is none rather than a panic.
    #[test]
    fn an_update_yrs_cannot_encode_back_is_refused_and_never_panics_a_sync() {
        let update = [
            2u8, 2, 216, 0, 0, 39, 91, 1, 0, 0, 4, 39, 0, 2, 2, 0, 2, 2, 2, 216, 50, 2, 0, 39, 1,
            0, 0, 0, 39, 0,
        ];
        let mut st = Document::loading("d".into()).state.into_inner();
        assert_eq!(st.apply(&update), Err(Refused::Broken));
        assert!(st.diff(&[0]).is_none());
        assert!(!crate::take_update(&update, &[0]));
    }

    /// A fuzzer's find: an update after which `yrs` keeps pending a string cut inside a
    /// character (reading it back is undefined behaviour): refused.
    #[test]
    fn an_update_leaving_a_cut_string_pending_is_refused() {
        let data = [
            0u8, 2, 1, 0, 255, 255, 4, 7, 4, 4, 4, 0, 4, 4, 4, 4, 4, 1, 36, 4, 4, 4, 68, 0, 2, 1,
            0, 6, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 4,
            4, 4, 4, 4, 4, 0, 4, 4, 4, 4, 1, 1, 4, 4, 4, 4, 31, 4, 36, 1, 36, 0, 4, 4, 4, 1, 36, 4,
            4, 4, 68, 5, 4, 4, 4, 4, 0, 4, 4, 4, 4, 31, 4, 4, 4, 4, 4, 64, 0, 0, 0, 4, 4, 4, 4, 1,
            4, 4, 4, 4, 68, 4, 4, 4, 255, 91, 255, 8, 0, 3, 0, 2, 8, 0,
        ];
        let update = &data[1..];
        assert!(
            crate::validate::update_v1(update).is_ok(),
            "well-formed itself"
        );
        let mut st = Document::loading("d".into()).state.into_inner();
        assert_eq!(st.apply(update), Err(Refused::Broken));
        // A variant whose cut string the copy keeps (the service reloads it): neither a
        // sync reply nor a snapshot is read back from it (under debug assertions, reading
        // it would abort this test).
        let mut variant = update.to_vec();
        let at = variant.len() - 7;
        assert_eq!(variant[at], 8);
        variant[at] = 93;
        let mut st = Document::loading("d".into()).state.into_inner();
        assert_eq!(st.apply(&variant), Err(Refused::Broken));
        assert!(
            st.diff(&[0]).is_none(),
            "no sync reply from the broken copy"
        );
        assert!(encode_whole(&st.ydoc).is_none(), "no snapshot of it");
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut st = Document::loading("d".into()).state.into_inner();
            let _ = st.apply(&bytes);
            let _ = st.diff(&bytes);
            if decode_update(&bytes).is_ok() {
                let _ = merge(&[&bytes, &bytes]);
            }
        }
    }
}
