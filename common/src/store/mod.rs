//! The storage backends every stage writes through: one narrow trait each, with an embedded
//! default beside the cloud implementation (DESIGN.md, "Backends").
//!
//! | trait | embedded default | cloud |
//! |---|---|---|
//! | [`ObjectStore`] | [`LocalDirStore`] (a directory) | S3 |
//! | [`MetadataStore`] | SQLite + FTS5 (`callpipe-index`) | MongoDB Atlas |
//! | [`VectorIndex`] | exact index on disk (`callpipe-index`) | OpenSearch Serverless |
//!
//! The traits are shaped by the strictest backend. OpenSearch Serverless vector collections
//! refuse custom document ids, upserts and `refresh=true`, so nothing here relies on them: a
//! segment's identity is the [`SegmentKey`] carried *in* the document, replacement is "replace
//! everything of this call", and search results are joined back to the metadata store, which
//! is the source of truth for which revision of a call is current. A vector hit whose key is
//! not a current segment there is dropped, so a stale or duplicated vector can never surface.
//!
//! Every implementation runs the same conformance suite ([`conformance`], behind the
//! `conformance` feature), so the embedded and cloud backends cannot drift apart.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod jobs;
mod keyword;
mod local_dir;
mod lock;
mod metadata;
mod object;
mod recordings;
mod vector;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audio::Role;
use crate::error::ErrorKind;
use crate::ids::{CallId, Revision};

pub use self::jobs::{
    BackfillJob, Cursor, JobCalls, JobCounts, JobFailure, JobRun, JobState, JobStore, Survey,
};
pub use self::keyword::{words, KeywordHits, KeywordIndex, KeywordQuery};
pub use self::local_dir::LocalDirStore;
pub use self::lock::WriterLock;
pub use self::metadata::MetadataStore;
pub use self::object::{check_key, ObjectMeta, ObjectStore};
pub use self::recordings::{RecordingMeta, RecordingSource};
pub use self::vector::{Capabilities, VectorDoc, VectorIndex};

/// Why a backend call failed. Each backend keeps its own error types and maps them into this
/// one, so callers can tell "not there" from "try again" from "broken" without knowing which
/// backend they talk to.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object, call or record does not exist.
    #[error("{backend}: {what}: not found")]
    NotFound { backend: &'static str, what: String },
    /// The backend could not be reached or refused for now (timeout, throttling, a lock held
    /// by another process). Retrying may succeed.
    #[error("{backend}: {what}: {reason} (retryable)")]
    Unavailable {
        backend: &'static str,
        what: String,
        reason: String,
    },
    /// The backend refused this process: credentials, permissions, a key it may not use. The
    /// machine's problem, not the call's: another worker (or this one, fixed) may succeed.
    #[error("{backend}: {what}: {reason}")]
    Denied {
        backend: &'static str,
        what: String,
        reason: String,
    },
    /// A conditional write lost: the call holds newer work ([`Guard`]). `newer_revision` says
    /// a newer revision of the call was written (this work is obsolete for good); otherwise a
    /// newer holder of the same job's lease wrote, and a retry finds the job done or finishes
    /// it.
    #[error("{backend}: {what}: {reason}")]
    Superseded {
        backend: &'static str,
        what: String,
        reason: String,
        newer_revision: bool,
    },
    /// Anything a retry will not fix: corrupt data, a schema from another version, a dimension
    /// mismatch, an I/O error on a local file.
    #[error("{backend}: {what}: {reason}")]
    Failed {
        backend: &'static str,
        what: String,
        reason: String,
    },
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Unavailable { .. } | StoreError::Superseded { .. } => ErrorKind::Transient,
            StoreError::Denied { .. } => ErrorKind::Environment,
            StoreError::NotFound { .. } | StoreError::Failed { .. } => ErrorKind::Permanent,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether a newer revision of the call was written, so this work is obsolete.
    pub fn is_newer_revision(&self) -> bool {
        matches!(
            self,
            StoreError::Superseded {
                newer_revision: true,
                ..
            }
        )
    }
}

/// The conditions of a write to a call (DESIGN.md, "Transitions are conditional").
///
/// - `token`: the writer's fencing token, from its coordination lease. Tokens grow with every
///   lease granted (Redis server time), so a writer whose lease was lost and taken over holds
///   a smaller token than its successor. The store keeps the largest token applied to the
///   call and refuses smaller ones.
/// - `modified_ms`: when this revision of the recording was created (S3 LastModified or the
///   upload event's time). A write for a revision older than the call's newest is refused for
///   good: an old upload's late worker never replaces a newer upload's transcript.
///
/// Both are optional: a single writer (`callpipe run`, which holds the data directory's lock)
/// passes [`Guard::none`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Guard {
    pub token: Option<u64>,
    pub modified_ms: Option<i64>,
}

impl Guard {
    pub const fn none() -> Self {
        Guard {
            token: None,
            modified_ms: None,
        }
    }

