//! The schema's versions, applied in order at open; the version reached is the database's
//! `PRAGMA user_version`.

use rusqlite::Connection;

use crate::StoreError;

/// Every version's SQL, in order: version `i + 1` is `SQLITE[i]`.
const SQLITE: &[&str] = &[include_str!("../migrations/sqlite/0001_conversations.sql")];

/// The version this build writes.
pub(crate) const VERSION: u32 = SQLITE.len() as u32;

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
