//! `callpipe backfill`: feed years of recordings into the pipeline, resumable, rate-limited,
//! below live work; and `backfill status|pause|resume|cancel JOB`.
//!
//! Wiring only: the job lifecycle, admission and checkpoints live in
//! `callpipe_pipeline::backfill`. With SQS queues configured the job enqueues into the backfill
//! lane (`[queue] backfill_url`, else the ingest queue) for the workers; with none it feeds
//! `callpipe run`'s in-process pipeline, with the same checkpoints in the data directory.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use callpipe_common::store::{now_ms, BackfillJob, JobState};
use callpipe_common::Lane;
use callpipe_pipeline::backfill::estimate::{self, Progress};
use callpipe_pipeline::backfill::{Backfill, Definition, Event, Limits, Sink, Source};
use callpipe_pipeline::run::{run_sources, RunOptions};
use callpipe_pipeline::CallOutcome;

use super::data::{date_time, parse_date, Bound};
use super::transcribe::{Asr, EngineArgs};
use super::Context;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BackfillArgs {
    #[command(subcommand)]
    action: Option<Action>,

    /// `s3://bucket/prefix` listings (page by page), or local directories, keeping audio by
    /// extension ([run] extensions).
    #[arg(value_name = "SOURCE", required = true)]
    sources: Vec<String>,

    /// Only recordings from this date on (YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339, UTC). The
    /// recording time is a timestamp in the key (file name, or dated folders such as
    /// 2024/03/05/), else the object's LastModified.
    #[arg(long, value_name = "DATE")]
    since: Option<String>,

    /// Only recordings before this date (a bare date includes that whole day).
    #[arg(long, value_name = "DATE")]
    until: Option<String>,

    /// List and count what would be enqueued (objects, bytes, audio hours, time and cost at
    /// the measured speed) without enqueuing or recording anything.
    #[arg(long)]
    dry_run: bool,

    /// Name the job (default: `bf-` and a hash of the sources and dates, so the same command
    /// run again resumes the same job).
    #[arg(long, value_name = "NAME", value_parser = job_name)]
    job: Option<String>,

    #[command(flatten)]
    run: RunFlags,
}

/// What a job run takes besides its definition.
#[derive(Debug, clap::Args)]
struct RunFlags {
    /// Calls admitted per second, all backfill processes together [config: backfill.rate;
    /// 0 = no limit].
    #[arg(long, value_name = "N", value_parser = rate)]
    rate: Option<f64>,

