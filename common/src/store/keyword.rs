//! Keyword search over current segments' text.

use async_trait::async_trait;

use super::{ScoredKey, SearchFilter, StoreError};

/// BM25-style keyword search. The embedded metadata store (SQLite FTS5) and the cloud vector
/// index (OpenSearch's `match` over the segment text) both provide it.
///
/// An implementation may return keys of stale or orphan segments (OpenSearch holds documents
/// of revisions being replaced); search joins every hit back to the metadata store, which
/// drops them.
#[async_trait]
pub trait KeywordIndex: std::fmt::Debug + Send + Sync + 'static {
    /// Best first, at most `limit`. `query` is plain words as a user types them; no query
    /// syntax is interpreted, so any input is safe.
    async fn keyword_search(
        &self,
        query: &str,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<ScoredKey>, StoreError>;
}
