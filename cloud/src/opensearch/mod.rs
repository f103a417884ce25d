//! [`VectorIndex`] and [`KeywordIndex`] on an OpenSearch Serverless vector collection.
//!
//! The data plane is plain HTTPS with SigV4 for service `aoss` ([`sign`]), over `reqwest`.
//! Classic vector collections refuse custom `_id`s, upserts, `refresh=true` and
//! `_delete_by_query`, and show writes only after a refresh (about 60 s), so:
//!
//! - [`VectorIndex::insert`] sends `_bulk` `index` actions *without* ids, in chunks of at most
//!   5 MB and 500 documents, and reads the response item by item. Throttled (429) and failed
//!   (5xx) items are sent again with backoff; any other item error fails the call. A call
//!   that fails never reports success for what landed: those documents are deleted again on
//!   a best-effort basis, and every document carries its batch id, so a sweep finds what could
//!   not be deleted ([`VectorIndex::batch_ids`]).
//! - Deletion is `_bulk` `delete` by id; a 404 item is success.
//! - Reads lag writes, which [`Capabilities::eventually_consistent`] tells the callers; kNN is
//!   HNSW, so [`Capabilities::approximate_knn`] too.
//!
//! Keyword search is BM25 in the same index: a `match` on the segment text (standard
//! analyzer), with the same filters as kNN. It needs no second store in the cloud, and the
//! strict emulator in `callpipe-testkit` makes it testable here.
//!
//! The index is created by [`OpenSearchIndex::ensure_index`] (`callpipe setup`); workers only
//! check it ([`VectorIndex::check_ready`]). Its mapping records the embedding model, so an
//! index of another model or dimension is refused, naming both.
//!
//! # Layout
//! - [`sign`]: the pure SigV4 signing function;
//! - `transport`: timeouts, retries, credentials and error mapping;
//! - `bulk`: bulk bodies and per-item reading;
//! - `query`: search bodies, filters and response shapes.

mod bulk;
mod query;
pub mod sign;
mod transport;

use async_trait::async_trait;
use aws_config::SdkConfig;
use callpipe_common::config::OpensearchConfig;
use callpipe_common::ids::CallId;
use callpipe_common::store::{
    Capabilities, KeywordHits, KeywordIndex, KeywordQuery, ScoredKey, SearchFilter, StoreError,
    VectorDoc, VectorIndex,
};
use reqwest::Method;
use serde_json::{json, Value};

use self::bulk::{Outcome, SegmentDocument};
use self::query::{ErrorResponse, MappingResponse, MAX_HITS};
use self::transport::{Op, Repeat, Reply, Transport};

pub use self::sign::SignError;

const BACKEND: &str = "opensearch";
const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// The vector field, and its space. Vectors are unit length, so the inner product *is* the
/// cosine. `innerproduct` is what Faiss computes natively (its `cosinesimil` normalises every
/// vector and then takes the inner product), and the OpenSearch docs recommend it for vectors
/// that are already normalised. Scores are converted back to the cosine
/// ([`query::cosine_from_score`]).
const VECTOR_FIELD: &str = "vector";
const SPACE: &str = "innerproduct";

/// `[opensearch]` of the configuration, plus the signing region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSearchSettings {
    /// The collection endpoint, `https://<id>.<region>.aoss.amazonaws.com` (`http://` only for
    /// a local server).
    pub endpoint: String,
    /// The index of segment documents.
    pub index: String,
    /// The region to sign for. `None`: the region in the endpoint's host name, else the SDK
    /// configuration's.
    pub region: Option<String>,
}

impl From<&OpensearchConfig> for OpenSearchSettings {
    /// The configured endpoint and index; the region is found as [`OpenSearchSettings::region`]
    /// says.
    fn from(config: &OpensearchConfig) -> Self {
        OpenSearchSettings {
            endpoint: config.endpoint.clone(),
            index: config.index.clone(),
            region: None,
        }
    }
}

