//! What the service does with its store: loading a document (what comes meanwhile waits),
//! the writer that appends unsaved updates every quarter of `flush`, compaction into the
//! snapshot, and the maintenance tick (awareness expiry, unloading idle documents).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

use crate::doc::{self, Document, Phase};
use crate::{CollabStats, Inner};

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Loads `doc` from the store (retrying while the store fails), then does what waited.
pub(crate) async fn load(inner: Arc<Inner>, doc: Arc<Document>) {
    let mut delay = Duration::from_millis(100);
    let stored = loop {
        match inner.store.document(&doc.name).await {
            Ok(stored) => break stored.unwrap_or_default(),
            Err(e) => {
                CollabStats::add(&inner.stats.store_errors, 1);
                tracing::warn!(document = &*doc.name, error = %e, "a document does not load: retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let pending = stored.updates.len() as u64;
    let name = doc.name.clone();
    let built = tokio::task::spawn_blocking(move || doc::build(&name, &stored)).await;
    let Ok(ydoc) = built else {
        tracing::error!(document = &*doc.name, "loading a document failed");
        return;
    };
    CollabStats::add(&inner.stats.loads, 1);
    let compact = inner.locked(&doc, |st| {
        let Phase::Loading(ops) = std::mem::replace(&mut st.phase, Phase::Ready) else {
            return false;
        };
        st.ydoc = ydoc;
        st.since_snapshot = pending;
        for op in ops {
            inner.run(&doc, st, op);
        }
        let compact = pending >= inner.config.compact_updates && !st.compacting;
        st.compacting |= compact;
        compact
    });
    if inner.config.clustered {
        tokio::spawn(crate::relay::sync(inner.clone(), doc.name.clone()));
    }
    if compact {
        tokio::spawn(compact_document(inner.clone(), doc));
    }
}

/// Appends the unsaved updates of every dirty document, four times per `flush`.
pub(crate) async fn writer(inner: Weak<Inner>) {
    let period = {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        (inner.config.flush / 4).max(Duration::from_millis(5))
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        write_once(&inner).await;
    }
}

/// One write of every dirty document's unsaved updates (each document's merged into a
/// row per [`doc::merge`] run), in one transaction. `true` when nothing was left unsaved.
pub(crate) async fn write_once(inner: &Arc<Inner>) -> bool {
    // tokio mutex: held across the store's commit.
    let _writing = inner.writing.lock().await;
    let docs = std::mem::take(&mut *inner.dirty.lock());
    if docs.is_empty() {
        return true;
    }
    let mut rows: Vec<(String, Vec<u8>)> = Vec::new();
    let mut written: Vec<(Arc<Document>, Vec<Vec<u8>>)> = Vec::new();
    for d in docs {
        let unsaved = {
            let mut st = d.state.lock();
            st.dirty = false;
            std::mem::take(&mut st.unsaved)
        };
        if unsaved.is_empty() {
            continue;
        }
        let parts: Vec<&[u8]> = unsaved.iter().map(|u| &u[..]).collect();
        let merged = doc::merge(&parts);
        rows.extend(merged.iter().map(|m| (d.name.to_string(), m.clone())));
        written.push((d, merged));
    }
    if rows.is_empty() {
        return true;
    }
    let n = rows.len() as u64;
    match inner.store.append_documents(rows, now_ms()).await {
        Ok(_) => {
            CollabStats::add(&inner.stats.stored, n);
            for (d, merged) in written {
                let compact = {
                    let mut st = d.state.lock();
                    st.since_snapshot += merged.len() as u64;
                    let compact = st.since_snapshot >= inner.config.compact_updates
                        && !st.compacting
                        && !matches!(st.phase, Phase::Gone);
                    st.compacting |= compact;
                    compact
                };
                if compact {
                    tokio::spawn(compact_document(inner.clone(), d));
                }
            }
            true
        }
        Err(e) => {
            CollabStats::add(&inner.stats.store_errors, 1);
            tracing::warn!(error = %e, rows = n, "document updates not stored: kept for the next write");
            let mut dirty = inner.dirty.lock();
            for (d, merged) in written {
                let mut st = d.state.lock();
                let later = std::mem::take(&mut st.unsaved);
                st.unsaved = merged.into_iter().map(Bytes::from).chain(later).collect();
                if !st.dirty {
                    st.dirty = true;
                    dirty.push(d.clone());
                }
            }
            false
        }
    }
}

/// Merges what the store has of `doc` into its snapshot.
pub(crate) async fn compact_document(inner: Arc<Inner>, doc: Arc<Document>) {
    let name = doc.name.clone();
    let result = async {
        let Some(stored) = inner.store.document(&name).await? else {
            return Ok(None);
        };
        let upto = stored.last_seq();
        let rows = stored.updates.len() as u64;
        if rows == 0 {
            return Ok(None);
        }
        let n = name.clone();
        let snapshot =
            tokio::task::spawn_blocking(move || doc::encode_whole(&doc::build(&n, &stored)))
                .await
                .map_err(|e| store::StoreError::Unavailable(format!("compaction failed: {e}")))?
                // The rows stay as they are.
                .ok_or_else(|| {
                    store::StoreError::Unavailable(
                        "compaction failed: the merged document does not encode".into(),
                    )
                })?;
        inner
            .store
            .compact_document(&name, upto, snapshot, now_ms())
            .await
            .map(|done| Some(if done { rows } else { 0 }))
    }
    .await;
    let mut st = doc.state.lock();
    st.compacting = false;
    match result {
        Ok(Some(rows)) => {
            if rows > 0 {
                CollabStats::add(&inner.stats.compactions, 1);
            }
            st.since_snapshot = st.since_snapshot.saturating_sub(rows);
        }
        // Nothing stored after the snapshot (or no document at all).
        Ok(None) => st.since_snapshot = 0,
        Err(e) => {
            CollabStats::add(&inner.stats.store_errors, 1);
            tracing::warn!(document = &*name, error = %e, "compaction failed");
        }
    }
}

/// Every second: expires awareness states, unloads documents idle long enough (after
/// compacting them).
pub(crate) async fn maintenance(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let docs: Vec<Arc<Document>> = inner.docs.iter().map(|d| d.value().clone()).collect();
        let now = Instant::now();
        for d in docs {
            sweep(&inner, &d, now);
        }
    }
}

fn sweep(inner: &Arc<Inner>, d: &Arc<Document>, now: Instant) {
    enum Then {
        Nothing,
        Compact,
        Unloaded,
    }
    let then = inner.locked(d, |st| {
        if !matches!(st.phase, Phase::Ready) {
            return Then::Nothing;
        }
        if st.awareness.expire(inner.config.awareness_timeout, now) > 0 {
            let frames = st.send_awareness(now, inner.config.clustered);
            CollabStats::add(&inner.stats.awareness_frames_out, frames);
        }
        let idle = st.members.is_empty()
            && now.saturating_duration_since(st.idle_since) >= inner.config.idle_unload
            && st.unsaved.is_empty()
            && !st.dirty
            && !st.compacting;
        if !idle {
            return Then::Nothing;
        }
        if st.since_snapshot > 0 {
            st.compacting = true;
            return Then::Compact;
        }
        st.phase = Phase::Gone;
        inner.docs.remove_if(&d.name, |_, x| Arc::ptr_eq(x, d));
        Then::Unloaded
    });
    match then {
        Then::Nothing => {}
        Then::Compact => {
            tokio::spawn(compact_document(inner.clone(), d.clone()));
        }
        Then::Unloaded => {
            CollabStats::add(&inner.stats.unloads, 1);
            inner.stats.loaded.fetch_sub(1, Ordering::Relaxed);
            if let Some(io) = inner.io.get() {
                io.remove_empty_namespace(&format!("{}{}", crate::PREFIX, d.name));
            }
            tracing::debug!(document = &*d.name, "unloaded");
        }
    }
}
