//! The documents' writes and reads on SQLite (see [`crate::docs`]).

use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::docs::{like_prefix, DocumentInfo, StoredDocument};
use crate::StoreError;

impl SqliteStore {
    /// See [`crate::Store::append_documents`].
    pub fn append_documents(
        &self,
        updates: Vec<(String, Vec<u8>)>,
        ts_ms: i64,
    ) -> impl std::future::Future<Output = Result<Vec<u64>, StoreError>> + Send + 'static {
        let stats = self.inner.stats.clone();
        self.inner.writer.submit(move |conn| {
            let mut make = conn.prepare_cached(
                "INSERT INTO documents (name, snapshot, created_ms, updated_ms) \
                 VALUES (?1, x'', ?2, ?2) ON CONFLICT (name) DO NOTHING",
            )?;
            let mut next = conn.prepare_cached(
                "UPDATE documents SET last_seq = last_seq + 1, bytes = bytes + ?2, \
                 updated_ms = ?3 WHERE name = ?1 RETURNING last_seq",
            )?;
            let mut put = conn.prepare_cached(
                "INSERT INTO document_updates (name, seq, data) VALUES (?1, ?2, ?3)",
            )?;
            let mut seqs = Vec::with_capacity(updates.len());
            for (name, data) in &updates {
                make.execute(params![name, ts_ms])?;
                let seq: i64 =
                    next.query_row(params![name, data.len() as i64, ts_ms], |r| r.get(0))?;
                put.execute(params![name, seq, data])?;
                seqs.push(seq as u64);
            }
            stats.wrote(updates.len() as u64);
            Ok(seqs)
        })
    }

    /// See [`crate::Store::document`].
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn document(&self, name: String) -> Result<Option<StoredDocument>, StoreError> {
        self.read(move |conn| {
            // One read transaction: a compaction committing between the two reads must
            // not hide the updates it merged.
            conn.execute_batch("BEGIN")?;
            let result = (|| {
                let head: Option<(Vec<u8>, i64)> = conn
                    .prepare_cached("SELECT snapshot, snapshot_seq FROM documents WHERE name = ?1")?
                    .query_row([&name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((snapshot, snapshot_seq)) = head else {
                    return Ok(None);
                };
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, data FROM document_updates WHERE name = ?1 AND seq > ?2 \
                     ORDER BY seq",
                )?;
                let updates = stmt
                    .query_map(params![name, snapshot_seq], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some(StoredDocument {
                    snapshot,
                    snapshot_seq: snapshot_seq as u64,
                    updates,
                }))
            })();
            conn.execute_batch("COMMIT")?;
            result
        })
        .await
    }

    /// See [`crate::Store::compact_document`].
    pub fn compact_document(
        &self,
        name: String,
        upto_seq: u64,
        snapshot: Vec<u8>,
        ts_ms: i64,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send + 'static {
        let stats = self.inner.stats.clone();
        self.inner.writer.submit(move |conn| {
            let upto = upto_seq as i64;
            let changed = conn
                .prepare_cached(
                    "UPDATE documents SET snapshot = ?2, snapshot_seq = ?3, updated_ms = \
                     max(updated_ms, ?4) WHERE name = ?1 AND snapshot_seq < ?3 AND last_seq >= ?3",
                )?
                .execute(params![name, snapshot, upto, ts_ms])?;
            if changed == 0 {
                return Ok(false);
            }
            conn.prepare_cached("DELETE FROM document_updates WHERE name = ?1 AND seq <= ?2")?
                .execute(params![name, upto])?;
            conn.prepare_cached(
                "UPDATE documents SET bytes = length(snapshot) + coalesce((SELECT \
                 sum(length(data)) FROM document_updates WHERE name = ?1), 0) WHERE name = ?1",
            )?
            .execute([&name])?;
            stats.wrote(1);
            Ok(true)
        })
    }

    /// See [`crate::Store::documents`].
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn documents(
        &self,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<DocumentInfo>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, bytes, last_seq - snapshot_seq, created_ms, updated_ms \
                 FROM documents WHERE name LIKE ?1 ESCAPE '\\' AND name > ?2 \
                 ORDER BY name LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    like_prefix(&prefix),
                    after.unwrap_or_default(),
                    limit as i64
                ],
                |r| {
                    Ok(DocumentInfo {
                        name: r.get(0)?,
                        bytes: r.get::<_, i64>(1)? as u64,
                        pending_updates: r.get::<_, i64>(2)? as u64,
                        created_ms: r.get(3)?,
                        updated_ms: r.get(4)?,
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    /// See [`crate::Store::delete_document`].
    pub fn delete_document(
        &self,
        name: String,
    ) -> impl std::future::Future<Output = Result<bool, StoreError>> + Send + 'static {
        self.inner.writer.submit(move |conn| {
            conn.prepare_cached("DELETE FROM document_updates WHERE name = ?1")?
                .execute([&name])?;
            let n = conn
                .prepare_cached("DELETE FROM documents WHERE name = ?1")?
                .execute([&name])?;
            Ok(n > 0)
        })
    }
}