/// Segment vectors and text in one OpenSearch Serverless index.
#[derive(Debug)]
pub struct OpenSearchIndex {
    transport: Transport,
    index: String,
    dim: usize,
    model: String,
}

impl OpenSearchIndex {
    /// A client for `settings.index` holding vectors of `dim` components made by `model`,
    /// signing with the SDK configuration's credentials. Nothing is sent yet.
    pub fn new(
        settings: &OpenSearchSettings,
        dim: usize,
        model: &str,
        sdk_config: &SdkConfig,
    ) -> Result<Self, StoreError> {
        let config_error = |reason: String| StoreError::Failed {
            backend: BACKEND,
            what: format!("opensearch endpoint `{}`", settings.endpoint),
            reason,
        };
        let url = reqwest::Url::parse(settings.endpoint.trim())
            .map_err(|e| config_error(format!("not a URL: {e} (key `opensearch.endpoint`)")))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(config_error(
                "must be https://<host> (key `opensearch.endpoint`)".into(),
            ));
        }
        if url.path() != "/" || url.query().is_some() {
            return Err(config_error(
                "must name the collection endpoint only, without a path or query \
                 (key `opensearch.endpoint`)"
                    .into(),
            ));
        }
        check_index_name(&settings.index).map_err(|why| StoreError::Failed {
            backend: BACKEND,
            what: format!("index `{}`", settings.index),
            reason: format!("{why} (key `opensearch.index`)"),
        })?;
        if dim == 0 {
            return Err(config_error(
                "the vector dimension must be at least 1".into(),
            ));
        }
        let host = url.host_str().unwrap_or_default();
        let region = settings
            .region
            .clone()
            .or_else(|| region_of_host(host))
            .or_else(|| sdk_config.region().map(|r| r.to_string()))
            .ok_or_else(|| {
                config_error(
                    "no region to sign for: set AWS_REGION or use the collection's \
                     regional endpoint"
                        .into(),
                )
            })?;
        let provider = sdk_config
            .credentials_provider()
            .ok_or_else(|| StoreError::Denied {
                backend: BACKEND,
                what: format!("opensearch endpoint `{}`", settings.endpoint),
                reason: "no AWS credentials provider is configured".into(),
            })?;
        let endpoint = url.as_str().trim_end_matches('/').to_owned();
        let transport = Transport::new(endpoint, region, provider).map_err(config_error)?;
        Ok(OpenSearchIndex {
            transport,
            index: settings.index.clone(),
            dim,
            model: model.to_owned(),
        })
    }

    pub fn endpoint(&self) -> &str {
        self.transport.endpoint()
    }

    pub fn index(&self) -> &str {
        &self.index
    }

    /// The settings and mapping the index is created with.
    pub fn index_body(&self) -> Value {
        json!({
            "settings": { "index": { "knn": true } },
            "mappings": {
                "_meta": { "embedding_model": self.model, "dimension": self.dim },
                "properties": {
                    VECTOR_FIELD: {
                        "type": "knn_vector",
                        "dimension": self.dim,
                        "method": { "name": "hnsw", "engine": "faiss", "space_type": SPACE },
                    },
                    "text": { "type": "text", "analyzer": "standard" },
                    "call_id": { "type": "keyword" },
                    "revision": { "type": "keyword" },
                    "batch": { "type": "keyword" },
                    "role": { "type": "keyword" },
                    "source": { "type": "keyword" },
                    "model": { "type": "keyword" },
                    "recorded_at_ms": { "type": "date", "format": "epoch_millis" },
                    "call_duration_s": { "type": "double" },
                    "channel": { "type": "integer" },
                    "seq": { "type": "integer" },
                },
            },
        })
    }

    /// Creates the index if it does not exist; an existing one must have this model and
    /// dimension. Safe to run repeatedly and concurrently (`callpipe setup`).
    pub async fn ensure_index(&self) -> Result<(), StoreError> {
        if self.existing_mapping().await?.is_some() {
            return self.check_ready().await;
        }
        let op = self.op(Method::PUT, String::new());
        let body = serde_json::to_vec(&self.index_body()).unwrap_or_default();
        let reply = self.transport.send(&op, body, JSON, Repeat::Always).await?;
        if reply.ok() {
            tracing::info!(index = %self.index, dim = self.dim, model = %self.model, "opensearch: index created");
            return Ok(());
        }
        // Another `setup` won the race (or a retried create landed): check what it made.
        if ErrorResponse::kind(&reply.body).as_deref() == Some("resource_already_exists_exception")
        {
            return self.check_ready().await;
        }
        Err(op.failed(&reply))
    }

    /// The index's mappings, or `None` when it does not exist.
    async fn existing_mapping(&self) -> Result<Option<query::Mappings>, StoreError> {
        let op = self.op(Method::GET, "/_mapping".into());
        let reply = self
            .transport
            .send(&op, Vec::new(), JSON, Repeat::Always)
            .await?;
        if reply.status == 404 {
            return Ok(None);
        }
        let body = self.expect_ok(&op, reply)?;
        let mut response: MappingResponse = serde_json::from_slice(&body)
            .map_err(|e| op.broken(format!("unreadable mapping: {e}")))?;
        // A single index name resolves to one entry, under its own name.
        let mappings = response
            .remove(&self.index)
            .or_else(|| response.into_values().next())
            .map(|m| m.mappings)
            .unwrap_or_default();
        Ok(Some(mappings))
    }

    fn op(&self, method: Method, tail: String) -> Op {
        Op {
            method,
            path: format!("/{}{tail}", self.index),
            index: self.index.clone(),
        }
    }

    fn expect_ok(&self, op: &Op, reply: Reply) -> Result<Vec<u8>, StoreError> {
        if reply.ok() {
            Ok(reply.body)
        } else {
            Err(op.failed(&reply))
        }
    }

    fn refuse(&self, what: &str, reason: String) -> StoreError {
        StoreError::Failed {
            backend: BACKEND,
            what: format!("index `{}`: {what}", self.index),
            reason,
        }
    }

    /// One search request, parsed.
    /// The documents matching a `_count` body.
    async fn count_where(&self, body: &Value) -> Result<u64, StoreError> {
        let op = self.op(Method::POST, "/_count".into());
        let body = serde_json::to_vec(body).unwrap_or_default();
        let reply = self.transport.send(&op, body, JSON, Repeat::Always).await?;
        let body = self.expect_ok(&op, reply)?;
        let response: query::CountResponse = serde_json::from_slice(&body)
            .map_err(|e| op.broken(format!("unreadable count response: {e}")))?;
        Ok(response.count)
    }

    async fn search(&self, body: &Value) -> Result<(Op, query::SearchResponse), StoreError> {
        let op = self.op(Method::POST, "/_search".into());
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let reply = self
            .transport
            .send(&op, bytes, JSON, Repeat::Always)
            .await?;
        let body = self.expect_ok(&op, reply)?;
        let response = serde_json::from_slice(&body)
            .map_err(|e| op.broken(format!("unreadable search response: {e}")))?;
        Ok((op, response))
    }

    /// Hits as scored keys, skipping (and logging) any that is not a segment document.
    fn keys(&self, response: query::SearchResponse, score: impl Fn(f64) -> f32) -> Vec<ScoredKey> {
        response
            .hits
            .hits
            .into_iter()
            .filter_map(
                |hit| match hit.scored_key(score(hit.score.unwrap_or(0.0))) {
                    Ok(key) => Some(key),
                    Err(why) => {
                        tracing::warn!(index = %self.index, %why, "opensearch: hit skipped");
                        None
                    }
                },
            )
            .collect()
    }

    /// Sends one chunk of inserts until every item landed or one failed; `ids` gets the id of
    /// each document that landed.
    async fn insert_chunk(
        &self,
        sources: &[Vec<u8>],
        chunk: std::ops::Range<usize>,
        ids: &mut [Option<String>],
    ) -> Result<(), StoreError> {
        let op = self.op(Method::POST, "/_bulk".into());
        let mut pending: Vec<usize> = chunk.collect();
        let backoff = self.transport.backoff;
        let mut round = 0;
        loop {
            round += 1;
            let body = bulk::index_body(pending.iter().map(|&i| sources[i].as_slice()));
            let reply = self
                .transport
                .send(&op, body, NDJSON, Repeat::WhenNotApplied)
                .await?;
            let items = self.bulk_items(&op, reply, pending.len(), "index")?;
            let mut again = Vec::new();
            let mut last = String::new();
            let mut refused = None;
            // Every item is read before deciding, so the ids of all that landed are known.
            for (item, &i) in items.iter().zip(&pending) {
                match item.result.outcome() {
                    Outcome::Done(id) => ids[i] = Some(id),
                    Outcome::Retry(why) => {
                        again.push(i);
                        last = why;
                    }
                    Outcome::NotFound => {
                        refused.get_or_insert_with(|| format!("document {i}: status 404"));
                    }
                    Outcome::Failed(why) => {
                        refused.get_or_insert_with(|| format!("document {i} refused: {why}"));
                    }
                }
            }
            if let Some(why) = refused {
                return Err(op.broken(why));
            }
            if again.is_empty() {
                return Ok(());
            }
            if round >= backoff.attempts {
                return Err(StoreError::Unavailable {
                    backend: BACKEND,
                    what: op.what(),
                    reason: format!(
                        "{} documents still refused after {round} attempts: {last}",
                        again.len()
                    ),
                });
            }
            tracing::debug!(index = %self.index, items = again.len(), round, "opensearch: resending refused items");
            tokio::time::sleep(backoff.delay(round)).await;
            pending = again;
        }
    }

    /// The items of a bulk reply: exactly one per action sent, each of the `action` sent.
    fn bulk_items(
        &self,
        op: &Op,
        reply: Reply,
        sent: usize,
        action: &str,
    ) -> Result<Vec<bulk::BulkItem>, StoreError> {
        let body = self.expect_ok(op, reply)?;
        let response: bulk::BulkResponse = serde_json::from_slice(&body)
            .map_err(|e| op.broken(format!("unreadable bulk response: {e}")))?;
        if response.items.len() != sent {
            return Err(op.broken(format!(
                "{} items in the response for {sent} actions",
                response.items.len()
            )));
        }
        if let Some(other) = response.items.iter().find(|i| i.action != action) {
            return Err(op.broken(format!(
                "a `{}` item in the response to `{action}` actions",
                other.action
            )));
        }
        Ok(response.items)
    }
}

