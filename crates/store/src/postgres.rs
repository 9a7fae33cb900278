//! The PostgreSQL store: one writer connection that commits in groups, a pool of read
//! connections (`deadpool-postgres`), the same schema and the same answers as SQLite.
//!
//! The writer is a task that owns its connection. It takes the jobs that arrive while
//! it waits, or within the batch window after the first, and runs them in one
//! transaction, in order; every job is answered once that transaction has committed. A
//! job that refuses (a member without the right, a cid of another conversation) writes
//! nothing; a statement that fails (the server went away) fails the whole batch, every
//! job of it answered `unavailable`. A commit whose outcome is unknown (the connection
//! broke during `COMMIT`) is answered `unavailable` too: a send retried with its cid
//! then finds its message if it was stored.
//!
//! The store starts without waiting for the server: the writer connects (and migrates)
//! in the background and again after every loss, every 500 ms; until it is connected,
//! writes and reads are answered `unavailable` at once, and the service recovers by
//! itself when the server is back.

mod docs;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::members::{MemberChange, MembersChanged};
use crate::model::{Body, Conversation, ConversationId, Kind, Member, Message, NewMessage};
use crate::model::{Role, Stored};
use crate::sqlite::Watermark;
use crate::{Config, StoreError, StoreStats};

/// How long the writer waits before connecting again.
const RECONNECT: Duration = Duration::from_millis(500);

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<Job>,
    pool: Pool,
    /// The writer is connected and the schema migrated.
    ready: Arc<AtomicBool>,
    stats: Arc<StoreStats>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("ready", &self.inner.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The writer's connection and its prepared statements.
struct Conn {
    client: Client,
    append: Statement,
    watermark: Statement,
    last_seen: Statement,
}

/// What a job leaves to do once its transaction is over: answer its caller.
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A write job: its statements, then their failure if one failed (the batch is then
/// lost) and what to do once the transaction is over. Run again when its transaction is
/// (after a deadlock with another node's writer): each run answers with its own `Done`,
/// and only the last one's is called.
type Job = Box<dyn FnMut(Arc<Conn>) -> BoxFuture<(Option<StoreError>, Done)> + Send>;

/// Times a job is run when its transaction deadlocks with another writer (another node's,
/// on the same database) or fails to serialize; PostgreSQL aborts one of the two, and
/// running it again is what its documentation prescribes.
const TRANSACTION_RUNS: u32 = 5;

impl PgStore {
    /// Starts the store for `config.url` (`postgres://user@host:port/database`): the
    /// writer connects and migrates in the background (see the module's doc).
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] for a URL that does not parse. Must be called within a
    /// Tokio runtime.
    pub fn open(config: &Config, stats: Arc<StoreStats>) -> Result<PgStore, StoreError> {
        let pg = tokio_postgres::Config::from_str(&config.url).map_err(|e| {
            StoreError::Conflict(format!("{:?} is not a PostgreSQL URL: {e}", config.url))
        })?;
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.readers.max(1))
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot make the read pool: {e}")))?;
        let (jobs, rx) = mpsc::channel(config.queue.max(1));
        let ready = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(
            pg,
            config.durability,
            rx,
            config.batch_max.max(1),
            config.batch_window,
            ready.clone(),
            stats.clone(),
        ));
        Ok(PgStore {
            inner: Arc::new(Inner {
                jobs,
                pool,
                ready,
                stats,
            }),
        })
    }

    /// The store's counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.inner.stats
    }

    /// Whether the writer is connected (and the schema migrated).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Runs `f` in the writer's next transaction; resolves once it has committed. Never
    /// waits to queue: a full queue, or a writer not connected, refuses at once.
    fn submit<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnMut(Arc<Conn>) -> BoxFuture<Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        // Taken by the `Done` that is called: the one of the run that committed.
        let tx = Arc::new(parking_lot::Mutex::new(Some(tx)));
        let op = crate::stats::operation();
        let mut f = f;
        let job: Job = Box::new(move |conn| {
            let run = f(conn);
            let tx = tx.clone();
            Box::pin(crate::stats::counted(op, async move {
                let result = run.await;
                let failed = match &result {
                    Err(e @ StoreError::Unavailable(_)) => Some(e.clone()),
                    _ => None,
                };
                let done: Done = Box::new(move |committed: Result<(), StoreError>| {
                    let taken = tx.lock().take();
                    if let Some(tx) = taken {
                        let _ = tx.send(committed.and(result));
                    }
                });
                (failed, done)
            }))
        });
        let queued = if !self.is_ready() {
            Err(StoreError::Unavailable(
                "the store is not connected to PostgreSQL".to_owned(),
            ))
        } else {
            match self.inner.jobs.try_send(job) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    StoreStats::add(&self.inner.stats.refused, 1);
                    Err(StoreError::Unavailable(
                        "the store's write queue is full".to_owned(),
                    ))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    Err(StoreError::Unavailable("the store is closed".to_owned()))
                }
            }
        };
        async move {
            queued?;
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the store's writer stopped".to_owned(),
                ))
            })
        }
    }

    /// A read connection, or `unavailable`.
    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if !self.is_ready() {
            return Err(StoreError::Unavailable(
                "the store is not connected to PostgreSQL".to_owned(),
            ));
        }
        self.inner.stats.read(1);
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("no read connection: {e}")))
    }

    // === writes (see `SqliteStore` for what each does) ===

    /// As [`crate::SqliteStore::create_direct`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when `a` and `b` are the same user; `Unavailable`.
    pub fn create_direct(
        &self,
        a: &str,
        b: &str,
        ts_ms: i64,
    ) -> impl Future<Output = Result<(Conversation, bool), StoreError>> + Send + 'static {
        let same = a == b;
        let (first, second) = if a < b { (a, b) } else { (b, a) };
        let key = format!("{first}\n{second}");
        let users = vec![first.to_owned(), second.to_owned()];
        let stats = self.inner.stats.clone();
        self.submit(move |conn| {
            let (key, users, stats) = (key.clone(), users.clone(), stats.clone());
            Box::pin(async move {
                if same {
                    return Err(StoreError::Conflict(
                        "a direct conversation needs two users".to_owned(),
                    ));
                }
                let c = &conn.client;
                let found = c
                    .query_opt(
                        &format!("SELECT {CONVERSATION} FROM conversations WHERE direct_key = $1"),
                        &[&key],
                    )
                    .await?;
                if let Some(row) = found {
                    return Ok((conversation_row(&row)?, false));
                }
                // Another node's writer may make the same pair at the same moment: its row
                // wins (this insert waits for it, then does nothing) and is the answer.
                let inserted = c
                    .query_opt(
                        "INSERT INTO conversations (kind, direct_key, member_count, created_ms) \
                         VALUES ('direct', $1, 2, $2) \
                         ON CONFLICT (direct_key) DO NOTHING RETURNING id",
                        &[&key, &ts_ms],
                    )
                    .await?;
                let Some(inserted) = inserted else {
                    let row = c
                        .query_one(
                            &format!(
                                "SELECT {CONVERSATION} FROM conversations WHERE direct_key = $1"
                            ),
                            &[&key],
                        )
                        .await?;
                    return Ok((conversation_row(&row)?, false));
                };
                let id: i64 = inserted.get(0);
                insert_members(c, id, &users, Role::Member, 0).await?;
                stats.wrote(3);
                Ok((fetch_conversation(c, id).await?, true))
            })
        })
    }

    /// As [`crate::SqliteStore::create_group`].
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
    ) -> impl Future<Output = Result<Conversation, StoreError>> + Send + 'static {
        let owner = owner.map(str::to_owned);
        let stats = self.inner.stats.clone();
        self.submit(move |conn| {
            let (owner, title, members, stats) =
                (owner.clone(), title.clone(), members.clone(), stats.clone());
            Box::pin(async move {
                let c = &conn.client;
                let id: i64 = c
                    .query_one(
                        "INSERT INTO conversations (kind, title, owner, created_ms) \
                         VALUES ('group', $1, $2, $3) RETURNING id",
                        &[&title, &owner, &ts_ms],
                    )
                    .await?
                    .get(0);
                let mut count = 0;
                if let Some(owner) = &owner {
                    count +=
                        insert_members(c, id, std::slice::from_ref(owner), Role::Owner, 0).await?;
                }
                count += insert_members(c, id, &members, Role::Member, 0).await?;
                c.execute(
                    "UPDATE conversations SET member_count = $2 WHERE id = $1",
                    &[&id, &(count as i64)],
                )
                .await?;
                stats.wrote(count + 2);
                fetch_conversation(c, id).await
            })
        })
    }

    /// As [`crate::SqliteStore::change_members`]: `applied` runs on the writer, in
    /// order with every other write, once the change is made (before its commit).
    ///
    /// # Errors
    ///
    /// As [`crate::SqliteStore::change_members`].
    pub fn change_members<A>(
        &self,
        conversation: ConversationId,
        change: MemberChange,
        applied: A,
    ) -> impl Future<Output = Result<MembersChanged, StoreError>> + Send + 'static
    where
        A: Fn(&MembersChanged) + Send + Sync + 'static,
    {
        let stats = self.inner.stats.clone();
        let applied = Arc::new(applied);
        self.submit(move |conn| {
            let (change, stats, applied) = (change.clone(), stats.clone(), applied.clone());
            Box::pin(async move {
                let changed = change_members(&conn.client, conversation, change, &stats).await?;
                applied(&changed);
                Ok(changed)
            })
        })
    }

    /// As [`crate::SqliteStore::append`].
    ///
    /// # Errors
    ///
    /// As [`crate::SqliteStore::append`].
    pub fn append(
        &self,
        message: NewMessage,
    ) -> impl Future<Output = Result<Stored, StoreError>> + Send + 'static {
        self.append_if(message, || Ok(()))
    }

    /// As [`crate::SqliteStore::append_if`]: `gate` runs on the writer, in order with
    /// every other write.
    ///
    /// # Errors
    ///
    /// `gate`'s; those of [`crate::SqliteStore::append`].
    pub fn append_if<G>(
        &self,
        message: NewMessage,
        gate: G,
    ) -> impl Future<Output = Result<Stored, StoreError>> + Send + 'static
    where
        G: Fn() -> Result<(), StoreError> + Send + Sync + 'static,
    {
        let stats = self.inner.stats.clone();
        let (message, gate) = (Arc::new(message), Arc::new(gate));
        self.submit(move |conn| {
            let (message, gate, stats) = (message.clone(), gate.clone(), stats.clone());
            Box::pin(async move {
                gate()?;
                append(&conn, &message, &stats).await
            })
        })
    }

    /// As [`crate::SqliteStore::watermarks`].
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub fn watermarks(
        &self,
        marks: Vec<Watermark>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let stats = self.inner.stats.clone();
        let marks = Arc::new(marks);
        self.submit(move |conn| {
            let (marks, stats) = (marks.clone(), stats.clone());
            Box::pin(async move {
                for m in marks.iter() {
                    let read = m.read.map(|s| s as i64);
                    let delivered = m.delivered.map(|s| s as i64);
                    conn.client
                        .execute(
                            &conn.watermark,
                            &[&m.conversation, &m.user, &read, &delivered],
                        )
                        .await?;
                }
                stats.wrote(marks.len() as u64);
                Ok(())
            })
        })
    }

    /// As [`crate::SqliteStore::last_seen`]: one statement for the whole list (`UNNEST`
    /// of the users and their times), prepared when the writer connects.
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub fn last_seen(
        &self,
        seen: Vec<(String, i64)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let stats = self.inner.stats.clone();
        self.submit(move |conn| {
            let (seen, stats) = (seen.clone(), stats.clone());
            Box::pin(async move {
                if seen.is_empty() {
                    return Ok(());
                }
                let n = seen.len() as u64;
                let (users, ms): (Vec<String>, Vec<i64>) = seen.into_iter().unzip();
                conn.client.execute(&conn.last_seen, &[&users, &ms]).await?;
                stats.wrote(n);
                Ok(())
            })
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
        let c = self.reader().await?;
        let row = c
            .query_opt(
                &format!("SELECT {CONVERSATION} FROM conversations WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.map(|r| conversation_row(&r)).transpose()
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
        let c = self.reader().await?;
        let row = c
            .query_opt(
                &format!("SELECT {MEMBER} FROM members WHERE conversation_id = $1 AND uid = $2"),
                &[&conversation, &user],
            )
            .await?;
        row.map(|r| member_row(&r, 0)).transpose()
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
        let c = self.reader().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {MEMBER} FROM members WHERE conversation_id = $1 AND uid > $2 \
                     ORDER BY uid LIMIT $3"
                ),
                &[&conversation, &after.unwrap_or_default(), &(limit as i64)],
            )
            .await?;
        rows.iter().map(|r| member_row(r, 0)).collect()
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
        let c = self.reader().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {CONVERSATION_C}, {MEMBER_M} FROM members m \
                     JOIN conversations c ON c.id = m.conversation_id \
                     WHERE m.uid = $1 ORDER BY c.id DESC"
                ),
                &[&user],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((conversation_row(r)?, member_row(r, CONVERSATION_COLUMNS)?)))
            .collect()
    }

    /// As [`crate::SqliteStore::messages_after`]: one statement (a lateral join over
    /// the conversations named).
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn messages_after(
        &self,
        from: Vec<(ConversationId, u64)>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        if from.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let c = self.reader().await?;
        let (ids, afters): (Vec<i64>, Vec<i64>) = from
            .iter()
            .map(|&(c, a)| (c, a.min(i64::MAX as u64) as i64))
            .unzip();
        let limit = limit as i64;
        let rows = c
            .query(
                &format!(
                    "SELECT {MESSAGE} FROM unnest($1::bigint[], $2::bigint[]) \
                     WITH ORDINALITY AS s(c, after, ord) CROSS JOIN LATERAL \
                     (SELECT * FROM messages WHERE conversation_id = s.c AND seq > s.after \
                     ORDER BY seq LIMIT $3) m ORDER BY s.ord, m.seq LIMIT $3"
                ),
                &[&ids, &afters, &limit],
            )
            .await?;
        rows.iter().map(message_row).collect()
    }

    /// As [`crate::SqliteStore::last_seen_of`]: one statement (`= ANY` of the users).
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn last_seen_of(&self, users: Vec<String>) -> Result<Vec<(String, i64)>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.reader().await?;
        let rows = c
            .query(
                "SELECT user_id, last_seen_ms FROM presence WHERE user_id = ANY($1)",
                &[&users],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// As [`crate::SqliteStore::messages`].
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
        let c = self.reader().await?;
        let limit = limit as i64;
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let rows = match after {
            Some(after) => {
                let after = after.min(i64::MAX as u64) as i64;
                c.query(
                    &format!(
                        "SELECT {MESSAGE} FROM messages WHERE conversation_id = $1 \
                         AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4"
                    ),
                    &[&conversation, &after, &before, &limit],
                )
                .await?
            }
            None => {
                let mut rows = c
                    .query(
                        &format!(
                            "SELECT {MESSAGE} FROM messages WHERE conversation_id = $1 \
                             AND seq < $2 ORDER BY seq DESC LIMIT $3"
                        ),
                        &[&conversation, &before, &limit],
                    )
                    .await?;
                rows.reverse();
                rows
            }
        };
        rows.iter().map(message_row).collect()
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        // The server's own words and SQLSTATE (the error's Display says only "db error").
        match e.as_db_error() {
            Some(db) => StoreError::Unavailable(format!(
                "PostgreSQL [{}]: {}",
                db.code().code(),
                db.message()
            )),
            None => StoreError::Unavailable(format!("PostgreSQL: {e}")),
        }
    }
}

