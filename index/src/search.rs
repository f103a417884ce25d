//! Hybrid search: keyword (BM25) and semantic (kNN) candidates, fused by how much of the
//! query each one covers and how close it is in meaning.
//!
//! Keyword search finds the exact rare word (a product code, a surname) that an embedding
//! blurs; vector search finds the paraphrase that shares no word with the query. Both
//! candidate lists apply the same filters; every candidate is joined back to the metadata
//! store, so only current segments of existing calls come back, and its text is checked
//! against the query's constraints and scored by [`crate::fusion`]. The query is parsed once
//! ([`crate::query`]), whatever the backends.

use std::collections::HashMap;
use std::sync::Arc;

use callpipe_common::ids::CallId;
use callpipe_common::store::{
    CallRecord, KeywordHits, KeywordIndex, MetadataStore, ScoredKey, SearchFilter, SegmentDoc,
    SegmentKey, StoreError, VectorIndex,
};
use serde::Serialize;

use crate::embed::{EmbedError, Embedder};
use crate::fusion::{self, Analyzed, Evidence, FusionWeights, QueryEvidence, SemanticSpread};
use crate::query::{self, ParsedQuery};

/// The `k` of the reciprocal rank fusion baseline ([`SearchMode::RankFusion`]), as OpenSearch
/// and most hybrid search systems default it.
pub const RRF_K: f32 = 60.0;

/// How candidates are gathered and fused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSettings {
    /// Candidates taken from each of the keyword and vector lists.
    pub candidates: usize,
    /// Neighbouring units shown before and after each hit.
    pub context: usize,
    pub weights: FusionWeights,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            candidates: 50,
            context: 1,
            weights: FusionWeights::default(),
        }
    }
}

/// Which evidence ranks the results: the product searches [`SearchMode::Hybrid`]; the others
/// are what `callpipe eval-search` measures it against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    /// Keyword coverage and semantic similarity ([`fusion::fused_score`]).
    Hybrid,
    /// The keyword list alone, in BM25 order.
    Keyword,
    /// The semantic list alone, in cosine order.
    Semantic,
    /// Reciprocal rank fusion of the two lists: rank-only fusion, the baseline.
    RankFusion,
}

impl SearchMode {
    pub const ALL: [SearchMode; 4] = [
        SearchMode::Keyword,
        SearchMode::Semantic,
        SearchMode::RankFusion,
        SearchMode::Hybrid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Keyword => "keyword",
            SearchMode::Semantic => "semantic",
            SearchMode::RankFusion => "rank_fusion",
        }
    }

    fn uses_keyword(self) -> bool {
        self != SearchMode::Semantic
    }

    fn uses_semantic(self) -> bool {
        self != SearchMode::Keyword
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

/// A query's candidates with their evidence, before ranking: what `eval-search --tune`
/// ranks again under other weights without searching again.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// Current segments that meet the query's constraints, keyword list first, then the
    /// semantic list's others.
    pub items: Vec<(SegmentDoc, Evidence)>,
    pub spread: Option<SemanticSpread>,
    /// The keyword list's best BM25 score.
    pub best_bm25: Option<f32>,
}