#[async_trait]
impl VectorIndex for OpenSearchIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            eventually_consistent: true,
            approximate_knn: true,
        }
    }

    async fn insert(&self, batch: &str, docs: &[VectorDoc]) -> Result<Vec<String>, StoreError> {
        // Every document is checked before anything is sent, so a bad one writes nothing.
        for doc in docs {
            if doc.vector.len() != self.dim {
                return Err(self.refuse(
                    &format!("insert of batch `{batch}`"),
                    format!(
                        "segment {}: dimension {} does not match the index's {}",
                        doc.key,
                        doc.vector.len(),
                        self.dim
                    ),
                ));
            }
            if doc.vector.iter().any(|x| !x.is_finite()) {
                return Err(self.refuse(
                    &format!("insert of batch `{batch}`"),
                    format!("segment {}: the vector has a non-finite component", doc.key),
                ));
            }
        }
        let sources: Vec<Vec<u8>> = docs
            .iter()
            .map(|doc| serde_json::to_vec(&SegmentDocument::new(doc, batch, &self.model)))
            .collect::<Result<_, _>>()
            .map_err(|e| self.refuse(&format!("insert of batch `{batch}`"), e.to_string()))?;
        let sizes: Vec<usize> = sources.iter().map(Vec::len).collect();
        let mut ids: Vec<Option<String>> = vec![None; docs.len()];
        for chunk in bulk::chunks(&sizes, bulk::MAX_BULK_BYTES, bulk::MAX_BULK_DOCS) {
            if let Err(err) = self.insert_chunk(&sources, chunk, &mut ids).await {
                let landed: Vec<String> = ids.into_iter().flatten().collect();
                if !landed.is_empty() {
                    if let Err(cleanup) = self.delete(&landed).await {
                        tracing::warn!(
                            index = %self.index, batch, documents = landed.len(), error = %cleanup,
                            "opensearch: could not delete the documents of a failed insert; \
                             the sweep finds them by batch"
                        );
                    }
                }
                return Err(err);
            }
        }
        Ok(ids.into_iter().flatten().collect())
    }

    async fn delete(&self, ids: &[String]) -> Result<(), StoreError> {
        let op = self.op(Method::POST, "/_bulk".into());
        let backoff = self.transport.backoff;
        for chunk in ids.chunks(bulk::MAX_BULK_DOCS) {
            let mut pending: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let mut round = 0;
            while !pending.is_empty() {
                round += 1;
                let body = bulk::delete_body(pending.iter().copied());
                let reply = self
                    .transport
                    .send(&op, body, NDJSON, Repeat::Always)
                    .await?;
                let items = self.bulk_items(&op, reply, pending.len(), "delete")?;
                let mut again = Vec::new();
                let mut last = String::new();
                for (item, id) in items.iter().zip(&pending) {
                    match item.result.outcome() {
                        Outcome::Done(_) | Outcome::NotFound => {}
                        Outcome::Retry(why) => {
                            again.push(*id);
                            last = why;
                        }
                        Outcome::Failed(why) => {
                            return Err(op.broken(format!("delete of `{id}` refused: {why}")))
                        }
                    }
                }
                if !again.is_empty() && round >= backoff.attempts {
                    return Err(StoreError::Unavailable {
                        backend: BACKEND,
                        what: op.what(),
                        reason: format!(
                            "{} deletes still refused after {round} attempts: {last}",
                            again.len()
                        ),
                    });
                }
                if !again.is_empty() {
                    tokio::time::sleep(backoff.delay(round)).await;
                }
                pending = again;
            }
        }
        Ok(())
    }

    async fn batch_ids(&self, batch: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (_, response) = self
            .search(&query::batch_body(batch, limit.min(MAX_HITS)))
            .await?;
        Ok(response.hits.hits.into_iter().map(|h| h.id).collect())
    }

    async fn knn(
        &self,
        query: &[f32],
        k: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredKey>, StoreError> {
        if query.len() != self.dim {
            return Err(self.refuse(
                "knn",
                format!(
                    "query dimension {} does not match the index's {}",
                    query.len(),
                    self.dim
                ),
            ));
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(self.refuse("knn", "the query has a non-finite component".into()));
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let k = k.min(MAX_HITS);
        let (_, response) = self.search(&query::knn_body(query, k, filter)).await?;
        Ok(self.keys(response, query::cosine_from_score))
    }

    async fn count(&self, call_id: Option<&CallId>) -> Result<u64, StoreError> {
        self.count_where(&query::count_body(call_id)).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let setup = "run `callpipe setup` to create it";
        let Some(mappings) = self.existing_mapping().await? else {
            return Err(self.refuse(
                "check",
                format!("the index does not exist at {}: {setup}", self.endpoint()),
            ));
        };
        let field = mappings.properties.get(VECTOR_FIELD);
        let Some(field) = field.filter(|f| f.kind.as_deref() == Some("knn_vector")) else {
            return Err(self.refuse(
                "check",
                format!(
                    "the index has no `{VECTOR_FIELD}` knn_vector field: it was not made by \
                     `callpipe setup`; delete it and {setup}, or use another index"
                ),
            ));
        };
        let their_model = mappings
            .meta
            .as_ref()
            .and_then(|m| m.embedding_model.as_deref())
            .unwrap_or("(none recorded)");
        let their_dim = field
            .dimension
            .map_or_else(|| "?".to_owned(), |d| d.to_string());
        if field.dimension != Some(self.dim as u64) || their_model != self.model {
            return Err(self.refuse(
                "check",
                format!(
                    "the index holds vectors of model `{their_model}` ({their_dim} dimensions), \
                     not `{}` ({} dimensions): use another index, or delete this one and \
                     re-index",
                    self.model, self.dim
                ),
            ));
        }
        if field.space() != Some(SPACE) {
            return Err(self.refuse(
                "check",
                format!(
                    "the `{VECTOR_FIELD}` field uses space `{}`, not `{SPACE}`: scores would \
                     not be cosines; delete the index and {setup}",
                    field.space().unwrap_or("l2 (the default)")
                ),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl KeywordIndex for OpenSearchIndex {
    async fn keyword_search(
        &self,
        query: &KeywordQuery,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<KeywordHits, StoreError> {
        // The search and the word counts go out together: one round trip of latency. The
        // counts are `_count`s, which every OpenSearch (and the Serverless data plane) has.
        let words = query.positive_words();
        if words.is_empty() {
            return Ok(KeywordHits::default());
        }
        let search = async {
            if query.is_empty() || limit == 0 {
                return Ok(Vec::new());
            }
            let body = query::keyword_body(query, filter, limit.min(MAX_HITS));
            let (_, response) = self.search(&body).await?;
            Ok(self.keys(response, |score| score as f32))
        };
        let all = query::count_body(None);
        let documents = self.count_where(&all);
        let frequencies = futures::future::try_join_all(
            words
                .iter()
                .map(|w| async move { self.count_where(&query::word_count_body(w)).await }),
        );
        let (hits, documents, frequencies) =
            futures::future::try_join3(search, documents, frequencies).await?;
        Ok(KeywordHits {
            hits,
            documents,
            frequencies,
        })
    }
}

/// OpenSearch's index name rules, checked up front so that the name can go into a path
/// unescaped: lowercase, not starting with `_`, `-` or `+`, none of `\ / * ? " < > | , # :`,
/// no spaces, not `.` or `..`, at most 255 bytes.
fn check_index_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{name}` is not a valid index name: {why}"));
    if name.is_empty() || name.len() > 255 {
        return bad("it must be 1 to 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("it cannot be `.` or `..`");
    }
    if name.starts_with(['_', '-', '+']) {
        return bad("it cannot start with `_`, `-` or `+`");
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    if !name.chars().all(allowed) {
        return bad("use lowercase letters, digits, `-`, `_` and `.`");
    }
    Ok(())
}

/// The region in a collection endpoint's host name, `<id>.<region>.aoss.amazonaws.com`.
fn region_of_host(host: &str) -> Option<String> {
    let mut parts = host.split('.');
    let (_id, region, service) = (parts.next()?, parts.next()?, parts.next()?);
    (service == "aoss" && !region.is_empty()).then(|| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_a_collection_host() {
        assert_eq!(
            region_of_host("abc123.eu-west-1.aoss.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_host("127.0.0.1"), None);
        assert_eq!(region_of_host("search.example.com"), None);
    }

    #[test]
    fn index_names_are_checked() {
        assert!(check_index_name("callpipe-segments").is_ok());
        assert!(check_index_name("seg.v2_test").is_ok());
        for bad in [
            "", "Upper", "_hidden", "-x", "a b", "a/b", "a:b", "..", "a*",
        ] {
            assert!(check_index_name(bad).is_err(), "{bad}");
        }
    }
}
