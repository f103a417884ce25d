//! The three stages as functions of one message each, and the call lifecycle they keep.
//!
//! - **ingest**: an [`IngestJob`] (a recording's URI) → read within the byte limit, revision,
//!   decode, split, resample, VAD → the call plan in the artifact store → a [`TranscribeJob`].
//! - **transcribe**: the plan → the engine → the transcript in the artifact store → an
//!   [`IndexJob`].
//! - **index**: the transcript → embeddings, vectors, segments, and the commit that makes the
//!   revision searchable; or a failure recorded on the call.
//!
//! Each returns what the worker sends next, or a [`Failure`] whose error kind the worker acts
//! on. A permanent failure carries the [`IndexJob`] that records it, because the index stage
//! owns the metadata store: failures travel to it like results. Every effect is keyed by
//! `(call_id, revision)`, so a redelivered message rewrites the same objects and the commit
//! repeats as a no-op; the [`Fence`] is checked before the effects that could overwrite a
//! newer worker's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use callpipe_common::messages::{
    CallFacts, IndexJob, IndexWork, IngestJob, SourceRef, Stage, TranscribeJob, VERSION,
};
use callpipe_common::store::{
    now_ms, CallError, CallRecord, CallStatus, Guard, MetadataStore, ObjectStore, RecordingSource,
    StageTimes,
};
use callpipe_common::{CallId, CpuPool, ErrorKind, Lane, Revision, Role, SpeechSegment};
use callpipe_index::indexer::transcript_key;
use callpipe_index::Indexer;
use callpipe_ingest::{CallAudio, FrontEndOptions, IngestError};
use callpipe_transcribe::{ChannelSpeech, Transcriber};

use crate::error::{Classified as _, JobError};
use crate::plan;

/// Checks, before an effect lands, that this worker still holds the job's lease, and hands
/// the lease's fencing token to the stores' conditional writes (which catch what a check
/// cannot: a lease lost between the check and the write).
#[async_trait]
pub trait Fence: Send + Sync {
    async fn check(&self) -> Result<(), JobError>;

    /// The fencing token of the lease, if the job holds one.
    fn token(&self) -> Option<u64> {
        None
    }
}

/// No other worker can exist (tests, single-shot tools).
pub struct NoFence;

#[async_trait]
impl Fence for NoFence {
    async fn check(&self) -> Result<(), JobError> {
        Ok(())
    }
}

/// How one call ended, for `run`'s summary and the workers' logs.
#[derive(Debug, Clone)]
pub enum CallOutcome {
    Indexed {
        source: String,
        audio_s: f64,
        speech_s: f64,
        units: usize,
        times: StageTimes,
        embed_s: f64,
    },
    /// Its revision was already indexed.
    Skipped {
        source: String,
    },
    Failed {
        source: String,
        reason: String,
    },
}

/// What a stage produced.
#[derive(Debug)]
pub struct Done {
    /// The next stage's message, to send before this one is acknowledged.
    pub next: Option<String>,
    pub outcome: Option<CallOutcome>,
    /// Seconds of audio this job covered, for the metrics.
    pub audio_s: f64,
}

/// A stage that did not finish: the error, and for a permanent one, the job that records it
/// on the call.
#[derive(Debug)]
pub struct Failure {
    pub error: JobError,
    pub record: Option<IndexJob>,
}

impl From<JobError> for Failure {
    fn from(error: JobError) -> Self {
        Failure {
            error,
            record: None,
        }
    }
}

/// Everything the stages need; each worker fills in what its stages use.
#[derive(Clone)]
pub struct Stages {
    pub pool: CpuPool,
    /// callpipe's own objects: plans and transcripts.
    pub artifacts: Arc<dyn ObjectStore>,
    /// Customers' buckets, for `s3://` sources.
    pub recordings: Option<Arc<dyn RecordingSource>>,
    /// Ingest's front end (decode, resample, VAD) and its limits.
    pub front_end: Arc<FrontEndOptions>,
    pub max_file_bytes: u64,
    /// Transcribe: the engine.
    pub transcriber: Option<Arc<Transcriber>>,
    /// Index: embeddings and the backends it writes.
    pub indexer: Option<Indexer>,
    /// The index stage's store of record. Ingest uses it too when it is local (`run`, or a
    /// worker running every stage), to skip a revision already indexed before decoding it.
    pub metadata: Option<Arc<dyn MetadataStore>>,
}

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stages")
            .field("artifacts", &self.artifacts)
            .field("recordings", &self.recordings.is_some())
            .field("transcriber", &self.transcriber.is_some())
            .field("indexer", &self.indexer.is_some())
            .finish()
    }
}

