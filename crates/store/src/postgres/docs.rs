//! The documents' writes and reads on PostgreSQL (see [`crate::docs`]).

use std::future::Future;

use super::PgStore;
use crate::docs::{like_prefix, DocumentInfo, StoredDocument};
use crate::StoreError;

impl PgStore {
    /// See [`crate::Store::append_documents`].
    pub fn append_documents(
        &self,
        updates: Vec<(String, Vec<u8>)>,
        ts_ms: i64,
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send + 'static {
        let stats = self.inner.stats.clone();
        let updates = std::sync::Arc::new(updates);
        self.submit(move |conn| {
            let (updates, stats) = (updates.clone(), stats.clone());
            Box::pin(async move {
                let mut seqs = Vec::with_capacity(updates.len());
                for (name, data) in updates.iter() {
                    // One statement takes the number and makes the document when new:
                    // two nodes appending to one document at once queue on its row.
                    let row = conn
                        .client
                        .query_one(
                            "INSERT INTO documents (name, snapshot, last_seq, bytes, created_ms, \
                             updated_ms) VALUES ($1, '', 1, $2, $3, $3) ON CONFLICT (name) DO \
                             UPDATE SET last_seq = documents.last_seq + 1, bytes = \
                             documents.bytes + $2, updated_ms = $3 RETURNING last_seq",
                            &[name, &(data.len() as i64), &ts_ms],
                        )
                        .await?;
                    let seq: i64 = row.try_get(0)?;
                    conn.client
                        .execute(
                            "INSERT INTO document_updates (name, seq, data) VALUES ($1, $2, $3)",
                            &[name, &seq, data],
                        )
                        .await?;
                    seqs.push(seq as u64);
                }
                stats.wrote(updates.len() as u64);
                Ok(seqs)
            })
        })
    }

    /// See [`crate::Store::document`].
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn document(&self, name: String) -> Result<Option<StoredDocument>, StoreError> {
        let mut c = self.reader().await?;
        // One snapshot of the database for both reads (see the SQLite backend).
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let Some(head) = tx
            .query_opt(
                "SELECT snapshot, snapshot_seq FROM documents WHERE name = $1",
                &[&name],
            )
            .await?
        else {
            return Ok(None);
        };
        let snapshot: Vec<u8> = head.try_get(0)?;
        let snapshot_seq: i64 = head.try_get(1)?;
        let rows = tx
            .query(
                "SELECT seq, data FROM document_updates WHERE name = $1 AND seq > $2 ORDER BY seq",
                &[&name, &snapshot_seq],
            )
            .await?;
        let updates = rows
            .iter()
            .map(|r| Ok((r.try_get::<_, i64>(0)? as u64, r.try_get(1)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        tx.commit().await?;
        Ok(Some(StoredDocument {
            snapshot,
            snapshot_seq: snapshot_seq as u64,
            updates,
        }))
    }

    /// See [`crate::Store::compact_document`].
    pub fn compact_document(
        &self,
        name: String,
        upto_seq: u64,
        snapshot: Vec<u8>,
        ts_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let stats = self.inner.stats.clone();
        let snapshot = std::sync::Arc::new(snapshot);
        self.submit(move |conn| {
            let (name, snapshot, stats) = (name.clone(), snapshot.clone(), stats.clone());
            Box::pin(async move {
                let upto = upto_seq as i64;
                let changed = conn
                    .client
                    .execute(
                        "UPDATE documents SET snapshot = $2, snapshot_seq = $3, updated_ms = \
                         greatest(updated_ms, $4) WHERE name = $1 AND snapshot_seq < $3 AND \
                         last_seq >= $3",
                        &[&name, &*snapshot, &upto, &ts_ms],
                    )
                    .await?;
                if changed == 0 {
                    return Ok(false);
                }
                conn.client
                    .execute(
                        "DELETE FROM document_updates WHERE name = $1 AND seq <= $2",
                        &[&name, &upto],
                    )
                    .await?;
                conn.client
                    .execute(
                        "UPDATE documents SET bytes = length(snapshot) + coalesce((SELECT \
                         sum(length(data)) FROM document_updates WHERE name = $1), 0) WHERE name = $1",
                        &[&name],
                    )
                    .await?;
                stats.wrote(1);
                Ok(true)
            })
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
        let c = self.reader().await?;
        let rows = c
            .query(
                "SELECT name, bytes, last_seq - snapshot_seq, created_ms, updated_ms \
                 FROM documents WHERE name LIKE $1 ESCAPE '\\' AND name COLLATE \"C\" > $2 \
                 ORDER BY name COLLATE \"C\" LIMIT $3",
                &[
                    &like_prefix(&prefix),
                    &after.unwrap_or_default(),
                    &(limit as i64),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DocumentInfo {
                    name: r.try_get(0)?,
                    bytes: r.try_get::<_, i64>(1)? as u64,
                    pending_updates: r.try_get::<_, i64>(2)? as u64,
                    created_ms: r.try_get(3)?,
                    updated_ms: r.try_get(4)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(StoreError::from)
    }

    /// See [`crate::Store::delete_document`].
    pub fn delete_document(
        &self,
        name: String,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        self.submit(move |conn| {
            let name = name.clone();
            Box::pin(async move {
                conn.client
                    .execute("DELETE FROM document_updates WHERE name = $1", &[&name])
                    .await?;
                let n = conn
                    .client
                    .execute("DELETE FROM documents WHERE name = $1", &[&name])
                    .await?;
                Ok(n > 0)
            })
        })
    }
}
