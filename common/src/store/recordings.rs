//! Customers' recordings where they already are (an S3 bucket): read-only, keys exactly as
//! written, versions and ETags kept so a redelivered notification names the same revision.

use std::ops::Range;

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::StoreError;

/// One recording object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingMeta {
    pub bucket: String,
    /// The key exactly as the customer wrote it (spaces, `+`, unicode, `//` all kept).
    pub key: String,
    pub size: u64,
    /// Without the quotes S3 puts around it.
    pub etag: Option<String>,
    /// The version id in a versioned bucket.
    pub version: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: Option<i64>,
}

impl RecordingMeta {
    /// `s3://bucket/key`, the call's source identity. The key is not escaped, so every
    /// distinct key is a distinct call.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// Read access to a bucket of recordings.
#[async_trait]
pub trait RecordingSource: std::fmt::Debug + Send + Sync + 'static {
    /// The object's metadata (at `version` if given). A missing object is
    /// [`StoreError::NotFound`] naming `s3://bucket/key`.
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<RecordingMeta, StoreError>;

    /// The object's bytes, streamed in; at most `limit + 1` bytes are read, so a caller that
    /// gets more than `limit` knows the object is too large without holding all of it. With
    /// `if_match`, an object whose ETag changed since is [`StoreError::NotFound`] (that
    /// revision is gone).
    async fn read(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        if_match: Option<&str>,
        limit: u64,
    ) -> Result<Vec<u8>, StoreError>;

    /// Bytes `range` of the object (a shorter result at its end).
    async fn read_range(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Vec<u8>, StoreError>;

    /// Every object under `prefix` (after the key `start_after`, if given), in key order, one
    /// page at a time as the stream is polled: never the whole listing in memory. The stream
    /// owns what it needs (a clone of the client), so it can outlive the borrow of `self`.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<String>,
    ) -> BoxStream<'static, Result<RecordingMeta, StoreError>>;
}