/// The recording's content and identity.
struct Read {
    bytes: Vec<u8>,
    revision: Revision,
    recorded_at_ms: i64,
    /// When this revision was created, if known (`SourceRef::modified_ms`, else the object's
    /// LastModified).
    modified_ms: Option<i64>,
}

impl Stages {
    /// The lease and done-marker key of an ingest job, when its revision is known before the
    /// read (S3 gives a version or an ETag; a local file's revision is its content hash).
    pub fn ingest_key(job: &IngestJob) -> String {
        let call_id = CallId::from_source(&job.source.uri);
        match s3_revision(&job.source) {
            Some(revision) => format!("ingest/{call_id}/{revision}"),
            None => format!("ingest/{call_id}"),
        }
    }

    /// Ingest: read, revision, skip if indexed, decode, plan.
    pub async fn ingest(&self, job: &IngestJob, fence: &dyn Fence) -> Result<Done, Failure> {
        let t0 = Instant::now();
        let uri = &job.source.uri;
        let call_id = CallId::from_source(uri);
        let existing = match &self.metadata {
            Some(m) => m
                .get_call(&call_id)
                .await
                .map_err(|e| e.job(format!("{uri}: reading its record")))?,
            None => None,
        };
        let unread = |error: JobError| {
            let mut facts = facts_of(&job.source, job.source.recorded_at_ms.unwrap_or(0));
            facts.backfill = job.backfill.clone();
            failure(
                error,
                &call_id,
                &Revision::new("unread"),
                job,
                facts,
                Stage::Ingest,
            )
        };
        let read = match self.read_source(&job.source).await {
            Ok(read) => read,
            Err(e) => return Err(unread(e)),
        };
        let revision = read.revision.clone();
        let mut facts = facts_of(&job.source, read.recorded_at_ms);
        facts.modified_ms = read.modified_ms;
        facts.backfill = job.backfill.clone();
        let guard = Guard {
            token: fence.token(),
            modified_ms: read.modified_ms,
        };
        let fail = |error: JobError, facts: &CallFacts| {
            failure(
                error,
                &call_id,
                &revision,
                job,
                facts.clone(),
                Stage::Ingest,
            )
        };

        if let Some(existing) = existing
            .as_ref()
            .filter(|c| !job.force && c.is_indexed(&revision))
        {
            // An earlier attempt may have failed before it could read the recording, which is
            // readable and unchanged now: the call is back to its indexed state.
            if existing.status != CallStatus::Indexed || existing.revision != revision {
                let restored = CallRecord {
                    revision: revision.clone(),
                    status: CallStatus::Indexed,
                    error: None,
                    updated_at_ms: now_ms(),
                    ..existing.clone()
                };
                if let Some(m) = &self.metadata {
                    match m.put_call(&restored, &guard).await {
                        Err(e) if e.is_newer_revision() => return Ok(obsolete(uri.clone(), &e)),
                        other => {
                            other.map_err(|e| e.job(format!("{uri}: restoring its record")))?
                        }
                    }
                }
            }
            return Ok(Done {
                next: None,
                outcome: Some(CallOutcome::Skipped {
                    source: uri.clone(),
                }),
                audio_s: 0.0,
            });
        }
        if let Some(m) = &self.metadata {
            // The record shows the attempt at once; it keeps the indexed revision's facts,
            // which search still shows.
            let mut started = CallRecord::pending(
                call_id.clone(),
                revision.clone(),
                uri.clone(),
                read.recorded_at_ms,
            );
            started.backfill = job.backfill.clone();
            match m
                .put_call(&CallRecord::attempt(existing.as_ref(), &started), &guard)
                .await
            {
                Err(e) if e.is_newer_revision() => return Ok(obsolete(uri.clone(), &e)),
                other => other.map_err(|e| e.job(format!("{uri}: recording the call")))?,
            }
        }

        let opts = Arc::clone(&self.front_end);
        let name = PathBuf::from(shown_name(uri));
        let bytes = read.bytes;
        let audio = match self
            .pool
            .run(move || callpipe_ingest::process_bytes(&name, bytes, &opts))
            .await
        {
            Ok(Ok(audio)) => audio,
            Ok(Err(e)) => return Err(fail(e.bare(), &facts)),
            Err(panic) => {
                let e =
                    JobError::permanent(format!("{uri}: internal error while decoding: {panic}"));
                return Err(fail(e, &facts));
            }
        };
        facts.duration_s = audio.duration_s;
        facts.speech_s = audio.channels.iter().map(|c| c.speech_s()).sum();
        let channels = speech_channels(audio, self.front_end.vad.is_some());
        facts.channels = channels.iter().map(|c| c.role).collect();

        let key = plan::plan_key(&call_id, &revision);
        let bytes = self
            .pool
            .run(move || plan::encode(&channels))
            .await
            .map_err(|e| JobError::permanent(format!("{uri}: encoding the call plan: {e}")))?;
        fence.check().await?;
        self.artifacts
            .put(&key, bytes)
            .await
            .map_err(|e| e.job(format!("{uri}: writing the call plan")))?;
        facts.stage_times.ingest_s = t0.elapsed().as_secs_f64();
        let next = TranscribeJob {
            v: VERSION,
            call_id,
            revision,
            lane: job.lane,
            force: job.force,
            plan_key: key,
            facts: facts.clone(),
        };
        Ok(Done {
            next: Some(callpipe_common::messages::StageMessage::encode(&next)),
            outcome: None,
            audio_s: facts.duration_s,
        })
    }

