//! Blobs by key: normalized audio, transcripts, anything a stage hands the next by reference.

use async_trait::async_trait;

use super::StoreError;

/// What a listing or `head` tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// A flat key → bytes store. Keys are `/`-separated relative paths (`transcripts/<call>/<rev>.json`);
/// a key never starts with `/` and never contains `..` segments.
#[async_trait]
pub trait ObjectStore: std::fmt::Debug + Send + Sync + 'static {
    /// Writes `bytes` at `key`, replacing any object there. The write is atomic: a reader sees
    /// the old object or the new one, never a prefix, even if the writer dies midway.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;

    /// The whole object. A missing key is [`StoreError::NotFound`] naming the key.
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;

    /// The object's size, or `None` if there is no object at `key`.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// Removes the object. Deleting a missing key succeeds, so retries are safe.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
}

/// Rejects keys that could escape a store's root or that S3 and a filesystem would treat
/// differently.
pub fn check_key(backend: &'static str, key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(StoreError::Failed {
            backend,
            what: format!("key `{key}`"),
            reason: "not a valid object key (relative, `/`-separated, no empty, `.` or `..` parts)"
                .into(),
        });
    }
    Ok(())
}
