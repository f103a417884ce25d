//! `callpipe backfill`: history into the pipeline, resumable, rate-limited, below live work.
//!
//! A job lists its sources in key order, in batches of [`BATCH`] objects, and for each batch:
//! 1. keeps audio recorded in the job's window ([`listing::wanted`]);
//! 2. skips what needs no work: a revision already indexed, one that failed permanently
//!    before, or one already in the pipeline (in the backfill lane's admission set);
//! 3. admits the rest into the lane's admission set in the coordination store, at most
//!    `[backfill] max_in_flight` across every backfill process, and at most `rate` per second
//!    ([`Limits`]); a call keeps its place until a stage records its outcome;
//! 4. hands them over: to the backfill lane's queue (settled once sent), or to `callpipe run`'s
//!    in-process pipeline (settled at their outcome, since that queue dies with the process);
//! 5. checkpoints, once every batch before it is settled: the cursor (the batch's last key)
//!    and the counts, by compare-and-set on the job record.
//!
//! A killed job resumes after its checkpoint. What it had sent after the checkpoint holds a
//! place in the admission set and a sent mark (`backfill-sent/CALL/REVISION`, set once the
//! queue took the message), and is not sent again, so each object version is enqueued once.
//! A call admitted but not marked (the process died between admitting and sending) is sent
//! by the resumed run. The one window left is between the queue taking a message and the mark
//! being written, a single round trip: a kill there sends that call twice, and the stages'
//! leases and done markers make the second delivery a no-op. Losing a call would be worse.
//!
//! An operator's `pause` or `cancel` changes the record's state; the running process sees it
//! at its next checkpoint (its compare-and-set fails) or while it waits for places, and stops.

pub mod estimate;
pub mod listing;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use callpipe_common::coord::{Coordination, Lease};
use callpipe_common::messages::{IngestJob, SourceRef, StageMessage as _};
use callpipe_common::queue::Queue;
use callpipe_common::store::{
    now_ms, BackfillJob, CallRecord, CallStatus, Cursor, JobCounts, JobState, JobStore,
    MetadataStore, RecordingSource, StoreError, Survey,
};
use callpipe_common::{CallId, ErrorKind, Lane};

use crate::error::{Classified as _, JobError};
use crate::stages::s3_revision;

pub use self::listing::{Listed, Source};

/// Objects per batch: one metadata read, one admission, one checkpoint.
pub const BATCH: usize = 100;
/// How long a job's lease lasts; a heartbeat renews it every third of that. Short, so a
/// rerun after a kill waits little for the dead process's lease to lapse.
const JOB_LEASE: Duration = Duration::from_secs(15);
/// How often a job waiting for places in the lane looks again.
const ADMIT_POLL: Duration = Duration::from_millis(500);
/// Messages per send request (SQS's SendMessageBatch takes ten).
const SEND_CHUNK: usize = 10;
/// Send requests in flight at once to the lane's queue.
const SEND_CONCURRENCY: usize = 4;

/// What a job lists: its sources and recording-time window.
#[derive(Debug, Clone)]
pub struct Definition {
    /// `--job NAME`; else derived from the rest.
    pub name: Option<String>,
    pub sources: Vec<Source>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Definition {
    /// The job's id: its name, or `bf-` and a hash of the sources and window, so the same
    /// command run again (the schedule's next run, a restart) is the same job.
    pub fn job_id(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let mut text = String::new();
        for s in &self.sources {
            text.push_str(&s.uri());
            text.push('\n');
        }
        text.push_str(&format!("{:?} {:?}", self.since_ms, self.until_ms));
        let hash = callpipe_common::Revision::from_content(text.as_bytes());
        format!("bf-{}", &hash.as_str()[3..15])
    }

    /// Checks `--job NAME`.
    pub fn check_name(name: &str) -> Result<(), String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "job name {name:?}: use 1 to 64 letters, digits, `.`, `_` or `-`"
            ))
        }
    }
}

/// Admission control, from `[backfill]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_in_flight: u64,
    /// Calls per second, all backfill processes together; 0 = none.
    pub rate: f64,
    pub in_flight_ttl: Duration,
}