    async fn read_source(&self, source: &SourceRef) -> Result<Read, JobError> {
        let limit = self.max_file_bytes;
        if let Some(path) = source.uri.strip_prefix("file://") {
            // The bytes stay in memory while the call decodes, so they count against the
            // call's memory budget as well as the file-size limit.
            let budget = self.front_end.max_call_bytes;
            let read_limit = limit.min(budget);
            let over_budget = read_limit < limit;
            let path = PathBuf::from(path);
            let recorded = source.recorded_at_ms;
            let read = self
                .pool
                .run(
                    move || match callpipe_ingest::read_recording(&path, read_limit) {
                        Ok(bytes) => {
                            let revision = Revision::from_content(&bytes);
                            Ok((bytes, revision))
                        }
                        Err(IngestError::TooLarge { path, .. }) if over_budget => {
                            Err(IngestError::CallMemory {
                                path,
                                limit_bytes: budget,
                            })
                        }
                        Err(e) => Err(e),
                    },
                )
                .await
                .map_err(|e| {
                    JobError::permanent(format!(
                        "{}: internal error while reading: {e}",
                        source.uri
                    ))
                })?;
            let (bytes, revision) = read.map_err(|e| e.bare())?;
            return Ok(Read {
                bytes,
                revision,
                recorded_at_ms: recorded.unwrap_or_else(now_ms),
                modified_ms: source.modified_ms,
            });
        }
        let Some((bucket, key)) = parse_s3(&source.uri) else {
            return Err(JobError::permanent(format!(
                "{}: not a file:// or s3://bucket/key source",
                source.uri
            )));
        };
        let Some(recordings) = &self.recordings else {
            return Err(JobError::new(
                ErrorKind::Environment,
                format!(
                    "{}: s3:// sources need the S3 recordings reader, which this worker was not \
                     given",
                    source.uri
                ),
            ));
        };
        let version = source.version.as_deref();
        let meta = match (&source.etag, source.size) {
            (Some(_), Some(_)) => None,
            _ => Some(
                recordings
                    .head(bucket, key, version)
                    .await
                    .map_err(|e| e.bare())?,
            ),
        };
        let etag = source
            .etag
            .clone()
            .or_else(|| meta.as_ref().and_then(|m| m.etag.clone()));
        let full = SourceRef {
            etag: etag.clone(),
            version: source
                .version
                .clone()
                .or_else(|| meta.as_ref().and_then(|m| m.version.clone())),
            ..source.clone()
        };
        let budget = self.front_end.max_call_bytes;
        let read_limit = limit.min(budget);
        let bytes = recordings
            .read(
                bucket,
                key,
                full.version.as_deref(),
                etag.as_deref(),
                read_limit,
            )
            .await
            .map_err(|e| e.bare())?;
        if bytes.len() as u64 > read_limit {
            let path = PathBuf::from(&source.uri);
            let e = if read_limit < limit {
                IngestError::CallMemory {
                    path,
                    limit_bytes: budget,
                }
            } else {
                IngestError::TooLarge {
                    path,
                    bytes: meta.as_ref().map_or(bytes.len() as u64, |m| m.size),
                    limit,
                }
            };
            return Err(e.bare());
        }
        let revision = match s3_revision(&full) {
            Some(r) => r,
            None => Revision::from_content(&bytes),
        };
        let name = key.rsplit('/').next().unwrap_or(key);
        let recorded_at_ms = source
            .recorded_at_ms
            .or_else(|| callpipe_ingest::source::timestamp_in_name(name))
            .or_else(|| meta.as_ref().and_then(|m| m.last_modified_ms))
            .unwrap_or_else(now_ms);
        Ok(Read {
            bytes,
            revision,
            recorded_at_ms,
            modified_ms: source
                .modified_ms
                .or_else(|| meta.as_ref().and_then(|m| m.last_modified_ms)),
        })
    }