/// Whether a failed transaction may simply be run again: a deadlock with another writer
/// (SQLSTATE 40P01), a serialization failure (40001), or a unique key another node's
/// writer took meanwhile (23505: the same cid sent through two nodes at once; run again on
/// its own, the job finds the row and answers as for a retry).
fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m)
        if m.starts_with("PostgreSQL [40P01]")
            || m.starts_with("PostgreSQL [40001]")
            || m.starts_with("PostgreSQL [23505]"))
}

const CONVERSATION: &str = "id, kind, title, owner, last_seq, member_count, created_ms";
const CONVERSATION_C: &str =
    "c.id, c.kind, c.title, c.owner, c.last_seq, c.member_count, c.created_ms";
const CONVERSATION_COLUMNS: usize = 7;
const MEMBER: &str = "uid, role, read_seq, delivered_seq, joined_seq";
const MEMBER_M: &str = "m.uid, m.role, m.read_seq, m.delivered_seq, m.joined_seq";
const MESSAGE: &str = "id, conversation_id, seq, sender, cid, body, is_binary, ts_ms";

/// A stored value this build does not know.
fn bad_value(what: &str, value: &str) -> StoreError {
    StoreError::Unavailable(format!("unexpected {what} {value:?} in the store"))
}

fn conversation_row(r: &Row) -> Result<Conversation, StoreError> {
    let kind: String = r.try_get(1)?;
    Ok(Conversation {
        id: r.try_get(0)?,
        kind: Kind::parse(&kind).ok_or_else(|| bad_value("kind", &kind))?,
        title: r.try_get(2)?,
        owner: r.try_get(3)?,
        last_seq: r.try_get::<_, i64>(4)? as u64,
        member_count: r.try_get::<_, i64>(5)? as u64,
        created_ms: r.try_get(6)?,
    })
}

