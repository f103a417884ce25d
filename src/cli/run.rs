//! `callpipe run`: the whole pipeline in one process, ingest → transcribe → index, over files,
//! directories and S3 prefixes.
//!
//! This is wiring: it lists the sources, opens the backends and the engine, and hands them to
//! the pipeline's in-process runner (`callpipe_pipeline::run`), which runs the same stage
//! consumers as `callpipe worker` over in-process queues, with at most `[run] calls_in_flight`
//! calls at once. A call whose revision is already indexed is skipped, which makes a rerun
//! after an interruption pick up where it stopped; a permanent failure is recorded on the call
//! with its reason and the run goes on.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use anyhow::Context as _;

use callpipe_common::messages::SourceRef;
use callpipe_common::store::RecordingSource;
use callpipe_common::Lane;
use callpipe_ingest::source::discover;
use callpipe_pipeline::run::{run_sources, RunOptions};
use callpipe_pipeline::CallOutcome;

use super::transcribe::{Asr, EngineArgs};
use super::Context;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Recordings: files, directories walked recursively, and `s3://bucket/prefix` listings
    /// (streamed page by page), keeping audio files by extension ([run] extensions).
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,

    /// Reprocess calls whose revision is already indexed.
    #[arg(long)]
    force: bool,

    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    engine: EngineArgs,
}

/// The end-of-run report.
#[derive(Debug, Default, Serialize)]
struct Summary {
    calls_found: usize,
    calls_indexed: usize,
    calls_skipped: usize,
    calls_failed: usize,
    /// Left for the next run by an interruption (Ctrl-C, SIGTERM).
    calls_not_started: usize,
    audio_hours: f64,
    speech_hours: f64,
    segments: usize,
    wall_s: f64,
    /// Audio processed per wall-clock second.
    x_realtime: f64,
    /// Busy time per stage, summed over calls (calls overlap, so these exceed wall time).
    ingest_s: f64,
    transcribe_s: f64,
    index_s: f64,
    embed_s: f64,
    /// Time the Whisper replicas spent in the engine, summed over replicas.
    engine_busy_s: f64,
    replicas: usize,
    /// Share of the replicas' wall time not spent in the engine: the pipeline's overhead.
    outside_engine_share: f64,
    failures: Vec<Failure>,
    data_dir: String,
}

#[derive(Debug, Serialize)]
struct Failure {
    source: String,
    reason: String,
}

pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut summary = Summary {
        data_dir: ctx.data_dir().display().to_string(),
        ..Default::default()
    };
    let (local, prefixes): (Vec<&String>, Vec<&String>) =
        args.sources.iter().partition(|s| !s.starts_with("s3://"));
    let paths: Vec<PathBuf> = local.into_iter().map(PathBuf::from).collect();
    let (files, source_errors) = discover(&paths, &ctx.config.run.extensions);
    for e in source_errors {
        eprintln!("error: {e}");
        summary.failures.push(Failure {
            source: e.path,
            reason: e.reason,
        });
    }
    let recordings = if prefixes.is_empty() {
        None
    } else {
        Some(ctx.recordings().await?)
    };
    let mut s3_prefixes = Vec::new();
    for p in &prefixes {
        let (bucket, prefix) = p
            .strip_prefix("s3://")
            .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
            .filter(|(bucket, _)| !bucket.is_empty())
            .with_context(|| format!("{p}: not an s3://bucket/prefix"))?;
        s3_prefixes.push((bucket.to_owned(), prefix.to_owned()));
    }
    // Known up front for local files; an S3 listing is counted as it streams.
    let known = files.len();
    let listed = Arc::new(AtomicUsize::new(0));

    let writer = ctx.open_writer().await?;
    let asr = Asr::load(ctx, &args.engine)?;
    let in_flight = match ctx.config.run.calls_in_flight {
        0 => asr.in_flight(),
        n => n,
    };
    summary.replicas = asr.transcriber.engine().replicas();
    let stages = Arc::new(ctx.stages(
        Arc::clone(&asr.front_end),
        Some(Arc::clone(&asr.transcriber)),
        writer.artifacts.clone(),
        recordings.clone(),
        Some(&writer),
    ));

    let progress = Progress::new((prefixes.is_empty()).then_some(known));
    let local_sources = stream::iter(files).map(|f| f.source_ref());
    let extensions = ctx.config.run.extensions.clone();
    let listing_errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s3_sources = {
        let recordings = recordings.clone();
        let errors = Arc::clone(&listing_errors);
        stream::iter(s3_prefixes).flat_map(move |(bucket, prefix)| {
            let recordings = recordings.clone().expect("an S3 reader for s3:// sources");
            let errors = Arc::clone(&errors);
            let extensions = extensions.clone();
            list_s3(recordings, bucket, prefix, extensions, errors)
        })
    };
    let counted = Arc::clone(&listed);
    let sources = local_sources.chain(s3_sources).inspect(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });

    let stop = stop_on_signal();
    let options = RunOptions {
        calls_in_flight: in_flight,
        ingest_consumers: ctx.pool.threads().clamp(1, in_flight),
        transcribe_consumers: in_flight,
        force: args.force,
        lane: Lane::Upload,
        backfill: None,
        max_attempts: ctx.config.queue.max_receives,
    };
    let counts = run_sources(stages, sources, options, stop, |outcome| match outcome {
        CallOutcome::Indexed {
            source,
            audio_s,
            speech_s,
            units,
            times,
            embed_s,
        } => {
            summary.calls_indexed += 1;
            summary.audio_hours += audio_s / 3600.0;
            summary.speech_hours += speech_s / 3600.0;
            summary.segments += units;
            summary.ingest_s += times.ingest_s;
            summary.transcribe_s += times.transcribe_s;
            summary.index_s += times.index_s;
            summary.embed_s += embed_s;
            progress.log(format!(
                "indexed {} ({audio_s:.1} s audio, {units} segments) in {:.1} s",
                shown(&source),
                times.ingest_s + times.transcribe_s + times.index_s
            ));
            progress.advance(audio_s);
        }
        CallOutcome::Skipped { source } => {
            summary.calls_skipped += 1;
            progress.log(format!(
                "skipped {} (already indexed; --force reprocesses)",
                shown(&source)
            ));
            progress.advance(0.0);
        }
        CallOutcome::Failed { source, reason } => {
            summary.calls_failed += 1;
            let source = shown(&source).to_owned();
            progress.log(format!("failed {source}: {reason}"));
            summary.failures.push(Failure { source, reason });
            progress.advance(0.0);
        }
    })
    .await;
    progress.finish();
    for e in listing_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        eprintln!("error: {e}");
        summary.failures.push(Failure {
            source: e.split(':').next().unwrap_or_default().to_owned(),
            reason: e,
        });
    }
    summary.calls_found = known.max(listed.load(Ordering::SeqCst));
    summary.calls_not_started = summary.calls_found.saturating_sub(counts.admitted);
    if summary.calls_not_started > 0 {
        eprintln!(
            "interrupted: {} calls not started; rerun the same command to continue",
            summary.calls_not_started
        );
    }

    summary.wall_s = started.elapsed().as_secs_f64();
    summary.x_realtime = summary.audio_hours * 3600.0 / summary.wall_s.max(1e-9);
    summary.engine_busy_s = asr.transcriber.engine_busy().as_secs_f64();
    let capacity = summary.wall_s * summary.replicas.max(1) as f64;
    summary.outside_engine_share = (1.0 - summary.engine_busy_s / capacity).clamp(0.0, 1.0);
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        print_summary(&summary);
    }
    Ok(if summary.calls_not_started > 0 {
        ExitCode::from(130)
    } else if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A local file's path, or the object's URI.
fn shown(source: &str) -> &str {
    source.strip_prefix("file://").unwrap_or(source)
}

/// The audio objects under an S3 prefix, page by page as the pipeline takes them. A listing
/// error ends that prefix and is reported in the summary.
fn list_s3(
    recordings: Arc<dyn RecordingSource>,
    bucket: String,
    prefix: String,
    extensions: Vec<String>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
) -> impl futures::Stream<Item = SourceRef> + Send {
    let wanted = move |key: &str| {
        let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        ext.is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(&e)))
    };
    recordings
        .list(&bucket, &prefix, None)
        .filter_map(move |item| {
            let out = match item {
                Ok(meta) if wanted(&meta.key) => {
                    let name = meta.key.rsplit('/').next().unwrap_or(&meta.key);
                    Some(SourceRef {
                        uri: meta.uri(),
                        recorded_at_ms: callpipe_ingest::source::timestamp_in_name(name)
                            .or(meta.last_modified_ms),
                        modified_ms: meta.last_modified_ms,
                        version: meta.version,
                        etag: meta.etag,
                        size: Some(meta.size),
                    })
                }
                Ok(_) => None,
                Err(e) => {
                    errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(e.to_string());
                    None
                }
            };
            futures::future::ready(out)
        })
}

