//! Herald's message store: conversations, their members and their messages, kept so that
//! nothing acknowledged is lost; and when each user was last seen.
//!
//! The embedded backend is SQLite (`rusqlite`, the library bundled): one file in WAL mode,
//! written by **one writer thread that commits in groups** (the jobs that arrive within a
//! short window, up to a bounded batch, share one transaction; each job is answered after
//! that transaction commits), and read through a few read-only connections. A message's
//! sequence number is taken from its conversation's row in the same transaction that
//! stores the message, never kept only in memory. The schema is versioned and migrated
//! at open (`PRAGMA user_version`).
//!
//! The store knows nothing of sockets or clients: the IM service keeps its caches above
//! it and calls it for what must be durable.
//!
//! # Layout
//!
//! - [`model`]: the stored types: [`Conversation`], [`Member`], [`Message`], [`NewMessage`].
//! - [`error`]: [`StoreError`], and who is at fault.
//! - [`Store`]: the store of either backend, as the IM service holds it.
//! - [`sqlite`]: [`SqliteStore`]: open, the writer's jobs, the reads.
//! - [`postgres`]: [`PgStore`]: the same on PostgreSQL, connecting in the background.
//! - [`docs`]: Yjs documents: [`StoredDocument`], appended updates and snapshots.
//! - [`members`]: [`MemberChange`]: who may change a group's members, and how.
//! - `writer`: the group-commit loop.
//! - `migrate`: the schema versions.
//! - [`stats`]: [`StoreStats`], reads, writes, transactions and batch sizes.

pub mod docs;
pub mod error;
pub mod members;
mod migrate;
pub mod model;
pub mod postgres;
pub mod sqlite;
pub mod stats;
mod store;
mod writer;

use std::time::Duration;

pub use docs::{DocumentInfo, StoredDocument};
pub use error::StoreError;
pub use members::{MemberChange, MembersChanged};
pub use model::{
    Body, Conversation, ConversationId, Kind, Member, Message, NewMessage, Role, Stored,
};
pub use postgres::PgStore;
pub use sqlite::{Durability, SqliteStore, Watermark};
pub use stats::StoreStats;
pub use store::{check_url, redacted_url, Store, StoreFuture};

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the data lives: `sqlite://path/to/file.db` (the directory is created) or
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// Jobs one transaction takes at most. Defaults to 512.
    pub batch_max: usize,
    /// How long the writer waits for more jobs after the first of a batch. Defaults to
    /// 1 ms: a send waits at most that much longer than its own commit.
    pub batch_window: Duration,
    /// Read-only connections. Defaults to 4.
    pub readers: usize,
    /// Jobs waiting for the writer at most; past it, writes are refused as
    /// [`StoreError::Unavailable`] rather than queued without bound. Defaults to 65,536.
    pub queue: usize,
    /// How hard each commit is pushed to the disk. Defaults to [`Durability::Full`].
    pub durability: Durability,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "sqlite://herald-data/herald.db".to_owned(),
            batch_max: 512,
            batch_window: Duration::from_millis(1),
            readers: 4,
            queue: 65_536,
            durability: Durability::Full,
        }
    }
}