    /// Why a write with this guard must be refused, given what the store holds for the call:
    /// its revision, the largest token applied and the newest revision's time. `None` when the
    /// write may go ahead. Every backend applies this one rule (inside its conditional write).
    pub fn refusal(
        &self,
        revision: &Revision,
        stored_revision: &Revision,
        stored_token: Option<u64>,
        stored_modified_ms: Option<i64>,
    ) -> Option<(bool, String)> {
        if let (Some(mine), Some(theirs)) = (self.modified_ms, stored_modified_ms) {
            if revision != stored_revision && mine < theirs {
                return Some((
                    true,
                    format!(
                        "revision {revision} is older than revision {stored_revision},                          which is already recorded"
                    ),
                ));
            }
        }
        if let (Some(mine), Some(theirs)) = (self.token, stored_token) {
            if mine < theirs {
                return Some((
                    false,
                    format!("fencing token {mine} is older than {theirs}: a newer worker wrote"),
                ));
            }
        }
        None
    }
}

/// One attempt's documents in the vector index: a batch id, unique per attempt, for the call's
/// revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorBatch {
    pub batch: String,
    pub call_id: CallId,
    pub revision: Revision,
}

impl VectorBatch {
    /// A fresh batch id for an attempt at `(call_id, revision)`: unique across workers and
    /// retries (time, process and a counter), so two attempts never share one.
    pub fn new(call_id: &CallId, revision: &Revision) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = blake3::Hasher::new();
        h.update(call_id.as_str().as_bytes());
        h.update(revision.as_str().as_bytes());
        h.update(&nanos.to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let hex = h.finalize().to_hex();
        VectorBatch {
            batch: hex[..24].to_owned(),
            call_id: call_id.clone(),
            revision: revision.clone(),
        }
    }
}

/// A batch with the ids its documents were given: what a commit records for a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorSet {
    pub batch: String,
    pub ids: Vec<String>,
}

/// A batch whose documents must be deleted: `ids` when they were recorded, `None` for an
/// attempt that died before its commit (find them with [`VectorIndex::batch_ids`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Garbage {
    pub batch: String,
    pub call_id: CallId,
    pub ids: Option<Vec<String>>,
}

/// The deterministic identity of one searchable segment: `(call_id, revision, channel, seq)`.
/// `seq` numbers a channel's segments in time order from 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SegmentKey {
    pub call_id: CallId,
    pub revision: Revision,
    pub channel: u32,
    pub seq: u32,
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.call_id, self.revision, self.channel, self.seq
        )
    }
}

/// Where a call is in the pipeline. Stored on the call, so a rerun, an operator or a worker
/// picking up a redelivered message can see what is left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Received; its stages are running (or were interrupted).
    Pending,
    /// Transcribed, embedded and searchable.
    Indexed,
    /// A stage failed permanently; [`CallRecord::error`] says which and why.
    Failed,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Pending => "pending",
            CallStatus::Indexed => "indexed",
            CallStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(CallStatus::Pending),
            "indexed" => Some(CallStatus::Indexed),
            "failed" => Some(CallStatus::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permanent failure recorded on a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallError {
    /// `ingest`, `transcribe` or `index`.
    pub stage: String,
    /// One line naming the file or object and what was wrong with it.
    pub reason: String,
}

/// Seconds each stage took for one call (wall time on that call's behalf).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimes {
    pub ingest_s: f64,
    pub transcribe_s: f64,
    pub index_s: f64,
}

/// Everything known about one call: the metadata store's unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: CallId,
    /// The newest revision seen: the one [`CallRecord::status`] and [`CallRecord::error`] are
    /// about (in progress, indexed, or failed).
    pub revision: Revision,
    /// The revision search shows, if any has been indexed. It changes only when a newer
    /// revision is committed ([`MetadataStore::commit_call`]), so reprocessing never blanks a
    /// call from search and a failed new revision never hides the old one. The call-level
    /// facts below (duration, channels, models, segments) describe this revision until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_revision: Option<Revision>,
    /// Where the recording came from: `file:///abs/path`, `s3://bucket/key`, `live://...`.
    pub source: String,
    /// When the call took place, in milliseconds since the Unix epoch (UTC).
    pub recorded_at_ms: i64,
    /// The state of [`CallRecord::revision`].
    pub status: CallStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CallError>,
    pub duration_s: f64,
    /// Speech found by VAD, summed over channels.
    pub speech_s: f64,
    /// The role of each channel, by index.
    pub channels: Vec<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The ASR model that produced the transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asr_model: Option<String>,
    /// The model that produced the segment vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    /// Searchable segments indexed for this revision.
    pub segments: u32,
    pub stage_times: StageTimes,
    /// When this record was last written, ms since the epoch.
    pub updated_at_ms: i64,
    /// The backfill pass that enqueued the newest revision (`JOB/PASS`), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<String>,
}