/// A flag raised by the first Ctrl-C or SIGTERM. A second one exits at once: everything
/// committed so far stays, and a rerun redoes the calls that were in flight.
pub(super) fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (flag, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for _ in 0..2 {
            #[cfg(unix)]
            let terminated = async {
                match term.as_mut() {
                    Some(term) => {
                        term.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let terminated = std::future::pending::<()>();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
            if flag.send_replace(true) {
                eprintln!("interrupted again: exiting now; rerun to finish the calls in flight");
                std::process::exit(130);
            }
            eprintln!("stopping: finishing the calls in flight (press Ctrl-C again to quit now)");
        }
    });
    stop
}

fn print_summary(s: &Summary) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "calls: {} indexed, {} skipped (already indexed), {} failed, of {} found",
        s.calls_indexed, s.calls_skipped, s.calls_failed, s.calls_found
    );
    if s.calls_not_started > 0 {
        let _ = writeln!(
            out,
            "       {} not started (interrupted; rerun to continue)",
            s.calls_not_started
        );
    }
    let _ = writeln!(
        out,
        "audio: {:.3} h, speech {:.3} h, {} searchable segments",
        s.audio_hours, s.speech_hours, s.segments
    );
    let _ = writeln!(
        out,
        "time:  {:.1} s wall, {:.1}x realtime; per stage (summed over calls): ingest {:.1} s, \
         transcribe {:.1} s, index {:.1} s (embedding {:.1} s)",
        s.wall_s, s.x_realtime, s.ingest_s, s.transcribe_s, s.index_s, s.embed_s
    );
    let _ = writeln!(
        out,
        "engine: {} replicas busy {:.1} s; {:.1}% of their time outside the engine",
        s.replicas,
        s.engine_busy_s,
        s.outside_engine_share * 100.0
    );
    for f in &s.failures {
        let _ = writeln!(out, "FAILED {}: {}", f.source, f.reason);
    }
    let _ = writeln!(out, "data:  {}", s.data_dir);
}

/// A progress bar on a terminal; plain log lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    audio_s: std::cell::Cell<f64>,
}

impl Progress {
    /// `calls`: how many, when known before the run (local files; an S3 listing streams).
    fn new(calls: Option<usize>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                calls.map(|c| c as u64),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            let template = if calls.is_some() {
                "{spinner} [{bar:30}] {pos}/{len} calls, {msg}  {elapsed} elapsed, ETA {eta}"
            } else {
                "{spinner} {pos} calls, {msg}  {elapsed} elapsed"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress {
            bar,
            audio_s: std::cell::Cell::new(0.0),
        }
    }

    fn log(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn advance(&self, audio_s: f64) {
        self.audio_s.set(self.audio_s.get() + audio_s);
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{:.2} h audio", self.audio_s.get() / 3600.0));
            bar.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
