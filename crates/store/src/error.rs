//! Why a store operation failed.

/// A failed store operation. [`StoreError::is_caller_fault`] tells the caller's mistakes
/// (answered as such) from the store's (answered `unavailable`, logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The conversation (or member) does not exist.
    #[error("not found")]
    NotFound,
    /// The sender's cid is already taken by a message of another conversation.
    #[error("the cid is taken by a message of conversation {conversation}")]
    CidTaken {
        /// The conversation of the message that has it.
        conversation: i64,
    },
    /// The user may not do this (a member changing a group's members).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Past a bound (a group's members).
    #[error("over a limit: {0}")]
    Limit(String),
    /// The operation contradicts what is stored (a direct conversation's members are
    /// fixed, say).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store cannot take or serve the operation now: its queue is full, its file or
    /// server is unreachable. Nothing was written; trying again later may work.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the caller asked for something wrong (rather than the store failing).
    pub fn is_caller_fault(&self) -> bool {
        !matches!(self, StoreError::Unavailable(_))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Unavailable(e.to_string())
    }
}
