//! [`Store`]: the message store the IM service holds, on whichever backend `im.store`
//! names. One type over the two backends, an enum rather than a trait object: the same
//! methods, dispatched statically, and the futures boxed once here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::members::{MemberChange, MembersChanged};
use crate::model::{Conversation, ConversationId, Member, Message, NewMessage, Stored};
use crate::postgres::PgStore;
use crate::sqlite::{SqliteStore, Watermark};
use crate::{Config, StoreError, StoreStats};

/// A boxed future of the store.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// The message store: SQLite or PostgreSQL. Cheap to clone. Writes are queued when
/// called (calls from one task reach the store in call order) and resolve once
/// committed.
#[derive(Debug, Clone)]
pub enum Store {
    /// `sqlite://path`.
    Sqlite(SqliteStore),
    /// `postgres://...` (or `postgresql://`).
    Postgres(PgStore),
}

macro_rules! both {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => Box::pin($call),
            Store::Postgres($s) => Box::pin($call),
        }
    };
}

/// Whether `url` names a store this build serves (`sqlite://path`, `postgres://...`), and
/// parses; the reason when not.
pub fn check_url(url: &str) -> Result<(), String> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return if path.is_empty() {
            Err("the sqlite:// URL names no file".to_owned())
        } else {
            Ok(())
        };
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return url
            .parse::<tokio_postgres::Config>()
            .map(|_| ())
            .map_err(|e| format!("not a PostgreSQL URL: {e}"));
    }
    Err("a store URL is sqlite://path or postgres://user@host:port/database".to_owned())
}

