//! Request bodies for searches and counts, and the response shapes they come back in.
//!
//! Every [`SearchFilter`] field becomes one clause in a `bool.filter`, so OpenSearch applies
//! exactly [`SearchFilter::matches`]: `recorded_at_ms` in `[from, to)`, the role, the call, a
//! prefix of the source URI, and `call_duration_s` in `[min, max]`. In kNN the clauses go
//! *inside* the `knn` clause (efficient filtering): the engine then returns the top k among
//! the documents that pass, instead of filtering an unfiltered top k down to fewer hits.

use std::collections::HashMap;

use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{KeywordQuery, ScoredKey, SearchFilter, SegmentKey};
use serde::Deserialize;
use serde_json::{json, Value};

/// OpenSearch's default `index.max_result_window`, and the k-NN plugin's largest `k`: no
/// request asks for more hits than this.
pub(crate) const MAX_HITS: usize = 10_000;

/// The source fields a hit needs to become a [`SegmentKey`].
const KEY_FIELDS: [&str; 4] = ["call_id", "revision", "channel", "seq"];

/// The filter clauses of `filter`, one per field that is set.
pub(crate) fn filter_clauses(filter: &SearchFilter) -> Vec<Value> {
    let mut clauses = Vec::new();
    if filter.from_ms.is_some() || filter.to_ms.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(from) = filter.from_ms {
            range.insert("gte".into(), json!(from));
        }
        if let Some(to) = filter.to_ms {
            range.insert("lt".into(), json!(to));
        }
        clauses.push(json!({ "range": { "recorded_at_ms": range } }));
    }
    if let Some(role) = filter.role {
        clauses.push(json!({ "term": { "role": role.as_str() } }));
    }
    if let Some(call_id) = &filter.call_id {
        clauses.push(json!({ "term": { "call_id": call_id.as_str() } }));
    }
    if let Some(prefix) = &filter.source_prefix {
        clauses.push(json!({ "prefix": { "source": { "value": prefix } } }));
    }
    if filter.min_duration_s.is_some() || filter.max_duration_s.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(min) = filter.min_duration_s {
            range.insert("gte".into(), json!(min));
        }
        if let Some(max) = filter.max_duration_s {
            range.insert("lte".into(), json!(max));
        }
        clauses.push(json!({ "range": { "call_duration_s": range } }));
    }
    clauses
}

/// `k` nearest neighbours of `vector` in the `vector` field among documents passing `filter`.
pub(crate) fn knn_body(vector: &[f32], k: usize, filter: &SearchFilter) -> Value {
    let mut knn = json!({ "vector": vector, "k": k });
    let clauses = filter_clauses(filter);
    if !clauses.is_empty() {
        knn["filter"] = json!({ "bool": { "filter": clauses } });
    }
    json!({
        "size": k,
        "query": { "knn": { "vector": knn } },
        "_source": KEY_FIELDS,
    })
}

/// A `match` of any of `words`.
fn match_any(words: &[String]) -> Value {
    json!({ "match": { "text": { "query": words.join(" "), "operator": "or" } } })
}

/// Every one of `words`, in any order: a `bool` of one `match` per word, which every
/// OpenSearch (and the emulator the tests use) reads the same way.
fn match_all_of(words: &[String]) -> Value {
    let each: Vec<Value> = words
        .iter()
        .map(|w| json!({ "match": { "text": w } }))
        .collect();
    json!({ "bool": { "must": each } })
}

/// BM25 over `text` for `query`: each phrase's words must all occur (a superset of the
/// phrase, which search narrows on the text), or else any term matches; a
/// segment with an excluded word or phrase (`match_phrase`) is left out.
pub(crate) fn keyword_body(query: &KeywordQuery, filter: &SearchFilter, limit: usize) -> Value {
    let phrases: Vec<&Vec<String>> = query.phrases.iter().filter(|p| !p.is_empty()).collect();
    let must: Vec<Value> = if phrases.is_empty() {
        vec![match_any(&query.terms)]
    } else {
        phrases.iter().map(|p| match_all_of(p)).collect()
    };
    let must_not: Vec<Value> = query
        .excluded
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.as_slice() {
            [word] => json!({ "match": { "text": word } }),
            _ => json!({ "match_phrase": { "text": p.join(" ") } }),
        })
        .collect();
    let mut bool_query = json!({ "must": must });
    if !must_not.is_empty() {
        bool_query["must_not"] = json!(must_not);
    }
    let clauses = filter_clauses(filter);
    if !clauses.is_empty() {
        bool_query["filter"] = json!(clauses);
    }
    json!({ "size": limit, "query": { "bool": bool_query }, "_source": KEY_FIELDS })
}

/// Documents holding `word`, counted (`_count`): its document frequency.
pub(crate) fn word_count_body(word: &str) -> Value {
    json!({ "query": { "match": { "text": word } } })
}

