//! The `[im]` section, validated by the server.

use std::time::Duration;

/// What the IM service is set up with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store (`sqlite://herald-data/herald.db` by default).
    pub store: store::Config,
    /// Largest message body, in bytes (JSON text, or binary). Defaults to 64 KiB.
    pub max_body_bytes: usize,
    /// Members a group may have at most. Defaults to 100,000.
    pub max_group_members: usize,
    /// Conversations one user may be a member of at most. Defaults to 10,000.
    pub max_conversations_per_user: usize,
    /// Receipts and the watermarks behind them go out at most once per window per
    /// (conversation, user). Defaults to 250 ms.
    pub receipt_window: Duration,
    /// Watermarks are written to the store at most once per interval per (conversation,
    /// user). Defaults to 1 s.
    pub watermark_flush: Duration,
    /// Groups of at most this many members tell each author whose messages a watermark
    /// covers; larger ones send counts. Defaults to 100.
    pub receipt_detail_limit: usize,
    /// A cached conversation nobody has used for this long (and nothing holds) is
    /// dropped from memory; its next use loads it again. Defaults to 10 minutes.
    pub cache_idle: Duration,
    /// Members get the set of typers of a conversation at most once per window, and only
    /// when it changed. Defaults to 100 ms.
    pub typing_window: Duration,
    /// A user counts as typing this long after their last `typing: true`. Defaults to 5 s.
    pub typing_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: store::Config::default(),
            max_body_bytes: 64 * 1024,
            max_group_members: 100_000,
            max_conversations_per_user: 10_000,
            receipt_window: Duration::from_millis(250),
            watermark_flush: Duration::from_secs(1),
            receipt_detail_limit: 100,
            cache_idle: Duration::from_secs(600),
            typing_window: Duration::from_millis(100),
            typing_ttl: Duration::from_secs(5),
        }
    }
}