/// Where admitted calls go.
pub enum Sink {
    /// The backfill lane's queue (or the ingest queue): a call is settled once sent.
    Queue(Arc<dyn Queue>),
    /// `callpipe run`'s in-process pipeline: calls go down `calls`, and each one's source URI
    /// comes back on `settled` at its outcome.
    InProcess {
        calls: mpsc::Sender<SourceRef>,
        settled: mpsc::UnboundedReceiver<String>,
    },
}

/// How a run of a job ended.
#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    pub job: BackfillJob,
    /// Counts of this process's run (the job's are cumulative over its restarts).
    pub this_run: JobCounts,
}

/// What `--dry-run` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRun {
    pub counts: JobCounts,
    /// Bytes and audio of the already-indexed objects, which calibrate bytes per second.
    pub indexed_bytes: u64,
    pub indexed_audio_s: f64,
}

/// Something a caller is told as the job goes, for a progress bar or log lines.
#[derive(Debug, Clone)]
pub enum Event {
    Surveyed(Survey),
    Checkpoint(Box<BackfillJob>),
    /// The lane is full: waiting for places.
    Waiting {
        in_flight: u64,
    },
}

/// Why a job stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("backfill job {id} is {state}: {hint}")]
    NotRunnable {
        id: String,
        state: JobState,
        hint: String,
    },
    #[error("backfill job {0} is being run by another process (its lease is held); wait for it, or pause it with `callpipe backfill pause {0}`")]
    Busy(String),
    #[error("backfill job {id}: {error}")]
    Failed { id: String, error: JobError },
}

impl BackfillError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BackfillError::NotRunnable { .. } | BackfillError::Busy(_) => ErrorKind::Permanent,
            BackfillError::Failed { error, .. } => error.kind(),
        }
    }
}

/// The stores and limits a backfill works with.
#[derive(Clone)]
pub struct Backfill {
    pub jobs: Arc<dyn JobStore>,
    pub metadata: Arc<dyn MetadataStore>,
    pub coord: Arc<dyn Coordination>,
    pub recordings: Option<Arc<dyn RecordingSource>>,
    pub extensions: Vec<String>,
    pub limits: Limits,
}

/// A batch handed over but not yet settled, and what its checkpoint will say.
struct Pending {
    cursor: Cursor,
    counts: JobCounts,
    waiting: HashSet<String>,
}

/// What one listed object needs.
enum Verdict {
    Filtered,
    Indexed,
    Failed,
    InFlight,
    Enqueue,
}

impl Backfill {
    /// The job `def` names, ready to run: created (pass 1), resumed (a pass in progress), or
    /// a new pass of a finished or cancelled one. A paused job is refused unless `resume`.
    pub async fn open(&self, def: &Definition, resume: bool) -> Result<BackfillJob, BackfillError> {
        let id = def.job_id();
        let failed = |e: StoreError| BackfillError::Failed {
            id: id.clone(),
            error: e.job("reading the job record"),
        };
        loop {
            let stored = self.jobs.get_job(&id).await.map_err(failed)?;
            let now = now_ms();
            let (job, expected) = match stored {
                None => (
                    BackfillJob {
                        id: id.clone(),
                        sources: def.sources.iter().map(Source::uri).collect(),
                        since_ms: def.since_ms,
                        until_ms: def.until_ms,
                        pass: 1,
                        state: JobState::Running,
                        cursor: Cursor::default(),
                        counts: JobCounts::default(),
                        survey: None,
                        error: None,
                        created_at_ms: now,
                        pass_started_at_ms: now,
                        updated_at_ms: now,
                        finished_at_ms: None,
                        version: 0,
                    },
                    None,
                ),
                Some(job) if job.state == JobState::Running => return Ok(job),
                Some(job) if job.state == JobState::Paused && !resume => {
                    return Err(BackfillError::NotRunnable {
                        hint: format!("continue it with `callpipe backfill resume {id}`"),
                        id,
                        state: job.state,
                    })
                }
                Some(mut job) if job.state == JobState::Paused => {
                    let version = job.version;
                    job.state = JobState::Running;
                    job.updated_at_ms = now;
                    (job, Some(version))
                }
                Some(mut job) => {
                    // Done, cancelled or failed: the next pass lists everything again and
                    // skips what is indexed.
                    let version = job.version;
                    job.pass += 1;
                    job.state = JobState::Running;
                    job.cursor = Cursor::default();
                    job.counts = JobCounts::default();
                    job.survey = None;
                    job.error = None;
                    job.pass_started_at_ms = now;
                    job.updated_at_ms = now;
                    job.finished_at_ms = None;
                    (job, Some(version))
                }
            };
            if self.jobs.put_job(&job, expected).await.map_err(failed)? {
                return Ok(BackfillJob {
                    version: expected.unwrap_or(0) + 1,
                    ..job
                });
            }
            // Someone else wrote it at the same moment: decide again on what is stored.
        }
    }