/// Documents tagged with `batch`, ids only.
pub(crate) fn batch_body(batch: &str, limit: usize) -> Value {
    json!({ "size": limit, "_source": false, "query": { "term": { "batch": batch } } })
}

/// Every document, or one call's. Always a query body: `_count` without one is answered with
/// a 400 by some servers.
pub(crate) fn count_body(call_id: Option<&CallId>) -> Value {
    match call_id {
        Some(id) => json!({ "query": { "term": { "call_id": id.as_str() } } }),
        None => json!({ "query": { "match_all": {} } }),
    }
}

/// The cosine similarity behind a kNN `_score` in the `innerproduct` space of the Faiss
/// engine, which scores `1 + x·y` when the product is positive and `1 / (1 - x·y)` otherwise
/// (docs.opensearch.org, "Spaces"). For unit vectors the inner product is the cosine.
pub(crate) fn cosine_from_score(score: f64) -> f32 {
    let ip = if score >= 1.0 {
        score - 1.0
    } else if score > 0.0 {
        1.0 - 1.0 / score
    } else {
        -1.0
    };
    ip.clamp(-1.0, 1.0) as f32
}

/// A `_search` response: only what this module reads.
#[derive(Debug, Deserialize)]
pub(crate) struct SearchResponse {
    pub hits: Hits,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Hits {
    #[serde(default)]
    pub hits: Vec<Hit>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Hit {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "_score", default)]
    pub score: Option<f64>,
    /// Kept loose: a hit whose source is not a segment's is an error of that hit, not of the
    /// whole response.
    #[serde(rename = "_source", default)]
    pub source: Option<Value>,
}

/// The key fields of a segment document's `_source`.
#[derive(Debug, Deserialize)]
struct KeySource {
    pub call_id: String,
    pub revision: String,
    pub channel: u32,
    pub seq: u32,
}

impl Hit {
    /// The hit as a scored key, or why it cannot be one.
    pub(crate) fn scored_key(&self, score: f32) -> Result<ScoredKey, String> {
        let source = self
            .source
            .as_ref()
            .ok_or_else(|| format!("hit {} has no _source", self.id))?;
        let source = KeySource::deserialize(source)
            .map_err(|e| format!("hit {}: not a segment document: {e}", self.id))?;
        Ok(ScoredKey {
            key: SegmentKey {
                call_id: CallId::from_stored(source.call_id),
                revision: Revision::new(source.revision),
                channel: source.channel,
                seq: source.seq,
            },
            score,
        })
    }
}

/// A `_count` response.
#[derive(Debug, Deserialize)]
pub(crate) struct CountResponse {
    pub count: u64,
}

/// `GET <index>/_mapping`: index name to its mappings.
pub(crate) type MappingResponse = HashMap<String, IndexMappings>;

