//! `_bulk` bodies and the per-item reading of their responses.
//!
//! A bulk response is `200 OK` even when every item failed: the outcome of each action is in
//! its item (`status`, and `error` when it failed), in request order. Items are therefore
//! always read one by one, and a missing `status` (some emulators omit it) is derived from
//! the item's `result`.

use std::collections::BTreeMap;
use std::ops::Range;

use callpipe_common::store::VectorDoc;
use serde::{Deserialize, Serialize};

/// Most bytes in one bulk body. Serverless takes up to 10 MB a request; half leaves margin
/// for the action lines and keeps one slow request from holding many documents.
pub(crate) const MAX_BULK_BYTES: usize = 5 * 1024 * 1024;
/// Most actions in one bulk body.
pub(crate) const MAX_BULK_DOCS: usize = 500;

/// The action line of an insert: no `_id`, because vector collections assign their own and
/// refuse custom ones.
const INDEX_ACTION: &[u8] = b"{\"index\":{}}\n";

/// A segment document as the index stores it (the mapping is in `super::index_body`).
#[derive(Debug, Serialize)]
pub(crate) struct SegmentDocument<'a> {
    pub call_id: &'a str,
    pub revision: &'a str,
    pub channel: u32,
    pub seq: u32,
    pub batch: &'a str,
    pub role: &'static str,
    pub source: &'a str,
    pub model: &'a str,
    pub recorded_at_ms: i64,
    pub call_duration_s: f64,
    pub text: &'a str,
    pub vector: &'a [f32],
}

impl<'a> SegmentDocument<'a> {
    pub(crate) fn new(doc: &'a VectorDoc, batch: &'a str, model: &'a str) -> Self {
        SegmentDocument {
            call_id: doc.key.call_id.as_str(),
            revision: doc.key.revision.as_str(),
            channel: doc.key.channel,
            seq: doc.key.seq,
            batch,
            role: doc.role.as_str(),
            source: &doc.source,
            model,
            recorded_at_ms: doc.recorded_at_ms,
            call_duration_s: doc.call_duration_s,
            text: &doc.text,
            vector: &doc.vector,
        }
    }
}

/// The bulk body that indexes `sources` (one JSON document each, without newlines).
pub(crate) fn index_body<'a>(sources: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    for source in sources {
        body.extend_from_slice(INDEX_ACTION);
        body.extend_from_slice(source);
        body.push(b'\n');
    }
    body
}

/// The bulk body that deletes `ids`.
pub(crate) fn delete_body<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut body = Vec::new();
    for id in ids {
        let line = serde_json::json!({ "delete": { "_id": id } });
        body.extend_from_slice(line.to_string().as_bytes());
        body.push(b'\n');
    }
    body
}