impl CallRecord {
    /// A new record for a call that has just been received.
    pub fn pending(
        call_id: CallId,
        revision: Revision,
        source: String,
        recorded_at_ms: i64,
    ) -> Self {
        CallRecord {
            call_id,
            revision,
            indexed_revision: None,
            source,
            recorded_at_ms,
            status: CallStatus::Pending,
            error: None,
            duration_s: 0.0,
            speech_s: 0.0,
            channels: Vec::new(),
            language: None,
            asr_model: None,
            embedding_model: None,
            segments: 0,
            stage_times: StageTimes::default(),
            updated_at_ms: now_ms(),
            backfill: None,
        }
    }

    /// The record to store when work on `revision` starts (or fails before its content is
    /// known) while `existing` may hold an indexed revision: the attempt's state is new, the
    /// call-level facts stay those of the indexed revision, which search keeps showing.
    pub fn attempt(existing: Option<&CallRecord>, started: &CallRecord) -> CallRecord {
        match existing {
            Some(old) if old.indexed_revision.is_some() => CallRecord {
                revision: started.revision.clone(),
                status: started.status,
                error: started.error.clone(),
                updated_at_ms: now_ms(),
                backfill: started.backfill.clone(),
                ..old.clone()
            },
            _ => started.clone(),
        }
    }

    /// Whether search shows this revision of the call.
    pub fn is_indexed(&self, revision: &Revision) -> bool {
        self.indexed_revision.as_ref() == Some(revision)
    }

    /// The call-level facts search filters on.
    pub fn facets(&self) -> CallFacets<'_> {
        CallFacets {
            call_id: &self.call_id,
            source: &self.source,
            recorded_at_ms: self.recorded_at_ms,
            duration_s: self.duration_s,
        }
    }
}

/// The contract of [`MetadataStore::commit_call`], checked by every backend before it writes:
/// the record marks its own revision indexed, and every segment is of that revision, once.
pub fn check_commit(
    backend: &'static str,
    call: &CallRecord,
    segments: &[SegmentDoc],
) -> Result<(), StoreError> {
    let failed = |reason: String| StoreError::Failed {
        backend,
        what: format!("commit of call {}", call.call_id),
        reason,
    };
    if call.status != CallStatus::Indexed || !call.is_indexed(&call.revision) {
        return Err(failed(format!(
            "a commit must mark revision {} indexed (status `{}`, indexed revision {:?})",
            call.revision, call.status, call.indexed_revision
        )));
    }
    let mut keys = std::collections::HashSet::with_capacity(segments.len());
    for s in segments {
        if s.key.call_id != call.call_id || s.key.revision != call.revision {
            return Err(failed(format!(
                "segment {} is not of revision {}",
                s.key, call.revision
            )));
        }
        if !keys.insert(&s.key) {
            return Err(failed(format!("segment {} is given twice", s.key)));
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One searchable unit of a transcript: a segment, or a few consecutive segments of one
/// speaker merged, on the call's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDoc {
    pub key: SegmentKey,
    pub role: Role,
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    /// Mean token log-probability from the ASR model (closer to 0 is surer).
    pub avg_logprob: f32,
}

/// A key with the backend's relevance score; higher is better. Scores are only comparable
/// within one result list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredKey {
    pub key: SegmentKey,
    pub score: f32,
}

/// The call-level facts a filter looks at.
#[derive(Debug, Clone, Copy)]
pub struct CallFacets<'a> {
    pub call_id: &'a CallId,
    pub source: &'a str,
    pub recorded_at_ms: i64,
    pub duration_s: f64,
}

/// Search filters; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchFilter {
    /// Calls recorded at or after this instant (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Calls recorded before this instant (ms since the epoch, exclusive).
    pub to_ms: Option<i64>,
    /// Only segments spoken in this role.
    pub role: Option<Role>,
    /// Only this call.
    pub call_id: Option<CallId>,
    /// Only calls whose source URI starts with this (`s3://bucket/2024/`, `file:///data/`).
    pub source_prefix: Option<String>,
    /// Only calls at least this long (seconds).
    pub min_duration_s: Option<f64>,
    /// Only calls at most this long (seconds).
    pub max_duration_s: Option<f64>,
}

impl SearchFilter {
    /// Whether a segment with `role` in a call with `facets` passes. Backends that filter in
    /// their query language must agree with this; the conformance suite checks that they do.
    pub fn matches(&self, role: Role, facets: CallFacets<'_>) -> bool {
        self.matches_call(facets) && self.role.is_none_or(|r| r == role)
    }

    /// The call-level part of [`SearchFilter::matches`] (everything but the role).
    pub fn matches_call(&self, facets: CallFacets<'_>) -> bool {
        self.from_ms.is_none_or(|t| facets.recorded_at_ms >= t)
            && self.to_ms.is_none_or(|t| facets.recorded_at_ms < t)
            && self.call_id.as_ref().is_none_or(|c| c == facets.call_id)
            && self
                .source_prefix
                .as_deref()
                .is_none_or(|p| facets.source.starts_with(p))
            && self.min_duration_s.is_none_or(|d| facets.duration_s >= d)
            && self.max_duration_s.is_none_or(|d| facets.duration_s <= d)
    }
}
