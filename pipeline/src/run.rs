//! The in-process pipeline behind `callpipe run`: the same stage consumers as the workers, over
//! bounded in-process queues and in-process coordination.
//!
//! The feeder admits at most `calls_in_flight` calls at a time (a call is in flight from its
//! ingest message until its outcome), so memory is bounded however many recordings the sources
//! list: queued messages are references, and the audio waits in the artifact store, not in
//! memory. After `stop` turns true no new call is admitted; the ones in flight finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use tokio::sync::{mpsc, watch, Semaphore};

use callpipe_common::coord::InProcessCoordination;
use callpipe_common::messages::{IngestJob, SourceRef, Stage, StageMessage as _};
use callpipe_common::queue::{InProcessQueue, Queue};
use callpipe_common::Lane;

use crate::stages::{CallOutcome, Stages};
use crate::telemetry::{Health, WorkerMetrics};
use crate::worker::{Policy, StageRunner};

/// How the in-process pipeline is sized.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Calls admitted and not yet finished.
    pub calls_in_flight: usize,
    /// Concurrent ingest jobs (decode runs on the CPU pool).
    pub ingest_consumers: usize,
    /// Concurrent transcribe jobs: enough calls for the engine to keep every replica's batches
    /// full.
    pub transcribe_consumers: usize,
    /// Reprocess revisions already indexed.
    pub force: bool,
    pub lane: Lane,
    /// The backfill pass feeding this run (`JOB/PASS`), recorded on its calls.
    pub backfill: Option<String>,
    /// Attempts at a transiently failing job before its call is reported failed.
    pub max_attempts: u32,
}

/// What the feeder did.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunCounts {
    /// Calls sent into the pipeline (each gave one outcome).
    pub admitted: usize,
    /// Sources taken from the stream (the rest was left by a stop).
    pub listed: usize,
}

/// Runs every source through ingest → transcribe → index, calling `on_outcome` once per
/// admitted call, in completion order.
pub async fn run_sources<S>(
    stages: Arc<Stages>,
    sources: S,
    options: RunOptions,
    mut stop: watch::Receiver<bool>,
    mut on_outcome: impl FnMut(CallOutcome),
) -> RunCounts
where
    S: Stream<Item = SourceRef> + Send,
{
    let in_flight = options.calls_in_flight.max(1);
    // Each queue can hold every call in flight, so a stage never waits on a full queue while
    // the feeder is the one bounding the work.
    let capacity = in_flight * 2;
    let queue = |name: &str| -> Arc<dyn Queue> {
        Arc::new(InProcessQueue::new(
            name,
            capacity,
            options.max_attempts.max(1),
        ))
    };
    let (ingest_q, transcribe_q, index_q) = (queue("ingest"), queue("transcribe"), queue("index"));
    let coord = Arc::new(InProcessCoordination::new());
    let metrics = WorkerMetrics::new();
    let health = Health::new();
    health.set_ready();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reporter: crate::worker::Reporter = Arc::new(move |outcome| {
        let _ = tx.send(outcome);
    });
    let policy = |consumers| Policy {
        consumers,
        // No other process shares these queues: a deadline only guards against a lost
        // acknowledgement, so it can be long.
        visibility: Duration::from_secs(3600),
        poll_wait: Duration::from_secs(1),
        retry_base: Duration::from_millis(500),
        retry_max: Duration::from_secs(10),
        give_up_after: Some(options.max_attempts.max(1)),
        environment_stops: false,
        marker_ttl: Duration::from_secs(3600),
        lane_ttl: Duration::from_secs(3600),
    };
    let runner =
        |stage, input: &Arc<dyn Queue>, output: Option<&Arc<dyn Queue>>, consumers| StageRunner {
            stage,
            input: Arc::clone(input),
            backfill: None,
            output: output.cloned(),
            failures: (stage != Stage::Index).then(|| Arc::clone(&index_q)),
            stages: Arc::clone(&stages),
            coord: coord.clone(),
            metrics: Arc::clone(&metrics),
            health: Arc::clone(&health),
            policy: policy(consumers),
            reporter: Some(Arc::clone(&reporter)),
        };
    let runners = [
        runner(
            Stage::Ingest,
            &ingest_q,
            Some(&transcribe_q),
            options.ingest_consumers,
        ),
        runner(
            Stage::Transcribe,
            &transcribe_q,
            Some(&index_q),
            options.transcribe_consumers,
        ),
        // One committer: the embedded metadata store has one writer.
        runner(Stage::Index, &index_q, None, 1),
    ];
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (_abort_tx, abort) = watch::channel(false);
    let handles: Vec<_> = runners
        .into_iter()
        .map(|r| tokio::spawn(r.run(shutdown.clone(), abort.clone())))
        .collect();

    let permits = Arc::new(Semaphore::new(in_flight));
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut listed = 0usize;
    let mut finished = 0usize;
    let mut sources = std::pin::pin!(sources);
    let mut feeding = true;
    let mut stop_open = true;
    while feeding || finished < admitted.load(Ordering::SeqCst) {
        tokio::select! {
            biased;
            Some(outcome) = rx.recv() => {
                finished += 1;
                permits.add_permits(1);
                on_outcome(outcome);
            }
            permit = Arc::clone(&permits).acquire_owned(), if feeding && !*stop.borrow() => {
                let Ok(permit) = permit else { break };
                match sources.next().await {
                    Some(source) => {
                        listed += 1;
                        permit.forget();
                        let mut job = IngestJob::new(source, options.lane, options.force);
                        job.backfill = options.backfill.clone();
                        admitted.fetch_add(1, Ordering::SeqCst);
                        if let Err(e) = ingest_q.send(&job.encode()).await {
                            tracing::error!(error = %e, "queueing a call failed");
                        }
                    }
                    None => feeding = false,
                }
            }
            changed = stop.changed(), if feeding && stop_open => {
                if changed.is_err() {
                    stop_open = false;
                } else if *stop.borrow() {
                    feeding = false;
                }
            }
        }
    }
    let _ = shutdown_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    RunCounts {
        admitted: admitted.load(Ordering::SeqCst),
        listed,
    }
}