/// Consecutive ranges of `sizes` (bytes per document) with at most `max_docs` documents and,
/// unless a single document is larger, at most `max_bytes` bytes (action lines included).
pub(crate) fn chunks(sizes: &[usize], max_bytes: usize, max_docs: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, size) in sizes.iter().enumerate() {
        let line = size + INDEX_ACTION.len() + 1;
        if i > start && (i - start >= max_docs || bytes + line > max_bytes) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += line;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// A `_bulk` response.
#[derive(Debug, Deserialize)]
pub(crate) struct BulkResponse {
    #[serde(default)]
    pub items: Vec<BulkItem>,
}

/// One item: `{"<action>": {..}}`.
#[derive(Debug)]
pub(crate) struct BulkItem {
    pub action: String,
    pub result: ItemResult,
}

impl<'de> Deserialize<'de> for BulkItem {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, ItemResult>::deserialize(deserializer)?;
        let mut entries = map.into_iter();
        match (entries.next(), entries.next()) {
            (Some((action, result)), None) => Ok(BulkItem { action, result }),
            _ => Err(serde::de::Error::custom(
                "a bulk item must have exactly one action key",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemResult {
    #[serde(rename = "_id", default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemError {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What became of one action.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Applied; the document's id.
    Done(String),
    /// A delete of a document that is not there (fine: deletes are idempotent).
    NotFound,
    /// Refused for now (throttled, or the shard failed): nothing was applied, send it again.
    Retry(String),
    /// Refused for good.
    Failed(String),
}

impl ItemResult {
    /// The item's status, from `status` or, when a server leaves it out, from `result`.
    pub(crate) fn status(&self) -> Option<u16> {
        self.status.or(match (self.result.as_deref(), &self.error) {
            (_, Some(_)) => None,
            (Some("created"), None) => Some(201),
            (Some("updated" | "deleted" | "noop"), None) => Some(200),
            (Some("not_found"), None) => Some(404),
            _ => None,
        })
    }

    pub(crate) fn outcome(&self) -> Outcome {
        let why = || {
            let status = self
                .status()
                .map_or_else(|| "no status".to_owned(), |s| format!("status {s}"));
            match &self.error {
                Some(e) => format!(
                    "{status}: {}: {}",
                    e.kind.as_deref().unwrap_or("error"),
                    e.reason.as_deref().unwrap_or("no reason given")
                ),
                None => status,
            }
        };
        match self.status() {
            Some(s) if (200..300).contains(&s) && self.error.is_none() => match &self.id {
                Some(id) => Outcome::Done(id.clone()),
                None => Outcome::Failed(format!("{}: no _id in the item", why())),
            },
            Some(404) if self.error.is_none() => Outcome::NotFound,
            Some(s) if s == 429 || s >= 500 => Outcome::Retry(why()),
            _ => Outcome::Failed(why()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> BulkResponse {
        let path = format!(
            "{}/tests/fixtures/opensearch/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_documented_bulk_response_is_read_per_item() {
        // docs.opensearch.org/latest/api-reference/document-apis/bulk/, "Example response".
        let response = fixture("bulk.json");
        let read: Vec<(&str, Outcome)> = response
            .items
            .iter()
            .map(|i| (i.action.as_str(), i.result.outcome()))
            .collect();
        assert_eq!(
            read,
            [
                ("delete", Outcome::NotFound),
                ("index", Outcome::Done("tt1979320".into())),
                ("create", Outcome::Done("tt1392214".into())),
                ("update", Outcome::Done("tt0816711".into())),
            ]
        );
    }

    #[test]
    fn a_documented_failed_item_is_a_failure_naming_its_error() {
        // Same page: an update of a missing document.
        let response = fixture("bulk-update-missing.json");
        assert_eq!(
            response.items[0].result.outcome(),
            Outcome::Failed(
                "status 404: document_missing_exception: [nonexistent1]: document missing".into()
            )
        );
    }

    #[test]
    fn a_throttled_item_is_retried_and_the_others_kept() {
        let response = fixture("bulk-partial-429.json");
        let outcomes: Vec<Outcome> = response.items.iter().map(|i| i.result.outcome()).collect();
        assert_eq!(outcomes[0], Outcome::Done("1%3A0%3A0".into()));
        assert!(
            matches!(&outcomes[1], Outcome::Retry(why) if why.contains("rejected_execution_exception")),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[2], Outcome::Done("1%3A0%3A2".into()));
    }

    #[test]
    fn serverless_refusing_a_custom_id_is_a_failure() {
        // A real vector-collection response (langchain-ai/langchainjs#4346).
        let response = fixture("bulk-serverless-custom-id.json");
        assert!(
            matches!(&response.items[0].result.outcome(), Outcome::Failed(why)
                if why.contains("Document ID is not supported")),
            "{:?}",
            response.items[0].result
        );
    }

    #[test]
    fn a_missing_status_is_derived_from_the_result() {
        let body = br#"{"took":1,"errors":false,"items":[
            {"index":{"_index":"i","_id":"a","result":"created"}},
            {"delete":{"_index":"i","_id":"b","result":"deleted"}},
            {"delete":{"_index":"i","_id":"c","result":"not_found"}}]}"#;
        let response: BulkResponse = serde_json::from_slice(body).unwrap();
        let outcomes: Vec<Outcome> = response.items.iter().map(|i| i.result.outcome()).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Done("a".into()),
                Outcome::Done("b".into()),
                Outcome::NotFound
            ]
        );
    }

    #[test]
    fn chunks_respect_both_limits() {
        assert!(chunks(&[], 100, 10).is_empty());
        let line = |n: usize| n + INDEX_ACTION.len() + 1;
        // Three 10-byte docs fit in 3 lines' worth of bytes, not in less.
        assert_eq!(chunks(&[10, 10, 10], line(10) * 3, 10), vec![(0..3)]);
        assert_eq!(chunks(&[10, 10, 10], line(10) * 2, 10), [0..2, 2..3]);
        assert_eq!(chunks(&[10; 5], usize::MAX, 2), [0..2, 2..4, 4..5]);
        // A document larger than the byte limit goes alone.
        assert_eq!(
            chunks(&[10, 1000, 10], line(10) * 2, 10),
            [0..1, 1..2, 2..3]
        );
    }

    #[test]
    fn bodies_are_ndjson_with_a_final_newline() {
        let body = index_body([&b"{\"a\":1}"[..], b"{\"b\":2}"].into_iter());
        assert_eq!(
            body,
            b"{\"index\":{}}\n{\"a\":1}\n{\"index\":{}}\n{\"b\":2}\n"
        );
        let body = delete_body(["x\"y"].into_iter());
        assert_eq!(body, b"{\"delete\":{\"_id\":\"x\\\"y\"}}\n");
    }
}