/// `url` with its password, if any, replaced (for logs and `config print`).
pub fn redacted_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:<redacted>{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

impl Store {
    /// Opens the store `config.url` names: SQLite at once (created and migrated),
    /// PostgreSQL in the background (see [`crate::postgres`]).
    ///
    /// # Errors
    ///
    /// A URL of neither kind ([`StoreError::Conflict`]); the backend's.
    pub fn open(config: &Config, stats: Arc<StoreStats>) -> Result<Store, StoreError> {
        check_url(&config.url).map_err(StoreError::Conflict)?;
        if config.url.starts_with("sqlite:") {
            SqliteStore::open(config, stats).map(Store::Sqlite)
        } else {
            PgStore::open(config, stats).map(Store::Postgres)
        }
    }

    /// The backend's name: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Whether the store takes requests now (PostgreSQL: connected and migrated).
    pub fn is_ready(&self) -> bool {
        match self {
            Store::Sqlite(_) => true,
            Store::Postgres(s) => s.is_ready(),
        }
    }

    /// The store's counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        match self {
            Store::Sqlite(s) => s.stats(),
            Store::Postgres(s) => s.stats(),
        }
    }

    /// See [`SqliteStore::create_direct`].
    pub fn create_direct(&self, a: &str, b: &str, ts_ms: i64) -> StoreFuture<(Conversation, bool)> {
        both!(self, s => s.create_direct(a, b, ts_ms))
    }

    /// See [`SqliteStore::create_group`].
    pub fn create_group(
        &self,
        owner: Option<&str>,
        title: Option<String>,
        members: Vec<String>,
        ts_ms: i64,
    ) -> StoreFuture<Conversation> {
        both!(self, s => s.create_group(owner, title, members, ts_ms))
    }

    /// See [`SqliteStore::change_members`].
    pub fn change_members<A>(
        &self,
        conversation: ConversationId,
        change: MemberChange,
        applied: A,
    ) -> StoreFuture<MembersChanged>
    where
        A: Fn(&MembersChanged) + Send + Sync + 'static,
    {
        both!(self, s => s.change_members(conversation, change, applied))
    }

    /// See [`SqliteStore::append`].
    pub fn append(&self, message: NewMessage) -> StoreFuture<Stored> {
        both!(self, s => s.append(message))
    }

    /// See [`SqliteStore::append_if`].
    pub fn append_if<G>(&self, message: NewMessage, gate: G) -> StoreFuture<Stored>
    where
        G: Fn() -> Result<(), StoreError> + Send + Sync + 'static,
    {
        both!(self, s => s.append_if(message, gate))
    }

    /// See [`SqliteStore::watermarks`].
    pub fn watermarks(&self, marks: Vec<Watermark>) -> StoreFuture<()> {
        both!(self, s => s.watermarks(marks))
    }

    /// See [`SqliteStore::last_seen`].
    pub fn last_seen(&self, seen: Vec<(String, i64)>) -> StoreFuture<()> {
        both!(self, s => s.last_seen(seen))
    }

    /// See [`SqliteStore::conversation`].
    pub fn conversation(&self, id: ConversationId) -> StoreFuture<Option<Conversation>> {
        let this = self.clone();
        Box::pin(async move {
            match &this {
                Store::Sqlite(s) => s.conversation(id).await,
                Store::Postgres(s) => s.conversation(id).await,
            }
        })
    }

    /// See [`SqliteStore::member`].
    pub fn member(&self, conversation: ConversationId, user: &str) -> StoreFuture<Option<Member>> {
        let (this, user) = (self.clone(), user.to_owned());
        Box::pin(async move {
            match &this {
                Store::Sqlite(s) => s.member(conversation, &user).await,
                Store::Postgres(s) => s.member(conversation, &user).await,
            }
        })
    }

    /// See [`SqliteStore::members`].
    pub fn members(
        &self,
        conversation: ConversationId,
        after: Option<String>,
        limit: usize,
    ) -> StoreFuture<Vec<Member>> {
        let this = self.clone();
        Box::pin(async move {
            match &this {
                Store::Sqlite(s) => s.members(conversation, after, limit).await,
                Store::Postgres(s) => s.members(conversation, after, limit).await,
            }
        })
    }

    /// See [`SqliteStore::conversations_of`].
    pub fn conversations_of(&self, user: &str) -> StoreFuture<Vec<(Conversation, Member)>> {
        let (this, user) = (self.clone(), user.to_owned());
        Box::pin(async move {
            match &this {
                Store::Sqlite(s) => s.conversations_of(&user).await,
                Store::Postgres(s) => s.conversations_of(&user).await,
            }
        })
    }

    /// The messages after each `(conversation, seq)` of `from`, in that order, `limit`
    /// in all at most.
    pub fn messages_after(
        &self,
        from: Vec<(ConversationId, u64)>,
        limit: usize,
    ) -> StoreFuture<Vec<Message>> {
        let this = self.clone();
        Box::pin(async move {
            match &this {
                Store::Sqlite(s) => s.messages_after(from, limit).await,
                Store::Postgres(s) => s.messages_after(from, limit).await,
            }
        })
    }

    /// See [`SqliteStore::last_seen_of`].
    pub fn last_seen_of(&self, users: Vec<String>) -> StoreFuture<Vec<(String, i64)>> {
        let this = self.clone();
        Box::pin(async move {
            match &this {
                Store::Sqlite(s) => s.last_seen_of(users).await,
                Store::Postgres(s) => s.last_seen_of(users).await,
            }
        })
    }

    /// See [`SqliteStore::messages`].
    pub fn messages(
        &self,
        conversation: ConversationId,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<Vec<Message>> {
        let this = self.clone();
        Box::pin(async move {
            match &this {
                Store::Sqlite(s) => s.messages(conversation, after, before, limit).await,
                Store::Postgres(s) => s.messages(conversation, after, before, limit).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("sqlite://herald-data/herald.db").is_ok());
        assert!(check_url("postgres://herald@127.0.0.1:5432/herald").is_ok());
        assert!(check_url("sqlite://").is_err());
        assert!(check_url("mysql://x").is_err());
        assert!(check_url("postgres://h:notaport/db").is_err());
        assert_eq!(
            redacted_url("postgres://herald:s3cret@db.example:5432/im"),
            "postgres://herald:<redacted>@db.example:5432/im"
        );
        assert_eq!(
            redacted_url("postgres://herald@db/im"),
            "postgres://herald@db/im"
        );
        assert_eq!(redacted_url("sqlite://a/b.db"), "sqlite://a/b.db");
    }
}
