//! The queue consumer: one stage's loop over its input queue, the same for `run` (in-process
//! queues) and `worker` (SQS).
//!
//! For each message: read it (a malformed one is left for the dead-letter queue), skip it if
//! its work is already done (a marker in the coordination store), take the job's lease, run the
//! stage while a heartbeat extends both the message's deadline and the lease, then act on the
//! result:
//! - done: send the next stage's message, mark the work done, acknowledge;
//! - *permanent*: send the failure to the index stage (or record it there), acknowledge;
//! - *transient*: release the message with backoff;
//! - *environment*: release it untouched and turn unready (a worker) or report the call failed
//!   without recording it (`run`, where the operator sees it at once).
//!
//! The message is acknowledged only after the next stage's message is sent, so a crash at any
//! point leaves the message to come back, and the redelivery finds either the marker or work
//! that repeats as a no-op.
//!
//! **Lanes.** An ingest runner may have a second input, the backfill lane. It receives from it
//! only when its own queue had nothing and no live or upload call is in the pipeline (the
//! lane's admission set in the coordination store is empty), so history never delays a call
//! that just ended at any stage. Every call's outcome retires it from its lane's set, which
//! frees its place for the next backfill call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument as _;

use callpipe_common::coord::{Coordination, Lease};
use callpipe_common::messages::{IndexJob, IngestJob, Stage, StageMessage, TranscribeJob};
use callpipe_common::queue::{backoff, Queue, QueueError, Received};
use callpipe_common::{CallId, ErrorKind, Lane};

use crate::error::{Classified as _, JobError};
use crate::stages::{CallOutcome, Done, Failure, Fence, Stages};
use crate::telemetry::{Health, WorkerMetrics};

/// The longest a receive waits on one queue when a runner polls two (its own and the
/// backfill lane).
const LANE_POLL: Duration = Duration::from_secs(1);

/// How a stage's consumers behave.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Consumer tasks, each working on one message at a time.
    pub consumers: usize,
    /// The deadline a received message gets, and the lease's time to live; both are renewed
    /// every third of it while the job runs.
    pub visibility: Duration,
    /// Long-polling wait of each receive.
    pub poll_wait: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// After this many receives a transient failure is reported as the call's failure and the
    /// message acknowledged (`run`); `None` leaves it to the queue's redrive policy (SQS).
    pub give_up_after: Option<u32>,
    /// Environment errors make the worker unready and stop it taking work (a worker), instead
    /// of failing the call unrecorded (`run`).
    pub environment_stops: bool,
    /// How long a done marker is remembered: longer than any redelivery can come.
    pub marker_ttl: Duration,
    /// How long a live or upload call holds back backfill work if its outcome is never
    /// recorded (its message went to the dead-letter queue).
    pub lane_ttl: Duration,
}

/// Receives each call's outcome (`run`'s summary; the workers' logs).
pub type Reporter = Arc<dyn Fn(CallOutcome) + Send + Sync>;

/// One stage's consumers.
#[derive(Clone)]
pub struct StageRunner {
    pub stage: Stage,
    pub input: Arc<dyn Queue>,
    /// The backfill lane (ingest only): received from only when `input` and the live and
    /// upload lanes are empty.
    pub backfill: Option<Arc<dyn Queue>>,
    /// Where the stage's results go (ingest → transcribe → index); none after index.
    pub output: Option<Arc<dyn Queue>>,
    /// Where permanent failures are sent to be recorded: the index queue. The index stage
    /// records its own.
    pub failures: Option<Arc<dyn Queue>>,
    pub stages: Arc<Stages>,
    pub coord: Arc<dyn Coordination>,
    pub metrics: Arc<WorkerMetrics>,
    pub health: Arc<Health>,
    pub policy: Policy,
    pub reporter: Option<Reporter>,
}

/// A stage message, decoded.
enum Job {
    Ingest(IngestJob),
    Transcribe(TranscribeJob),
    Index(IndexJob),
}

impl Job {
    fn lane(&self) -> Lane {
        match self {
            Job::Ingest(j) => j.lane,
            Job::Transcribe(j) => j.lane,
            Job::Index(j) => j.lane,
        }
    }

    fn call_id(&self) -> CallId {
        match self {
            Job::Ingest(j) => CallId::from_source(&j.source.uri),
            Job::Transcribe(j) => j.call_id.clone(),
            Job::Index(j) => j.call_id.clone(),
        }
    }

