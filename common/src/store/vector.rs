//! Segment vectors and nearest-neighbour search.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{CallFacets, ScoredKey, SearchFilter, SegmentKey, StoreError};
use crate::audio::Role;
use crate::ids::CallId;

/// One segment's vector with the facts filters need, denormalised from the call the way a
/// search engine document carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorDoc {
    pub key: SegmentKey,
    pub role: Role,
    pub source: String,
    pub recorded_at_ms: i64,
    pub call_duration_s: f64,
    /// Unit length, [`VectorIndex::dim`] components.
    pub vector: Vec<f32>,
}

impl VectorDoc {
    pub fn facets(&self) -> CallFacets<'_> {
        CallFacets {
            call_id: &self.key.call_id,
            source: &self.source,
            recorded_at_ms: self.recorded_at_ms,
            duration_s: self.call_duration_s,
        }
    }
}

/// Vectors by segment, searched by cosine similarity (vectors are unit length, so the inner
/// product).
///
/// Backends may not support custom ids or upserts (OpenSearch Serverless), so the contract is
/// per call: [`VectorIndex::replace_call`] leaves exactly the given documents for the call.
#[async_trait]
pub trait VectorIndex: std::fmt::Debug + Send + Sync + 'static {
    /// Components per vector; documents and queries of another length are refused.
    fn dim(&self) -> usize;

    /// Makes `docs` the call's only documents, removing any earlier ones (other revisions, or
    /// the same revision from an interrupted run). Every doc must belong to `call_id`.
    async fn replace_call(&self, call_id: &CallId, docs: &[VectorDoc]) -> Result<(), StoreError>;

    /// Removes every document of the call. Removing an unknown call succeeds.
    async fn delete_call(&self, call_id: &CallId) -> Result<(), StoreError>;

    /// The `k` documents most similar to `query` among those passing `filter`, best first,
    /// with the cosine similarity as score.
    async fn knn(
        &self,
        query: &[f32],
        k: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredKey>, StoreError>;

    /// Documents of one call, or of all calls.
    async fn count(&self, call_id: Option<&CallId>) -> Result<u64, StoreError>;
}