fn member_row(r: &Row, at: usize) -> Result<Member, StoreError> {
    let role: String = r.try_get(at + 1)?;
    Ok(Member {
        user: r.try_get(at)?,
        role: Role::parse(&role).ok_or_else(|| bad_value("role", &role))?,
        read_seq: r.try_get::<_, i64>(at + 2)? as u64,
        delivered_seq: r.try_get::<_, i64>(at + 3)? as u64,
        joined_seq: r.try_get::<_, i64>(at + 4)? as u64,
    })
}

fn message_row(r: &Row) -> Result<Message, StoreError> {
    let binary: bool = r.try_get(6)?;
    let body: Vec<u8> = r.try_get(5)?;
    Ok(Message {
        id: r.try_get(0)?,
        conversation: r.try_get(1)?,
        seq: r.try_get::<_, i64>(2)? as u64,
        sender: r.try_get(3)?,
        cid: r.try_get(4)?,
        body: if binary {
            Body::Binary(body)
        } else {
            Body::Json(String::from_utf8(body).map_err(|_| bad_value("body", "not UTF-8"))?)
        },
        ts_ms: r.try_get(7)?,
    })
}

async fn fetch_conversation(c: &Client, id: ConversationId) -> Result<Conversation, StoreError> {
    let row = c
        .query_opt(
            &format!("SELECT {CONVERSATION} FROM conversations WHERE id = $1"),
            &[&id],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    conversation_row(&row)
}

/// Adds `users` (those not members already) with `role`; returns the rows added. One
/// statement however many: `UNNEST` of the ids.
async fn insert_members(
    c: &Client,
    id: ConversationId,
    users: &[String],
    role: Role,
    at_seq: u64,
) -> Result<u64, StoreError> {
    if users.is_empty() {
        return Ok(0);
    }
    let at = at_seq as i64;
    let n = c
        .execute(
            "INSERT INTO members (conversation_id, uid, role, joined_seq, read_seq, delivered_seq) \
             SELECT $1, u, $3, $4, $4, $4 FROM unnest($2::text[]) AS u \
             ON CONFLICT DO NOTHING",
            &[&id, &users, &role.as_str(), &at],
        )
        .await?;
    Ok(n)
}

/// The writer's part of [`PgStore::append`]: one statement. It finds a (sender, cid)
/// stored before, or else takes the conversation's next sequence number and inserts the
/// message; nothing else runs between (one writer), so the unique index never fires.
const APPEND: &str = "\
WITH dup AS (
    SELECT conversation_id, id, seq, ts_ms FROM messages
    WHERE $4::text IS NOT NULL AND coalesce(sender, '') = coalesce($3, '') AND cid = $4
),
bump AS (
    UPDATE conversations SET last_seq = last_seq + 1
    WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM dup)
    RETURNING last_seq
),
ins AS (
    INSERT INTO messages (conversation_id, seq, sender, cid, body, is_binary, ts_ms)
    SELECT $1, last_seq, $3, $4, $5, $6, $2 FROM bump
    RETURNING id, seq, ts_ms
)
SELECT false, $1::bigint, id, seq, ts_ms FROM ins
UNION ALL
SELECT true, conversation_id, id, seq, ts_ms FROM dup";