    /// Sets a job's state (pause, cancel) or takes a paused one up again (`Running`, which
    /// the next `run` continues). Returns the job as written.
    pub async fn set_state(&self, id: &str, state: JobState) -> Result<BackfillJob, BackfillError> {
        let failed = |e: StoreError| BackfillError::Failed {
            id: id.to_owned(),
            error: e.job("writing the job record"),
        };
        loop {
            let Some(mut job) = self.jobs.get_job(id).await.map_err(failed)? else {
                return Err(BackfillError::Failed {
                    id: id.to_owned(),
                    error: JobError::permanent(
                        "no such job (`callpipe backfill status` lists them)",
                    ),
                });
            };
            let allowed = match state {
                JobState::Paused => job.state == JobState::Running,
                JobState::Running => job.state == JobState::Paused,
                JobState::Cancelled => matches!(job.state, JobState::Running | JobState::Paused),
                _ => false,
            };
            if !allowed {
                return Err(BackfillError::NotRunnable {
                    id: id.to_owned(),
                    state: job.state,
                    hint: format!("it cannot become {state}"),
                });
            }
            let expected = job.version;
            job.state = state;
            job.updated_at_ms = now_ms();
            if state == JobState::Cancelled {
                job.finished_at_ms = Some(job.updated_at_ms);
            }
            if self
                .jobs
                .put_job(&job, Some(expected))
                .await
                .map_err(failed)?
            {
                job.version = expected + 1;
                return Ok(job);
            }
        }
    }

    /// Runs `job` (from [`Backfill::open`]) until its sources are listed and handed over, or
    /// `stop` turns true, or an operator pauses or cancels it.
    pub async fn run(
        &self,
        mut job: BackfillJob,
        mut sink: Sink,
        mut stop: watch::Receiver<bool>,
        mut on_event: impl FnMut(Event) + Send,
    ) -> Result<Finished, BackfillError> {
        let id = job.id.clone();
        let fail = |error: JobError| BackfillError::Failed {
            id: id.clone(),
            error,
        };
        let lease = self.take_lease(&id).await?;
        // The heartbeat renews the lease while the job runs; losing it (another process took
        // the job after a pause in this one) stops the job at its next await.
        let heartbeat = async {
            loop {
                tokio::time::sleep(JOB_LEASE / 3).await;
                if let Ok(false) = self.coord.renew(&lease).await {
                    return JobError::transient("lost the job's lease to another process; stopped");
                }
            }
        };
        let result = tokio::select! {
            r = self.run_leased(&mut job, &mut sink, &mut stop, &mut on_event) => r,
            e = heartbeat => Err(e),
        };
        let _ = self.coord.release(&lease).await;
        match result {
            Ok(this_run) => Ok(Finished { job, this_run }),
            Err(error) => {
                if error.kind() == ErrorKind::Permanent {
                    // A bucket that does not exist, access denied: a rerun will not fix it.
                    job.state = JobState::Failed;
                    job.error = Some(error.chain());
                    job.finished_at_ms = Some(now_ms());
                    let _ = self.checkpoint(&mut job).await;
                }
                Err(fail(error))
            }
        }
    }

