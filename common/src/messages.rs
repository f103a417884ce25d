//! The stage messages: what one stage hands the next, over an in-process queue (`run`) or SQS
//! (`worker`).
//!
//! Each message is JSON with a version field (`"v": 1`) and carries references to objects
//! (the recording's URI and version, the call plan's and transcript's keys in the artifact
//! store), never audio bytes, so it stays far below SQS's 256 KiB limit whatever the call.
//! A body that does not parse, or has a version this build does not know, is a
//! [`MessageError`]; the worker leaves such a message unacknowledged, so the queue's redrive
//! policy moves it to the dead-letter queue where an operator can look at it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::audio::Role;
use crate::ids::{CallId, Revision};
use crate::lane::Lane;
use crate::store::StageTimes;

/// The message format this build writes and reads.
pub const VERSION: u32 = 1;

/// The pipeline's stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Ingest,
    Transcribe,
    Index,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Ingest, Stage::Transcribe, Stage::Index];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Transcribe => "transcribe",
            Stage::Index => "index",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recording, as the ingest stage is asked to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRef {
    /// `s3://bucket/key` (the key as the customer wrote it, unescaped) or `file:///abs/path`.
    pub uri: String,
    /// The S3 version id, when the bucket is versioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The ETag the notification or listing saw, without quotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// When the call took place (ms since the epoch), if the producer knows; otherwise ingest
    /// takes it from the name, then from the object's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at_ms: Option<i64>,
    /// When this revision of the object was created (the upload event's time, or the
    /// listing's LastModified), which orders revisions of one call (`store::Guard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ms: Option<i64>,
}

/// The call-level facts ingest finds, carried to the index stage, which records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallFacts {
    /// The source URI: the call's identity.
    pub source: String,
    pub recorded_at_ms: i64,
    pub duration_s: f64,
    pub speech_s: f64,
    pub channels: Vec<Role>,
    pub stage_times: StageTimes,
    /// When the revision was created (`SourceRef::modified_ms`, else the object's
    /// LastModified), if known: what orders revisions at the index stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ms: Option<i64>,
    /// The backfill pass that enqueued the call (`JOB/PASS`), recorded on the call so the
    /// job's status can count what became of its calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<String>,
}

/// Work for the ingest stage: read, decode and plan one recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestJob {
    pub v: u32,
    pub source: SourceRef,
    pub lane: Lane,
    /// Reprocess even if this revision is already indexed.
    #[serde(default)]
    pub force: bool,
    /// The backfill pass that enqueued it, if one did ([`CallFacts::backfill`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<String>,
}

/// Work for the transcribe stage: the plan ingest wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscribeJob {
    pub v: u32,
    pub call_id: CallId,
    pub revision: Revision,
    pub lane: Lane,
    #[serde(default)]
    pub force: bool,
    /// The call plan in the artifact store: per channel the role, the speech segments and the
    /// 16 kHz audio around them.
    pub plan_key: String,
    pub facts: CallFacts,
}

/// Work for the index stage: a transcript to make searchable, or a failure to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexJob {
    pub v: u32,
    pub call_id: CallId,
    pub revision: Revision,
    pub lane: Lane,
    #[serde(default)]
    pub force: bool,
    pub facts: CallFacts,
    pub work: IndexWork,
}

/// What the index stage does with a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IndexWork {
    /// Index the transcript at this key of the artifact store.
    Transcript {
        transcript_key: String,
        /// The plan, deleted once the call is indexed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan_key: Option<String>,
    },
    /// An earlier stage failed permanently: record it on the call. (The index stage owns the
    /// metadata store, so failures travel to it like results.)
    Failed { stage: String, reason: String },
}

/// A message body that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("malformed {what} message: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} message has version {found}; this build reads version {VERSION}")]
    UnsupportedVersion { what: &'static str, found: u64 },
}

impl MessageError {
    /// A message that cannot be read will not read better later; the worker leaves it for the
    /// dead-letter queue.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Permanent
    }
}

/// A stage message type.
pub trait StageMessage: Serialize + DeserializeOwned {
    /// For error messages: `ingest`, `transcribe`, `index`.
    const WHAT: &'static str;

    /// The JSON body to send.
    fn encode(&self) -> String {
        serde_json::to_string(self).expect("stage messages serialise")
    }

    /// Reads a body, checking its version first so an unknown version is named as such
    /// rather than as whatever field it lacks.
    fn decode(body: &str) -> Result<Self, MessageError> {
        let malformed = |reason: String| MessageError::Malformed {
            what: Self::WHAT,
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| malformed(e.to_string()))?;
        match value.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(found) => {
                return Err(MessageError::UnsupportedVersion {
                    what: Self::WHAT,
                    found,
                })
            }
            None => return Err(malformed("no `v` (version) field".into())),
        }
        serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
    }
}

impl StageMessage for IngestJob {
    const WHAT: &'static str = "ingest";
}
impl StageMessage for TranscribeJob {
    const WHAT: &'static str = "transcribe";
}
impl StageMessage for IndexJob {
    const WHAT: &'static str = "index";
}

impl IngestJob {
    pub fn new(source: SourceRef, lane: Lane, force: bool) -> Self {
        IngestJob {
            v: VERSION,
            source,
            lane,
            force,
            backfill: None,
        }
    }

    /// The same job, tagged with the backfill pass that enqueued it.
    pub fn with_backfill(mut self, tag: String) -> Self {
        self.backfill = Some(tag);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_check_their_version() {
        let job = IngestJob::new(
            SourceRef {
                uri: "s3://calls/2026/a b+c.wav".into(),
                version: Some("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY".into()),
                etag: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
                size: Some(1024),
                recorded_at_ms: None,
                modified_ms: Some(1_700_000_000_000),
            },
            Lane::Upload,
            false,
        );
        let body = job.encode();
        assert!(body.contains("\"v\":1"), "{body}");
        assert_eq!(IngestJob::decode(&body).unwrap(), job);

        let future = body.replace("\"v\":1", "\"v\":2");
        let err = IngestJob::decode(&future).unwrap_err();
        assert!(
            matches!(err, MessageError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        let err = IngestJob::decode("{\"Records\":[]}").unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        assert!(IngestJob::decode("not json").is_err());
    }

    #[test]
    fn index_work_is_tagged() {
        let facts = CallFacts {
            source: "file:///a.wav".into(),
            recorded_at_ms: 0,
            duration_s: 1.0,
            speech_s: 0.5,
            channels: vec![Role::Agent, Role::Customer],
            stage_times: StageTimes::default(),
            modified_ms: None,
            backfill: Some("bf-1/2".into()),
        };
        let job = IndexJob {
            v: VERSION,
            call_id: CallId::from_source("file:///a.wav"),
            revision: Revision::new("b3:00"),
            lane: Lane::Backfill,
            force: false,
            facts,
            work: IndexWork::Failed {
                stage: "ingest".into(),
                reason: "a.wav: not audio".into(),
            },
        };
        let body = job.encode();
        assert!(body.contains("\"kind\":\"failed\""), "{body}");
        assert_eq!(IndexJob::decode(&body).unwrap(), job);
    }
}
