//! The SQLite store: one file in WAL mode, one group-commit writer, a few readers.

mod docs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::Semaphore;

use crate::members::{MemberChange, MembersChanged};
use crate::model::{Body, Conversation, ConversationId, Kind, Member, Message, NewMessage};
use crate::model::{Role, Stored};
use crate::writer::Writer;
use crate::{Config, StoreError, StoreStats};

/// How hard a commit is pushed to the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit reaches the disk before it is acknowledged: nothing acknowledged is
    /// lost even to a power cut. The default.
    #[default]
    Full,
    /// A commit survives the process (a crash, `kill -9`) but not a power cut of the
    /// machine: the WAL is synced at checkpoints only.
    Normal,
}

/// A watermark move: a member read or received a conversation up to a sequence number.
/// Watermarks only move forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The conversation.
    pub conversation: ConversationId,
    /// The member.
    pub user: String,
    /// Read up to here, if given.
    pub read: Option<u64>,
    /// Delivered to a device up to here, if given.
    pub delivered: Option<u64>,
}

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    /// Idle read connections. parking_lot mutex: held to take or put back one.
    readers: Mutex<Vec<Connection>>,
    /// Bounds the reads running at once to the readers opened.
    reading: Semaphore,
    stats: Arc<StoreStats>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating the file and its directory when missing) and migrates the store
    /// at `config.url` (`sqlite://path`), and starts its writer.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the file cannot be opened or migrated;
    /// [`StoreError::Conflict`] when its schema is newer than this build's.
    pub fn open(config: &Config, stats: Arc<StoreStats>) -> Result<SqliteStore, StoreError> {
        let path = sqlite_path(&config.url)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut write = Connection::open(&path)?;
        write.pragma_update(None, "journal_mode", "WAL")?;
        write.pragma_update(
            None,
            "synchronous",
            match config.durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        write.pragma_update(None, "foreign_keys", "ON")?;
        write.busy_timeout(std::time::Duration::from_secs(5))?;
        stable_plans(&write)?;
        crate::migrate::sqlite(&mut write)?;
        let mut readers = Vec::with_capacity(config.readers.max(1));
        for _ in 0..config.readers.max(1) {
            let r = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            stable_plans(&r)?;
            readers.push(r);
        }
        let writer = Writer::start(
            write,
            config.batch_max,
            config.batch_window,
            config.queue,
            stats.clone(),
        )
        .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer,
                reading: Semaphore::new(readers.len()),
                readers: Mutex::new(readers),
                stats,
            }),
        })
    }

    /// The store's counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.inner.stats
    }

    /// Runs `f` on a read connection, on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let permit = self
            .inner
            .reading
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".to_owned()))?;
        let inner = self.inner.clone();
        let op = crate::stats::operation();
        let result = tokio::task::spawn_blocking(move || {
            // A permit guarantees a connection is there.
            let conn = inner.readers.lock().pop();
            let Some(conn) = conn else {
                return Err(StoreError::Unavailable("no read connection".to_owned()));
            };
            inner.stats.read_by(op, 1);
            let result = f(&conn).map_err(StoreError::from);
            inner.readers.lock().push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("a read failed: {e}")))?;
        drop(permit);
        result
    }

    // === writes ===
    //
    // Each is queued for the writer when called, not when first awaited: calls from one
    // task reach the store in the order they were made.

    /// The direct conversation of `a` and `b`, created if they have none yet (then
    /// `true`).
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when `a` and `b` are the same user; `Unavailable`.
    pub fn create_direct(
        &self,
        a: &str,
        b: &str,
        ts_ms: i64,
    ) -> impl std::future::Future<Output = Result<(Conversation, bool), StoreError>> + Send + 'static
    {
        let same = a == b;
        let (first, second) = if a < b { (a, b) } else { (b, a) };
        let key = format!("{first}\n{second}");
        let users = [first.to_owned(), second.to_owned()];
        let stats = self.inner.stats.clone();
        self.inner.writer.submit(move |conn| {
            if same {
                return Err(StoreError::Conflict(
                    "a direct conversation needs two users".to_owned(),
                ));
            }
            if let Some(found) = conn
                .query_row(
                    &format!("SELECT {CONVERSATION} FROM conversations WHERE direct_key = ?1"),
                    [&key],
                    conversation_row,
                )
                .optional()?
            {
                return Ok((found, false));
            }
            conn.execute(
                "INSERT INTO conversations (kind, direct_key, member_count, created_ms) \
                     VALUES ('direct', ?1, 2, ?2)",
                params![key, ts_ms],
            )?;
            let id = conn.last_insert_rowid();
            for user in &users {
                insert_member(conn, id, user, Role::Member, 0)?;
            }
            stats.wrote(3);
            Ok((fetch_conversation(conn, id)?, true))
        })
    }

    /// Creates a group owned by `owner` (or by nobody: then only the backend changes its
    /// members), with `members` (the owner included whether listed or not; duplicates
    /// once).
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub fn create_group(
        &self,
        owner: Option<&str>,
        title: Option<String>,
        members: Vec<String>,
        ts_ms: i64,
    ) -> impl std::future::Future<Output = Result<Conversation, StoreError>> + Send + 'static {
        let owner = owner.map(str::to_owned);
        let stats = self.inner.stats.clone();
        self.inner.writer.submit(move |conn| {
            conn.execute(
                "INSERT INTO conversations (kind, title, owner, created_ms) \
                     VALUES ('group', ?1, ?2, ?3)",
                params![title, owner, ts_ms],
            )?;
            let id = conn.last_insert_rowid();
            let mut count = 0u64;
            if let Some(owner) = &owner {
                count += insert_member(conn, id, owner, Role::Owner, 0)?;
            }
            for user in &members {
                count += insert_member(conn, id, user, Role::Member, 0)?;
            }
            conn.execute(
                "UPDATE conversations SET member_count = ?2 WHERE id = ?1",
                params![id, count],
            )?;
            stats.wrote(count + 2);
            fetch_conversation(conn, id)
        })
    }

    /// Changes a group's members as `change` says, by `change.by` (its rights checked
    /// here, in the transaction: see [`MemberChange`]); `applied` runs on the writer, in
    /// order with every other write, once the change is made (before its commit).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for no such conversation, or `by` not a member of it;
    /// [`StoreError::Forbidden`] for a change `by` may not make; [`StoreError::Conflict`]
    /// for a direct conversation, or a change that contradicts the group (removing its
    /// owner); [`StoreError::Limit`] past `change.max_members`; `Unavailable`.
    pub fn change_members<A>(
        &self,
        conversation: ConversationId,
        change: MemberChange,
        applied: A,
    ) -> impl std::future::Future<Output = Result<MembersChanged, StoreError>> + Send + 'static
    where
        A: Fn(&MembersChanged) + Send + Sync + 'static,
    {
        let stats = self.inner.stats.clone();
        self.inner.writer.submit(move |conn| {
            let changed = crate::members::change(conn, conversation, change, &stats)?;
            applied(&changed);
            Ok(changed)
        })
    }

    /// Stores a message: the next sequence number of its conversation, in the same
    /// transaction. A (sender, cid) stored before returns that message's place with
    /// `duplicate` and stores nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for no such conversation; [`StoreError::CidTaken`] when
    /// the cid names a message of another conversation; `Unavailable`.
    pub fn append(
        &self,
        message: NewMessage,
    ) -> impl std::future::Future<Output = Result<Stored, StoreError>> + Send + 'static {
        self.append_if(message, || Ok(()))
    }

    /// [`SqliteStore::append`] if `gate` lets it: `gate` runs on the writer, in order with
    /// every other write (a sender's membership, checked there, cannot change between the
    /// check and the write); its error is the append's, and nothing is written.
    ///
    /// # Errors
    ///
    /// `gate`'s; those of [`SqliteStore::append`].
    pub fn append_if<G>(
        &self,
        message: NewMessage,
        gate: G,
    ) -> impl std::future::Future<Output = Result<Stored, StoreError>> + Send + 'static
    where
        G: Fn() -> Result<(), StoreError> + Send + Sync + 'static,
    {
        let stats = self.inner.stats.clone();
        // Atomic by itself (see `append`): no savepoint around it.
        self.inner.writer.submit_atomic(move |conn| {
            gate()?;
            append(conn, &message, &stats)
        })
    }

    /// Moves watermarks forward (never back), in one transaction with whatever else the
    /// writer has.
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub fn watermarks(
        &self,
        marks: Vec<Watermark>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let stats = self.inner.stats.clone();
        self.inner.writer.submit(move |conn| {
            let mut stmt = conn.prepare_cached(
                "UPDATE members SET read_seq = max(read_seq, coalesce(?3, 0)), \
                     delivered_seq = max(delivered_seq, coalesce(?4, 0)) \
                     WHERE conversation_id = ?1 AND user = ?2",
            )?;
            for m in &marks {
                stmt.execute(params![m.conversation, m.user, m.read, m.delivered])?;
            }
            stats.wrote(marks.len() as u64);
            Ok(())
        })
    }

    /// Records when users were last seen: each `(user, ms)` moves that user's time
    /// forward to `ms`, never back (a late or reordered write of an older time changes
    /// nothing), in one transaction with whatever else the writer has.
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub fn last_seen(
        &self,
        seen: Vec<(String, i64)>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let stats = self.inner.stats.clone();
        self.inner.writer.submit(move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO presence (user_id, last_seen_ms) VALUES (?1, ?2) \
                 ON CONFLICT (user_id) DO UPDATE \
                 SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
            )?;
            for (user, ms) in &seen {
                stmt.execute(params![user, ms])?;
            }
            stats.wrote(seen.len() as u64);
            Ok(())
        })
    }

    // === reads ===

    /// The conversation `id`.
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {CONVERSATION} FROM conversations WHERE id = ?1"),
                [id],
                conversation_row,
            )
            .optional()
        })
        .await
    }

    /// `user`'s membership of `conversation`.
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn member(
        &self,
        conversation: ConversationId,
        user: &str,
    ) -> Result<Option<Member>, StoreError> {
        let user = user.to_owned();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {MEMBER} FROM members WHERE conversation_id = ?1 AND user = ?2"),
                params![conversation, user],
                member_row,
            )
            .optional()
        })
        .await
    }

    /// Members of `conversation` in user order, after `after`, at most `limit`.
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn members(
        &self,
        conversation: ConversationId,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Member>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MEMBER} FROM members WHERE conversation_id = ?1 AND user > ?2 \
                 ORDER BY user LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![conversation, after.unwrap_or_default(), limit as i64],
                member_row,
            )?;
            rows.collect()
        })
        .await
    }

    /// Every conversation `user` is a member of, with their membership, newest first.
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn conversations_of(
        &self,
        user: &str,
    ) -> Result<Vec<(Conversation, Member)>, StoreError> {
        let user = user.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CONVERSATION_C}, {MEMBER_M} FROM members m \
                 JOIN conversations c ON c.id = m.conversation_id \
                 WHERE m.user = ?1 ORDER BY c.id DESC"
            ))?;
            let rows = stmt.query_map([user], |r| {
                Ok((
                    conversation_row(r)?,
                    member_row_at(r, CONVERSATION_COLUMNS)?,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// The messages after each `(conversation, seq)` of `from`, in that order, each
    /// conversation's oldest first, `limit` in all at most: one read for a whole `sync`
    /// page, however many conversations it names.
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn messages_after(
        &self,
        from: Vec<(ConversationId, u64)>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MESSAGE} FROM messages WHERE conversation_id = ?1 \
                 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?;
            let mut out = Vec::new();
            for (conversation, after) in from {
                let room = limit.saturating_sub(out.len());
                if room == 0 {
                    break;
                }
                let after = after.min(i64::MAX as u64) as i64;
                for m in stmt.query_map(params![conversation, after, room as i64], message_row)? {
                    out.push(m?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// The last-seen times stored for those of `users` that have one, in no particular
    /// order, each user once: one read however many users (an empty list reads nothing).
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn last_seen_of(
        &self,
        mut users: Vec<String>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        // Each user once, as PostgreSQL's `= ANY` answers.
        users.sort_unstable();
        users.dedup();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT last_seen_ms FROM presence WHERE user_id = ?1")?;
            let mut out = Vec::new();
            for user in users {
                let ms: Option<i64> = stmt.query_row([&user], |r| r.get(0)).optional()?;
                if let Some(ms) = ms {
                    out.push((user, ms));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Messages of `conversation`, oldest first: with `after`, the oldest `limit` after
    /// it; otherwise the newest `limit` before `before` (or the end).
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn messages(
        &self,
        conversation: ConversationId,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.read(move |conn| {
            let limit = limit as i64;
            let mut out: Vec<Message> = match after {
                Some(after) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {MESSAGE} FROM messages WHERE conversation_id = ?1 \
                         AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT ?4"
                    ))?;
                    let rows = stmt.query_map(
                        params![conversation, after, before.unwrap_or(u64::MAX >> 1), limit],
                        message_row,
                    )?;
                    rows.collect::<Result<_, _>>()?
                }
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {MESSAGE} FROM messages WHERE conversation_id = ?1 \
                         AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
                    ))?;
                    let rows = stmt.query_map(
                        params![conversation, before.unwrap_or(u64::MAX >> 1), limit],
                        message_row,
                    )?;
                    let mut v = rows.collect::<Result<Vec<_>, _>>()?;
                    v.reverse();
                    v
                }
            };
            out.shrink_to_fit();
            Ok(out)
        })
        .await
    }
}

/// The path in a `sqlite://` URL.
fn sqlite_path(url: &str) -> Result<PathBuf, StoreError> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Conflict(format!("{url:?} is not a sqlite:// URL")))?;
    if path.is_empty() {
        return Err(StoreError::Conflict(
            "the sqlite:// URL names no file".to_owned(),
        ));
    }
    Ok(Path::new(path).to_path_buf())
}

const CONVERSATION: &str = "id, kind, title, owner, last_seq, member_count, created_ms";
const CONVERSATION_C: &str =
    "c.id, c.kind, c.title, c.owner, c.last_seq, c.member_count, c.created_ms";
const CONVERSATION_COLUMNS: usize = 7;
pub(crate) const MEMBER: &str = "user, role, read_seq, delivered_seq, joined_seq";
const MEMBER_M: &str = "m.user, m.role, m.read_seq, m.delivered_seq, m.joined_seq";
const MESSAGE: &str = "id, conversation_id, seq, sender, cid, body, binary, ts_ms";

fn conversation_row(r: &Row<'_>) -> Result<Conversation, rusqlite::Error> {
    let kind: String = r.get(1)?;
    Ok(Conversation {
        id: r.get(0)?,
        kind: Kind::parse(&kind).ok_or_else(|| bad_value(1, &kind))?,
        title: r.get(2)?,
        owner: r.get(3)?,
        last_seq: r.get(4)?,
        member_count: r.get(5)?,
        created_ms: r.get(6)?,
    })
}

pub(crate) fn member_row(r: &Row<'_>) -> Result<Member, rusqlite::Error> {
    member_row_at(r, 0)
}

fn member_row_at(r: &Row<'_>, at: usize) -> Result<Member, rusqlite::Error> {
    let role: String = r.get(at + 1)?;
    Ok(Member {
        user: r.get(at)?,
        role: Role::parse(&role).ok_or_else(|| bad_value(at + 1, &role))?,
        read_seq: r.get(at + 2)?,
        delivered_seq: r.get(at + 3)?,
        joined_seq: r.get(at + 4)?,
    })
}

fn message_row(r: &Row<'_>) -> Result<Message, rusqlite::Error> {
    let binary: bool = r.get(6)?;
    let body: Vec<u8> = r.get(5)?;
    Ok(Message {
        id: r.get(0)?,
        conversation: r.get(1)?,
        seq: r.get(2)?,
        sender: r.get(3)?,
        cid: r.get(4)?,
        body: if binary {
            Body::Binary(body)
        } else {
            Body::Json(String::from_utf8(body).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Blob, e.into())
            })?)
        },
        ts_ms: r.get(7)?,
    })
}

