//! [`Config`]: the `[docs]` section.

use std::time::Duration;

/// How the document service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where documents are kept (the same store as IM's by default).
    pub store: store::Config,
    /// Updates arriving within this window of the last one sent out are merged into one
    /// frame per recipient (`docs.update_window_ms`, 10 ms). The first update after a
    /// quiet window goes out at once.
    pub update_window: Duration,
    /// Awareness changes are merged per document in windows this long
    /// (`docs.awareness_window_ms`, 50 ms).
    pub awareness_window: Duration,
    /// Every update received is stored within this time (`docs.flush_ms`, 1,000 ms): the
    /// writer runs four times per period.
    pub flush: Duration,
    /// A document nobody has open is unloaded after this long (`docs.idle_unload_ms`,
    /// 30,000 ms).
    pub idle_unload: Duration,
    /// Stored updates after which a document is compacted into its snapshot
    /// (`docs.compact_updates`, 500). Also compacted when unloaded.
    pub compact_updates: u64,
    /// The largest message a socket of a document namespace may send
    /// (`docs.max_message_bytes`, 64 MiB): the first sync carries whole documents.
    pub max_message_bytes: usize,
    /// Awareness states not renewed within this time are removed (`docs.awareness_timeout_ms`,
    /// 30,000 ms, as y-protocols).
    pub awareness_timeout: Duration,
    /// How long the server waits for a client's answer to its `sync-step-1`.
    pub sync_timeout: Duration,
    /// Malformed updates or events one socket may send before it is disconnected
    /// (`docs.max_bad_events`, 10).
    pub max_bad_events: u32,
    /// Events one socket of a document may send (`docs.events_per_second`, 500, and
    /// `docs.events_burst`, 2,000), in place of the server's per-socket rate: an editor
    /// sends one update per keystroke and one awareness update per cursor move. A socket
    /// over it has its connection closed, not its updates dropped: a dropped update would
    /// leave the server's copy behind; the client reconnects and syncs both ways.
    pub event_rate: Option<socketio::RateLimit>,
    /// One node of many (`[cluster]`): copies are kept in step over the bus (see the
    /// `relay` module).
    pub clustered: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: store::Config::default(),
            update_window: Duration::from_millis(10),
            awareness_window: Duration::from_millis(50),
            flush: Duration::from_millis(1_000),
            idle_unload: Duration::from_secs(30),
            compact_updates: 500,
            max_message_bytes: 64 << 20,
            awareness_timeout: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(30),
            max_bad_events: 10,
            event_rate: Some(socketio::RateLimit {
                per_second: 500.0,
                burst: 2_000,
            }),
            clustered: false,
        }
    }
}
