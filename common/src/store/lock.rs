//! One writer per data directory.
//!
//! The embedded backends are files in one directory, and two processes writing them at once
//! would process every call twice, delete each other's transcripts, and could leave one
//! revision's metadata beside another's vectors. A writer therefore holds an exclusive lock on
//! `<data dir>/writer.lock` for as long as it runs; readers (`search`, `calls`) take none,
//! because SQLite in WAL mode gives them a consistent snapshot while a writer works.
//!
//! The lock is an OS file lock (`flock`), so it is released when the process exits, however
//! it exits: a killed run never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use super::StoreError;

const BACKEND: &str = "data directory";
const FILE: &str = "writer.lock";

/// Held by the one process that may write a data directory; released on drop or exit.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    /// Takes the lock on `dir` (created if missing), or fails at once with
    /// [`StoreError::Unavailable`] naming the directory and the process holding it.
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let failed = |e: std::io::Error| StoreError::Failed {
            backend: BACKEND,
            what: dir.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(failed)?;
        let path = dir.join(FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                return Err(StoreError::Unavailable {
                    backend: BACKEND,
                    what: dir.display().to_string(),
                    reason: format!(
                        "another callpipe process{holder} is writing to it; wait for it to \
                         finish or use another --data-dir (searching it works meanwhile)"
                    ),
                });
            }
            Err(TryLockError::Error(e)) => return Err(failed(e)),
        }
        // The pid is only for the message above; the lock itself is what counts.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| write!(file, "{}", std::process::id()));
        Ok(WriterLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire(dir.path()).unwrap();
        let err = WriterLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        drop(first);
        WriterLock::acquire(dir.path()).expect("free again once the holder is gone");
    }
}
