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
    /// The segment's text, for indexes that also answer keyword search.
    pub text: String,
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

/// What a backend cannot promise, so the conformance suite can wait or compare sets instead of
/// asserting something weaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Inserted or deleted documents show in reads only after a while (OpenSearch Serverless
    /// refreshes about every 60 s).
    pub eventually_consistent: bool,
    /// kNN is approximate (HNSW): the top k may miss a true neighbour.
    pub approximate_knn: bool,
}

/// Vectors searched by cosine similarity (vectors are unit length, so the inner product).
///
/// Shaped by OpenSearch Serverless vector collections: no custom ids, no upserts, no
/// delete-by-query. Documents are inserted in batches and the index assigns their ids, which
/// the caller records in the metadata store; deletion is by id. Each document carries its
/// batch id, so the orphans of an insert that never committed can still be found and removed.
#[async_trait]
pub trait VectorIndex: std::fmt::Debug + Send + Sync + 'static {
    /// Components per vector; documents and queries of another length are refused.
    fn dim(&self) -> usize;

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Inserts `docs`, all tagged with `batch`, and returns the ids the index gave them, in
    /// order. On any failure the error is returned and the documents that did land stay
    /// tagged, for the sweep; it never reports success for a partial insert.
    async fn insert(&self, batch: &str, docs: &[VectorDoc]) -> Result<Vec<String>, StoreError>;

    /// Deletes documents by id. Unknown ids are not an error (a repeated delete succeeds).
    async fn delete(&self, ids: &[String]) -> Result<(), StoreError>;

    /// Up to `limit` ids of documents tagged with `batch` (for sweeping an attempt that died
    /// before its ids were recorded).
    async fn batch_ids(&self, batch: &str, limit: usize) -> Result<Vec<String>, StoreError>;

    /// The `k` documents most similar to `query` among those passing `filter`, best first,
    /// with the cosine similarity as score.
    async fn knn(
        &self,
        query: &[f32],
        k: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredKey>, StoreError>;

    /// Documents of one call, or of all calls (whatever their revision or batch).
    async fn count(&self, call_id: Option<&CallId>) -> Result<u64, StoreError>;

    /// Checks that the index exists with the expected mapping, naming what is missing and the
    /// command that creates it.
    async fn check_ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