    /// The job's lease. A process killed while running the job leaves its lease until it
    /// lapses, so a rerun (the schedule's next run, an operator's) waits that long for it
    /// before deciding the job is being run elsewhere.
    async fn take_lease(&self, id: &str) -> Result<Lease, BackfillError> {
        let key = format!("backfill-job/{id}");
        let deadline = tokio::time::Instant::now() + JOB_LEASE + Duration::from_secs(2);
        let mut told = false;
        loop {
            match self.coord.acquire(&key, JOB_LEASE).await {
                Ok(Some(lease)) => return Ok(lease),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    if !told {
                        tracing::info!(
                            job = id,
                            "the job's lease is held; waiting for it to lapse"
                        );
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(None) => return Err(BackfillError::Busy(id.to_owned())),
                Err(e) => {
                    return Err(BackfillError::Failed {
                        id: id.to_owned(),
                        error: e.job("taking the job's lease"),
                    })
                }
            }
        }
    }

    async fn run_leased(
        &self,
        job: &mut BackfillJob,
        sink: &mut Sink,
        stop: &mut watch::Receiver<bool>,
        on_event: &mut (impl FnMut(Event) + Send),
    ) -> Result<JobCounts, JobError> {
        let sources = job
            .sources
            .iter()
            .map(|s| Source::from_uri(s).map_err(JobError::permanent))
            .collect::<Result<Vec<_>, _>>()?;
        if job.survey.is_none() {
            let survey = self.survey(&sources, job.since_ms, job.until_ms).await?;
            job.survey = Some(survey);
            on_event(Event::Surveyed(survey));
            self.checkpoint_or_stop(job).await?;
        }
        let tag = job.run().tag();
        let mut this_run = JobCounts::default();
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let start = job.cursor.source;
        for (index, source) in sources.iter().enumerate().skip(start) {
            let after = if index == start {
                job.cursor.after.clone()
            } else {
                None
            };
            let mut batches =
                listing::list(source, after, self.recordings.as_ref(), &self.extensions)
                    .try_ready_chunks(BATCH);
            loop {
                if *stop.borrow() || job.state != JobState::Running {
                    break;
                }
                let batch = match batches.next().await {
                    None => break,
                    Some(Ok(batch)) => batch,
                    Some(Err(e)) => {
                        // What was listed before the error is still a batch of its own.
                        let listed = e.0;
                        if !listed.is_empty() {
                            self.batch(
                                job,
                                index,
                                listed,
                                &tag,
                                sink,
                                stop,
                                &mut pending,
                                &mut this_run,
                                on_event,
                            )
                            .await?;
                        }
                        return Err(e.1.job(format!("listing {}", source.uri())));
                    }
                };
                self.batch(
                    job,
                    index,
                    batch,
                    &tag,
                    sink,
                    stop,
                    &mut pending,
                    &mut this_run,
                    on_event,
                )
                .await?;
            }
            if *stop.borrow() || job.state != JobState::Running {
                break;
            }
            // The next source starts from its beginning once this one is settled.
            pending.push_back(Pending {
                cursor: Cursor {
                    source: index + 1,
                    after: None,
                },
                counts: JobCounts::default(),
                waiting: HashSet::new(),
            });
        }
        // Wait for what is handed over (in process: until each call's outcome).
        while pending.iter().any(|p| !p.waiting.is_empty()) {
            let Sink::InProcess { settled, .. } = sink else {
                break;
            };
            match settled.recv().await {
                Some(uri) => settle(&mut pending, &uri),
                None => break,
            }
        }
        self.advance(job, &mut pending, on_event).await?;
        if job.state == JobState::Running && !*stop.borrow() && pending.is_empty() {
            job.state = JobState::Done;
            job.finished_at_ms = Some(now_ms());
            self.checkpoint_or_stop(job).await?;
            on_event(Event::Checkpoint(Box::new(job.clone())));
        }
        Ok(this_run)
    }

    /// One listed batch: classify, admit, hand over, checkpoint what is settled.
    #[allow(clippy::too_many_arguments)]
    async fn batch(
        &self,
        job: &mut BackfillJob,
        source_index: usize,
        batch: Vec<Listed>,
        tag: &str,
        sink: &mut Sink,
        stop: &mut watch::Receiver<bool>,
        pending: &mut VecDeque<Pending>,
        this_run: &mut JobCounts,
        on_event: &mut (impl FnMut(Event) + Send),
    ) -> Result<(), JobError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let cursor = Cursor {
            source: source_index,
            after: Some(last.position.clone()),
        };
        let in_process = matches!(sink, Sink::InProcess { .. });
        let verdicts = self.classify(job, &batch, !in_process).await?;
        let entries: Vec<(Listed, Verdict)> = batch.into_iter().zip(verdicts).collect();
        match sink {
            Sink::Queue(queue) => {
                let queue = Arc::clone(queue);
                self.admit_and_send(
                    job,
                    source_index,
                    entries,
                    tag,
                    &queue,
                    stop,
                    pending,
                    this_run,
                    on_event,
                )
                .await
            }
            Sink::InProcess { calls, settled } => {
                let counts = count(&entries);
                let mut waiting = HashSet::new();
                for (item, verdict) in entries {
                    if !matches!(verdict, Verdict::Enqueue) {
                        continue;
                    }
                    waiting.insert(item.source.uri.clone());
                    // Blocks while the pipeline is full; outcomes keep arriving meanwhile.
                    if calls.send(item.source).await.is_err() {
                        return Err(JobError::transient("the in-process pipeline stopped"));
                    }
                }
                while let Ok(uri) = settled.try_recv() {
                    settle(pending, &uri);
                    waiting.remove(&uri);
                }
                this_run.add(&counts);
                pending.push_back(Pending {
                    cursor,
                    counts,
                    waiting,
                });
                self.advance(job, pending, on_event).await
            }
        }
    }

