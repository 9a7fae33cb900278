//! Yjs documents as the store keeps them: a snapshot (every update up to a sequence
//! number, merged) and the updates appended after it, each with the next number of its
//! document. The store does not read Yjs: the collaboration service merges the updates
//! and hands back the snapshot ([`Store::compact_document`]).

use crate::store::{Store, StoreFuture};

/// What is stored of a document, to load it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDocument {
    /// The merged updates up to `snapshot_seq` (empty when none were compacted).
    pub snapshot: Vec<u8>,
    /// The last update merged into the snapshot.
    pub snapshot_seq: u64,
    /// The updates after the snapshot, in order: `(seq, update)`.
    pub updates: Vec<(u64, Vec<u8>)>,
}

impl StoredDocument {
    /// The last update's sequence number.
    pub fn last_seq(&self) -> u64 {
        self.updates
            .last()
            .map_or(self.snapshot_seq, |(seq, _)| *seq)
    }
}

/// A document in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentInfo {
    /// Its name.
    pub name: String,
    /// Bytes stored for it (the snapshot and the updates after it).
    pub bytes: u64,
    /// Updates stored after the snapshot.
    pub pending_updates: u64,
    /// When it was made and last written, in milliseconds since the epoch.
    pub created_ms: i64,
    /// See `created_ms`.
    pub updated_ms: i64,
}

impl Store {
    /// Appends one update to each named document (made when new), in one transaction;
    /// resolves with each one's sequence number, in order, once committed.
    pub fn append_documents(
        &self,
        updates: Vec<(String, Vec<u8>)>,
        ts_ms: i64,
    ) -> StoreFuture<Vec<u64>> {
        match self {
            Store::Sqlite(s) => Box::pin(s.append_documents(updates, ts_ms)),
            Store::Postgres(s) => Box::pin(s.append_documents(updates, ts_ms)),
        }
    }

    /// What is stored of `name`, read at one point in time; `None` when it was never
    /// written (or was deleted).
    pub fn document(&self, name: &str) -> StoreFuture<Option<StoredDocument>> {
        let (this, name) = (self.clone(), name.to_owned());
        Box::pin(async move {
            match &this {
                Store::Sqlite(s) => s.document(name).await,
                Store::Postgres(s) => s.document(name).await,
            }
        })
    }

    /// Replaces the updates of `name` up to `upto_seq` by `snapshot` (their merge, with
    /// the snapshot before them). Does nothing when the document is gone or already
    /// compacted that far. Resolves with whether it compacted.
    pub fn compact_document(
        &self,
        name: &str,
        upto_seq: u64,
        snapshot: Vec<u8>,
        ts_ms: i64,
    ) -> StoreFuture<bool> {
        let name = name.to_owned();
        match self {
            Store::Sqlite(s) => Box::pin(s.compact_document(name, upto_seq, snapshot, ts_ms)),
            Store::Postgres(s) => Box::pin(s.compact_document(name, upto_seq, snapshot, ts_ms)),
        }
    }

    /// The documents whose names start with `prefix`, after `after` in name order, at
    /// most `limit`.
    pub fn documents(
        &self,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> StoreFuture<Vec<DocumentInfo>> {
        let this = self.clone();
        Box::pin(async move {
            match &this {
                Store::Sqlite(s) => s.documents(prefix, after, limit).await,
                Store::Postgres(s) => s.documents(prefix, after, limit).await,
            }
        })
    }

    /// Deletes `name` and its updates; resolves with whether it existed.
    pub fn delete_document(&self, name: &str) -> StoreFuture<bool> {
        let name = name.to_owned();
        match self {
            Store::Sqlite(s) => Box::pin(s.delete_document(name)),
            Store::Postgres(s) => Box::pin(s.delete_document(name)),
        }
    }
}

/// `LIKE` pattern of the names starting with `prefix` (`\` escapes).
pub(crate) fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}
