//! Hybrid search: keyword (BM25) and semantic (kNN) candidates fused by reciprocal rank.
//!
//! Keyword search finds the exact rare word (a product code, a surname) that an embedding
//! blurs; vector search finds the paraphrase that shares no word with the query. Reciprocal
//! rank fusion (`score = Σ 1 / (k + rank)` over the lists a segment appears in) needs no score
//! calibration between BM25 and cosine, which have nothing in common, and is what OpenSearch's
//! own hybrid search offers. Both candidate lists apply the same filters, and every fused key
//! is joined back to the metadata store, so only current segments of existing calls come back.

use std::collections::HashMap;
use std::sync::Arc;

use callpipe_common::ids::CallId;
use callpipe_common::store::{
    CallRecord, KeywordIndex, MetadataStore, SearchFilter, SegmentDoc, SegmentKey, StoreError,
    VectorIndex,
};
use serde::Serialize;

use crate::embed::{EmbedError, Embedder};

/// How candidates are gathered and fused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSettings {
    /// Candidates taken from each of the keyword and vector lists.
    pub candidates: usize,
    /// The `k` of reciprocal rank fusion: larger flattens the advantage of the top ranks.
    pub rrf_k: f32,
    /// Neighbouring units shown before and after each hit.
    pub context: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            candidates: 50,
            rrf_k: 60.0,
            context: 1,
        }
    }
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("embedding the query: {0}")]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the query embedding task failed: {0}")]
    Task(String),
}

impl SearchError {
    pub fn kind(&self) -> callpipe_common::ErrorKind {
        match self {
            SearchError::Embed(e) => e.kind(),
            SearchError::Store(e) => e.kind(),
            SearchError::Task(_) => callpipe_common::ErrorKind::Permanent,
        }
    }
}

/// One result: the call, the speaker, the moment and the words, with the units around it.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// The fused score (higher is better).
    pub score: f32,
    /// 1-based rank in the keyword list, if the unit was in it.
    pub keyword_rank: Option<usize>,
    /// 1-based rank in the vector list, if the unit was in it.
    pub vector_rank: Option<usize>,
    pub segment: SegmentDoc,
    pub call: CallRecord,
    /// Up to `context` units before the hit, in time order (any speaker).
    pub before: Vec<SegmentDoc>,
    /// Up to `context` units after the hit, in time order (any speaker).
    pub after: Vec<SegmentDoc>,
}

/// Search over the metadata store and the vector index.
#[derive(Debug, Clone)]
pub struct HybridSearch {
    embedder: Arc<dyn Embedder>,
    metadata: Arc<dyn MetadataStore>,
    vectors: Arc<dyn VectorIndex>,
    /// SQLite FTS5 on the embedded backends, OpenSearch's BM25 in the cloud.
    keyword: Arc<dyn KeywordIndex>,
    settings: SearchSettings,
}

/// Fuses ranked lists: each key scores `Σ 1 / (k + rank)`, best first; ties keep the order of
/// first appearance, so the result is deterministic.
pub fn reciprocal_rank_fusion(
    lists: &[&[SegmentKey]],
    k: f32,
) -> Vec<(SegmentKey, f32, Vec<Option<usize>>)> {
    let mut fused: Vec<(SegmentKey, f32, Vec<Option<usize>>)> = Vec::new();
    let mut at: HashMap<&SegmentKey, usize> = HashMap::new();
    for (l, list) in lists.iter().enumerate() {
        for (rank, key) in list.iter().enumerate() {
            let i = *at.entry(key).or_insert_with(|| {
                fused.push((key.clone(), 0.0, vec![None; lists.len()]));
                fused.len() - 1
            });
            // A backend may return a key twice (no custom ids); count its best rank once.
            if fused[i].2[l].is_none() {
                fused[i].1 += 1.0 / (k + rank as f32 + 1.0);
                fused[i].2[l] = Some(rank + 1);
            }
        }
    }
    // Stable sort: equal scores keep first-appearance order.
    fused.sort_by(|a, b| b.1.total_cmp(&a.1));
    fused
}

