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
    /// A device whose connection is lost (not closed with a Socket.IO disconnect) still
    /// counts this long: a quick reconnect changes nothing anyone sees. Defaults to 2 s.
    pub presence_grace: Duration,
    /// A user's presence is pushed at most twice within this window: the changes of a
    /// user who flaps are held, and the state at the end goes out. Defaults to 10 s.
    pub presence_flap_window: Duration,
    /// Users one socket may watch (`presence.subscribe`) at most. Defaults to 1,000.
    pub max_presence_subscriptions: usize,
    /// How many devices of a user may be connected at once. Defaults to
    /// [`DevicePolicy::Multiple`].
    pub device_policy: DevicePolicy,
    /// Messages a user may send per second, sustained. Defaults to 20.
    pub send_rate: f64,
    /// Messages a user may send at once above the rate. Defaults to 40.
    pub send_burst: f64,
    /// Member deliveries per second one conversation may cause (a message costs its
    /// member count), so that one flooding group cannot starve the others. Defaults to
    /// 10,000 (about a tenth of what one core fans out): a group of 1,000 may take 10
    /// messages a second, one of 100 a hundred, a direct conversation is never held by
    /// it, and any conversation may take one message a second.
    pub conversation_fanout_rate: f64,
    /// Whether the service runs on many nodes (set by the server when `[cluster]` is
    /// configured; the store is then shared): the nodes tell each other messages,
    /// member changes, typing and sessions (see the `relay` module).
    pub clustered: bool,
}

/// `im.device_policy`: what a new device of a user does to the connected ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevicePolicy {
    /// Every device stays connected.
    #[default]
    Multiple,
    /// One device per platform (`web`, `desktop`, `ios`, `android`, `other`): a new one
    /// replaces the one of its platform.
    OnePerPlatform,
    /// One device: a new one replaces every other.
    Single,
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
            presence_grace: Duration::from_secs(2),
            presence_flap_window: Duration::from_secs(10),
            max_presence_subscriptions: 1_000,
            device_policy: DevicePolicy::Multiple,
            send_rate: 20.0,
            send_burst: 40.0,
            conversation_fanout_rate: 10_000.0,
            clustered: false,
        }
    }
}