    /// Transcribe: the plan through the engine, the transcript written beside it.
    pub async fn transcribe(
        &self,
        job: &TranscribeJob,
        fence: &dyn Fence,
    ) -> Result<Done, Failure> {
        let t0 = Instant::now();
        let source = job.facts.source.clone();
        let fail = |error: JobError| {
            failure_of(
                error,
                &job.call_id,
                &job.revision,
                job.lane,
                job.force,
                job.facts.clone(),
                Stage::Transcribe,
            )
        };
        let transcriber = self.transcriber.clone().ok_or_else(|| {
            JobError::new(
                ErrorKind::Environment,
                "this worker has no transcription engine",
            )
        })?;
        let bytes = self.artifacts.get(&job.plan_key).await.map_err(|e| {
            // A plan that is gone will not come back: `fail` records a permanent error.
            fail(e.job(format!("{source}: reading its call plan")))
        })?;
        let channels = self
            .pool
            .run(move || plan::decode(&bytes))
            .await
            .map_err(|e| JobError::permanent(format!("{source}: reading its call plan: {e}")))?
            .map_err(|e| {
                fail(JobError::permanent(format!(
                    "{source}: {}: {e}",
                    job.plan_key
                )))
            })?;
        let lane = job.lane;
        let label = source.clone();
        let transcript = match tokio::task::spawn_blocking(move || {
            transcriber.transcribe_in(lane, &label, &channels)
        })
        .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(fail(e.job(&source))),
            Err(panic) => {
                let e = JobError::permanent(format!(
                    "{source}: internal error while transcribing: {panic}"
                ));
                return Err(fail(e));
            }
        };
        let mut facts = job.facts.clone();
        facts.stage_times.transcribe_s = t0.elapsed().as_secs_f64();
        let key = transcript_key(&job.call_id, &job.revision);
        let json = serde_json::to_vec(&transcript).expect("a transcript serialises");
        fence.check().await?;
        self.artifacts
            .put(&key, json)
            .await
            .map_err(|e| e.job(format!("{source}: writing the transcript")))?;
        let next = IndexJob {
            v: VERSION,
            call_id: job.call_id.clone(),
            revision: job.revision.clone(),
            lane: job.lane,
            force: job.force,
            facts,
            work: IndexWork::Transcript {
                transcript_key: key,
                plan_key: Some(job.plan_key.clone()),
            },
        };
        Ok(Done {
            next: Some(callpipe_common::messages::StageMessage::encode(&next)),
            outcome: None,
            audio_s: job.facts.duration_s,
        })
    }

    /// Index: commit the transcript as the call's current revision, or record a failure.
    pub async fn index(&self, job: &IndexJob, fence: &dyn Fence) -> Result<Done, Failure> {
        let metadata = self.metadata.as_ref().ok_or_else(|| {
            JobError::new(ErrorKind::Environment, "this worker has no metadata store")
        })?;
        let source = job.facts.source.clone();
        let guard = Guard {
            token: fence.token(),
            modified_ms: job.facts.modified_ms,
        };
        let existing = metadata
            .get_call(&job.call_id)
            .await
            .map_err(|e| e.job(format!("{source}: reading its record")))?;
        let mut call = CallRecord::pending(
            job.call_id.clone(),
            job.revision.clone(),
            source.clone(),
            job.facts.recorded_at_ms,
        );
        call.duration_s = job.facts.duration_s;
        call.speech_s = job.facts.speech_s;
        call.channels = job.facts.channels.clone();
        call.stage_times = job.facts.stage_times;
        call.backfill = job.facts.backfill.clone();
        match &job.work {
            IndexWork::Failed { stage, reason } => {
                if existing
                    .as_ref()
                    .is_some_and(|c| c.is_indexed(&job.revision))
                    && !job.force
                {
                    // This revision was indexed after all (a late failure of a duplicate).
                    return Ok(skipped(source));
                }
                call.status = CallStatus::Failed;
                call.error = Some(CallError {
                    stage: stage.clone(),
                    reason: reason.clone(),
                });
                fence.check().await?;
                match metadata
                    .put_call(&CallRecord::attempt(existing.as_ref(), &call), &guard)
                    .await
                {
                    Err(e) if e.is_newer_revision() => return Ok(obsolete(source, &e)),
                    other => {
                        other.map_err(|e| e.job(format!("{source}: recording its failure")))?
                    }
                }
                Ok(Done {
                    next: None,
                    outcome: Some(CallOutcome::Failed {
                        source,
                        reason: reason.clone(),
                    }),
                    audio_s: 0.0,
                })
            }
            IndexWork::Transcript {
                transcript_key,
                plan_key,
            } => {
                if existing
                    .as_ref()
                    .is_some_and(|c| c.is_indexed(&job.revision))
                    && !job.force
                {
                    self.remove_plan(plan_key.as_deref()).await;
                    return Ok(skipped(source));
                }
                let t0 = Instant::now();
                let indexer = self.indexer.as_ref().ok_or_else(|| {
                    JobError::new(ErrorKind::Environment, "this worker has no indexer")
                })?;
                let fail = |error: JobError| {
                    failure_of(
                        error,
                        &job.call_id,
                        &job.revision,
                        job.lane,
                        job.force,
                        job.facts.clone(),
                        Stage::Index,
                    )
                };
                let json = self
                    .artifacts
                    .get(transcript_key)
                    .await
                    .map_err(|e| fail(e.job(format!("{source}: reading its transcript"))))?;
                let transcript: callpipe_common::Transcript = serde_json::from_slice(&json)
                    .map_err(|e| {
                        fail(JobError::permanent(format!(
                            "{source}: {transcript_key}: {e}"
                        )))
                    })?;
                fence.check().await?;
                let times = match indexer.index_stored(&mut call, &transcript, &guard).await {
                    Ok(times) => times,
                    Err(e) if e.is_newer_revision() => {
                        self.remove_plan(plan_key.as_deref()).await;
                        return Ok(obsolete(source, &e));
                    }
                    Err(e) => return Err(fail(e.job(&source))),
                };
                call.stage_times.index_s = t0.elapsed().as_secs_f64();
                self.remove_plan(plan_key.as_deref()).await;
                Ok(Done {
                    next: None,
                    outcome: Some(CallOutcome::Indexed {
                        source,
                        audio_s: call.duration_s,
                        speech_s: call.speech_s,
                        units: times.units,
                        times: call.stage_times,
                        embed_s: times.embed_s,
                    }),
                    audio_s: call.duration_s,
                })
            }
        }
    }

    /// The plan's audio is not needed once the transcript is indexed. A failure to delete it
    /// only leaves an object behind, so it is logged, not retried.
    async fn remove_plan(&self, key: Option<&str>) {
        if let Some(key) = key {
            if let Err(e) = self.artifacts.delete(key).await {
                tracing::warn!(key, error = %e, "could not delete a call plan");
            }
        }
    }
}