async fn append(conn: &Conn, m: &NewMessage, stats: &StoreStats) -> Result<Stored, StoreError> {
    let (body, binary): (&[u8], bool) = match &m.body {
        Body::Json(s) => (s.as_bytes(), false),
        Body::Binary(b) => (b, true),
    };
    let params: [&(dyn ToSql + Sync); 6] =
        [&m.conversation, &m.ts_ms, &m.sender, &m.cid, &body, &binary];
    let Some(row) = conn.client.query_opt(&conn.append, &params).await? else {
        return Err(StoreError::NotFound);
    };
    let duplicate: bool = row.try_get(0)?;
    let conversation: i64 = row.try_get(1)?;
    let stored = Stored {
        id: row.try_get(2)?,
        seq: row.try_get::<_, i64>(3)? as u64,
        ts_ms: row.try_get(4)?,
        duplicate,
    };
    if duplicate {
        stats.read(1);
        if conversation != m.conversation {
            return Err(StoreError::CidTaken { conversation });
        }
    } else {
        stats.wrote(2);
    }
    Ok(stored)
}

/// The writer's part of [`PgStore::last_seen`]: one statement for the whole list. A user
/// named twice counts with the later of their times (`INSERT ... ON CONFLICT` may not
/// touch one row twice); the stored time then moves forward only.
const LAST_SEEN: &str = "\
INSERT INTO presence (user_id, last_seen_ms)
SELECT u, max(ms) FROM unnest($1::text[], $2::bigint[]) AS s(u, ms) GROUP BY u
ON CONFLICT (user_id) DO UPDATE
SET last_seen_ms = greatest(presence.last_seen_ms, excluded.last_seen_ms)";