    /// What each listed object needs. `lane_set`: skip what the backfill lane's admission set
    /// holds (the distributed lane; `run`'s in-process pipeline keeps no set across runs).
    async fn classify(
        &self,
        job: &BackfillJob,
        batch: &[Listed],
        lane_set: bool,
    ) -> Result<Vec<Verdict>, JobError> {
        let wanted: Vec<bool> = batch
            .iter()
            .map(|i| listing::wanted(i, &self.extensions, job.since_ms, job.until_ms))
            .collect();
        let ids: Vec<CallId> = batch
            .iter()
            .zip(&wanted)
            .filter(|(_, w)| **w)
            .map(|(i, _)| CallId::from_source(&i.source.uri))
            .collect();
        let records: HashMap<CallId, CallRecord> = self
            .metadata
            .get_calls(&ids)
            .await
            .map_err(|e| e.job("reading the calls' records"))?
            .into_iter()
            .map(|r| (r.call_id.clone(), r))
            .collect();
        let members: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let admitted = if lane_set && !members.is_empty() {
            self.coord
                .admitted(Lane::Backfill.in_flight_key(), &members)
                .await
                .map_err(|e| e.job("reading the backfill lane"))?
        } else {
            vec![false; members.len()]
        };
        let mut admitted = admitted.into_iter();
        let mut out = Vec::with_capacity(batch.len());
        for (item, wanted) in batch.iter().zip(wanted) {
            if !wanted {
                out.push(Verdict::Filtered);
                continue;
            }
            // A place without a sent mark is a call admitted by a process that died before
            // sending it: send it now. (Rare, so one lookup each is fine.)
            let in_lane = admitted.next().unwrap_or(false)
                && self
                    .coord
                    .has_marker(&sent_key(&item.source))
                    .await
                    .map_err(|e| e.job("reading the backfill lane"))?;
            let record = records.get(&CallId::from_source(&item.source.uri));
            // A local file's revision is its content, known only once read: ingest skips an
            // indexed one itself, after reading it.
            let revision = s3_revision(&item.source);
            let verdict = match (record, revision) {
                (Some(r), Some(rev)) if r.is_indexed(&rev) => Verdict::Indexed,
                (Some(r), Some(rev)) if r.revision == rev && r.status == CallStatus::Failed => {
                    Verdict::Failed
                }
                _ if in_lane => Verdict::InFlight,
                _ => Verdict::Enqueue,
            };
            out.push(verdict);
        }
        Ok(out)
    }