    fn source(&self) -> &str {
        match self {
            Job::Ingest(j) => &j.source.uri,
            Job::Transcribe(j) => &j.facts.source,
            Job::Index(j) => &j.facts.source,
        }
    }

    /// The lease and done-marker key.
    fn key(&self) -> String {
        match self {
            Job::Ingest(j) => Stages::ingest_key(j),
            Job::Transcribe(j) => format!("transcribe/{}/{}", j.call_id, j.revision),
            Job::Index(j) => {
                let what = match j.work {
                    callpipe_common::messages::IndexWork::Transcript { .. } => "index",
                    callpipe_common::messages::IndexWork::Failed { .. } => "record",
                };
                format!("{what}/{}/{}", j.call_id, j.revision)
            }
        }
    }

    /// Only work whose revision is known has a marker: a local file's revision is its
    /// content, found by reading it.
    fn has_marker(&self) -> bool {
        match self {
            Job::Ingest(j) => crate::stages::s3_revision(&j.source).is_some() && !j.force,
            Job::Transcribe(j) => !j.force,
            Job::Index(j) => !j.force,
        }
    }

    fn span(&self, stage: Stage) -> tracing::Span {
        let (call_id, revision) = match self {
            Job::Ingest(j) => (
                CallId::from_source(&j.source.uri).to_string(),
                crate::stages::s3_revision(&j.source).map(|r| r.to_string()),
            ),
            Job::Transcribe(j) => (j.call_id.to_string(), Some(j.revision.to_string())),
            Job::Index(j) => (j.call_id.to_string(), Some(j.revision.to_string())),
        };
        tracing::info_span!(
            "job",
            stage = stage.as_str(),
            call_id = %call_id,
            revision = revision.as_deref().unwrap_or("-"),
            lane = self.lane().as_str(),
        )
    }
}

/// What became of a message.
enum Verdict {
    Ack,
    Release(Duration),
    /// The worker cannot do this work: release at once for another worker.
    Unready(String),
}