/// A newer revision of the call was recorded first: this revision's work is dropped, not
/// failed (the newer revision is the call now).
fn obsolete(source: String, why: &dyn std::fmt::Display) -> Done {
    tracing::info!(source, reason = %why, "skipped: a newer revision of the call is recorded");
    skipped(source)
}

fn skipped(source: String) -> Done {
    Done {
        next: None,
        outcome: Some(CallOutcome::Skipped { source }),
        audio_s: 0.0,
    }
}

fn facts_of(source: &SourceRef, recorded_at_ms: i64) -> CallFacts {
    CallFacts {
        source: source.uri.clone(),
        recorded_at_ms,
        duration_s: 0.0,
        speech_s: 0.0,
        channels: Vec::new(),
        stage_times: StageTimes::default(),
        modified_ms: source.modified_ms,
        backfill: None,
    }
}

fn failure(
    error: JobError,
    call_id: &CallId,
    revision: &Revision,
    job: &IngestJob,
    facts: CallFacts,
    stage: Stage,
) -> Failure {
    failure_of(error, call_id, revision, job.lane, job.force, facts, stage)
}

/// A failure, with the job that records it when it is permanent (any other kind carries none,
/// so callers pass every error through here).
fn failure_of(
    error: JobError,
    call_id: &CallId,
    revision: &Revision,
    lane: Lane,
    force: bool,
    facts: CallFacts,
    stage: Stage,
) -> Failure {
    let record = (error.kind() == ErrorKind::Permanent).then(|| IndexJob {
        v: VERSION,
        call_id: call_id.clone(),
        revision: revision.clone(),
        lane,
        force,
        facts,
        work: IndexWork::Failed {
            stage: stage.as_str().to_owned(),
            reason: error.message().to_owned(),
        },
    });
    Failure { error, record }
}