fn bad_value(column: usize, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("unexpected value {value:?}").into(),
    )
}

pub(crate) fn fetch_conversation(
    conn: &Connection,
    id: ConversationId,
) -> Result<Conversation, StoreError> {
    conn.query_row(
        &format!("SELECT {CONVERSATION} FROM conversations WHERE id = ?1"),
        [id],
        conversation_row,
    )
    .optional()?
    .ok_or(StoreError::NotFound)
}

/// Adds `user` to `conversation` unless a member already; returns the rows added.
pub(crate) fn insert_member(
    conn: &Connection,
    conversation: ConversationId,
    user: &str,
    role: Role,
    at_seq: u64,
) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO members \
             (conversation_id, user, role, joined_seq, read_seq, delivered_seq) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?4)",
        )?
        .execute(params![conversation, user, role.as_str(), at_seq])?;
    Ok(n as u64)
}

/// The writer's part of [`SqliteStore::append`]. The common case (a new cid) writes and
/// reads nothing else: the cid's unique index finds a duplicate, and only then is the
/// message that has it looked up.
fn append(conn: &Connection, m: &NewMessage, stats: &StoreStats) -> Result<Stored, StoreError> {
    let (body, binary): (&[u8], bool) = match &m.body {
        Body::Json(s) => (s.as_bytes(), false),
        Body::Binary(b) => (b, true),
    };
    // The next seq is read in the insert; only once it is in is the head moved. A cid
    // stored before fails the insert alone (SQLite undoes a failed statement), so no
    // savepoint is needed: they cost more than the insert (each copies the pages it is
    // about to change).
    let inserted = conn
        .prepare_cached(
            "INSERT INTO messages (conversation_id, seq, sender, cid, body, binary, ts_ms) \
             SELECT ?1, last_seq + 1, ?2, ?3, ?4, ?5, ?6 FROM conversations WHERE id = ?1 \
             RETURNING id, seq",
        )?
        .query_row(
            params![m.conversation, m.sender, m.cid, body, binary, m.ts_ms],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u64>(1)?)),
        )
        .optional();
    match inserted {
        Ok(Some((id, seq))) => {
            conn.prepare_cached("UPDATE conversations SET last_seq = ?2 WHERE id = ?1")?
                .execute(params![m.conversation, seq])?;
            stats.wrote(2);
            Ok(Stored {
                id,
                seq,
                ts_ms: m.ts_ms,
                duplicate: false,
            })
        }
        Ok(None) => Err(StoreError::NotFound),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation && m.cid.is_some() =>
        {
            existing(conn, m, stats)
        }
        Err(e) => Err(e.into()),
    }
}

