//! The document layout (see the module docs of [`super`]): record to document and back, the
//! queries' filters.

use callpipe_common::audio::Role;
use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{
    CallRecord, CallStatus, Garbage, SearchFilter, SegmentDoc, SegmentKey, VectorSet,
};
use mongodb::bson::{self, doc, Bson, Document};
use serde::{Deserialize, Serialize};

pub(super) const CALLS: &str = "calls";
pub(super) const SEGMENTS: &str = "segments";
pub(super) const VECTOR_BATCHES: &str = "vector_batches";
pub(super) const BACKFILL_JOBS: &str = "backfill_jobs";

pub(super) const FENCE: &str = "fence";
pub(super) const MODIFIED_MS: &str = "modified_ms";
pub(super) const VERSION: &str = "version";
pub(super) const VECTORS: &str = "vectors";
pub(super) const INDEXED_REVISION: &str = "indexed_revision";

/// Batch states.
pub(super) const OPEN: &str = "open";
pub(super) const CURRENT: &str = "current";
pub(super) const GARBAGE: &str = "garbage";

/// What the store holds for a call besides its record: what a guard is checked against, and
/// what a write must carry over unchanged.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stored {
    pub revision: Revision,
    pub indexed_revision: Option<Revision>,
    pub fence: Option<u64>,
    pub modified_ms: Option<i64>,
    /// `None` for a document written without one (by hand, or by another tool).
    pub version: Option<i64>,
    pub vectors: Option<VectorSet>,
}

impl Stored {
    /// The fields [`Stored::from_document`] reads.
    pub fn projection() -> Document {
        doc! {
            "revision": 1, INDEXED_REVISION: 1, FENCE: 1, MODIFIED_MS: 1, VERSION: 1, VECTORS: 1,
        }
    }

    pub fn from_document(doc: &Document) -> Result<Stored, String> {
        let revision = doc
            .get_str("revision")
            .map_err(|e| format!("call document: revision: {e}"))?;
        let indexed_revision = match doc.get(INDEXED_REVISION) {
            None | Some(Bson::Null) => None,
            Some(Bson::String(r)) => Some(Revision::new(r.clone())),
            Some(other) => return Err(format!("call document: indexed_revision is {other}")),
        };
        let fence = optional_i64(doc, FENCE)?
            .map(|t| u64::try_from(t).map_err(|_| format!("call document: fence {t} < 0")))
            .transpose()?;
        let vectors = match doc.get(VECTORS) {
            None | Some(Bson::Null) => None,
            Some(v) => Some(
                bson::from_bson::<VectorSet>(v.clone())
                    .map_err(|e| format!("call document: vectors: {e}"))?,
            ),
        };
        Ok(Stored {
            revision: Revision::new(revision),
            indexed_revision,
            fence,
            modified_ms: optional_i64(doc, MODIFIED_MS)?,
            version: optional_i64(doc, VERSION)?,
            vectors,
        })
    }

    /// The condition of a write that replaces what was read: nobody wrote in between. (`null`
    /// matches a missing field too.)
    pub fn unchanged(&self, call_id: &CallId) -> Document {
        doc! { "_id": call_id.as_str(), VERSION: self.version }
    }

    /// The version the next write stores.
    pub fn next_version(stored: Option<&Stored>) -> i64 {
        stored.and_then(|s| s.version).unwrap_or(0) + 1
    }
}

fn optional_i64(doc: &Document, field: &str) -> Result<Option<i64>, String> {
    match doc.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int64(v)) => Ok(Some(*v)),
        Some(Bson::Int32(v)) => Ok(Some(i64::from(*v))),
        Some(other) => Err(format!("call document: {field} is {other}")),
    }
}

/// What a write stores beside the record.
#[derive(Debug, Clone)]
pub(super) struct Internal<'a> {
    pub indexed_revision: Option<&'a Revision>,
    pub fence: Option<u64>,
    pub modified_ms: Option<i64>,
    pub version: i64,
    pub vectors: Option<&'a VectorSet>,
}

/// The whole call document. Writes replace it whole, so a field the new record lacks (an
/// error cleared) never survives from the old one.
pub(super) fn call_document(
    call: &CallRecord,
    internal: &Internal<'_>,
) -> Result<Document, String> {
    let mut record = bson::to_document(call).map_err(|e| format!("call record: {e}"))?;
    record.remove("call_id");
    record.remove(INDEXED_REVISION);
    let mut doc = doc! { "_id": call.call_id.as_str() };
    doc.extend(record);
    doc.insert(
        INDEXED_REVISION,
        internal.indexed_revision.map(|r| r.as_str()),
    );
    let fence = internal
        .fence
        .map(|t| i64::try_from(t).map_err(|_| format!("fencing token {t} is out of range")))
        .transpose()?;
    doc.insert(FENCE, fence);
    doc.insert(MODIFIED_MS, internal.modified_ms);
    doc.insert(VERSION, internal.version);
    let vectors = internal
        .vectors
        .map(|v| bson::to_bson(v).map_err(|e| format!("vector set: {e}")))
        .transpose()?;
    doc.insert(VECTORS, vectors.unwrap_or(Bson::Null));
    Ok(doc)
}