impl HybridSearch {
    pub fn new(
        embedder: Arc<dyn Embedder>,
        metadata: Arc<dyn MetadataStore>,
        vectors: Arc<dyn VectorIndex>,
        keyword: Arc<dyn KeywordIndex>,
        settings: SearchSettings,
    ) -> Self {
        HybridSearch {
            embedder,
            metadata,
            vectors,
            keyword,
            settings,
        }
    }

    /// The best `limit` units for `query` among those passing `filter`.
    pub async fn search(
        &self,
        query: &str,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        if limit == 0 || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let candidates = self.settings.candidates.max(limit);
        let embedder = self.embedder.clone();
        let text = query.to_owned();
        let embedding = tokio::task::spawn_blocking(move || embedder.embed(&[text.as_str()]))
            .await
            .map_err(|e| SearchError::Task(e.to_string()))??;
        let vector = embedding.into_iter().next().unwrap_or_default();

        let (keyword, semantic) = tokio::try_join!(
            self.keyword.keyword_search(query, filter, candidates),
            self.vectors.knn(&vector, candidates, filter),
        )?;
        let keyword: Vec<SegmentKey> = keyword.into_iter().map(|h| h.key).collect();
        let semantic: Vec<SegmentKey> = semantic.into_iter().map(|h| h.key).collect();
        let fused = reciprocal_rank_fusion(&[&keyword, &semantic], self.settings.rrf_k);

        // Resolve in fused order; stale keys (an interrupted run's vectors, a replaced
        // revision) are dropped here, so look a little past `limit`.
        let wanted: Vec<SegmentKey> = fused
            .iter()
            .take(limit * 2 + 10)
            .map(|f| f.0.clone())
            .collect();
        let found = self.metadata.segments_by_key(&wanted).await?;
        let mut by_key: HashMap<SegmentKey, SegmentDoc> =
            found.into_iter().map(|s| (s.key.clone(), s)).collect();

        let mut calls: HashMap<CallId, (CallRecord, Vec<SegmentDoc>)> = HashMap::new();
        let mut hits = Vec::with_capacity(limit);
        for (key, score, ranks) in fused {
            if hits.len() == limit {
                break;
            }
            let Some(segment) = by_key.remove(&key) else {
                continue;
            };
            if !calls.contains_key(&key.call_id) {
                let Some(call) = self.metadata.get_call(&key.call_id).await? else {
                    continue;
                };
                let all = if self.settings.context > 0 {
                    self.metadata.segments(&key.call_id).await?
                } else {
                    Vec::new()
                };
                calls.insert(key.call_id.clone(), (call, all));
            }
            let (call, all) = &calls[&key.call_id];
            let (before, after) = match all.iter().position(|s| s.key == key) {
                Some(i) => (
                    all[i.saturating_sub(self.settings.context)..i].to_vec(),
                    all[i + 1..(i + 1 + self.settings.context).min(all.len())].to_vec(),
                ),
                None => (Vec::new(), Vec::new()),
            };
            hits.push(SearchHit {
                score,
                keyword_rank: ranks[0],
                vector_rank: ranks[1],
                segment,
                call: call.clone(),
                before,
                after,
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpipe_common::ids::Revision;

    fn key(n: u32) -> SegmentKey {
        SegmentKey {
            call_id: CallId::from_source("c"),
            revision: Revision::new("r"),
            channel: 0,
            seq: n,
        }
    }

    #[test]
    fn fusion_rewards_agreement_and_counts_duplicates_once() {
        let keyword = [key(1), key(2), key(3)];
        let vector = [key(3), key(4), key(3)];
        let fused = reciprocal_rank_fusion(&[&keyword, &vector], 60.0);
        let order: Vec<u32> = fused.iter().map(|f| f.0.seq).collect();
        // 3 is in both lists and wins; then 1 (rank 1 once); 2 and 4 tie at rank 2 and keep
        // the order they first appeared in.
        assert_eq!(order[0], 3);
        assert_eq!(fused[0].2, vec![Some(3), Some(1)]);
        assert!((fused[0].1 - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-6);
        assert_eq!(order.len(), 4);
        assert_eq!(&order[1..], [1, 2, 4]);
    }
}