/// Plans that do not depend on the values bound. Without this, SQLite marks a cached
/// statement whose `LIMIT ?` (or range) is bound to be prepared again whenever the value
/// changes, and a `sync` page, whose limit is what is left of the page, was parsed and
/// planned anew on every call (a tenth of the server's samples in a catch-up storm). Our
/// queries are index lookups whose best plan does not change with the values.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Runs one statement without parameters, prepared once per connection (the savepoints
/// of every send and job).
pub(crate) fn run(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The message a (sender, cid) names, for a retried send.
fn existing(conn: &Connection, m: &NewMessage, stats: &StoreStats) -> Result<Stored, StoreError> {
    stats.read(1);
    let found: Option<(ConversationId, Stored)> = conn
        .prepare_cached(
            "SELECT conversation_id, id, seq, ts_ms FROM messages \
             WHERE coalesce(sender, '') = coalesce(?1, '') AND cid = ?2",
        )?
        .query_row(params![m.sender, m.cid], |r| {
            Ok((
                r.get(0)?,
                Stored {
                    id: r.get(1)?,
                    seq: r.get(2)?,
                    ts_ms: r.get(3)?,
                    duplicate: true,
                },
            ))
        })
        .optional()?;
    match found {
        Some((conversation, stored)) if conversation == m.conversation => Ok(stored),
        Some((conversation, _)) => Err(StoreError::CidTaken { conversation }),
        // The constraint that fired was another one: a bug, not the caller's.
        None => Err(StoreError::Unavailable(
            "a message could not be stored (constraint)".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("herald-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn open(d: &Path) -> SqliteStore {
        let config = Config {
            url: format!("sqlite://{}", d.join("sub/herald.db").display()),
            durability: Durability::Normal,
            ..Config::default()
        };
        SqliteStore::open(&config, Arc::default()).unwrap()
    }

    fn text(conversation: ConversationId, sender: &str, cid: &str) -> NewMessage {
        NewMessage {
            conversation,
            sender: Some(sender.to_owned()),
            cid: Some(cid.to_owned()),
            body: Body::Json(format!("{{\"text\":\"{cid}\"}}")),
            ts_ms: 1,
        }
    }

    /// Direct conversations are unique per pair, whichever user creates them; a group
    /// counts its owner once; members change, the owner stays; direct ones do not.
    #[tokio::test]
    async fn conversations_and_members() {
        let d = dir("conv");
        let s = open(&d);
        let (ab, created) = s.create_direct("ann", "bob", 5).await.unwrap();
        assert!(created);
        assert_eq!(
            (ab.kind, ab.member_count, ab.last_seq),
            (Kind::Direct, 2, 0)
        );
        let (again, created) = s.create_direct("bob", "ann", 6).await.unwrap();
        assert_eq!((again.id, created), (ab.id, false));
        assert!(matches!(
            s.create_direct("ann", "ann", 1).await,
            Err(StoreError::Conflict(_))
        ));
        let g = s
            .create_group(
                Some("ann"),
                Some("team".into()),
                vec!["bob".into(), "ann".into(), "cy".into()],
                7,
            )
            .await
            .unwrap();
        assert_eq!(
            (g.kind, g.member_count, g.owner.as_deref()),
            (Kind::Group, 3, Some("ann"))
        );
        let by = |user: &str| MemberChange {
            by: Some(user.to_owned()),
            max_members: 10,
            ..MemberChange::default()
        };
        let changed = s
            .change_members(
                g.id,
                MemberChange {
                    add: vec!["dee".into(), "bob".into()],
                    remove: vec!["cy".into(), "zed".into()],
                    ..by("ann")
                },
                |_| {},
            )
            .await
            .unwrap();
        let added: Vec<&str> = changed.added.iter().map(|m| m.user.as_str()).collect();
        assert_eq!(added, ["dee"]);
        assert_eq!(changed.removed, vec!["cy".to_owned()]);
        assert_eq!(changed.conversation.member_count, 3);
        let refused = [
            // The owner is not removed, a direct conversation's members never change,
            // a member changes nothing, an admin does not promote, nobody outside sees in.
            (
                g.id,
                MemberChange {
                    remove: vec!["ann".into()],
                    ..by("ann")
                },
                "conflict",
            ),
            (
                ab.id,
                MemberChange {
                    add: vec!["cy".into()],
                    ..by("ann")
                },
                "conflict",
            ),
            (
                g.id,
                MemberChange {
                    add: vec!["eve".into()],
                    ..by("bob")
                },
                "forbidden",
            ),
            (
                g.id,
                MemberChange {
                    add: vec!["eve".into()],
                    ..by("cy")
                },
                "not found",
            ),
            (9999, by("ann"), "not found"),
            (
                g.id,
                MemberChange {
                    add: (0..8).map(|i| format!("u{i}")).collect(),
                    ..by("ann")
                },
                "limit",
            ),
        ];
        for (conversation, change, want) in refused {
            let got = s.change_members(conversation, change.clone(), |_| {}).await;
            let code = match got {
                Err(StoreError::Conflict(_)) => "conflict",
                Err(StoreError::Forbidden(_)) => "forbidden",
                Err(StoreError::NotFound) => "not found",
                Err(StoreError::Limit(_)) => "limit",
                other => panic!("{change:?}: {other:?}"),
            };
            assert_eq!(code, want, "{change:?}");
        }
        // Roles: the owner promotes; an admin adds and removes members, not admins.
        let promoted = s
            .change_members(
                g.id,
                MemberChange {
                    promote: vec!["bob".into(), "dee".into()],
                    ..by("ann")
                },
                |_| {},
            )
            .await
            .unwrap();
        assert_eq!(
            promoted.roles,
            [
                ("bob".to_owned(), Role::Admin),
                ("dee".to_owned(), Role::Admin)
            ]
        );
        let r = s
            .change_members(
                g.id,
                MemberChange {
                    remove: vec!["dee".into()],
                    ..by("bob")
                },
                |_| {},
            )
            .await;
        assert!(matches!(r, Err(StoreError::Forbidden(_))), "{r:?}");
        s.change_members(
            g.id,
            MemberChange {
                demote: vec!["dee".into()],
                ..by("ann")
            },
            |_| {},
        )
        .await
        .unwrap();
        // The owner leaves: the longest-standing admin owns the group.
        let applied = Arc::new(Mutex::new(None));
        let seen = applied.clone();
        let left = s
            .change_members(
                g.id,
                MemberChange {
                    leave: true,
                    ..by("ann")
                },
                move |c| {
                    *seen.lock() = Some(c.clone());
                },
            )
            .await
            .unwrap();
        assert_eq!(
            applied.lock().as_ref(),
            Some(&left),
            "applied saw the change made"
        );
        assert_eq!(left.removed, ["ann"]);
        assert_eq!(left.roles, [("bob".to_owned(), Role::Owner)]);
        assert_eq!(
            (
                left.conversation.owner.as_deref(),
                left.conversation.member_count
            ),
            (Some("bob"), 2)
        );
        s.change_members(
            g.id,
            MemberChange {
                add: vec!["ann".into()],
                ..by("bob")
            },
            |_| {},
        )
        .await
        .unwrap();
        let members: Vec<String> = s
            .members(g.id, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.user)
            .collect();
        assert_eq!(members, ["ann", "bob", "dee"]);
        let page = s.members(g.id, Some("ann".into()), 1).await.unwrap();
        assert_eq!(page[0].user, "bob");
        assert_eq!(
            s.member(g.id, "bob").await.unwrap().unwrap().role,
            Role::Owner
        );
        assert!(s.member(g.id, "cy").await.unwrap().is_none());
        let of_bob: Vec<ConversationId> = s
            .conversations_of("bob")
            .await
            .unwrap()
            .iter()
            .map(|(c, _)| c.id)
            .collect();
        assert_eq!(of_bob, vec![g.id, ab.id]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Sequence numbers are contiguous per conversation under concurrent sends; a cid
    /// sent twice is stored once and answered with its first place; a cid of another
    /// conversation is refused; an unknown conversation is not found; and many sends
    /// share few commits (group commit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends() {
        let d = dir("append");
        let s = open(&d);
        let (ab, _) = s.create_direct("ann", "bob", 0).await.unwrap();
        let (ac, _) = s.create_direct("ann", "cy", 0).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..400 {
            let s = s.clone();
            let (conv, who) = if i % 2 == 0 {
                (ab.id, "ann")
            } else {
                (ac.id, "cy")
            };
            tasks.push(tokio::spawn(async move {
                s.append(text(conv, who, &format!("m{i}"))).await.unwrap()
            }));
        }
        let mut seqs = std::collections::HashMap::<bool, Vec<u64>>::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let stored = t.await.unwrap();
            assert!(!stored.duplicate);
            seqs.entry(i % 2 == 0).or_default().push(stored.seq);
        }
        for (_, mut v) in seqs {
            v.sort_unstable();
            assert_eq!(v, (1..=200).collect::<Vec<u64>>());
        }
        let stats = s.stats();
        let commits = StoreStats::get(&stats.commits);
        assert!(commits < 100, "{commits} commits for 400 sends");
        let first = s.append(text(ab.id, "ann", "m0")).await.unwrap();
        assert!(first.duplicate);
        assert_eq!(
            s.conversation(ab.id).await.unwrap().unwrap().last_seq,
            200,
            "nothing taken"
        );
        assert_eq!(
            s.append(text(ac.id, "ann", "m0")).await,
            Err(StoreError::CidTaken {
                conversation: ab.id
            })
        );
        assert_eq!(
            s.append(text(4242, "ann", "new")).await,
            Err(StoreError::NotFound)
        );
        // The failures undid their writes: the next send takes the next number.
        assert_eq!(s.append(text(ac.id, "ann", "next")).await.unwrap().seq, 201);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// History pages: the newest below a bound, the oldest above one, oldest first;
    /// binary and JSON bodies come back as they went in.
    #[tokio::test]
    async fn history() {
        let d = dir("history");
        let s = open(&d);
        let (ab, _) = s.create_direct("ann", "bob", 0).await.unwrap();
        for i in 1..=10 {
            s.append(text(ab.id, "ann", &format!("c{i}")))
                .await
                .unwrap();
        }
        let bin = NewMessage {
            body: Body::Binary(vec![0, 255, 7]),
            cid: None,
            ..text(ab.id, "bob", "")
        };
        assert_eq!(s.append(bin).await.unwrap().seq, 11);
        let seqs = |v: &[Message]| v.iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(&s.messages(ab.id, None, None, 3).await.unwrap()),
            [9, 10, 11]
        );
        assert_eq!(
            seqs(&s.messages(ab.id, None, Some(9), 3).await.unwrap()),
            [6, 7, 8]
        );
        assert_eq!(
            seqs(&s.messages(ab.id, Some(2), None, 3).await.unwrap()),
            [3, 4, 5]
        );
        assert_eq!(
            seqs(&s.messages(ab.id, Some(2), Some(5), 10).await.unwrap()),
            [3, 4]
        );
        let last = s.messages(ab.id, Some(10), None, 5).await.unwrap();
        assert_eq!(last[0].body, Body::Binary(vec![0, 255, 7]));
        assert_eq!(last[0].cid, None);
        let first = s.messages(ab.id, Some(0), None, 1).await.unwrap();
        assert_eq!(first[0].body, Body::Json("{\"text\":\"c1\"}".into()));
        assert_eq!(first[0].sender.as_deref(), Some("ann"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Watermarks move forward only; unknown members change nothing.
    #[tokio::test]
    async fn watermarks_only_move_forward() {
        let d = dir("marks");
        let s = open(&d);
        let (ab, _) = s.create_direct("ann", "bob", 0).await.unwrap();
        let mark = |read, delivered| Watermark {
            conversation: ab.id,
            user: "bob".into(),
            read,
            delivered,
        };
        s.watermarks(vec![mark(Some(5), Some(7))]).await.unwrap();
        s.watermarks(vec![mark(Some(3), None), mark(None, Some(9))])
            .await
            .unwrap();
        s.watermarks(vec![Watermark {
            user: "zed".into(),
            ..mark(Some(9), None)
        }])
        .await
        .unwrap();
        let bob = s.member(ab.id, "bob").await.unwrap().unwrap();
        assert_eq!((bob.read_seq, bob.delivered_seq), (5, 9));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// What was committed is there after the store is closed and opened again (last-seen
    /// times too), and the schema is not migrated twice; a database from a newer Herald
    /// is refused; a URL that is not `sqlite://` is refused.
    #[tokio::test]
    async fn reopen_and_versions() {
        let d = dir("reopen");
        let s = open(&d);
        let (ab, _) = s.create_direct("ann", "bob", 0).await.unwrap();
        s.append(text(ab.id, "ann", "kept")).await.unwrap();
        s.last_seen(vec![("ann".into(), 42)]).await.unwrap();
        drop(s);
        let s = open(&d);
        assert_eq!(s.conversation(ab.id).await.unwrap().unwrap().last_seq, 1);
        assert_eq!(
            s.last_seen_of(vec!["ann".into(), "bob".into()])
                .await
                .unwrap(),
            [("ann".to_owned(), 42)]
        );
        assert!(
            s.append(text(ab.id, "ann", "kept"))
                .await
                .unwrap()
                .duplicate
        );
        drop(s);
        let conn = Connection::open(d.join("sub/herald.db")).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, crate::migrate::VERSION);
        conn.pragma_update(None, "user_version", crate::migrate::VERSION + 1)
            .unwrap();
        drop(conn);
        let config = Config {
            url: format!("sqlite://{}", d.join("sub/herald.db").display()),
            ..Config::default()
        };
        assert!(matches!(
            SqliteStore::open(&config, Arc::default()),
            Err(StoreError::Conflict(_))
        ));
        let bad = Config {
            url: "postgres://x".into(),
            ..Config::default()
        };
        assert!(SqliteStore::open(&bad, Arc::default()).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