    /// Admits the batch's calls into the backfill lane as places and the rate allow, sends
    /// each admitted one to `queue`, and checkpoints after each admitted run: a stop or a
    /// crash while the lane is full loses no more than the calls being sent.
    #[allow(clippy::too_many_arguments)]
    async fn admit_and_send(
        &self,
        job: &mut BackfillJob,
        source_index: usize,
        entries: Vec<(Listed, Verdict)>,
        tag: &str,
        queue: &Arc<dyn Queue>,
        stop: &mut watch::Receiver<bool>,
        pending: &mut VecDeque<Pending>,
        this_run: &mut JobCounts,
        on_event: &mut (impl FnMut(Event) + Send),
    ) -> Result<(), JobError> {
        let key = Lane::Backfill.in_flight_key();
        // `done`: the entries before it are settled (sent, skipped or filtered).
        let mut done = 0;
        let mut waited = 0u32;
        while done < entries.len() {
            let calls: Vec<usize> = (done..entries.len())
                .filter(|&i| matches!(entries[i].1, Verdict::Enqueue))
                .collect();
            if calls.is_empty() {
                self.settle_through(
                    job,
                    source_index,
                    &entries[done..],
                    pending,
                    this_run,
                    on_event,
                )
                .await?;
                return Ok(());
            }
            let want = self.rate_tokens(calls.len()).await?;
            let members: Vec<String> = calls[..want]
                .iter()
                .map(|&i| CallId::from_source(&entries[i].0.source.uri).to_string())
                .collect();
            let taken = if want == 0 {
                0
            } else {
                self.coord
                    .admit(
                        key,
                        &members,
                        self.limits.max_in_flight,
                        self.limits.in_flight_ttl,
                    )
                    .await
                    .map_err(|e| e.job("admitting calls into the backfill lane"))?
            };
            if taken > 0 {
                let items: Vec<&Listed> = calls[..taken].iter().map(|&i| &entries[i].0).collect();
                self.send(&items, &members[..taken], tag, queue).await?;
                let through = calls[taken - 1] + 1;
                self.settle_through(
                    job,
                    source_index,
                    &entries[done..through],
                    pending,
                    this_run,
                    on_event,
                )
                .await?;
                done = through;
                waited = 0;
                continue;
            }
            // Full (or over the rate): wait, and meanwhile notice a stop, a pause or a cancel.
            if waited.is_multiple_of(10) {
                let in_flight = self.coord.occupancy(key).await.unwrap_or(0);
                on_event(Event::Waiting { in_flight });
                if let Ok(Some(stored)) = self.jobs.get_job(&job.id).await {
                    if stored.state != JobState::Running {
                        // The operator's write stands; this run's progress is checkpointed.
                        job.state = stored.state;
                        job.version = stored.version;
                        job.finished_at_ms = stored.finished_at_ms;
                        self.checkpoint_or_stop(job).await?;
                        return Ok(());
                    }
                }
            }
            waited += 1;
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(ADMIT_POLL) => {}
            }
            if *stop.borrow() {
                return Err(JobError::transient(
                    "stopped while waiting for places in the backfill lane",
                ));
            }
        }
        Ok(())
    }

    /// Checkpoints `entries` (the next ones of the batch, all settled) as done.
    async fn settle_through(
        &self,
        job: &mut BackfillJob,
        source_index: usize,
        entries: &[(Listed, Verdict)],
        pending: &mut VecDeque<Pending>,
        this_run: &mut JobCounts,
        on_event: &mut (impl FnMut(Event) + Send),
    ) -> Result<(), JobError> {
        let Some((last, _)) = entries.last() else {
            return Ok(());
        };
        let counts = count(entries);
        this_run.add(&counts);
        pending.push_back(Pending {
            cursor: Cursor {
                source: source_index,
                after: Some(last.position.clone()),
            },
            counts,
            waiting: HashSet::new(),
        });
        self.advance(job, pending, on_event).await
    }

    /// How many of `want` calls the rate allows now (all backfill processes share a window
    /// counter in the coordination store).
    async fn rate_tokens(&self, want: usize) -> Result<usize, JobError> {
        let rate = self.limits.rate;
        if rate <= 0.0 {
            return Ok(want);
        }
        // Windows of at least a second, holding at least one call.
        let window_s = (1.0 / rate).ceil().max(1.0) as u64;
        let per_window = (rate * window_s as f64).floor().max(1.0) as i64;
        let window = (now_ms() / 1000) as u64 / window_s;
        let ask = (want as i64).min(per_window);
        let used = self
            .coord
            .add(
                &format!("backfill-rate/{window}"),
                ask,
                Duration::from_secs(window_s * 2),
            )
            .await
            .map_err(|e| e.job("reading the backfill rate"))?;
        let before = used - ask;
        Ok((per_window - before).clamp(0, ask) as usize)
    }

    /// Sends admitted calls; a call that could not be sent gives its place back.
    async fn send(
        &self,
        items: &[&Listed],
        members: &[String],
        tag: &str,
        queue: &Arc<dyn Queue>,
    ) -> Result<(), JobError> {
        // Owned work items: futures borrowing from the caller make `run`'s future fail the
        // higher-ranked `Send` check that `tokio::spawn` needs.
        let work: Vec<(usize, String, String, String)> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let body = IngestJob::new(item.source.clone(), Lane::Backfill, false)
                    .with_backfill(tag.to_owned())
                    .encode();
                (i, body, sent_key(&item.source), item.source.uri.clone())
            })
            .collect();
        let ttl = self.limits.in_flight_ttl;
        let chunks: Vec<Vec<(usize, String, String, String)>> =
            work.chunks(SEND_CHUNK).map(<[_]>::to_vec).collect();
        let results: Vec<(usize, Result<(), JobError>)> = futures::stream::iter(chunks)
            .map(|chunk| {
                let queue = Arc::clone(queue);
                let coord = Arc::clone(&self.coord);
                async move {
                    let bodies: Vec<String> = chunk.iter().map(|(_, b, _, _)| b.clone()).collect();
                    let sent = queue.send_batch(&bodies).await;
                    let mut out = Vec::with_capacity(chunk.len());
                    for ((i, _, mark, uri), r) in chunk.into_iter().zip(sent) {
                        let r = match r {
                            Ok(()) => coord
                                .set_marker(&mark, ttl)
                                .await
                                .map_err(|e| e.job(format!("marking {uri} sent"))),
                            Err(e) => Err(e.job(format!("enqueuing {uri}"))),
                        };
                        out.push((i, r));
                    }
                    out
                }
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        let mut first_error = None;
        for (i, r) in results {
            if let Err(e) = r {
                let _ = self
                    .coord
                    .retire(Lane::Backfill.in_flight_key(), &members[i])
                    .await;
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Checkpoints the settled batches at the front, in order.
    async fn advance(
        &self,
        job: &mut BackfillJob,
        pending: &mut VecDeque<Pending>,
        on_event: &mut (impl FnMut(Event) + Send),
    ) -> Result<(), JobError> {
        let mut moved = false;
        while pending.front().is_some_and(|p| p.waiting.is_empty()) {
            let p = pending.pop_front().expect("front exists");
            job.cursor = p.cursor;
            job.counts.add(&p.counts);
            moved = true;
        }
        if moved && job.state == JobState::Running {
            self.checkpoint_or_stop(job).await?;
            on_event(Event::Checkpoint(Box::new(job.clone())));
        }
        Ok(())
    }

    /// Writes the job; if an operator changed its state meanwhile, takes that state (and
    /// stops), keeping the operator's write.
    async fn checkpoint_or_stop(&self, job: &mut BackfillJob) -> Result<(), JobError> {
        if self.checkpoint(job).await? {
            return Ok(());
        }
        let stored = self
            .jobs
            .get_job(&job.id)
            .await
            .map_err(|e| e.job("reading the job record"))?;
        match stored {
            Some(stored) if stored.state != JobState::Running => {
                // Paused or cancelled: record the progress under the operator's state.
                let state = stored.state;
                job.version = stored.version;
                job.state = state;
                job.finished_at_ms = stored.finished_at_ms;
                if self.checkpoint(job).await? {
                    Ok(())
                } else {
                    Err(JobError::transient("the job record keeps changing"))
                }
            }
            _ => Err(JobError::transient(
                "the job record was changed by another process; stopped",
            )),
        }
    }

    /// One compare-and-set write of the job; `false` if the stored version moved.
    async fn checkpoint(&self, job: &mut BackfillJob) -> Result<bool, JobError> {
        job.updated_at_ms = now_ms();
        let expected = job.version;
        let written = self
            .jobs
            .put_job(job, Some(expected))
            .await
            .map_err(|e| e.job("checkpointing the job"))?;
        if written {
            job.version = expected + 1;
        }
        Ok(written)
    }

    /// Counts the audio objects in the window (a listing that only counts).
    pub async fn survey(
        &self,
        sources: &[Source],
        since_ms: Option<i64>,
        until_ms: Option<i64>,
    ) -> Result<Survey, JobError> {
        let mut survey = Survey::default();
        for source in sources {
            let mut items = listing::list(source, None, self.recordings.as_ref(), &self.extensions);
            while let Some(item) = items.next().await {
                let item = item.map_err(|e| e.job(format!("listing {}", source.uri())))?;
                if listing::wanted(&item, &self.extensions, since_ms, until_ms) {
                    survey.objects += 1;
                    survey.bytes += item.size;
                }
            }
        }
        Ok(survey)
    }

    /// What a run of `def` would enqueue now, without writing anything.
    pub async fn dry_run(&self, def: &Definition) -> Result<DryRun, JobError> {
        let job = BackfillJob {
            id: def.job_id(),
            sources: Vec::new(),
            since_ms: def.since_ms,
            until_ms: def.until_ms,
            pass: 0,
            state: JobState::Running,
            cursor: Cursor::default(),
            counts: JobCounts::default(),
            survey: None,
            error: None,
            created_at_ms: 0,
            pass_started_at_ms: 0,
            updated_at_ms: 0,
            finished_at_ms: None,
            version: 0,
        };
        let mut out = DryRun::default();
        for source in &def.sources {
            let mut batches =
                listing::list(source, None, self.recordings.as_ref(), &self.extensions)
                    .try_ready_chunks(BATCH);
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|e| e.1.job(format!("listing {}", source.uri())))?;
                let verdicts = self.classify(&job, &batch, true).await?;
                let ids: Vec<CallId> = batch
                    .iter()
                    .map(|i| CallId::from_source(&i.source.uri))
                    .collect();
                let mut durations: HashMap<CallId, f64> = HashMap::new();
                if verdicts.iter().any(|v| matches!(v, Verdict::Indexed)) {
                    for r in self
                        .metadata
                        .get_calls(&ids)
                        .await
                        .map_err(|e| e.job("reading the calls' records"))?
                    {
                        durations.insert(r.call_id.clone(), r.duration_s);
                    }
                }
                out.counts.listed += batch.len() as u64;
                for ((item, verdict), id) in batch.iter().zip(verdicts).zip(&ids) {
                    match verdict {
                        Verdict::Filtered => out.counts.filtered += 1,
                        Verdict::Indexed => {
                            out.counts.skipped_indexed += 1;
                            out.indexed_bytes += item.size;
                            out.indexed_audio_s += durations.get(id).copied().unwrap_or(0.0);
                        }
                        Verdict::Failed => out.counts.skipped_failed += 1,
                        Verdict::InFlight => out.counts.skipped_in_flight += 1,
                        Verdict::Enqueue => {
                            out.counts.enqueued += 1;
                            out.counts.enqueued_bytes += item.size;
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The mark of a call revision the backfill lane's queue has taken.
fn sent_key(source: &SourceRef) -> String {
    let revision = s3_revision(source)
        .map(|r| r.as_str().to_owned())
        .unwrap_or_default();
    format!(
        "backfill-sent/{}/{revision}",
        CallId::from_source(&source.uri)
    )
}

/// What a run of classified entries adds to the counts.
fn count(entries: &[(Listed, Verdict)]) -> JobCounts {
    let mut counts = JobCounts {
        listed: entries.len() as u64,
        ..JobCounts::default()
    };
    for (item, verdict) in entries {
        match verdict {
            Verdict::Filtered => counts.filtered += 1,
            Verdict::Indexed => counts.skipped_indexed += 1,
            Verdict::Failed => counts.skipped_failed += 1,
            Verdict::InFlight => counts.skipped_in_flight += 1,
            Verdict::Enqueue => {
                counts.enqueued += 1;
                counts.enqueued_bytes += item.size;
            }
        }
    }
    counts
}

/// Marks `uri` settled in whichever pending batch waits for it.
fn settle(pending: &mut VecDeque<Pending>, uri: &str) {
    for p in pending.iter_mut() {
        if p.waiting.remove(uri) {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
