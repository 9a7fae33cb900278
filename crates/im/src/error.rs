//! What a client request can fail with, as the ack says it (`IM.md`, Replies).

use std::time::Duration;

use serde_json::{json, Value};
use store::StoreError;

/// A refused request: its code, what to tell the client, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImError {
    /// An argument is missing, of the wrong type, or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// The user may not do this (not a member, not an admin).
    #[error("{0}")]
    Forbidden(String),
    /// No such conversation (for this user).
    #[error("{0}")]
    NotFound(String),
    /// A body or list over its bound.
    #[error("{0}")]
    TooLarge(String),
    /// Over a rate; try again after the wait.
    #[error("{message}")]
    RateLimited {
        /// What to tell the client.
        message: String,
        /// When trying again may work.
        retry_after: Duration,
    },
    /// Contradicts what is stored (a cid used in another conversation).
    #[error("{0}")]
    Conflict(String),
    /// The store cannot take it now; nothing was stored.
    #[error("{0}")]
    Unavailable(String),
}

impl ImError {
    /// The code in the ack.
    pub fn code(&self) -> &'static str {
        match self {
            ImError::BadRequest(_) => "bad_request",
            ImError::Forbidden(_) => "forbidden",
            ImError::NotFound(_) => "not_found",
            ImError::TooLarge(_) => "too_large",
            ImError::RateLimited { .. } => "rate_limited",
            ImError::Conflict(_) => "conflict",
            ImError::Unavailable(_) => "unavailable",
        }
    }

    /// The ack `{ ok: false, error: { code, message, retryAfterMs? } }`.
    pub fn to_ack(&self) -> Value {
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        if let ImError::RateLimited { retry_after, .. } = self {
            // Rounded up: a client that waits what it is told finds room.
            error["retryAfterMs"] = json!(crate::limit::retry_ms(*retry_after).max(1));
        }
        json!({ "ok": false, "error": error })
    }

    /// The conversation is not one of the user's (a removed member, or no such one):
    /// the same answer either way, so ids cannot be probed.
    pub(crate) fn no_conversation() -> ImError {
        ImError::NotFound("no such conversation".to_owned())
    }
}

impl From<StoreError> for ImError {
    fn from(e: StoreError) -> ImError {
        match e {
            StoreError::NotFound => ImError::no_conversation(),
            StoreError::CidTaken { .. } => {
                ImError::Conflict("this cid names a message of another conversation".to_owned())
            }
            StoreError::Conflict(m) => ImError::Conflict(m),
            StoreError::Forbidden(m) => ImError::Forbidden(m),
            StoreError::Limit(m) => ImError::TooLarge(m),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "im: the store is unavailable");
                ImError::Unavailable("the message store is unavailable; try again".to_owned())
            }
        }
    }
}
