//! `callpipe worker --stage ingest|transcribe|index|all`: the distributed workers.
//!
//! Wiring only: the stages, their consumers and what each error kind does live in
//! `callpipe_pipeline::worker`. This builds the backends from config, loads what the stages
//! need (the engine for transcribe, the embedder and stores for index), serves `/healthz` and
//! `/metrics`, and drains on SIGTERM: stop receiving, let the jobs in flight finish within
//! `[worker] drain_timeout_s`, release the rest, exit 0.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use callpipe_common::messages::Stage;
use callpipe_common::queue::{InProcessQueue, Queue};
use callpipe_pipeline::telemetry::{self, Health, WorkerMetrics};
use callpipe_pipeline::worker::{Policy, StageRunner};

use super::transcribe::{Asr, EngineArgs};
use super::Context;

/// Which stages this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StageArg {
    Ingest,
    Transcribe,
    Index,
    /// Every stage in one process (one machine; the index stage still writes the embedded
    /// stores under the data directory).
    All,
}

impl StageArg {
    pub fn stages(self) -> Vec<Stage> {
        match self {
            StageArg::Ingest => vec![Stage::Ingest],
            StageArg::Transcribe => vec![Stage::Transcribe],
            StageArg::Index => vec![Stage::Index],
            StageArg::All => Stage::ALL.to_vec(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageArg::Ingest => "ingest",
            StageArg::Transcribe => "transcribe",
            StageArg::Index => "index",
            StageArg::All => "all",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The stage to consume: ingest reads `[queue] ingest_url` (S3 notifications or callpipe
    /// ingest messages) and writes transcribe_url; transcribe reads transcribe_url and writes
    /// index_url; index reads index_url and writes the stores.
    #[arg(long, value_enum)]
    stage: StageArg,

    #[command(flatten)]
    engine: EngineArgs,
}

pub async fn run(ctx: &Context, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let config = &ctx.config;
    let stages_run = args.stage.stages();
    for stage in &stages_run {
        config.check_stage(*stage)?;
    }
    if args.stage != StageArg::All && config.queue.url(stages_run[0]).is_empty() {
        anyhow::bail!(
            "--stage {} needs its SQS queue ({}): a single stage on in-process queues \
             would never receive work (use --stage all, or `callpipe run`, on one machine)",
            stages_run[0],
            callpipe_common::config::QueueConfig::key(stages_run[0])
        );
    }
    let metrics = WorkerMetrics::new();
    let health = Health::new();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (abort_tx, abort) = watch::channel(false);

    // Health and metrics first, so an orchestrator sees the worker live (not yet ready)
    // while the models load.
    let http = if config.worker.listen.is_empty() {
        None
    } else {
        let mut stop = shutdown.clone();
        let (addr, handle) = telemetry::serve(
            &config.worker.listen,
            telemetry::router(Arc::clone(&metrics), Arc::clone(&health)),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await
        .with_context(|| format!("serving /healthz and /metrics on {}", config.worker.listen))?;
        tracing::info!(%addr, "serving /healthz and /metrics");
        Some(handle)
    };

    let wants = |s: Stage| stages_run.contains(&s);
    let artifacts = ctx.artifacts().await?;
    let recordings = if wants(Stage::Ingest) {
        Some(ctx.recordings().await?)
    } else {
        None
    };
    let coord = ctx.coordination().await?;
    let writer = if wants(Stage::Index) {
        Some(ctx.open_writer().await?)
    } else {
        None
    };
    let asr = if wants(Stage::Transcribe) {
        Some(Asr::load(ctx, &args.engine)?)
    } else {
        None
    };
    let front_end = match &asr {
        Some(asr) => Arc::clone(&asr.front_end),
        None => Arc::new(ctx.front_end()),
    };
    let transcriber = asr.as_ref().map(|a| Arc::clone(&a.transcriber));
    let stages = Arc::new(ctx.stages(
        front_end,
        transcriber.clone(),
        artifacts,
        recordings,
        writer.as_ref(),
    ));

    // Each stage's queue: SQS when configured; with none (`--stage all` on one machine) an
    // in-process queue, bounded like `run`'s.
    let mut queues = Vec::new();
    for stage in Stage::ALL {
        let queue: Arc<dyn Queue> = match ctx.stage_queue(stage).await {
            Some(q) => q,
            None => Arc::new(InProcessQueue::new(
                stage.as_str(),
                config.queue.capacity,
                config.queue.max_receives,
            )),
        };
        queues.push(queue);
    }
    let queue = |s: Stage| Arc::clone(&queues[s as usize]);
    let w = &config.worker;
    let in_flight = asr.as_ref().map_or(1, Asr::in_flight);
    let policy = |consumers: usize| Policy {
        consumers,
        visibility: Duration::from_secs(w.visibility_timeout_s),
        poll_wait: Duration::from_secs(w.poll_wait_s),
        retry_base: Duration::from_secs_f64(w.retry_base_s),
        retry_max: Duration::from_secs_f64(w.retry_max_s),
        give_up_after: None,
        environment_stops: true,
        // Longer than SQS keeps a message (at most 14 days), so no redelivery outlives it.
        marker_ttl: Duration::from_secs(15 * 86_400),
        lane_ttl: LANE_TTL,
    };
    let backfill = if wants(Stage::Ingest) {
        ctx.backfill_queue().await
    } else {
        None
    };
    let consumers = |stage: Stage| match stage {
        Stage::Ingest => match w.ingest_consumers {
            0 => ctx.pool.threads(),
            n => n,
        },
        Stage::Transcribe => match w.transcribe_consumers {
            0 => in_flight,
            n => n,
        },
        Stage::Index => w.index_consumers.max(1),
    };
    let mut handles = Vec::new();
    for stage in stages_run.iter().copied() {
        let runner = StageRunner {
            stage,
            input: queue(stage),
            backfill: match stage {
                Stage::Ingest => backfill.clone(),
                _ => None,
            },
            output: match stage {
                Stage::Ingest => Some(queue(Stage::Transcribe)),
                Stage::Transcribe => Some(queue(Stage::Index)),
                Stage::Index => None,
            },
            failures: (stage != Stage::Index).then(|| queue(Stage::Index)),
            stages: Arc::clone(&stages),
            coord: Arc::clone(&coord),
            metrics: Arc::clone(&metrics),
            health: Arc::clone(&health),
            policy: policy(consumers(stage)),
            reporter: None,
        };
        tracing::info!(
            stage = stage.as_str(),
            queue = runner.input.name(),
            backfill = runner.backfill.as_ref().map(|q| q.name()),
            consumers = runner.policy.consumers,
            "consuming"
        );
        handles.push(tokio::spawn(runner.run(shutdown.clone(), abort.clone())));
    }
    health.set_ready();

    // Gauges that are sampled rather than counted.
    let sampler = {
        let metrics = Arc::clone(&metrics);
        let queues: Vec<(Stage, Arc<dyn Queue>)> =
            stages_run.iter().map(|s| (*s, queue(*s))).collect();
        let transcriber = transcriber.clone();
        tokio::spawn(async move {
            loop {
                if let Some(t) = &transcriber {
                    metrics.set_engine_busy_seconds(t.engine_busy().as_secs_f64());
                }
                for (stage, q) in &queues {
                    if let Ok(d) = q.depth().await {
                        metrics.set_queue_depth(*stage, d.visible, d.in_flight);
                    }
                }
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        })
    };

    // Index workers sweep vector garbage now and then (what `callpipe gc` does), one at a time
    // across the fleet.
    let sweeper = writer
        .as_ref()
        .map(|w| tokio::spawn(sweep_now_and_then(w.indexer.clone(), Arc::clone(&coord))));

    wait_for_signal().await;
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    tracing::info!(
        drain_timeout_s = w.drain_timeout_s,
        "stopping: no new messages; finishing the jobs in flight"
    );
    let _ = shutdown_tx.send(true);
    let drain = futures::future::join_all(handles);
    tokio::pin!(drain);
    let drained = tokio::time::timeout(Duration::from_secs(w.drain_timeout_s), &mut drain).await;
    if drained.is_err() {
        tracing::warn!("drain deadline passed: releasing the jobs still running");
        let _ = abort_tx.send(true);
        // Releasing takes one request per message.
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut drain).await;
    }
    sampler.abort();
    if let Some(http) = http {
        let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// How long a live or upload call holds back backfill work if its outcome is never recorded:
/// longer than any one call takes through the stages.
const LANE_TTL: Duration = Duration::from_secs(3600);

/// How often an index worker tries to sweep, and how long its sweep lease lasts.
const SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);
const SWEEP_LEASE: Duration = Duration::from_secs(5 * 60);

/// Runs [`Indexer::sweep`] every [`SWEEP_EVERY`] (first after a random part of it, so a fleet
/// started together does not sweep together), under a coordination lease so one worker
/// sweeps at a time. A failed sweep is logged; the next one retries.
///
/// [`Indexer::sweep`]: callpipe_index::Indexer::sweep
async fn sweep_now_and_then(
    indexer: callpipe_index::Indexer,
    coord: Arc<dyn callpipe_common::coord::Coordination>,
) {
    let jitter = (std::process::id() as u64 * 7919) % SWEEP_EVERY.as_secs();
    tokio::time::sleep(Duration::from_secs(jitter)).await;
    loop {
        match coord.acquire("sweep/vectors", SWEEP_LEASE).await {
            Ok(Some(lease)) => {
                match indexer.sweep(callpipe_index::indexer::ORPHAN_GRACE).await {
                    Ok(swept) if swept.batches + swept.left > 0 => tracing::info!(
                        batches = swept.batches,
                        vectors = swept.vectors,
                        left = swept.left,
                        "swept vector garbage"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweeping vector garbage failed"),
                }
                let _ = coord.release(&lease).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not take the sweep lease"),
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

/// The first SIGTERM or Ctrl-C.
async fn wait_for_signal() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; only Ctrl-C stops the worker");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