/// What the engine transcribes of a decoded call: each channel's speech, or (with VAD off)
/// the whole channel. The same audio on both channels is one mixed channel, transcribed once.
pub fn speech_channels(call: CallAudio, vad: bool) -> Vec<ChannelSpeech> {
    let mirrored = call.mirrored;
    call.channels
        .into_iter()
        .take(if mirrored { 1 } else { usize::MAX })
        .map(|c| ChannelSpeech {
            channel: c.channel,
            role: if mirrored { Role::Mixed } else { c.role },
            segments: if vad {
                c.segments
            } else {
                vec![SpeechSegment {
                    start_s: 0.0,
                    end_s: c.total_samples as f64 / callpipe_common::SAMPLE_RATE as f64,
                }]
            },
            spans: c.spans,
        })
        .collect()
}

/// `s3://bucket/key` → (bucket, key); the key is taken exactly as written.
pub fn parse_s3(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

/// An S3 object's revision, from what the notification or listing says of it: the version id
/// in a versioned bucket, else the ETag. Both are known before the read, so a redelivered
/// notification is recognised without downloading anything. Characters that could not sit in
/// an object key are hashed away.
pub fn s3_revision(source: &SourceRef) -> Option<Revision> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    let tagged = |tag: &str, value: &str| {
        if safe(value) {
            Revision::new(format!("{tag}:{value}"))
        } else {
            let hash = Revision::from_content(value.as_bytes());
            Revision::new(format!("{tag}:{}", &hash.as_str()[3..]))
        }
    };
    if !source.uri.starts_with("s3://") {
        return None;
    }
    if let Some(v) = source.version.as_deref().filter(|v| *v != "null") {
        return Some(tagged("s3v", v));
    }
    source
        .etag
        .as_deref()
        .map(|e| tagged("etag", e.trim_matches('"')))
}

/// The name the front end's errors show: the URI itself.
fn shown_name(uri: &str) -> &str {
    uri.strip_prefix("file://").unwrap_or(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_sources_name_their_revision_before_the_read() {
        let mut source = SourceRef {
            uri: "s3://calls/2026/a b+c.wav".into(),
            version: None,
            etag: Some("\"d41d8cd98f00b204e9800998ecf8427e\"".into()),
            size: None,
            recorded_at_ms: None,
            modified_ms: None,
        };
        assert_eq!(
            s3_revision(&source).unwrap().as_str(),
            "etag:d41d8cd98f00b204e9800998ecf8427e"
        );
        source.version = Some("null".into());
        assert!(s3_revision(&source).unwrap().as_str().starts_with("etag:"));
        source.version = Some("3/L4kqtJl+cpXroD".into());
        let r = s3_revision(&source).unwrap();
        assert!(
            r.as_str().starts_with("s3v:") && !r.as_str().contains('/'),
            "{r}"
        );
        source.uri = "file:///a.wav".into();
        assert!(s3_revision(&source).is_none());
        assert_eq!(parse_s3("s3://b/k//x y.wav"), Some(("b", "k//x y.wav")));
        assert_eq!(parse_s3("s3://b"), None);
        assert_eq!(parse_s3("s3:///k"), None);
    }
}