pub(super) fn call_from_document(mut doc: Document) -> Result<CallRecord, String> {
    let id = match doc.remove("_id") {
        Some(Bson::String(id)) => id,
        other => return Err(format!("call document with _id {other:?}")),
    };
    for internal in [FENCE, MODIFIED_MS, VERSION, VECTORS] {
        doc.remove(internal);
    }
    if doc.get(INDEXED_REVISION) == Some(&Bson::Null) {
        doc.remove(INDEXED_REVISION);
    }
    doc.insert("call_id", id.clone());
    bson::from_document(doc).map_err(|e| format!("call document {id}: {e}"))
}

/// A segment as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SegmentRow {
    #[serde(rename = "_id")]
    pub id: String,
    pub call_id: CallId,
    pub revision: Revision,
    pub channel: u32,
    pub seq: u32,
    pub role: Role,
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    pub avg_logprob: f32,
}

impl SegmentRow {
    pub fn new(s: &SegmentDoc) -> SegmentRow {
        SegmentRow {
            id: s.key.to_string(),
            call_id: s.key.call_id.clone(),
            revision: s.key.revision.clone(),
            channel: s.key.channel,
            seq: s.key.seq,
            role: s.role,
            start_s: s.start_s,
            end_s: s.end_s,
            text: s.text.clone(),
            avg_logprob: s.avg_logprob,
        }
    }

    pub fn into_doc(self) -> SegmentDoc {
        SegmentDoc {
            key: SegmentKey {
                call_id: self.call_id,
                revision: self.revision,
                channel: self.channel,
                seq: self.seq,
            },
            role: self.role,
            start_s: self.start_s,
            end_s: self.end_s,
            text: self.text,
            avg_logprob: self.avg_logprob,
        }
    }
}

/// A vector batch as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct BatchRow {
    #[serde(rename = "_id")]
    pub batch: String,
    pub call_id: CallId,
    pub revision: Revision,
    pub state: String,
    pub started_at_ms: i64,
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

impl BatchRow {
    /// An open batch's ids are unknown whatever the row says: its attempt may have inserted
    /// more documents than it recorded.
    pub fn into_garbage(self) -> Garbage {
        let ids = if self.state == GARBAGE {
            self.ids
        } else {
            None
        };
        Garbage {
            batch: self.batch,
            call_id: self.call_id,
            ids,
        }
    }
}

/// Makes `batch` the state `state` with `ids`, creating its row if it was never begun (a
/// rebuild) or already forgotten.
pub(super) fn set_batch(
    set: &VectorSet,
    state: &str,
    call_id: &CallId,
    revision: &Revision,
    now_ms: i64,
) -> (Document, Document) {
    (
        doc! { "_id": set.batch.as_str() },
        doc! {
            "$set": { "state": state, "ids": set.ids.as_slice() },
            "$setOnInsert": {
                "call_id": call_id.as_str(),
                "revision": revision.as_str(),
                "started_at_ms": now_ms,
            },
        },
    )
}

/// `^` and `text` with every character that means something in a regular expression escaped,
/// so a prefix is matched as plain text. The escapes are those PCRE (MongoDB) and Python's
/// `re` agree on: a backslash before ASCII punctuation, `\xHH` for control characters.
pub(super) fn prefix_regex(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() * 2 + 1);
    pattern.push('^');
    for c in text.chars() {
        if c.is_ascii_control() {
            pattern.push_str(&format!("\\x{:02x}", c as u32));
        } else if c.is_ascii_punctuation() || c == ' ' {
            pattern.push('\\');
            pattern.push(c);
        } else {
            pattern.push(c);
        }
    }
    pattern
}

/// The query for [`SearchFilter::matches_call`]'s conditions and an optional status.
pub(super) fn calls_filter(status: Option<CallStatus>, filter: &SearchFilter) -> Document {
    let mut query = Document::new();
    if let Some(status) = status {
        query.insert("status", status.as_str());
    }
    let mut recorded = Document::new();
    if let Some(from) = filter.from_ms {
        recorded.insert("$gte", from);
    }
    if let Some(to) = filter.to_ms {
        recorded.insert("$lt", to);
    }
    if !recorded.is_empty() {
        query.insert("recorded_at_ms", recorded);
    }
    if let Some(call_id) = &filter.call_id {
        query.insert("_id", call_id.as_str());
    }
    if let Some(prefix) = &filter.source_prefix {
        query.insert("source", doc! { "$regex": prefix_regex(prefix) });
    }
    let mut duration = Document::new();
    if let Some(min) = filter.min_duration_s {
        duration.insert("$gte", min);
    }
    if let Some(max) = filter.max_duration_s {
        duration.insert("$lte", max);
    }
    if !duration.is_empty() {
        query.insert("duration_s", duration);
    }
    query
}