#[derive(Debug, Deserialize)]
pub(crate) struct IndexMappings {
    pub mappings: Mappings,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Mappings {
    #[serde(rename = "_meta", default)]
    pub meta: Option<Meta>,
    #[serde(default)]
    pub properties: HashMap<String, FieldMapping>,
}

/// What `callpipe setup` records about the index in the mapping's `_meta`.
#[derive(Debug, Deserialize)]
pub(crate) struct Meta {
    #[serde(default)]
    pub embedding_model: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FieldMapping {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub dimension: Option<u64>,
    #[serde(default)]
    pub space_type: Option<String>,
    #[serde(default)]
    pub method: Option<MethodMapping>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MethodMapping {
    #[serde(default)]
    pub space_type: Option<String>,
}

impl FieldMapping {
    /// The field's space: the method's, or the field-level one (both are allowed).
    pub(crate) fn space(&self) -> Option<&str> {
        self.method
            .as_ref()
            .and_then(|m| m.space_type.as_deref())
            .or(self.space_type.as_deref())
    }
}

/// An error response. OpenSearch sends `{"error": {"type", "reason", "root_cause": [..]},
/// "status"}`; some layers send `"error"` as a string, a `root_cause` without a top-level
/// type, or `{"message": ..}` (AWS gateways).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorResponse {
    #[serde(default)]
    error: Option<ErrorField>,
    #[serde(default, alias = "Message")]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Detail(ErrorDetail),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    root_cause: Vec<ErrorDetail>,
}

impl ErrorResponse {
    /// `type: reason` of the error, or the start of the body when it is not OpenSearch's shape.
    pub(crate) fn describe(body: &[u8]) -> String {
        let parsed: ErrorResponse = serde_json::from_slice(body).unwrap_or_default();
        let summary = match &parsed.error {
            Some(ErrorField::Detail(detail)) => {
                let first = detail.root_cause.first();
                let kind = detail
                    .kind
                    .as_deref()
                    .or(first.and_then(|r| r.kind.as_deref()));
                let reason = detail
                    .reason
                    .as_deref()
                    .or(first.and_then(|r| r.reason.as_deref()));
                match (kind, reason) {
                    (Some(k), Some(r)) => Some(format!("{k}: {r}")),
                    (Some(k), None) => Some(k.to_owned()),
                    (None, Some(r)) => Some(r.to_owned()),
                    (None, None) => None,
                }
            }
            Some(ErrorField::Text(text)) => Some(text.clone()),
            None => parsed.message.clone(),
        };
        summary.unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "empty response body".to_owned()
            } else {
                text.chars().take(300).collect()
            }
        })
    }

    /// The error's `type`, if the body has one.
    pub(crate) fn kind(body: &[u8]) -> Option<String> {
        let parsed: ErrorResponse = serde_json::from_slice(body).ok()?;
        match parsed.error? {
            ErrorField::Detail(d) => d
                .kind
                .or_else(|| d.root_cause.into_iter().find_map(|r| r.kind)),
            ErrorField::Text(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use callpipe_common::Role;

    use super::*;

    /// A document as the index holds it, checked against the clauses by hand-written
    /// semantics of `term`, `prefix` and `range`, so the query and `SearchFilter::matches`
    /// cannot drift apart field by field.
    fn passes(clauses: &[Value], doc: &Value) -> bool {
        clauses.iter().all(|clause| {
            let (kind, body) = clause.as_object().unwrap().iter().next().unwrap();
            let (field, cond) = body.as_object().unwrap().iter().next().unwrap();
            let value = &doc[field];
            match kind.as_str() {
                "term" => value == cond,
                "prefix" => value
                    .as_str()
                    .unwrap()
                    .starts_with(cond["value"].as_str().unwrap()),
                "range" => cond.as_object().unwrap().iter().all(|(op, bound)| {
                    let (v, b) = (value.as_f64().unwrap(), bound.as_f64().unwrap());
                    match op.as_str() {
                        "gte" => v >= b,
                        "gt" => v > b,
                        "lte" => v <= b,
                        "lt" => v < b,
                        other => panic!("unexpected range op {other}"),
                    }
                }),
                other => panic!("unexpected clause {other}"),
            }
        })
    }

    #[test]
    fn filter_clauses_agree_with_search_filter_matches() {
        let calls = [
            ("c1", "s3://calls/2024/01/a.wav", 1_000, 300.0),
            ("c2", "s3://calls/2024/02/b.wav", 2_000, 90.0),
            ("c3", "file:///archive/c.wav", 3_000, 600.0),
        ];
        let filters = [
            SearchFilter::default(),
            SearchFilter {
                from_ms: Some(2_000),
                ..Default::default()
            },
            SearchFilter {
                to_ms: Some(2_000),
                ..Default::default()
            },
            SearchFilter {
                from_ms: Some(1_000),
                to_ms: Some(3_000),
                role: Some(Role::Customer),
                ..Default::default()
            },
            SearchFilter {
                call_id: Some(CallId::from_stored("c2")),
                ..Default::default()
            },
            SearchFilter {
                source_prefix: Some("s3://calls/2024/".into()),
                ..Default::default()
            },
            SearchFilter {
                min_duration_s: Some(90.0),
                max_duration_s: Some(300.0),
                ..Default::default()
            },
            SearchFilter {
                min_duration_s: Some(300.0001),
                ..Default::default()
            },
        ];
        for filter in &filters {
            let clauses = filter_clauses(filter);
            for (call, source, at, duration) in calls {
                for role in [Role::Agent, Role::Customer] {
                    let doc = json!({
                        "call_id": call, "source": source, "recorded_at_ms": at,
                        "call_duration_s": duration, "role": role.as_str(),
                    });
                    let call_id = CallId::from_stored(call);
                    let facets = callpipe_common::store::CallFacets {
                        call_id: &call_id,
                        source,
                        recorded_at_ms: at,
                        duration_s: duration,
                    };
                    assert_eq!(
                        passes(&clauses, &doc),
                        filter.matches(role, facets),
                        "{filter:?} on {doc}"
                    );
                }
            }
        }
    }

    #[test]
    fn knn_body_puts_the_filter_inside_the_knn_clause() {
        let filter = SearchFilter {
            role: Some(Role::Agent),
            ..Default::default()
        };
        let body = knn_body(&[0.5, 0.5], 3, &filter);
        assert_eq!(
            body,
            json!({
                "size": 3,
                "query": {"knn": {"vector": {
                    "vector": [0.5, 0.5], "k": 3,
                    "filter": {"bool": {"filter": [{"term": {"role": "agent"}}]}},
                }}},
                "_source": ["call_id", "revision", "channel", "seq"],
            })
        );
        let plain = knn_body(&[0.5], 1, &SearchFilter::default());
        assert!(plain["query"]["knn"]["vector"].get("filter").is_none());
    }

    #[test]
    fn keyword_body_requires_phrases_and_excludes_words() {
        let query = KeywordQuery {
            terms: vec!["fee".into()],
            phrases: vec![vec!["late".into(), "fee".into()]],
            excluded: vec![
                vec!["waived".into()],
                vec!["bank".into(), "transfer".into()],
            ],
        };
        let filter = SearchFilter {
            role: Some(callpipe_common::Role::Agent),
            ..Default::default()
        };
        let body = keyword_body(&query, &filter, 7);
        assert_eq!(body["size"], 7);
        let b = &body["query"]["bool"];
        assert_eq!(
            b["must"],
            json!([{ "bool": { "must": [
                { "match": { "text": "late" } },
                { "match": { "text": "fee" } }
            ] } }])
        );
        assert_eq!(
            b["must_not"],
            json!([
                { "match": { "text": "waived" } },
                { "match_phrase": { "text": "bank transfer" } }
            ])
        );
        assert_eq!(b["filter"], json!([{ "term": { "role": "agent" } }]));
        // Without a phrase any term matches, and nothing is excluded.
        let body = keyword_body(
            &KeywordQuery::any_of("late fee"),
            &SearchFilter::default(),
            3,
        );
        assert_eq!(
            body["query"],
            json!({ "bool": { "must": [
                { "match": { "text": { "query": "late fee", "operator": "or" } } }
            ] } })
        );
    }

    #[test]
    fn scores_convert_back_to_cosines() {
        for cos in [-1.0f64, -0.5, -0.01, 0.0, 0.01, 0.5, 0.99, 1.0] {
            let score = if cos > 0.0 {
                1.0 + cos
            } else {
                1.0 / (1.0 - cos)
            };
            assert!(
                (f64::from(cosine_from_score(score)) - cos).abs() < 1e-6,
                "{cos}"
            );
        }
    }

    /// Response bodies from the OpenSearch documentation, verbatim (see each file's page).
    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/opensearch/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn a_documented_knn_search_response_parses() {
        // docs.opensearch.org/latest/vector-search/filter-search-knn/efficient-knn-filtering/
        let response: SearchResponse =
            serde_json::from_slice(&fixture("search-knn-filter.json")).unwrap();
        let ids: Vec<&str> = response.hits.hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["8", "6"]);
        assert_eq!(response.hits.hits[0].score, Some(0.8620689));
        // The documented hits carry the example's own fields, not a segment key.
        assert!(response.hits.hits[0].scored_key(1.0).is_err());
    }

    #[test]
    fn a_documented_count_response_parses() {
        // docs.opensearch.org/latest/api-reference/search-apis/count/
        let response: CountResponse = serde_json::from_slice(&fixture("count.json")).unwrap();
        assert_eq!(response.count, 7);
    }

    #[test]
    fn a_documented_mapping_response_parses() {
        // docs.opensearch.org/latest/api-reference/index-apis/get-mapping/
        let response: MappingResponse = serde_json::from_slice(&fixture("mapping.json")).unwrap();
        let products = &response["products"].mappings;
        assert!(products.meta.is_none());
        assert_eq!(products.properties["sku"].kind.as_deref(), Some("keyword"));
        assert!(!products.properties.contains_key("vector"));
    }

    #[test]
    fn documented_error_responses_are_described() {
        // docs.opensearch.org/latest/search-plugins/cross-cluster-search/
        let body = fixture("error-security.json");
        assert_eq!(
            ErrorResponse::describe(&body),
            "security_exception: no permissions for [indices:admin/shards/search_shards, \
             indices:data/read/search] and User [name=booksuser, roles=[], requestedTenant=null]"
        );
        // docs.opensearch.org/latest/security/access-control/permissions/ (root_cause only)
        let body = fixture("error-root-cause-only.json");
        assert_eq!(
            ErrorResponse::describe(&body),
            "security_exception: no permissions for [indices:monitor/stats] and User \
             [name=test-user, backend_roles=[], requestedTenant=null]"
        );
        assert_eq!(
            ErrorResponse::kind(&body).as_deref(),
            Some("security_exception")
        );
        // docs.opensearch.org/latest/tuning-your-cluster/replication-plugin/bulk-api/
        let body = fixture("error-already-exists.json");
        assert_eq!(
            ErrorResponse::kind(&body).as_deref(),
            Some("resource_already_exists_exception")
        );
        assert_eq!(ErrorResponse::describe(b""), "empty response body");
        assert_eq!(
            ErrorResponse::describe(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(
            ErrorResponse::describe(
                br#"{"message":"The security token included in the request is invalid."}"#
            ),
            "The security token included in the request is invalid."
        );
    }
}
