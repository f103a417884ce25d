//! `callpipe run`: the whole pipeline in one process, ingest → transcribe → index, over files
//! and directories.
//!
//! Calls flow through a bounded window (`[run] calls_in_flight`): each is read, hashed,
//! decoded, transcribed and indexed by its own task, CPU work on the pool and the engine's
//! workers, so the engine always has the next call's windows queued. A call whose revision is
//! already indexed is skipped, which makes a rerun after an interruption pick up where it
//! stopped; a failure is recorded on the call with its reason and the run goes on.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{now_ms, CallError, CallRecord, CallStatus, MetadataStore};
use callpipe_common::ErrorKind;
use callpipe_index::Indexer;
use callpipe_ingest::source::{discover, LocalSource};
use callpipe_ingest::IngestError;

use super::transcribe::{Asr, EngineArgs};
use super::Context;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Recordings: files, and directories walked recursively for audio files ([run]
    /// extensions). `s3://` prefixes come with the S3 backend.
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

/// Failures the stage cannot class (a panic, an engine error) count as the input's fault.
const PERMANENT: ErrorKind = ErrorKind::Permanent;

/// How one call ended.
enum Outcome {
    Indexed(Done),
    Skipped,
    Failed { source: String, reason: String },
}

struct Done {
    audio_s: f64,
    speech_s: f64,
    units: usize,
    times: callpipe_common::store::StageTimes,
    embed_s: f64,
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
    let mut paths = Vec::new();
    for source in &args.sources {
        if source.starts_with("s3://") {
            anyhow::bail!(
                "{source}: s3:// sources need the S3 backend, which this build does not have yet; \
                 copy the recordings locally"
            );
        }
        paths.push(PathBuf::from(source));
    }
    let (sources, source_errors) = discover(&paths, &ctx.config.run.extensions);
    for e in source_errors {
        eprintln!("error: {e}");
        summary.failures.push(Failure {
            source: e.path,
            reason: e.reason,
        });
    }
    summary.calls_found = sources.len();

    let writer = ctx.open_writer().await?;
    let (metadata, indexer) = (&writer.metadata, &writer.indexer);
    let asr = Asr::load(ctx, &args.engine)?;
    let in_flight = match ctx.config.run.calls_in_flight {
        0 => asr.in_flight(),
        n => n,
    };
    summary.replicas = asr.transcriber.engine().replicas();

    let progress = Progress::new(sources.len());
    let worker = CallWorker {
        ctx,
        asr: &asr,
        indexer,
        metadata: metadata.as_ref(),
        force: args.force,
    };
    let stop = stop_on_signal();
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut outcomes = stream::iter(sources)
        // After Ctrl-C or SIGTERM no new call starts; the ones in flight finish and are
        // committed, so the rerun has less to do.
        .take_while(|_| futures::future::ready(!stop.load(Ordering::SeqCst)))
        .inspect(|_| {
            admitted.fetch_add(1, Ordering::SeqCst);
        })
        .map(|source| worker.process(source))
        .buffer_unordered(in_flight);
    while let Some((source, outcome)) = outcomes.next().await {
        match outcome {
            Outcome::Indexed(done) => {
                summary.calls_indexed += 1;
                summary.audio_hours += done.audio_s / 3600.0;
                summary.speech_hours += done.speech_s / 3600.0;
                summary.segments += done.units;
                summary.ingest_s += done.times.ingest_s;
                summary.transcribe_s += done.times.transcribe_s;
                summary.index_s += done.times.index_s;
                summary.embed_s += done.embed_s;
                progress.log(format!(
                    "indexed {} ({:.1} s audio, {} segments) in {:.1} s",
                    source.path.display(),
                    done.audio_s,
                    done.units,
                    done.times.ingest_s + done.times.transcribe_s + done.times.index_s
                ));
                progress.advance(done.audio_s);
            }
            Outcome::Skipped => {
                summary.calls_skipped += 1;
                progress.log(format!(
                    "skipped {} (already indexed; --force reprocesses)",
                    source.path.display()
                ));
                progress.advance(0.0);
            }
            Outcome::Failed { source, reason } => {
                summary.calls_failed += 1;
                progress.log(format!("failed {source}: {reason}"));
                summary.failures.push(Failure { source, reason });
                progress.advance(0.0);
            }
        }
    }
    progress.finish();
    summary.calls_not_started = summary.calls_found - admitted.load(Ordering::SeqCst);
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

/// A flag raised by the first Ctrl-C or SIGTERM. A second one exits at once: everything
/// committed so far stays, and a rerun redoes the calls that were in flight.
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
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
            if flag.swap(true, Ordering::SeqCst) {
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
    fn new(calls: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(calls as u64),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {pos}/{len} calls, {msg}  {elapsed} elapsed, ETA {eta}",
                )
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

/// Everything one call's task needs.
struct CallWorker<'a> {
    ctx: &'a Context,
    asr: &'a Asr,
    indexer: &'a Indexer,
    metadata: &'a dyn MetadataStore,
    force: bool,
}

impl CallWorker<'_> {
    async fn process(&self, source: LocalSource) -> (LocalSource, Outcome) {
        let outcome = self.process_inner(&source).await;
        (source, outcome)
    }

    async fn process_inner(&self, source: &LocalSource) -> Outcome {
        let shown = source.path.display().to_string();
        let fail = |reason: String| Outcome::Failed {
            source: shown.clone(),
            reason,
        };
        let call_id = CallId::from_source(&source.uri);
        let t0 = Instant::now();
        let existing = match self.metadata.get_call(&call_id).await {
            Ok(existing) => existing,
            Err(e) => return fail(format!("{shown}: reading its record: {e}")),
        };
        let existing = existing.as_ref();

        // Read and hash: the revision is the content, so an edited file is a new revision.
        // The read counts the bytes that actually arrive, whatever the size seen at discovery.
        // The bytes stay in memory while the call decodes, so they count against the call's
        // memory budget as well as the file-size limit.
        let ingest = &self.ctx.config.ingest;
        let budget = ingest.max_call_memory_mb.saturating_mul(1 << 20);
        let limit = ingest.max_file_bytes.min(budget);
        let over_budget = limit < ingest.max_file_bytes;
        let path = source.path.clone();
        let read = self
            .ctx
            .pool
            .run(
                move || match callpipe_ingest::read_recording(&path, limit) {
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
            .await;
        let (bytes, revision) = match read {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                let unread = CallRecord::pending(
                    call_id,
                    Revision::new("unread"),
                    source.uri.clone(),
                    source.recorded_at_ms,
                );
                return self
                    .record_failure(source, existing, unread, "ingest", e.kind(), e.to_string())
                    .await;
            }
            Err(e) => return fail(format!("{shown}: internal error while reading: {e}")),
        };

        if let Some(existing) = existing.filter(|c| !self.force && c.is_indexed(&revision)) {
            // An earlier attempt may have failed before it could read the file (which is
            // readable and unchanged now): the call is back to its indexed state.
            if existing.status != CallStatus::Indexed || existing.revision != revision {
                let restored = CallRecord {
                    revision,
                    status: CallStatus::Indexed,
                    error: None,
                    updated_at_ms: now_ms(),
                    ..existing.clone()
                };
                if let Err(e) = self.metadata.put_call(&restored).await {
                    return fail(format!("{shown}: restoring its record: {e}"));
                }
            }
            return Outcome::Skipped;
        }
        // `call` gathers the new revision's facts and is what the index stage commits; the
        // stored record meanwhile keeps the indexed revision's facts, which search still shows.
        let mut call = CallRecord::pending(
            call_id.clone(),
            revision.clone(),
            source.uri.clone(),
            source.recorded_at_ms,
        );
        if let Err(e) = self
            .metadata
            .put_call(&CallRecord::attempt(existing, &call))
            .await
        {
            return fail(format!("{shown}: recording the call: {e}"));
        }

        // Ingest: decode, split, resample, VAD.
        let opts = Arc::clone(&self.asr.front_end);
        let path = source.path.clone();
        let audio = match self
            .ctx
            .pool
            .run(move || callpipe_ingest::process_bytes(&path, bytes, &opts))
            .await
        {
            Ok(Ok(audio)) => audio,
            Ok(Err(e)) => {
                let kind = e.kind();
                return self
                    .record_failure(source, existing, call, "ingest", kind, e.to_string())
                    .await;
            }
            Err(e) => {
                let reason = format!("{shown}: internal error while decoding: {e}");
                return self
                    .record_failure(source, existing, call, "ingest", PERMANENT, reason)
                    .await;
            }
        };
        call.duration_s = audio.duration_s;
        call.speech_s = audio.channels.iter().map(|c| c.speech_s()).sum();
        let channels = self.asr.channels(audio);
        call.channels = channels.iter().map(|c| c.role).collect();
        call.stage_times.ingest_s = t0.elapsed().as_secs_f64();

        // Transcribe on the engine's workers (this thread only waits).
        let t1 = Instant::now();
        let transcriber = Arc::clone(&self.asr.transcriber);
        let label = shown.clone();
        let transcript = match tokio::task::spawn_blocking(move || {
            transcriber.transcribe_call(&label, &channels)
        })
        .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                let reason = format!("{shown}: {e}");
                return self
                    .record_failure(source, existing, call, "transcribe", PERMANENT, reason)
                    .await;
            }
            Err(e) => {
                let reason = format!("{shown}: internal error while transcribing: {e}");
                return self
                    .record_failure(source, existing, call, "transcribe", PERMANENT, reason)
                    .await;
            }
        };
        call.stage_times.transcribe_s = t1.elapsed().as_secs_f64();

        // Index: embed, write vectors, commit. index_s is known only after the commit, so the
        // stored record carries the stage's time up to the commit itself.
        let t2 = Instant::now();
        match self.indexer.index(&mut call, &transcript).await {
            Ok(times) => {
                call.stage_times.index_s = t2.elapsed().as_secs_f64();
                Outcome::Indexed(Done {
                    audio_s: call.duration_s,
                    speech_s: call.speech_s,
                    units: times.units,
                    times: call.stage_times,
                    embed_s: times.embed_s,
                })
            }
            Err(e) => {
                let kind = e.kind();
                let reason = format!("{shown}: {e}");
                self.record_failure(source, existing, call, "index", kind, reason)
                    .await
            }
        }
    }

    /// Marks the attempt `call` failed with `reason`, so `calls list` shows why; the run goes
    /// on. Only the input's fault ([`ErrorKind::Permanent`]) is recorded on the call: a failure
    /// of this machine (out of memory, permission denied) or one that may pass leaves the call
    /// pending for the next run. An indexed revision stays searchable either way.
    async fn record_failure(
        &self,
        source: &LocalSource,
        existing: Option<&CallRecord>,
        mut call: CallRecord,
        stage: &str,
        kind: ErrorKind,
        reason: String,
    ) -> Outcome {
        let reason = if kind == ErrorKind::Permanent {
            call.status = CallStatus::Failed;
            call.error = Some(CallError {
                stage: stage.to_owned(),
                reason: reason.clone(),
            });
            match self
                .metadata
                .put_call(&CallRecord::attempt(existing, &call))
                .await
            {
                Ok(()) => reason,
                Err(e) => format!("{reason} (and recording the failure failed: {e})"),
            }
        } else {
            let kind = kind.as_str();
            format!("{reason} (not recorded on the call: {kind} error, the next run retries it)")
        };
        Outcome::Failed {
            source: source.path.display().to_string(),
            reason,
        }
    }
}