/// A limit for the server: `0` there means "no limit", so callers answer `limit == 0`
/// themselves.
pub(super) fn server_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use callpipe_common::store::{CallError, StageTimes};

    use super::*;

    fn record() -> CallRecord {
        let mut call = CallRecord::pending(
            CallId::from_source("s3://calls/a.wav"),
            Revision::new("r2"),
            "s3://calls/a.wav".into(),
            1_704_067_200_000,
        );
        call.indexed_revision = Some(Revision::new("r1"));
        call.error = Some(CallError {
            stage: "index".into(),
            reason: "x".into(),
        });
        call.channels = vec![Role::Agent, Role::Customer];
        call.segments = 7;
        call.stage_times = StageTimes {
            ingest_s: 0.5,
            transcribe_s: 2.25,
            index_s: 0.125,
        };
        call
    }

    #[test]
    fn a_call_round_trips_with_the_stored_indexed_revision() {
        let call = record();
        let set = VectorSet {
            batch: "b1".into(),
            ids: vec!["v1".into()],
        };
        let r1 = Revision::new("r1");
        let doc = call_document(
            &call,
            &Internal {
                indexed_revision: Some(&r1),
                fence: Some(42),
                modified_ms: Some(1000),
                version: 3,
                vectors: Some(&set),
            },
        )
        .unwrap();
        assert_eq!(doc.get_str("_id").unwrap(), call.call_id.as_str());
        assert!(doc.get("call_id").is_none());
        let stored = Stored::from_document(&doc).unwrap();
        assert_eq!(
            stored,
            Stored {
                revision: Revision::new("r2"),
                indexed_revision: Some(r1),
                fence: Some(42),
                modified_ms: Some(1000),
                version: Some(3),
                vectors: Some(set),
            }
        );
        assert_eq!(call_from_document(doc).unwrap(), call);
    }

    #[test]
    fn absent_values_are_stored_as_null() {
        let mut call = record();
        call.indexed_revision = None;
        call.error = None;
        let doc = call_document(
            &call,
            &Internal {
                indexed_revision: None,
                fence: None,
                modified_ms: None,
                version: 1,
                vectors: None,
            },
        )
        .unwrap();
        for field in [INDEXED_REVISION, FENCE, MODIFIED_MS, VECTORS] {
            assert_eq!(doc.get(field), Some(&Bson::Null), "{field}");
        }
        assert_eq!(call_from_document(doc).unwrap(), call);
    }

    #[test]
    fn prefixes_are_plain_text() {
        assert_eq!(prefix_regex(""), "^");
        assert_eq!(prefix_regex("ab12"), "^ab12");
        assert_eq!(prefix_regex(".*"), "^\\.\\*");
        assert_eq!(prefix_regex("^(\\"), "^\\^\\(\\\\");
        assert_eq!(prefix_regex("s3://b/k e"), "^s3\\:\\/\\/b\\/k\\ e");
        assert_eq!(prefix_regex("a\nb"), "^a\\x0ab");
        assert_eq!(prefix_regex("café"), "^café");
    }

    #[test]
    fn every_call_level_filter_becomes_a_condition() {
        let filter = SearchFilter {
            from_ms: Some(1),
            to_ms: Some(2),
            role: Some(Role::Agent),
            call_id: Some(CallId::from_stored("c1")),
            source_prefix: Some("s3://b/".into()),
            min_duration_s: Some(3.0),
            max_duration_s: Some(4.0),
        };
        assert_eq!(
            calls_filter(Some(CallStatus::Failed), &filter),
            doc! {
                "status": "failed",
                "recorded_at_ms": { "$gte": 1_i64, "$lt": 2_i64 },
                "_id": "c1",
                "source": { "$regex": "^s3\\:\\/\\/b\\/" },
                "duration_s": { "$gte": 3.0, "$lte": 4.0 },
            }
        );
        assert_eq!(calls_filter(None, &SearchFilter::default()), doc! {});
    }

    #[test]
    fn an_open_batch_has_no_known_ids() {
        let row = |state: &str| BatchRow {
            batch: "b".into(),
            call_id: CallId::from_stored("c"),
            revision: Revision::new("r"),
            state: state.into(),
            started_at_ms: 0,
            ids: Some(vec!["v".into()]),
        };
        assert_eq!(row(OPEN).into_garbage().ids, None);
        assert_eq!(row(GARBAGE).into_garbage().ids, Some(vec!["v".into()]));
    }
}