/// The writer's part of [`PgStore::change_members`]: the rules of
/// [`crate::members::plan`], inside a savepoint (a change refused after its first
/// writes leaves none).
async fn change_members(
    c: &Client,
    id: ConversationId,
    change: MemberChange,
    stats: &StoreStats,
) -> Result<MembersChanged, StoreError> {
    c.batch_execute("SAVEPOINT member_change").await?;
    let result = change_members_inner(c, id, change, stats).await;
    match &result {
        Err(StoreError::Unavailable(_)) => {}
        Err(_) => {
            c.batch_execute("ROLLBACK TO SAVEPOINT member_change")
                .await?
        }
        Ok(_) => c.batch_execute("RELEASE SAVEPOINT member_change").await?,
    }
    result
}

async fn change_members_inner(
    c: &Client,
    id: ConversationId,
    change: MemberChange,
    stats: &StoreStats,
) -> Result<MembersChanged, StoreError> {
    let conversation = fetch_conversation(c, id).await?;
    let named = crate::members::named(&change);
    let rows = c
        .query(
            "SELECT uid, role FROM members WHERE conversation_id = $1 AND uid = ANY($2)",
            &[&id, &named],
        )
        .await?;
    let mut roles = std::collections::HashMap::new();
    for r in rows {
        let role: String = r.try_get(1)?;
        roles.insert(
            r.try_get::<_, String>(0)?,
            Role::parse(&role).ok_or_else(|| bad_value("role", &role))?,
        );
    }
    let by_owner = change
        .by
        .as_ref()
        .is_some_and(|by| roles.get(by) == Some(&Role::Owner));
    let heir = if change.leave && by_owner {
        c.query_opt(
            "SELECT uid FROM members WHERE conversation_id = $1 AND uid <> $2 \
             ORDER BY role = 'admin' DESC, joined_seq, uid LIMIT 1",
            &[&id, &change.by],
        )
        .await?
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?
    } else {
        None
    };
    let plan = crate::members::plan(
        &change,
        &crate::members::Known {
            conversation,
            roles,
            heir,
        },
    )?;
    if !plan.delete.is_empty() {
        c.execute(
            "DELETE FROM members WHERE conversation_id = $1 AND uid = ANY($2)",
            &[&id, &plan.delete],
        )
        .await?;
    }
    let added: Vec<String> = plan.insert.iter().map(|m| m.user.clone()).collect();
    let at = plan.insert.first().map_or(0, |m| m.joined_seq);
    insert_members(c, id, &added, Role::Member, at).await?;
    for (user, role) in &plan.set_roles {
        c.execute(
            "UPDATE members SET role = $3 WHERE conversation_id = $1 AND uid = $2",
            &[&id, user, &role.as_str()],
        )
        .await?;
    }
    if let Some(owner) = &plan.owner {
        c.execute(
            "UPDATE conversations SET owner = $2 WHERE id = $1",
            &[&id, owner],
        )
        .await?;
    }
    let delta = plan.insert.len() as i64 - plan.delete.len() as i64;
    c.execute(
        "UPDATE conversations SET member_count = member_count + $2 WHERE id = $1",
        &[&id, &delta],
    )
    .await?;
    stats.wrote(plan.writes());
    stats.read(2);
    let after = fetch_conversation(c, id).await?;
    Ok(plan.into_changed(after))
}