    /// Backfill calls in the pipeline at once, all processes together [config:
    /// backfill.max_in_flight].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_in_flight: Option<u64>,

    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// A job's progress (listed, enqueued, skipped, indexed, failed with reasons, audio hours
    /// done and left, rate, ETA); without JOB, every job.
    Status {
        job: Option<String>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Stop a running job at its next checkpoint; `resume` continues it.
    Pause { job: String },
    /// Continue a paused job in this process.
    Resume {
        job: String,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Stop a job for good; running the same command again starts a new pass.
    Cancel { job: String },
}

fn job_name(text: &str) -> Result<String, String> {
    Definition::check_name(text).map(|()| text.to_owned())
}

fn rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if (0.0..=10_000.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{text}` is not a rate within [0, 10000] calls per second"
        )),
    }
}

pub async fn run(ctx: &Context, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(Action::Status { job, json }) => status(ctx, job.as_deref(), json).await,
        Some(Action::Pause { job }) => set_state(ctx, &job, JobState::Paused).await,
        Some(Action::Cancel { job }) => set_state(ctx, &job, JobState::Cancelled).await,
        Some(Action::Resume { job, run }) => {
            let backfill = backfill(ctx, &run).await?;
            let stored = backfill.jobs.get_job(&job).await?.with_context(|| {
                format!("no backfill job {job} (`callpipe backfill status` lists them)")
            })?;
            let def = Definition {
                name: Some(stored.id.clone()),
                sources: stored
                    .sources
                    .iter()
                    .map(|s| Source::from_uri(s).map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?,
                since_ms: stored.since_ms,
                until_ms: stored.until_ms,
            };
            execute(ctx, backfill, def, true, &run).await
        }
        None => {
            let def = Definition {
                name: args.job.clone(),
                sources: args
                    .sources
                    .iter()
                    .map(|s| Source::parse(s).map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?,
                since_ms: args
                    .since
                    .as_deref()
                    .map(|d| parse_date(d, Bound::From))
                    .transpose()?,
                until_ms: args
                    .until
                    .as_deref()
                    .map(|d| parse_date(d, Bound::To))
                    .transpose()?,
            };
            if let (Some(s), Some(u)) = (def.since_ms, def.until_ms) {
                anyhow::ensure!(s < u, "--since must be before --until");
            }
            let backfill = backfill(ctx, &args.run).await?;
            if args.dry_run {
                return dry_run(ctx, &backfill, &def, args.run.json).await;
            }
            execute(ctx, backfill, def, false, &args.run).await
        }
    }
}

/// Whether jobs go to SQS (the workers) rather than this process's pipeline.
fn distributed(ctx: &Context) -> bool {
    !ctx.config.queue.backfill_url.is_empty() || !ctx.config.queue.ingest_url.is_empty()
}

async fn backfill(ctx: &Context, flags: &RunFlags) -> anyhow::Result<Backfill> {
    let (metadata, jobs) = ctx.open_job_store().await?;
    let b = &ctx.config.backfill;
    Ok(Backfill {
        jobs,
        metadata,
        coord: ctx.coordination().await?,
        recordings: None,
        extensions: ctx.config.run.extensions.clone(),
        limits: Limits {
            max_in_flight: flags.max_in_flight.unwrap_or(b.max_in_flight),
            rate: flags.rate.unwrap_or(b.rate),
            in_flight_ttl: Duration::from_secs(b.in_flight_ttl_s),
        },
    })
}

/// The S3 reader, when a source needs one.
async fn with_recordings(
    ctx: &Context,
    mut backfill: Backfill,
    def: &Definition,
) -> anyhow::Result<Backfill> {
    if def.sources.iter().any(|s| matches!(s, Source::S3 { .. })) {
        backfill.recordings = Some(ctx.recordings().await?);
    }
    Ok(backfill)
}

async fn set_state(ctx: &Context, id: &str, state: JobState) -> anyhow::Result<ExitCode> {
    let (metadata, jobs) = ctx.open_job_store().await?;
    let backfill = Backfill {
        jobs,
        metadata,
        coord: ctx.coordination().await?,
        recordings: None,
        extensions: Vec::new(),
        limits: Limits {
            max_in_flight: 1,
            rate: 0.0,
            in_flight_ttl: Duration::from_secs(60),
        },
    };
    let job = backfill.set_state(id, state).await?;
    println!("backfill job {}: {}", job.id, job.state);
    Ok(ExitCode::SUCCESS)
}

/// The end of a run, for people or as JSON.
#[derive(Debug, Serialize)]
struct Summary {
    job: BackfillJob,
    this_run: callpipe_common::store::JobCounts,
    wall_s: f64,
    /// Objects listed per second by this run.
    listed_per_s: f64,
    /// Calls enqueued per second by this run.
    enqueued_per_s: f64,
    mode: &'static str,
}

async fn execute(
    ctx: &Context,
    backfill: Backfill,
    def: Definition,
    resume: bool,
    flags: &RunFlags,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let backfill = with_recordings(ctx, backfill, &def).await?;
    let job = backfill.open(&def, resume).await?;
    let bar = Bar::new(&job);
    let stop = super::run::stop_on_signal();
    let on_event = |event: Event| bar.event(event);

    let (finished, mode) = if distributed(ctx) {
        let queue = match ctx.backfill_queue().await {
            Some(q) => q,
            None => ctx
                .stage_queue(callpipe_common::messages::Stage::Ingest)
                .await
                .context("no queue to enqueue into ([queue] backfill_url or ingest_url)")?,
        };
        bar.log(format!(
            "backfill {} pass {}: enqueuing into {} (at most {} in flight{})",
            job.id,
            job.pass,
            queue.name(),
            backfill.limits.max_in_flight,
            if backfill.limits.rate > 0.0 {
                format!(", {} per second", backfill.limits.rate)
            } else {
                String::new()
            }
        ));
        let finished = backfill.run(job, Sink::Queue(queue), stop, on_event).await;
        (finished, "queue")
    } else {
        // Embedded: the in-process pipeline, settled at each call's outcome.
        let writer = ctx.open_writer().await?;
        let asr = Asr::load(ctx, &flags.engine)?;
        let in_flight = match ctx.config.run.calls_in_flight {
            0 => asr.in_flight(),
            n => n,
        };
        let stages = Arc::new(ctx.stages(
            Arc::clone(&asr.front_end),
            Some(Arc::clone(&asr.transcriber)),
            writer.artifacts.clone(),
            backfill.recordings.clone(),
            Some(&writer),
        ));
        let (calls_tx, calls_rx) = mpsc::channel(in_flight.max(1));
        let (settled_tx, settled_rx) = mpsc::unbounded_channel();
        let options = RunOptions {
            calls_in_flight: in_flight,
            ingest_consumers: ctx.pool.threads().clamp(1, in_flight),
            transcribe_consumers: in_flight,
            force: false,
            lane: Lane::Backfill,
            backfill: Some(job.run().tag()),
            max_attempts: ctx.config.queue.max_receives,
        };
        bar.log(format!(
            "backfill {} pass {}: into this process's pipeline ({} calls at once)",
            job.id, job.pass, in_flight
        ));
        let failures = Mutex::new(Vec::new());
        let pipeline = run_sources(
            stages,
            tokio_stream_of(calls_rx),
            options,
            stop.clone(),
            |outcome| {
                let source = match &outcome {
                    CallOutcome::Indexed { source, .. } | CallOutcome::Skipped { source } => {
                        source.clone()
                    }
                    CallOutcome::Failed { source, reason } => {
                        bar.log(format!("failed {source}: {reason}"));
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(source.clone());
                        source.clone()
                    }
                };
                let _ = settled_tx.send(source);
            },
        );
        let feeder = async {
            let r = backfill
                .run(
                    job,
                    Sink::InProcess {
                        calls: calls_tx,
                        settled: settled_rx,
                    },
                    stop.clone(),
                    on_event,
                )
                .await;
            r
        };
        let (finished, _counts) = tokio::join!(feeder, pipeline);
        (finished, "in-process")
    };
    bar.finish();
    let finished = finished?;
    let wall_s = started.elapsed().as_secs_f64();
    let summary = Summary {
        listed_per_s: finished.this_run.listed as f64 / wall_s.max(1e-9),
        enqueued_per_s: finished.this_run.enqueued as f64 / wall_s.max(1e-9),
        job: finished.job,
        this_run: finished.this_run,
        wall_s,
        mode,
    };
    if flags.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        print_summary(&summary);
    }
    Ok(match summary.job.state {
        JobState::Done | JobState::Paused | JobState::Cancelled => ExitCode::SUCCESS,
        JobState::Running => ExitCode::from(130),
        JobState::Failed => ExitCode::FAILURE,
    })
}

/// A receiver as a stream, without another dependency.
fn tokio_stream_of<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

fn print_summary(s: &Summary) {
    let j = &s.job;
    let c = &j.counts;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "backfill {} pass {}: {}", j.id, j.pass, j.state);
    let _ = writeln!(
        out,
        "objects: {} listed, {} enqueued ({:.1} MB), {} skipped ({} indexed, {} failed before, {} in flight), {} filtered (not audio or outside the dates)",
        c.listed,
        c.enqueued,
        c.enqueued_bytes as f64 / 1e6,
        c.skipped(),
        c.skipped_indexed,
        c.skipped_failed,
        c.skipped_in_flight,
        c.filtered
    );
    let _ = writeln!(
        out,
        "this run: {} listed, {} enqueued in {:.1} s ({:.0} objects/s listed)",
        s.this_run.listed, s.this_run.enqueued, s.wall_s, s.listed_per_s
    );
    match j.state {
        JobState::Running => {
            let _ = writeln!(out, "interrupted: run the same command again to continue");
        }
        JobState::Paused => {
            let _ = writeln!(
                out,
                "paused: `callpipe backfill resume {}` continues it",
                j.id
            );
        }
        JobState::Failed => {
            let _ = writeln!(out, "failed: {}", j.error.as_deref().unwrap_or("unknown"));
        }
        _ => {}
    }
    let _ = writeln!(
        out,
        "progress of its calls: `callpipe backfill status {}`",
        j.id
    );
}

/// A progress bar on a terminal; a log line per checkpoint (at most every 5 s) otherwise.
struct Bar {
    bar: Option<ProgressBar>,
    last_line: Mutex<Instant>,
}

impl Bar {
    fn new(job: &BackfillJob) -> Bar {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                job.survey.map(|s| s.objects),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {pos}/{len} objects, {msg}  {elapsed} elapsed, ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_position(job.counts.listed);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Bar {
            bar,
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn log(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn event(&self, event: Event) {
        match event {
            Event::Surveyed(s) => {
                if let Some(bar) = &self.bar {
                    bar.set_length(s.objects);
                }
                self.log(format!(
                    "surveyed: {} audio objects, {:.1} MB in the window",
                    s.objects,
                    s.bytes as f64 / 1e6
                ));
            }
            Event::Checkpoint(job) => {
                let c = job.counts;
                if let Some(bar) = &self.bar {
                    bar.set_position(c.listed);
                    bar.set_message(format!("{} enqueued, {} skipped", c.enqueued, c.skipped()));
                    return;
                }
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(5) || job.state != JobState::Running {
                    *last = Instant::now();
                    eprintln!(
                        "backfill {}: {} of {} listed, {} enqueued, {} skipped, {} filtered",
                        job.id,
                        c.listed,
                        job.survey.map_or("?".into(), |s| s.objects.to_string()),
                        c.enqueued,
                        c.skipped(),
                        c.filtered
                    );
                }
            }
            Event::Waiting { in_flight } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("lane full ({in_flight} in flight), waiting"));
                } else {
                    let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                    if last.elapsed() >= Duration::from_secs(5) {
                        *last = Instant::now();
                        eprintln!("backfill: the lane is full ({in_flight} calls in flight); waiting for places");
                    }
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `--dry-run`: counts, bytes, audio hours, and time and cost at the measured speed.
#[derive(Debug, Serialize)]
struct DryRunReport {
    job: String,
    #[serde(flatten)]
    found: callpipe_pipeline::backfill::DryRun,
    bytes_per_audio_s: f64,
    bytes_per_audio_s_measured: bool,
    audio_hours: f64,
    audio_s_per_worker_s: f64,
    speed_measured: bool,
    workers: u64,
    hours: f64,
    cost_usd: Option<f64>,
}

async fn dry_run(
    ctx: &Context,
    backfill: &Backfill,
    def: &Definition,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let backfill = with_recordings(ctx, backfill.clone(), def).await?;
    let found = backfill.dry_run(def).await?;
    let (per_s, measured) = estimate::bytes_per_audio_s(found.indexed_bytes, found.indexed_audio_s);
    let audio_hours = found.counts.enqueued_bytes as f64 / per_s / 3600.0;
    let (speed, speed_measured) = estimate::worker_speed(backfill.metadata.as_ref()).await;
    let b = &ctx.config.backfill;
    let hours = audio_hours / (speed * b.workers as f64);
    let report = DryRunReport {
        job: def.job_id(),
        bytes_per_audio_s: per_s,
        bytes_per_audio_s_measured: measured,
        audio_hours,
        audio_s_per_worker_s: speed,
        speed_measured,
        workers: b.workers,
        hours,
        cost_usd: (b.worker_hour_usd > 0.0).then_some(hours * b.workers as f64 * b.worker_hour_usd),
        found,
    };
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let c = &report.found.counts;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "dry run of backfill {} (nothing enqueued or recorded)",
        report.job
    )?;
    writeln!(
        out,
        "would enqueue {} objects ({:.1} MB), about {:.1} h of audio at {:.0} bytes per second ({})",
        c.enqueued,
        c.enqueued_bytes as f64 / 1e6,
        report.audio_hours,
        per_s,
        if measured { "measured on the indexed ones" } else { "assumed: 8 kHz 16-bit mono" }
    )?;
    writeln!(
        out,
        "skip {} ({} indexed, {} failed before, {} in flight); {} filtered (not audio or outside the dates); {} listed",
        c.skipped(),
        c.skipped_indexed,
        c.skipped_failed,
        c.skipped_in_flight,
        c.filtered,
        c.listed
    )?;
    write!(
        out,
        "time: about {:.1} h with {} transcribe worker(s) at {:.1} s of audio per second each ({})",
        report.hours,
        report.workers,
        speed,
        if speed_measured {
            "measured on recent calls"
        } else {
            "the benchmark figure; nothing indexed yet"
        }
    )?;
    match report.cost_usd {
        Some(cost) => writeln!(out, ", about ${cost:.2}")?,
        None => writeln!(out, " (set [backfill] worker_hour_usd for a cost)")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `backfill status`: every job, or one in detail.
#[derive(Debug, Serialize)]
struct JobStatus {
    job: BackfillJob,
    progress: Progress,
}

async fn status(ctx: &Context, id: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let (_, jobs) = ctx.open_job_store().await?;
    let coord = ctx.coordination().await?;
    let lane = coord
        .occupancy(Lane::Backfill.in_flight_key())
        .await
        .unwrap_or(0);
    let listed: Vec<BackfillJob> = match id {
        Some(id) => vec![jobs.get_job(id).await?.with_context(|| {
            format!("no backfill job {id} (`callpipe backfill status` lists them)")
        })?],
        None => jobs.list_jobs(100).await?,
    };
    let mut out_jobs = Vec::with_capacity(listed.len());
    for job in listed {
        let calls = jobs
            .job_calls(&job.run().tag(), if id.is_some() { 20 } else { 0 })
            .await?;
        let progress = estimate::progress(&job, calls, lane, now_ms());
        out_jobs.push(JobStatus { job, progress });
    }
    let mut out = std::io::stdout().lock();
    if json {
        match id {
            Some(_) => serde_json::to_writer(&mut out, &out_jobs[0])?,
            None => serde_json::to_writer(&mut out, &out_jobs)?,
        }
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if out_jobs.is_empty() {
        writeln!(out, "no backfill jobs yet")?;
    }
    for s in &out_jobs {
        print_status(&mut out, s, id.is_some())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(out: &mut impl std::io::Write, s: &JobStatus, detail: bool) -> std::io::Result<()> {
    let (j, p) = (&s.job, &s.progress);
    let c = &j.counts;
    writeln!(
        out,
        "{}  pass {}  {}  updated {}",
        j.id,
        j.pass,
        j.state,
        date_time(j.updated_at_ms)
    )?;
    if detail {
        writeln!(out, "  sources: {}", j.sources.join(", "))?;
        if j.since_ms.is_some() || j.until_ms.is_some() {
            writeln!(
                out,
                "  recorded: {} to {}",
                j.since_ms.map_or("any".into(), date_time),
                j.until_ms.map_or("any".into(), date_time)
            )?;
        }
    }
    let total = j.survey.map_or("?".into(), |s| s.objects.to_string());
    writeln!(
        out,
        "  listed {} (of {} audio objects), enqueued {}, skipped {} ({} indexed, {} failed before, {} in flight), filtered {}",
        c.listed, total, c.enqueued, c.skipped(), c.skipped_indexed, c.skipped_failed, c.skipped_in_flight, c.filtered
    )?;
    writeln!(
        out,
        "  calls: {} indexed, {} failed, {} in progress; {} backfill calls in the pipeline (all jobs)",
        p.calls.indexed, p.calls.failed, p.calls.in_progress, p.lane_in_flight
    )?;
    let left = p.audio_hours_left.map_or("?".into(), |h| format!("{h:.1}"));
    let eta = p.eta_s.map_or("?".into(), |s| {
        if s < 3600.0 {
            format!("{:.0} min", s / 60.0)
        } else {
            format!("{:.1} h", s / 3600.0)
        }
    });
    writeln!(
        out,
        "  audio: {:.2} h done, about {} h left{}; {:.0} calls/h; ETA {}",
        p.audio_hours_done,
        left,
        if p.measured_bytes_per_audio_s {
            ""
        } else {
            " (assuming 16 kB per second)"
        },
        p.calls_per_hour,
        eta
    )?;
    if let Some(e) = &j.error {
        writeln!(out, "  error: {e}")?;
    }
    if detail && !p.calls.failures.is_empty() {
        writeln!(out, "  failures:")?;
        for f in &p.calls.failures {
            writeln!(out, "    {} ({}): {}", f.source, f.stage, f.reason)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::Cli;

    /// The arguments the Terraform scheduler passes (the stack's `backfill_args`, with each
    /// environment's `backfill_extra_args`) are ones this command accepts.
    #[test]
    fn the_schedules_arguments_parse() {
        let root = env!("CARGO_MANIFEST_DIR");
        let stack = std::fs::read_to_string(format!("{root}/terraform/stacks/callpipe/main.tf"))
            .expect("the stack");
        let compute = std::fs::read_to_string(format!("{root}/terraform/modules/compute/main.tf"))
            .expect("the compute module");
        assert!(
            compute.contains(r#"backfill   = concat(["backfill", "--config", var.config_path], var.backfill_args)"#),
            "the compute module runs `callpipe backfill --config FILE ARGS...`"
        );
        assert!(
            stack.contains(r#"concat(["s3://${module.storage.recordings_bucket_id}/${var.recordings_prefix}"], var.backfill_extra_args)"#),
            "the stack passes the recordings prefix, then each environment's extra arguments"
        );
        for env in ["dev", "staging", "prod"] {
            let tfvars =
                std::fs::read_to_string(format!("{root}/environments/{env}/terraform.tfvars"))
                    .expect("tfvars");
            let line = tfvars
                .lines()
                .find(|l| l.trim_start().starts_with("backfill_extra_args"))
                .unwrap_or_else(|| panic!("{env}: backfill_extra_args"));
            let list = line.split_once('=').expect("an assignment").1.trim();
            let extra: Vec<String> = serde_json::from_str(list)
                .unwrap_or_else(|e| panic!("{env}: backfill_extra_args is a list of strings: {e}"));
            let mut argv: Vec<String> = [
                "callpipe",
                "backfill",
                "--config",
                "/etc/callpipe/callpipe.toml",
                "s3://recordings/calls/",
            ]
            .map(String::from)
            .to_vec();
            argv.extend(extra);
            // And the flags the module's README offers.
            for more in [
                vec![],
                vec![
                    "--since",
                    "2024-01-01",
                    "--until",
                    "2024-12-31",
                    "--rate",
                    "5",
                    "--max-in-flight",
                    "100",
                    "--job",
                    "history-2024",
                    "--dry-run",
                ],
            ] {
                let mut argv = argv.clone();
                argv.extend(more.iter().map(|s| s.to_string()));
                if let Err(e) = Cli::try_parse_from(&argv) {
                    panic!("{env}: `{}` is refused: {e}", argv.join(" "));
                }
            }
        }
        for sub in [
            vec!["callpipe", "backfill", "status"],
            vec!["callpipe", "backfill", "status", "bf-1", "--json"],
            vec!["callpipe", "backfill", "pause", "bf-1"],
            vec!["callpipe", "backfill", "resume", "bf-1", "--rate", "2"],
            vec!["callpipe", "backfill", "cancel", "bf-1"],
        ] {
            Cli::try_parse_from(&sub).unwrap_or_else(|e| panic!("{sub:?}: {e}"));
        }
        assert!(
            Cli::try_parse_from(["callpipe", "backfill"]).is_err(),
            "a source is required"
        );
        assert!(Cli::try_parse_from(["callpipe", "backfill", "s3://b/p", "--job", "a b"]).is_err());
        assert!(Cli::try_parse_from(["callpipe", "backfill", "s3://b/p", "--rate", "-1"]).is_err());
    }
}
