//! The service's counters, for `/metrics` (the store's are [`store::StoreStats`]).

use std::sync::atomic::{AtomicI64, AtomicU64};

/// What the IM service counts. Relaxed atomics: read only to be shown.
#[derive(Debug, Default)]
pub struct ImStats {
    /// `send`s refused by the sender's rate (`im.send_rate`, `im.send_burst`).
    pub rate_limited_user: AtomicU64,
    /// `send`s (and API posts) refused by the conversation's fan-out budget.
    pub rate_limited_conversation: AtomicU64,
    /// Sockets put out by the device policy (told `kicked`).
    pub kicked: AtomicU64,
    /// `presence` pushes (one per change of a user, to all their watchers).
    pub presence_pushes: AtomicU64,
    /// Users online as their watchers were last told.
    pub online_users: AtomicI64,
    /// `typing` pushes (one per conversation per window with a change).
    pub typing_pushes: AtomicU64,
    /// Conversations held in memory, as of the cache's last tick (every second).
    pub cached_conversations: AtomicI64,
    /// On many nodes: messages pushed from the store because their news from the node
    /// that committed them did not come (lost with the bus, or late).
    pub cluster_filled: AtomicU64,
}
