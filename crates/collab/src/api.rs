//! What the HTTP API for backends does with documents: read one (as a Yjs update, or a
//! named `Y.Text` as plain text), apply an update, list them, delete one.

use bytes::Bytes;
use store::{DocumentInfo, StoreError};
use yrs::{GetString, ReadTxn, Transact};

use crate::doc::{self, Op, Out, Phase};
use crate::{Collab, CollabStats};

/// Why an API call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The name cannot name a document.
    BadName,
    /// The update is not a Yjs v1 update.
    Malformed,
    /// The store failed.
    Store(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadName => {
                f.write_str("a document name is 1 to 512 bytes without control characters")
            }
            ApiError::Malformed => f.write_str(
                "the body is not a Yjs v1 update Herald takes (malformed, or a run of more than 2,048 chained items: merge fewer)",
            ),
            ApiError::Store(e) => write!(f, "the store failed: {e}"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Store(e.to_string())
    }
}

fn check(name: &str) -> Result<(), ApiError> {
    if crate::valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadName)
    }
}

impl Collab {
    /// Runs `f` on the document as it is now: the copy in memory when there is one,
    /// else one built from the store. `None` when it does not exist.
    async fn read<R: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&yrs::Doc) -> R + Send + 'static,
    ) -> Result<Option<R>, ApiError> {
        check(name)?;
        if let Some(d) = self.inner.docs.get(name).map(|d| d.value().clone()) {
            let st = d.state.lock();
            if matches!(st.phase, Phase::Ready) {
                return Ok(Some(f(&st.ydoc)));
            }
        }
        let Some(stored) = self.inner.store.document(name).await? else {
            return Ok(None);
        };
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || f(&doc::build(&name, &stored)))
            .await
            .map(Some)
            .map_err(|e| ApiError::Store(format!("reading failed: {e}")))
    }

    /// The whole document as one Yjs v1 update; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`ApiError`].
    pub async fn api_state(&self, name: &str) -> Result<Option<Vec<u8>>, ApiError> {
        match self.read(name, doc::encode_whole).await? {
            None => Ok(None),
            Some(Some(update)) => Ok(Some(update)),
            Some(None) => Err(ApiError::Store(
                "the document cannot be encoded (a broken copy): try again after it reloads".into(),
            )),
        }
    }

    /// The text of the document's `Y.Text` named `field` (empty when it has none);
    /// `None` when the document does not exist.
    ///
    /// # Errors
    ///
    /// [`ApiError`].
    pub async fn api_text(&self, name: &str, field: &str) -> Result<Option<String>, ApiError> {
        let field = field.to_owned();
        self.read(name, move |d| {
            let txn = d.transact();
            txn.get_text(field.as_str())
                .map(|t| t.get_string(&txn))
                .unwrap_or_default()
        })
        .await
    }

    /// Applies a Yjs v1 update to the document (made when new): sent to its sockets and
    /// stored like a client's.
    ///
    /// # Errors
    ///
    /// [`ApiError::Malformed`] when it does not decode; [`ApiError::BadName`].
    pub fn api_apply(&self, name: &str, update: Bytes) -> Result<(), ApiError> {
        check(name)?;
        doc::decode_incoming(&update).map_err(|_| ApiError::Malformed)?;
        let mut op = Some(Op::Apply(update));
        self.inner.with_doc(name, |d, st| {
            if let Some(op) = op.take() {
                self.inner.run(d, st, op);
            }
        });
        Ok(())
    }

    /// Documents whose names start with `prefix`, after `after`, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`].
    pub async fn api_list(
        &self,
        prefix: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<DocumentInfo>, ApiError> {
        Ok(self
            .inner
            .store
            .documents(prefix.to_owned(), after, limit)
            .await?)
    }

    /// Deletes the document: its sockets are disconnected (their clients do not come
    /// back on their own), its copy dropped, its rows deleted. `false` when it did not
    /// exist.
    ///
    /// # Errors
    ///
    /// [`ApiError`].
    pub async fn api_delete(&self, name: &str) -> Result<bool, ApiError> {
        check(name)?;
        // No write of unsaved updates runs from here to the store's delete: one that took
        // this document's updates has committed them (or put them back), so what is
        // cleared below is all there is, and the delete removes every row.
        let _writing = self.inner.writing.lock().await;
        let mut loaded = false;
        if let Some((_, d)) = self.inner.docs.remove(name) {
            loaded = true;
            self.inner.locked(&d, |st| {
                st.phase = Phase::Gone;
                st.unsaved.clear();
                st.outbox.clear();
                for m in std::mem::take(&mut st.members) {
                    st.out.push(Out::Disconnect(m.socket));
                }
            });
            CollabStats::add(&self.inner.stats.unloads, 1);
            self.inner
                .stats
                .loaded
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let existed = self.inner.store.delete_document(name).await?;
        Ok(existed || loaded)
    }
}
