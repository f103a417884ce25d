//! Backfill jobs: a listing of S3 prefixes (or local directories) fed into the pipeline, with
//! its cursor and counts checkpointed in the store of record, so a killed or rescheduled job
//! resumes where it stopped.
//!
//! A job's record is written only by compare-and-set on its `version`, so two processes that
//! both believe they run a job cannot both advance it, and an operator's pause or cancel is
//! never lost to a checkpoint written at the same moment. The calls a job enqueued carry its
//! [`JobRun::tag`] in their records ([`super::CallRecord::backfill`]); what became of them
//! (indexed, failed and why) is read from there ([`JobStore::job_calls`]), not counted apart.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// What a job is doing, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Listing and enqueuing (or about to, when a process takes it up again).
    Running,
    /// Stopped by `backfill pause`; `backfill resume` continues it.
    Paused,
    /// Stopped by `backfill cancel`; a new run of the same command starts a new pass.
    Cancelled,
    /// Every object was listed and handed over (the calls may still be in the pipeline).
    Done,
    /// Stopped by an error that a rerun does not fix by itself (a bucket that does not exist,
    /// access denied); `error` says which.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Cancelled => "cancelled",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    /// Whether the job's current pass will list nothing more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Cancelled | JobState::Done | JobState::Failed
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the listing stands: everything before it is handed over (or skipped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Index into [`BackfillJob::sources`] of the source being listed.
    pub source: usize,
    /// The last key (S3) or path (local) of that source that is settled; the listing resumes
    /// after it. `None`: from the start of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// What a pass has done with the objects it listed. `listed` is the sum of the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct JobCounts {
    pub listed: u64,
    /// Not audio (by extension), or recorded outside `--since`/`--until`.
    pub filtered: u64,
    /// This revision is already indexed.
    pub skipped_indexed: u64,
    /// This revision failed permanently before (the input's fault; retrying will not help).
    pub skipped_failed: u64,
    /// This revision is in the pipeline already (admitted by this or another job).
    pub skipped_in_flight: u64,
    pub enqueued: u64,
    /// Bytes of the enqueued objects.
    pub enqueued_bytes: u64,
}

impl JobCounts {
    pub fn skipped(&self) -> u64 {
        self.skipped_indexed + self.skipped_failed + self.skipped_in_flight
    }

    pub fn add(&mut self, other: &JobCounts) {
        self.listed += other.listed;
        self.filtered += other.filtered;
        self.skipped_indexed += other.skipped_indexed;
        self.skipped_failed += other.skipped_failed;
        self.skipped_in_flight += other.skipped_in_flight;
        self.enqueued += other.enqueued;
        self.enqueued_bytes += other.enqueued_bytes;
    }
}

/// The totals of the survey a pass starts with (a listing that only counts), so that the
/// progress and the ETA have a denominator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Survey {
    /// Audio objects in the time window.
    pub objects: u64,
    pub bytes: u64,
}

/// One backfill job: its definition, the state of its current pass, and the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillJob {
    /// `bf-` and a hash of the definition, or the name given with `--job`.
    pub id: String,
    /// `s3://bucket/prefix` or `file:///abs/dir`, in the order they are listed.
    pub sources: Vec<String>,
    /// Recording time window, ms since the epoch: `since` inclusive, `until` exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
    /// Passes start at 1; a rerun of a finished job starts the next one.
    pub pass: u32,
    pub state: JobState,
    pub cursor: Cursor,
    pub counts: JobCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survey: Option<Survey>,
    /// Why the job failed, or the last error it is retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at_ms: i64,
    /// When the current pass started.
    pub pass_started_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    /// Bumped by every write; writes are conditional on it.
    pub version: u64,
}

/// A pass of a job, as its calls are tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRun<'a> {
    pub id: &'a str,
    pub pass: u32,
}

impl JobRun<'_> {
    /// `JOB/PASS`: what the calls enqueued by this pass carry.
    pub fn tag(&self) -> String {
        format!("{}/{}", self.id, self.pass)
    }
}

impl BackfillJob {
    pub fn run(&self) -> JobRun<'_> {
        JobRun {
            id: &self.id,
            pass: self.pass,
        }
    }
}

/// What became of the calls of one pass, from their records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobCalls {
    pub indexed: u64,
    pub failed: u64,
    /// Recorded and not finished (ingest started, not yet indexed or failed).
    pub in_progress: u64,
    /// Audio of the indexed calls, seconds.
    pub indexed_audio_s: f64,
    /// Some of the failures: source and reason, newest first.
    pub failures: Vec<JobFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFailure {
    pub source: String,
    pub stage: String,
    pub reason: String,
}

/// Where backfill jobs are kept: the metadata store's backends.
#[async_trait]
pub trait JobStore: std::fmt::Debug + Send + Sync + 'static {
    async fn get_job(&self, id: &str) -> Result<Option<BackfillJob>, StoreError>;

    /// Writes `job` with version `expected + 1` if the stored job has version `expected`
    /// (`None`: only if there is no job with that id). `Ok(false)` if the stored version is
    /// another: someone else wrote first; read it again and decide.
    async fn put_job(&self, job: &BackfillJob, expected: Option<u64>) -> Result<bool, StoreError>;

    /// Jobs, most recently updated first, at most `limit`.
    async fn list_jobs(&self, limit: usize) -> Result<Vec<BackfillJob>, StoreError>;

    /// What became of the calls tagged `tag` ([`JobRun::tag`]), with at most `failures`
    /// failure reasons.
    async fn job_calls(&self, tag: &str, failures: usize) -> Result<JobCalls, StoreError>;
}
