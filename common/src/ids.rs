//! Stable identities.
//!
//! A call is identified by where it came from, not by when it arrived: the same `s3://bucket/key`
//! or local path always maps to the same [`CallId`], so a redelivered message or a rerun finds
//! the call's existing records instead of creating duplicates. A new upload of the same key is a
//! new [`Revision`] of the same call.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A call's identity, derived deterministically from its source URI.
///
/// It is the first 128 bits of the BLAKE3 hash of the URI, hex-encoded: short enough for
/// document ids and log lines, long enough that collisions are not a practical concern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    /// Derives the id of the call whose recording lives at `source_uri`
    /// (`s3://bucket/key`, `file:///abs/path`, `live://session`).
    pub fn from_source(source_uri: &str) -> Self {
        let hash = blake3::hash(source_uri.as_bytes());
        let hex = hash.to_hex();
        CallId(hex.as_str()[..32].to_owned())
    }

    /// Wraps an id read back from a store. The caller vouches that it came from
    /// [`CallId::from_source`].
    pub fn from_stored(id: impl Into<String>) -> Self {
        CallId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One version of a call's recording: an S3 version id or ETag, or a content hash for local
/// files. Every derived record carries `(CallId, Revision)`, so reprocessing a revision replaces
/// exactly its own outputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(String);

impl Revision {
    pub fn new(revision: impl Into<String>) -> Self {
        Revision(revision.into())
    }

    /// A revision from the recording's bytes, for sources without versions or ETags.
    pub fn from_content(bytes: &[u8]) -> Self {
        let hash = blake3::hash(bytes);
        Revision(format!("b3:{}", &hash.to_hex().as_str()[..32]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_is_stable_and_source_specific() {
        let a = CallId::from_source("s3://calls/2026/11/a.wav");
        assert_eq!(a, CallId::from_source("s3://calls/2026/11/a.wav"));
        assert_ne!(a, CallId::from_source("s3://calls/2026/11/b.wav"));
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn content_revision_changes_with_content() {
        assert_ne!(
            Revision::from_content(b"one"),
            Revision::from_content(b"two")
        );
        assert!(Revision::from_content(b"one").as_str().starts_with("b3:"));
    }
}