/// The writer: connect (and migrate), then commit batches until the connection is
/// lost; again, until every handle of the store is gone.
async fn run(
    pg: tokio_postgres::Config,
    durability: crate::Durability,
    mut rx: mpsc::Receiver<Job>,
    batch_max: usize,
    window: Duration,
    ready: Arc<AtomicBool>,
    stats: Arc<StoreStats>,
) {
    let mut reported = false;
    loop {
        let conn = match connect(&pg, durability).await {
            Ok(conn) => Arc::new(conn),
            Err(e) => {
                if !reported {
                    tracing::error!(error = %e, "store: PostgreSQL unreachable; retrying every 500 ms");
                    reported = true;
                }
                // Jobs that slipped in are answered, not kept waiting.
                let pause = tokio::time::sleep(RECONNECT);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        () = &mut pause => break,
                        job = rx.recv() => match job {
                            // Dropped unrun: its caller's answer channel closes, which
                            // it reads as `unavailable`.
                            Some(job) => drop(job),
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        tracing::info!("store: connected to PostgreSQL");
        reported = false;
        ready.store(true, Ordering::Release);
        let mut batch: Vec<Job> = Vec::with_capacity(batch_max);
        loop {
            let Some(first) = rx.recv().await else { return };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + window;
            while batch.len() < batch_max {
                match rx.try_recv() {
                    Ok(job) => {
                        batch.push(job);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) | Err(_) => break,
                }
            }
            commit(&conn, &mut batch, &stats).await;
            if conn.client.is_closed() {
                ready.store(false, Ordering::Release);
                tracing::error!("store: the PostgreSQL connection was lost; reconnecting");
                break;
            }
        }
    }
}

/// Connects the writer, migrates, prepares its statements. With
/// [`crate::Durability::Normal`] its commits do not wait for the server's WAL flush
/// (`synchronous_commit = off`): a crash of the database server may lose the last ones,
/// a crash of Herald loses nothing.
async fn connect(
    pg: &tokio_postgres::Config,
    durability: crate::Durability,
) -> Result<Conn, StoreError> {
    let (mut client, connection) = tokio::time::timeout(Duration::from_secs(5), pg.connect(NoTls))
        .await
        .map_err(|_| StoreError::Unavailable("connecting timed out".to_owned()))??;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "store: the writer's connection ended");
        }
    });
    crate::migrate::postgres(&mut client).await?;
    if durability == crate::Durability::Normal {
        client
            .batch_execute("SET synchronous_commit TO off")
            .await?;
    }
    let append = client.prepare(APPEND).await?;
    let watermark = client
        .prepare(
            "UPDATE members SET read_seq = greatest(read_seq, coalesce($3::bigint, 0)), \
             delivered_seq = greatest(delivered_seq, coalesce($4::bigint, 0)) \
             WHERE conversation_id = $1 AND uid = $2",
        )
        .await?;
    let last_seen = client.prepare(LAST_SEEN).await?;
    Ok(Conn {
        client,
        append,
        watermark,
        last_seen,
    })
}

