//! What both SQLite-backed stores share: opening a database file, and running blocking
//! statements off the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{SegmentKey, StoreError};
use callpipe_common::Role;
use rusqlite::{Connection, Row, TransactionBehavior};

/// One connection behind a mutex: SQLite serialises writers anyway, and a single connection
/// keeps its prepared-statement cache warm.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
    backend: &'static str,
    path: Arc<str>,
}

impl Db {
    /// Opens (creating) `path` in WAL mode and brings its schema up to date: `migrations[i]`
    /// takes a file from `user_version` i to i + 1 (the first creates the schema), each in its
    /// own transaction. A file from a newer callpipe is refused.
    pub(crate) fn open(
        backend: &'static str,
        path: &Path,
        migrations: &[&str],
    ) -> Result<Self, StoreError> {
        let version = migrations.len() as i64;
        let shown = path.display().to_string();
        let fail = |e: rusqlite::Error| error(backend, &shown, e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Failed {
                backend,
                what: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let mut conn = Connection::open(path).map_err(fail)?;
        // Another process (a search during a run) may hold the write lock for a moment.
        conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
        // Switching a new file to WAL and the first migration's lock upgrade answer "busy" at
        // once, without the busy handler, when another process opens the same new file at the
        // same moment; both steps are idempotent, so they are tried again for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match prepare(&mut conn, migrations) {
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(PrepareError::Newer(found)) => {
                    return Err(StoreError::Failed {
                        backend,
                        what: shown,
                        reason: format!(
                            "written by a newer callpipe (schema {found}, this one knows {version})"
                        ),
                    })
                }
                Err(PrepareError::Sqlite(e)) => return Err(fail(e)),
                Ok(()) => break,
            }
        }
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            backend,
            path: shown.into(),
        })
    }

    /// Runs `job` with the connection on a blocking thread.
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.run_now(job))
            .await
            .map_err(|e| StoreError::Failed {
                backend: self.backend,
                what: self.path.to_string(),
                reason: format!("database task failed: {e}"),
            })?
    }

    /// Runs `job` on the calling thread (which must not be a tokio worker).
    pub(crate) fn run_now<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<T>,
    {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        job(&mut conn).map_err(|e| error(self.backend, &self.path, e))
    }
}

/// Why [`prepare`] stopped.
enum PrepareError {
    /// The file's schema is newer than this build's.
    Newer(i64),
    Sqlite(rusqlite::Error),
}

impl PrepareError {
    fn sqlite_error_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            PrepareError::Sqlite(e) => e.sqlite_error_code(),
            PrepareError::Newer(_) => None,
        }
    }
}

impl From<rusqlite::Error> for PrepareError {
    fn from(e: rusqlite::Error) -> Self {
        PrepareError::Sqlite(e)
    }
}

/// WAL mode, then the schema brought up to date: `migrations[i]` takes a file from
/// `user_version` i to i + 1, each in its own transaction.
fn prepare(conn: &mut Connection, migrations: &[&str]) -> Result<(), PrepareError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL + NORMAL: a committed transaction survives a process crash; only an OS crash or
    // power loss can roll back the last few, which a rerun then redoes.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > migrations.len() as i64 {
        return Err(PrepareError::Newer(found));
    }
    for (to, migration) in migrations.iter().enumerate().skip(found.max(0) as usize) {
        // Immediate: the write lock first (waiting out another process's), then the version
        // read again, since a process opening the file at the same moment may have applied
        // this step already.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now == to as i64 {
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", to as i64 + 1)?;
        }
        tx.commit()?;
    }
    Ok(())
}

/// Maps a SQLite error: a busy or locked database is worth retrying, anything else is not.
pub(crate) fn error(backend: &'static str, path: &str, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let transient = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    if transient {
        StoreError::Unavailable {
            backend,
            what: path.to_owned(),
            reason: e.to_string(),
        }
    } else {
        StoreError::Failed {
            backend,
            what: path.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// A JSON (de)serialisation failure as a rusqlite error, so it travels the same path.
pub(crate) fn json_error(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Reads a [`SegmentKey`] from columns `call_id, revision, channel, seq` at `first..first + 4`.
pub(crate) fn key_at(row: &Row<'_>, first: usize) -> rusqlite::Result<SegmentKey> {
    Ok(SegmentKey {
        call_id: CallId::from_stored(row.get::<_, String>(first)?),
        revision: Revision::new(row.get::<_, String>(first + 1)?),
        channel: row.get(first + 2)?,
        seq: row.get(first + 3)?,
    })
}

/// Reads a role stored by its name.
pub(crate) fn role_at(row: &Row<'_>, column: usize) -> rusqlite::Result<Role> {
    let name: String = row.get(column)?;
    name.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
    })
}
