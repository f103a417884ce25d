//! The embedded object store: a directory on the local disk.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::object::check_key;
use super::{ObjectMeta, ObjectStore, StoreError};

const BACKEND: &str = "object store";

/// Objects as files under a root directory; the key is the relative path.
///
/// A put writes a temporary file beside the target, syncs it, renames it over the target and
/// syncs the directory (a rename is durable only once its directory entry is), so a crash
/// leaves the old object or the new one. Temporary files start with `.tmp-` and are never
/// listed; a crash can leave one behind, which [`LocalDirStore::remove_leftovers`] clears.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    /// A store rooted at `root`, created if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| failed(&root, e))?;
        Ok(LocalDirStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Deletes the temporary files that interrupted puts left, and returns how many. Only the
    /// data directory's one writer may call it (see [`super::WriterLock`]): a temporary file
    /// of a put in flight elsewhere would be taken for a leftover.
    pub fn remove_leftovers(&self) -> Result<usize, StoreError> {
        fn sweep(dir: &Path) -> Result<usize, StoreError> {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(failed(dir, e)),
            };
            let mut removed = 0;
            for entry in entries {
                let entry = entry.map_err(|e| failed(dir, e))?;
                let path = entry.path();
                let file_type = entry.file_type().map_err(|e| failed(&path, e))?;
                if file_type.is_dir() {
                    removed += sweep(&path)?;
                } else if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    std::fs::remove_file(&path).map_err(|e| failed(&path, e))?;
                    removed += 1;
                }
            }
            Ok(removed)
        }
        sweep(&self.root)
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(BACKEND, key)?;
        Ok(self.root.join(key))
    }
}

fn failed(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Failed {
        backend: BACKEND,
        what: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Makes the entries of `dir` (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed(dir, e))
}

fn not_found(key: &str) -> StoreError {
    StoreError::NotFound {
        backend: BACKEND,
        what: format!("key `{key}`"),
    }
}

/// Runs blocking filesystem work off the async runtime.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| StoreError::Failed {
            backend: BACKEND,
            what: "filesystem task".into(),
            reason: e.to_string(),
        })?
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let root = self.root.clone();
        blocking(move || {
            let dir = path.parent().expect("a key has a parent: the root");
            let created = !dir.is_dir();
            std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
            let mut tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(dir)
                .map_err(|e| failed(dir, e))?;
            tmp.write_all(&bytes).map_err(|e| failed(&path, e))?;
            tmp.as_file().sync_all().map_err(|e| failed(&path, e))?;
            tmp.persist(&path).map_err(|e| failed(&path, e.error))?;
            sync_dir(dir)?;
            // New directories are entries of their parents, which need syncing too.
            if created {
                let mut at = dir;
                while let Some(parent) = at.parent().filter(|p| p.starts_with(&root)) {
                    sync_dir(parent)?;
                    at = parent;
                }
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found(&key)),
            Err(e) => Err(failed(&path, e)),
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        blocking(move || match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta { key, size: m.len() })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed(&path, e)),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(failed(&path, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }
}

/// Collects the files under `dir` whose key starts with `prefix`, skipping subtrees that
/// cannot contain such keys.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| failed(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(".tmp-") {
            continue;
        }
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let key = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let file_type = entry.file_type().map_err(|e| failed(&path, e))?;
        if file_type.is_dir() {
            let dir_key = format!("{key}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                walk(root, &path, prefix, out)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) {
            let size = entry.metadata().map_err(|e| failed(&path, e))?.len();
            out.push(ObjectMeta { key, size });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path().join("objects")).unwrap();
        crate::store::conformance::object_store(&store).await;
    }

    #[tokio::test]
    async fn leftover_temporary_files_are_not_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(".tmp-crashed"), b"partial").unwrap();
        store.put("a", b"1".to_vec()).await.unwrap();
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["a"]);
    }

    #[tokio::test]
    async fn leftovers_are_removed_and_objects_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        store.put("t/a/b.json", b"1".to_vec()).await.unwrap();
        std::fs::write(dir.path().join(".tmp-top"), b"partial").unwrap();
        std::fs::write(dir.path().join("t/a/.tmp-deep"), b"partial").unwrap();
        assert_eq!(store.remove_leftovers().unwrap(), 2);
        assert_eq!(store.remove_leftovers().unwrap(), 0);
        assert_eq!(store.get("t/a/b.json").await.unwrap(), b"1");
        assert!(!dir.path().join("t/a/.tmp-deep").exists());
    }
}