impl Candidates {
    /// Indices into `items`, best first, with their scores under `mode`.
    pub fn rank(&self, mode: SearchMode, weights: &FusionWeights) -> Vec<(usize, f32)> {
        let mut ranked: Vec<(usize, f32)> = self
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, (_, e))| {
                let score = match mode {
                    SearchMode::Hybrid => {
                        fusion::fused_score(e, self.spread, self.best_bm25, weights)
                    }
                    SearchMode::Keyword => 1.0 / e.keyword_rank? as f32,
                    SearchMode::Semantic => e.cosine?,
                    SearchMode::RankFusion => fusion::reciprocal_rank(e, RRF_K),
                };
                Some((i, score))
            })
            .collect();
        // Ties go to the better keyword rank, then the better semantic rank: deterministic.
        let order = |i: usize| {
            let e = &self.items[i].1;
            (
                e.keyword_rank.unwrap_or(usize::MAX),
                e.semantic_rank.unwrap_or(usize::MAX),
            )
        };
        ranked.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| order(a.0).cmp(&order(b.0)))
        });
        ranked
    }
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

    pub fn settings(&self) -> &SearchSettings {
        &self.settings
    }

    /// The best `limit` units for `query` among those passing `filter`.
    pub async fn search(
        &self,
        query: &str,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        self.search_as(SearchMode::Hybrid, query, filter, limit)
            .await
    }

    /// [`HybridSearch::search`], ranked by `mode`.
    pub async fn search_as(
        &self,
        mode: SearchMode,
        query: &str,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let parsed = query::parse(query);
        let Some(filter) = narrowed(&parsed, filter) else {
            return Ok(Vec::new());
        };
        if !parsed.has_words() {
            return match &parsed.call_id {
                Some(call_id) => self.whole_call(call_id, &filter, limit).await,
                None => Ok(Vec::new()),
            };
        }
        let candidates = self.gather(mode, &parsed, &filter, limit).await?;
        let ranked = candidates.rank(mode, &self.settings.weights);
        self.resolve(candidates, &ranked, limit).await
    }

    /// The candidates for `query` under `filter`, with their evidence, for a caller that
    /// ranks them itself ([`Candidates::rank`]) and resolves them with
    /// [`HybridSearch::resolve`].
    pub async fn candidates(
        &self,
        query: &str,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Candidates, SearchError> {
        let parsed = query::parse(query);
        match narrowed(&parsed, filter) {
            Some(filter) if parsed.has_words() => {
                self.gather(SearchMode::Hybrid, &parsed, &filter, limit)
                    .await
            }
            _ => Ok(Candidates::default()),
        }
    }

    async fn gather(
        &self,
        mode: SearchMode,
        parsed: &ParsedQuery,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Candidates, SearchError> {
        // Never fewer candidates per list than results asked for.
        let k = self.settings.candidates.max(limit).max(1);
        // The keyword search runs while the query is embedded: it does not need the vector.
        let keyword = async {
            if !mode.uses_keyword() {
                return Ok(KeywordHits::default());
            }
            self.keyword
                .keyword_search(&parsed.keyword, filter, k)
                .await
                .map_err(SearchError::from)
        };
        let semantic = async {
            if !mode.uses_semantic() || parsed.semantic.trim().is_empty() {
                return Ok(Vec::new());
            }
            let embedder = self.embedder.clone();
            let text = parsed.semantic.clone();
            let embedding = tokio::task::spawn_blocking(move || embedder.embed(&[text.as_str()]))
                .await
                .map_err(|e| SearchError::Task(e.to_string()))??;
            let vector = embedding.into_iter().next().unwrap_or_default();
            Ok::<_, SearchError>(self.vectors.knn(&vector, k, filter).await?)
        };
        let (keyword, semantic) = tokio::try_join!(keyword, semantic)?;
        let evidence = QueryEvidence::new(parsed, &keyword);
        self.evidence(&keyword.hits, &semantic, &evidence).await
    }

    /// Joins both lists' keys to the metadata store and weighs each current segment that
    /// meets the query's constraints.
    async fn evidence(
        &self,
        keyword: &[ScoredKey],
        semantic: &[ScoredKey],
        query: &QueryEvidence,
    ) -> Result<Candidates, SearchError> {
        let mut order: Vec<SegmentKey> = Vec::with_capacity(keyword.len() + semantic.len());
        let mut ranks: HashMap<SegmentKey, Evidence> = HashMap::new();
        let blank = Evidence {
            cosine: None,
            coverage: 0.0,
            bm25: None,
            keyword_rank: None,
            semantic_rank: None,
        };
        for (list, is_keyword) in [(keyword, true), (semantic, false)] {
            for (rank, hit) in list.iter().enumerate() {
                let e = ranks.entry(hit.key.clone()).or_insert_with(|| {
                    order.push(hit.key.clone());
                    blank
                });
                // A backend may return a key twice (no custom ids); its best rank counts.
                let (at, score) = if is_keyword {
                    (&mut e.keyword_rank, &mut e.bm25)
                } else {
                    (&mut e.semantic_rank, &mut e.cosine)
                };
                if at.is_none() {
                    *at = Some(rank + 1);
                    *score = Some(hit.score);
                }
            }
        }
        let found = self.metadata.segments_by_key(&order).await?;
        // Stemming every candidate's words is CPU work: off the async runtime.
        let query = query.clone();
        let items = tokio::task::spawn_blocking(move || {
            let mut by_key: HashMap<SegmentKey, SegmentDoc> =
                found.into_iter().map(|s| (s.key.clone(), s)).collect();
            let mut items = Vec::with_capacity(order.len());
            for key in &order {
                // Stale keys (an interrupted run's vectors, a replaced revision) end here.
                let Some(segment) = by_key.remove(key) else {
                    continue;
                };
                let text = Analyzed::new(&segment.text);
                if !query.admits(&text) {
                    continue;
                }
                let mut e = ranks[key];
                e.coverage = query.coverage(&text);
                items.push((segment, e));
            }
            items
        })
        .await
        .map_err(|e| SearchError::Task(e.to_string()))?;
        // The spread of the semantic list as it was ranked, stale entries included: the
        // K-th neighbour's cosine is what an unranked candidate is worth.
        let spread = SemanticSpread::of(semantic.iter().map(|h| h.score));
        let best_bm25 = keyword.iter().map(|h| h.score).reduce(f32::max);
        Ok(Candidates {
            items,
            spread,
            best_bm25,
        })
    }

    /// The first `limit` of `ranked` (indices into `candidates`) as hits with their calls
    /// and context; a call deleted meanwhile drops out.
    pub async fn resolve(
        &self,
        candidates: Candidates,
        ranked: &[(usize, f32)],
        limit: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let mut items: Vec<Option<(SegmentDoc, Evidence)>> =
            candidates.items.into_iter().map(Some).collect();
        let mut calls: HashMap<CallId, Option<(CallRecord, Vec<SegmentDoc>)>> = HashMap::new();
        let mut hits = Vec::with_capacity(limit.min(ranked.len()));
        for &(i, score) in ranked {
            if hits.len() == limit {
                break;
            }
            let Some((segment, e)) = items.get_mut(i).and_then(Option::take) else {
                continue;
            };
            let call_id = segment.key.call_id.clone();
            if !calls.contains_key(&call_id) {
                let loaded = match self.metadata.get_call(&call_id).await? {
                    Some(call) => {
                        let all = if self.settings.context > 0 {
                            self.metadata.segments(&call_id).await?
                        } else {
                            Vec::new()
                        };
                        Some((call, all))
                    }
                    None => None,
                };
                calls.insert(call_id.clone(), loaded);
            }
            let Some((call, all)) = &calls[&call_id] else {
                continue;
            };
            let (before, after) = self.context_of(all, &segment.key);
            hits.push(SearchHit {
                score,
                keyword_rank: e.keyword_rank,
                vector_rank: e.semantic_rank,
                segment,
                call: call.clone(),
                before,
                after,
            });
        }
        Ok(hits)
    }

    fn context_of(
        &self,
        all: &[SegmentDoc],
        key: &SegmentKey,
    ) -> (Vec<SegmentDoc>, Vec<SegmentDoc>) {
        let context = self.settings.context;
        match all.iter().position(|s| &s.key == key) {
            Some(i) => (
                all[i.saturating_sub(context)..i].to_vec(),
                all[i + 1..(i + 1 + context).min(all.len())].to_vec(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// A query that is only a call id: that call's units from the start, as far as the
    /// filter's role allows.
    async fn whole_call(
        &self,
        call_id: &CallId,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let Some(call) = self.metadata.get_call(call_id).await? else {
            return Ok(Vec::new());
        };
        let all = self.metadata.segments(call_id).await?;
        let mut hits = Vec::new();
        for segment in &all {
            if hits.len() == limit {
                break;
            }
            if !filter.matches(segment.role, call.facets()) {
                continue;
            }
            let (before, after) = self.context_of(&all, &segment.key);
            hits.push(SearchHit {
                score: 1.0,
                keyword_rank: None,
                vector_rank: None,
                segment: segment.clone(),
                call: call.clone(),
                before,
                after,
            });
        }
        Ok(hits)
    }
}

/// `filter` with the query's call id applied; `None` when the two ask for different calls.
fn narrowed(parsed: &ParsedQuery, filter: &SearchFilter) -> Option<SearchFilter> {
    let mut filter = filter.clone();
    if let Some(id) = &parsed.call_id {
        if filter.call_id.as_ref().is_some_and(|c| c != id) {
            return None;
        }
        filter.call_id = Some(id.clone());
    }
    Some(filter)
}