/// Runs `batch` in one transaction and answers every job. When PostgreSQL aborted it for a
/// deadlock or a serialization failure (writers of several nodes on one database), its
/// jobs are run again one transaction each, each up to [`TRANSACTION_RUNS`] times: small
/// transactions rarely meet in a cycle, so other nodes' writers do not fail this one's
/// callers.
async fn commit(conn: &Arc<Conn>, batch: &mut Vec<Job>, stats: &StoreStats) {
    let jobs = batch.len() as u64;
    match attempt(conn, batch).await {
        Ok(done) => {
            StoreStats::add(&stats.commits, 1);
            StoreStats::add(&stats.jobs, jobs);
            for d in done {
                d(Ok(()));
            }
        }
        Err((e, _)) if retryable(&e) && !conn.client.is_closed() => {
            StoreStats::add(&stats.retried_commits, 1);
            tracing::debug!(error = %e, jobs, "store: a write transaction aborted; its jobs run again one by one");
            let _ = conn.client.batch_execute("ROLLBACK").await;
            for job in batch.iter_mut() {
                let mut run = 1;
                loop {
                    run += 1;
                    match attempt(conn, std::slice::from_mut(job)).await {
                        Ok(done) => {
                            StoreStats::add(&stats.commits, 1);
                            StoreStats::add(&stats.jobs, 1);
                            for d in done {
                                d(Ok(()));
                            }
                        }
                        Err((e, _))
                            if retryable(&e)
                                && run < TRANSACTION_RUNS
                                && !conn.client.is_closed() =>
                        {
                            StoreStats::add(&stats.retried_commits, 1);
                            let _ = conn.client.batch_execute("ROLLBACK").await;
                            // Apart, so that the two writers do not meet again at once.
                            let pause = rand::random::<u64>() % (5 * u64::from(run)) + 1;
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                            continue;
                        }
                        Err((e, done)) => failed(conn, stats, &e, done, 1).await,
                    }
                    break;
                }
            }
        }
        Err((e, done)) => failed(conn, stats, &e, done, jobs).await,
    }
    // Jobs not run (after a failure) answer `unavailable` when dropped.
    batch.clear();
}

/// Runs `jobs` in one transaction: what each leaves to do, or the failure and what the
/// jobs run before it left.
async fn attempt(conn: &Arc<Conn>, jobs: &mut [Job]) -> Result<Vec<Done>, (StoreError, Vec<Done>)> {
    let mut done: Vec<Done> = Vec::with_capacity(jobs.len());
    if let Err(e) = conn.client.batch_execute("BEGIN").await {
        return Err((e.into(), done));
    }
    for job in jobs.iter_mut() {
        let (failed, finish) = job(conn.clone()).await;
        done.push(finish);
        if let Some(e) = failed {
            return Err((e, done));
        }
    }
    match conn.client.batch_execute("COMMIT").await {
        Ok(()) => Ok(done),
        Err(e) => Err((e.into(), done)),
    }
}

/// A transaction failed for good: rolled back, its jobs answered with the error.
async fn failed(conn: &Conn, stats: &StoreStats, e: &StoreError, done: Vec<Done>, jobs: u64) {
    StoreStats::add(&stats.failed_commits, 1);
    tracing::error!(error = %e, jobs, "store: a write transaction failed");
    let _ = conn.client.batch_execute("ROLLBACK").await;
    for d in done {
        d(Err(e.clone()));
    }
}