impl StageRunner {
    /// Runs `policy.consumers` consumers until `shutdown` turns true, then lets the jobs in
    /// flight finish; a job still running when `abort` turns true is dropped and its message
    /// released for another worker.
    pub async fn run(self, shutdown: watch::Receiver<bool>, abort: watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        for _ in 0..self.policy.consumers.max(1) {
            let me = self.clone();
            let (shutdown, abort) = (shutdown.clone(), abort.clone());
            tasks.push(tokio::spawn(
                async move { me.consume(shutdown, abort).await },
            ));
        }
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(stage = self.stage.as_str(), error = %e, "a consumer task failed");
            }
        }
    }

    async fn consume(&self, mut shutdown: watch::Receiver<bool>, abort: watch::Receiver<bool>) {
        let mut errors = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if self.policy.environment_stops && !self.health.is_ready() {
                // Unready: take no work until restarted; only shutdown ends the wait.
                let _ = shutdown.changed().await;
                continue;
            }
            let received = tokio::select! {
                _ = shutdown.changed() => continue,
                r = self.receive() => r,
            };
            match received {
                Ok((queue, messages)) => {
                    errors = 0;
                    for message in messages {
                        self.handle(&queue, message, abort.clone()).await;
                    }
                }
                Err(e) => {
                    errors += 1;
                    let delay =
                        backoff(errors, Duration::from_millis(500), Duration::from_secs(30));
                    tracing::warn!(
                        stage = self.stage.as_str(),
                        error = %e,
                        retry_in_s = delay.as_secs_f64(),
                        "receiving failed"
                    );
                    if e.kind() == ErrorKind::Environment && self.policy.environment_stops {
                        self.health.set_unready(e.to_string());
                    }
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The next message: from the stage's own queue, else from the backfill lane if no live
    /// or upload call is in the pipeline. With a backfill lane, each wait is short, so a new
    /// upload waits at most about a second behind a poll of the backfill lane.
    async fn receive(&self) -> Result<(Arc<dyn Queue>, Vec<Received>), QueueError> {
        let visibility = self.policy.visibility;
        let Some(backfill) = &self.backfill else {
            let messages = self
                .input
                .receive(1, visibility, self.policy.poll_wait)
                .await?;
            return Ok((Arc::clone(&self.input), messages));
        };
        let wait = self.policy.poll_wait.min(LANE_POLL);
        let messages = self.input.receive(1, visibility, wait).await?;
        if !messages.is_empty() {
            return Ok((Arc::clone(&self.input), messages));
        }
        match self.coord.occupancy(Lane::Upload.in_flight_key()).await {
            Ok(0) => {}
            Ok(_) => {
                // Live or upload calls are in the pipeline: backfill waits until they are done.
                tokio::time::sleep(wait).await;
                return Ok((Arc::clone(&self.input), Vec::new()));
            }
            Err(e) => {
                // Cannot tell: leave the backfill alone rather than risk delaying a live call.
                tracing::warn!(error = %e, "reading the live and upload lanes failed");
                tokio::time::sleep(wait).await;
                return Ok((Arc::clone(&self.input), Vec::new()));
            }
        }
        let messages = backfill.receive(1, visibility, wait).await?;
        Ok((Arc::clone(backfill), messages))
    }

    /// One message, from receipt to acknowledgement or release.
    async fn handle(
        &self,
        queue: &Arc<dyn Queue>,
        message: Received,
        mut abort: watch::Receiver<bool>,
    ) {
        let stage = self.stage;
        self.metrics.received(stage);
        let jobs = match self.decode(&message.body) {
            Ok(jobs) => jobs,
            Err(e) => {
                // Not acknowledged: after the queue's maximum receives the redrive policy moves
                // it to the dead-letter queue, where it can be read. Released at once so that
                // happens in seconds, not after several visibility timeouts.
                self.metrics.malformed(stage);
                tracing::error!(
                    stage = stage.as_str(),
                    message_id = %message.message_id,
                    receives = message.receive_count,
                    error = %e,
                    "malformed message left for the dead-letter queue"
                );
                self.settle(queue, &message, Verdict::Release(Duration::ZERO))
                    .await;
                return;
            }
        };
        let mut verdict = Verdict::Ack;
        for job in jobs {
            let span = job.span(stage);
            let run = self
                .run_job(queue.as_ref(), &message, &job)
                .instrument(span.clone());
            let v = tokio::select! {
                v = run => v,
                _ = abort.wait_for(|a| *a) => {
                    let _g = span.enter();
                    tracing::warn!("drain deadline passed: released for another worker");
                    self.metrics.released(stage, "shutdown");
                    Verdict::Release(Duration::ZERO)
                }
            };
            match v {
                Verdict::Ack => {}
                other => {
                    verdict = other;
                    break;
                }
            }
        }
        self.settle(queue, &message, verdict).await;
    }

    fn decode(&self, body: &str) -> Result<Vec<Job>, JobError> {
        match self.stage {
            Stage::Ingest => {
                if callpipe_ingest::s3_event::is_notification(body) {
                    let n = callpipe_ingest::s3_event::parse_notification(body)
                        .map_err(|e| JobError::permanent(format!("S3 notification: {e}")))?;
                    for skipped in &n.skipped {
                        tracing::info!(event = %skipped, "skipped an S3 event");
                        self.metrics.skipped(Stage::Ingest);
                    }
                    Ok(n.created
                        .into_iter()
                        .map(|o| {
                            let source = o.source_ref();
                            Job::Ingest(IngestJob::new(source, Lane::Upload, false))
                        })
                        .collect())
                } else {
                    Ok(vec![Job::Ingest(
                        IngestJob::decode(body).map_err(|e| e.job("message"))?,
                    )])
                }
            }
            Stage::Transcribe => Ok(vec![Job::Transcribe(
                TranscribeJob::decode(body).map_err(|e| e.job("message"))?,
            )]),
            Stage::Index => Ok(vec![Job::Index(
                IndexJob::decode(body).map_err(|e| e.job("message"))?,
            )]),
        }
    }

    async fn settle(&self, queue: &Arc<dyn Queue>, message: &Received, verdict: Verdict) {
        let stage = self.stage;
        let result = match verdict {
            Verdict::Ack => {
                self.metrics.acked(stage);
                queue.ack(&message.receipt).await
            }
            Verdict::Release(delay) => queue.release(&message.receipt, delay).await,
            Verdict::Unready(reason) => {
                self.health.set_unready(reason);
                queue.release(&message.receipt, Duration::ZERO).await
            }
        };
        if let Err(e) = result {
            // The message comes back when its deadline passes; the marker or the idempotent
            // effects make the redelivery harmless.
            tracing::warn!(stage = stage.as_str(), error = %e, "settling a message failed");
        }
    }

    async fn run_job(&self, queue: &dyn Queue, message: &Received, job: &Job) -> Verdict {
        let stage = self.stage;
        let key = job.key();
        let marker = format!("done/{key}");
        if job.has_marker() {
            match self.coord.has_marker(&marker).await {
                Ok(true) => {
                    tracing::info!("already done: acknowledged without redoing it");
                    self.metrics.skipped(stage);
                    return Verdict::Ack;
                }
                Ok(false) => {}
                Err(e) => {
                    return self
                        .on_failure(message, job, e.job("checking the done marker").into())
                        .await
                }
            }
        }
        let lease = match self
            .coord
            .acquire(&format!("lease/{key}"), self.policy.visibility)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                // Another worker holds this job (a duplicate delivery). Come back after it
                // should have finished; the marker then says it is done.
                tracing::info!("another worker holds this job; released until it is done");
                self.metrics.released(stage, "busy");
                return Verdict::Release(self.policy.visibility / 2);
            }
            Err(e) => {
                return self
                    .on_failure(message, job, e.job("taking the job's lease").into())
                    .await
            }
        };
        if self.backfill.is_some() && stage == Stage::Ingest && job.lane() != Lane::Backfill {
            // The call holds back backfill work until its outcome retires it.
            let member = [job.call_id().to_string()];
            let key = job.lane().in_flight_key();
            if let Err(e) = self
                .coord
                .admit(key, &member, u64::MAX, self.policy.lane_ttl)
                .await
            {
                tracing::warn!(error = %e, "marking the call in flight failed");
            }
        }
        let _in_flight = self.metrics.job_started(stage);
        tracing::info!(receives = message.receive_count, "started");
        let started = Instant::now();
        let fence = LeaseFence {
            coord: Arc::clone(&self.coord),
            lease: lease.clone(),
        };
        let result = tokio::select! {
            r = self.run_stage(job, &fence) => r,
            lost = self.heartbeat(queue, message, &lease) => Err(Failure::from(lost)),
        };
        let verdict = match result {
            Ok(done) => match self.finish(job, done, &fence, &marker).await {
                Ok(()) => {
                    self.metrics
                        .job_finished(stage, started.elapsed().as_secs_f64());
                    Verdict::Ack
                }
                Err(e) => self.on_failure(message, job, e.into()).await,
            },
            Err(failure) => self.on_failure(message, job, failure).await,
        };
        if let Err(e) = self.coord.release(&lease).await {
            tracing::debug!(error = %e, "releasing the lease failed; it expires on its own");
        }
        verdict
    }

    async fn run_stage(&self, job: &Job, fence: &dyn Fence) -> Result<Done, Failure> {
        match job {
            Job::Ingest(j) => self.stages.ingest(j, fence).await,
            Job::Transcribe(j) => self.stages.transcribe(j, fence).await,
            Job::Index(j) => self.stages.index(j, fence).await,
        }
    }

    /// Extends the message and the lease every third of their life; returns only when the
    /// lease is lost (taken over after an expiry), which stops the job.
    async fn heartbeat(&self, queue: &dyn Queue, message: &Received, lease: &Lease) -> JobError {
        let every = self.policy.visibility / 3;
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = queue.extend(&message.receipt, self.policy.visibility).await {
                tracing::warn!(error = %e, "extending the message's deadline failed");
            }
            match self.coord.renew(lease).await {
                Ok(true) => {}
                Ok(false) => {
                    return JobError::transient(
                        "lost the job's lease to another worker; stopped before writing more",
                    )
                }
                // Redis down for a moment: the lease may still be ours; the fence checks
                // before each effect decide.
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
            }
        }
    }

    /// Makes a finished job's result durable in order: the next message, the marker, then
    /// (by the caller) the acknowledgement.
    async fn finish(
        &self,
        job: &Job,
        done: Done,
        fence: &dyn Fence,
        marker: &str,
    ) -> Result<(), JobError> {
        if let Some(next) = &done.next {
            fence.check().await?;
            let output = self.output.as_ref().ok_or_else(|| {
                JobError::new(ErrorKind::Environment, "no queue for the next stage")
            })?;
            output
                .send(next)
                .await
                .map_err(|e| e.job("sending the next stage's message"))?;
        }
        if job.has_marker() {
            if let Err(e) = self.coord.set_marker(marker, self.policy.marker_ttl).await {
                // Only an optimisation for redeliveries: the effects are idempotent anyway.
                tracing::warn!(error = %e, "setting the done marker failed");
            }
        }
        self.metrics.audio_processed(self.stage, done.audio_s);
        if let Some(outcome) = done.outcome {
            self.report(job, outcome).await;
        }
        Ok(())
    }

    /// Logs and reports a call's outcome, and retires the call from its lane's admission set.
    async fn report(&self, job: &Job, outcome: CallOutcome) {
        let member = job.call_id().to_string();
        if let Err(e) = self.coord.retire(job.lane().in_flight_key(), &member).await {
            // Its place frees itself when it expires.
            tracing::warn!(error = %e, "retiring the call from its lane failed");
        }
        match &outcome {
            CallOutcome::Indexed { units, audio_s, .. } => {
                tracing::info!(audio_s, segments = units, "indexed")
            }
            CallOutcome::Skipped { .. } => {
                tracing::info!("skipped: this revision is already indexed")
            }
            CallOutcome::Failed { reason, .. } => tracing::warn!(%reason, "call failed"),
        }
        if let Some(report) = &self.reporter {
            report(outcome);
        }
    }

    /// Acts on a failure by its kind, and nothing else.
    async fn on_failure(&self, message: &Received, job: &Job, failure: Failure) -> Verdict {
        let stage = self.stage;
        let error = failure.error;
        match error.kind() {
            ErrorKind::Permanent => {
                tracing::warn!(error = %error.chain(), "permanent failure: recorded on the call");
                self.metrics.failed(stage);
                let Some(record) = failure.record else {
                    // Nothing to record it on (a malformed piece of a message): report it.
                    self.report(
                        job,
                        CallOutcome::Failed {
                            source: job.source().to_owned(),
                            reason: error.message().to_owned(),
                        },
                    )
                    .await;
                    return Verdict::Ack;
                };
                let recorded = if stage == Stage::Index {
                    match self.stages.index(&record, &crate::stages::NoFence).await {
                        Ok(done) => {
                            if let Some(outcome) = done.outcome {
                                self.report(job, outcome).await;
                            }
                            Ok(())
                        }
                        Err(f) => Err(f.error),
                    }
                } else {
                    match &self.failures {
                        Some(q) => q
                            .send(&record.encode())
                            .await
                            .map_err(|e| e.job("sending the failure to be recorded")),
                        None => Err(JobError::new(
                            ErrorKind::Environment,
                            "no queue to record failures on",
                        )),
                    }
                };
                match recorded {
                    Ok(()) => Verdict::Ack,
                    // Not recorded yet: keep the message so the failure is not lost.
                    Err(e) => self.retry(message, job, e).await,
                }
            }
            ErrorKind::Transient => self.retry(message, job, error).await,
            ErrorKind::Environment => {
                if self.policy.environment_stops {
                    tracing::error!(error = %error.chain(), "this worker cannot do the work: unready, taking no more");
                    self.metrics.released(stage, "environment");
                    Verdict::Unready(error.chain())
                } else {
                    self.report(
                        job,
                        CallOutcome::Failed {
                            source: job.source().to_owned(),
                            reason: format!(
                                "{} (not recorded on the call: environment error, the next run retries it)",
                                error.chain()
                            ),
                        },
                    )
                    .await;
                    Verdict::Ack
                }
            }
        }
    }

    async fn retry(&self, message: &Received, job: &Job, error: JobError) -> Verdict {
        if let Some(limit) = self.policy.give_up_after {
            if message.receive_count >= limit {
                self.report(
                    job,
                    CallOutcome::Failed {
                        source: job.source().to_owned(),
                        reason: format!(
                            "{} (gave up after {} attempts; not recorded on the call: {} error, the next run retries it)",
                            error.chain(),
                            message.receive_count,
                            error.kind().as_str()
                        ),
                    },
                )
                .await;
                return Verdict::Ack;
            }
        }
        let delay = backoff(
            message.receive_count,
            self.policy.retry_base,
            self.policy.retry_max,
        );
        tracing::warn!(error = %error.chain(), retry_in_s = delay.as_secs_f64(), "transient failure: released for a retry");
        self.metrics.released(self.stage, "transient");
        Verdict::Release(delay)
    }
}

/// The job's lease, checked before each effect.
struct LeaseFence {
    coord: Arc<dyn Coordination>,
    lease: Lease,
}

#[async_trait::async_trait]
impl Fence for LeaseFence {
    fn token(&self) -> Option<u64> {
        Some(self.lease.token)
    }

    async fn check(&self) -> Result<(), JobError> {
        match self.coord.holds(&self.lease).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(JobError::transient(
                "the job's lease passed to another worker; this worker's result is not written",
            )),
            Err(e) => Err(e.job("checking the job's lease")),
        }
    }
}
