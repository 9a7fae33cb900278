//! The schema's versions, applied in order at open: for SQLite, the version reached is
//! the database's `PRAGMA user_version`; for PostgreSQL, the rows of `schema_migrations`.

use rusqlite::Connection;

use crate::StoreError;

/// Every version's SQL, in order: version `i + 1` is `SQLITE[i]`.
const SQLITE: &[&str] = &[
    include_str!("../migrations/sqlite/0001_conversations.sql"),
    include_str!("../migrations/sqlite/0002_presence.sql"),
    include_str!("../migrations/sqlite/0003_documents.sql"),
];

/// Every version's SQL for PostgreSQL, in order, as for SQLite.
const POSTGRES: &[&str] = &[
    include_str!("../migrations/postgres/0001_conversations.sql"),
    include_str!("../migrations/postgres/0002_presence.sql"),
    include_str!("../migrations/postgres/0003_documents.sql"),
];

/// The version this build writes.
pub(crate) const VERSION: u32 = SQLITE.len() as u32;

const _: () = assert!(
    POSTGRES.len() == SQLITE.len(),
    "both backends at one version"
);

/// Brings a PostgreSQL database to [`VERSION`], each version in a transaction of its own,
/// under an advisory lock (nodes starting at once migrate one after the other).
///
/// # Errors
///
/// A database newer than this build ([`StoreError::Conflict`]), or the failing statement.
pub(crate) async fn postgres(client: &mut tokio_postgres::Client) -> Result<u32, StoreError> {
    let tx = client.transaction().await?;
    // Any constant, the same for every Herald: "herald" in ASCII. Taken before the table
    // of versions is made: two nodes making it at once would collide.
    tx.batch_execute("SELECT pg_advisory_xact_lock(104101114097108100)")
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let current = current as u32;
    if current > VERSION {
        return Err(StoreError::Conflict(format!(
            "the database is at schema version {current}, newer than this Herald's {VERSION}"
        )));
    }
    for (i, sql) in POSTGRES.iter().enumerate().skip(current as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
            &[&version, &now],
        )
        .await?;
        tracing::info!(version, "store: PostgreSQL schema migrated");
    }
    tx.commit().await?;
    Ok(current)
}

/// Brings the database to [`VERSION`], each version in a transaction of its own.
///
/// # Errors
///
/// A database newer than this build ([`StoreError::Conflict`]: an older Herald must not
/// write a schema it does not know), or the failing statement.
pub(crate) fn sqlite(conn: &mut Connection) -> Result<u32, StoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Err(StoreError::Conflict(format!(
            "the database is at schema version {current}, newer than this Herald's {VERSION}"
        )));
    }
    for (i, sql) in SQLITE.iter().enumerate().skip(current as usize) {
        let version = i as u32 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        // PRAGMA takes no parameters; the value is ours.
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
        tx.commit()?;
        tracing::info!(version, "store: schema migrated");
    }
    Ok(current)
}
