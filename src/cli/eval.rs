//! `callpipe eval`: word error rate and speed on labelled recordings, to choose a model.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use futures::stream::{self, StreamExt as _};
use serde::{Deserialize, Serialize};

use callpipe_transcribe::wer::{self, Errors};

use super::transcribe::{relative_to, Asr, EngineArgs};
use super::Context;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// JSON array of {"file", "reference"} or {"file", "channel_references": {"0": .., "1": ..}};
    /// files are relative to the manifest. Entries with neither are skipped.
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,

    /// One JSON object per file, then a summary object.
    #[arg(long)]
    json: bool,

    /// Score these transcripts instead of transcribing: a JSON object mapping each manifest
    /// `file` to its text, or to {"0": text, "1": text} per channel. Uses the same
    /// normalisation, so other systems' output compares like for like.
    #[arg(long, value_name = "FILE")]
    hypotheses: Option<PathBuf>,

    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Debug, Deserialize)]
struct Entry {
    file: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    channel_references: Option<std::collections::BTreeMap<String, String>>,
}

impl Entry {
    /// Reference words after normalisation, all channels together.
    fn reference_words(&self) -> usize {
        match (&self.channel_references, &self.reference) {
            (Some(refs), _) => refs.values().map(|r| wer::normalize(r).len()).sum(),
            (None, Some(r)) => wer::normalize(r).len(),
            _ => 0,
        }
    }

    /// The score of a file that could not be transcribed: every reference word missed.
    fn failed(&self, error: String) -> FileScore {
        let reference_words = self.reference_words();
        FileScore {
            file: self.file.clone(),
            wer: None,
            reference_words,
            edits: reference_words,
            audio_s: 0.0,
            hypothesis: String::new(),
            error: Some(error),
        }
    }
}

#[derive(Debug, Serialize)]
struct FileScore {
    file: String,
    wer: Option<f64>,
    reference_words: usize,
    edits: usize,
    audio_s: f64,
    hypothesis: String,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    files: usize,
    failed: usize,
    wer: f64,
    reference_words: usize,
    edits: usize,
    audio_s: f64,
    wall_s: f64,
    cpu_s: f64,
    /// Audio seconds per wall-clock second.
    speed: f64,
    /// Audio seconds per CPU second (all threads).
    speed_per_cpu: f64,
    model: String,
    /// What the engine did, when this run transcribed (not with `--hypotheses`).
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<EngineSummary>,
}

/// The engine's work over the run: how many encoder passes the speech cost against the floor
/// of one per 30 s, how full its batches were, and where its time went.
#[derive(Debug, Serialize)]
struct EngineSummary {
    /// Seconds of speech packed for transcription (all channels).
    speech_s: f64,
    /// Encoder passes, fallback re-encodes included.
    encodes: u64,
    /// Encoder passes per 30 s of speech; 1.0 is the floor.
    encodes_per_30s: f64,
    windows: u64,
    leftover_windows: u64,
    mean_batch: f64,
    fallback_decodes: u64,
    /// Engine seconds per phase (all threads).
    phase_s: std::collections::BTreeMap<&'static str, f64>,
}

impl EngineSummary {
    fn of(asr: &Asr) -> Self {
        let stats = asr.transcriber.stats();
        let work = asr.transcriber.engine().work();
        let speech_s = stats.speech_samples as f64 / callpipe_common::SAMPLE_RATE as f64;
        let p = work.phases;
        let s = |ns: u64| ns as f64 / 1e9;
        EngineSummary {
            speech_s,
            encodes: work.encodes,
            encodes_per_30s: work.encodes as f64 / (speech_s / 30.0).max(1e-9),
            windows: stats.windows,
            leftover_windows: stats.leftover_windows,
            mean_batch: stats.windows as f64 / stats.batches.max(1) as f64,
            fallback_decodes: work.fallback_decodes,
            phase_s: [
                ("mel", s(p.mel_ns)),
                ("encode", s(p.encode_ns)),
                ("generate", s(p.generate_ns)),
                ("fallback", s(p.fallback_ns)),
                ("align", s(p.align_ns)),
            ]
            .into_iter()
            .collect(),
        }
    }
}

/// CPU seconds this process has used, user plus system, all threads.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

pub async fn run(ctx: &Context, args: EvalArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(&args.manifest)
        .with_context(|| format!("reading {}", args.manifest.display()))?;
    let entries: Vec<Entry> = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a JSON array of entries", args.manifest.display()))?;
    let base = args
        .manifest
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let labelled: Vec<Entry> = entries
        .into_iter()
        .filter(|e| e.reference.is_some() || e.channel_references.is_some())
        .collect();
    anyhow::ensure!(
        !labelled.is_empty(),
        "{}: no entry has a `reference` or `channel_references`",
        args.manifest.display()
    );

    // Timed from after the model has loaded, as the peers in benches/ are.
    let asr = match &args.hypotheses {
        Some(_) => None,
        None => Some(Arc::new(Asr::load(ctx, &args.engine)?)),
    };
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    let (model, mut scores) = match (&args.hypotheses, &asr) {
        (Some(file), _) => {
            let text =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let given: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
                .with_context(|| {
                format!("{}: not a JSON object of transcripts", file.display())
            })?;
            let scores: Vec<FileScore> = labelled
                .into_iter()
                .map(|entry| {
                    let hyp = given.get(&entry.file).cloned();
                    score_given(entry, hyp)
                })
                .collect();
            (
                file.display().to_string(),
                stream::iter(scores).boxed_local(),
            )
        }
        (None, Some(asr)) => {
            let asr = Arc::clone(asr);
            let model = asr.transcriber.engine().path().display().to_string();
            let in_flight = asr.in_flight();
            let scores = stream::iter(labelled)
                .map(move |entry| {
                    let path = relative_to(&base, &entry.file);
                    let asr = Arc::clone(&asr);
                    async move {
                        let result = asr.run_file(ctx, path).await;
                        score(entry, result)
                    }
                })
                .buffered(in_flight);
            (model, scores.boxed_local())
        }
        (None, None) => unreachable!("the engine is loaded unless hypotheses are given"),
    };

    let stdout = std::io::stdout();
    let (mut total, mut audio_s, mut files, mut failed) = (Errors::default(), 0.0, 0, 0);
    while let Some(s) = scores.next().await {
        files += 1;
        if let Some(e) = &s.error {
            failed += 1;
            eprintln!("error: {e}");
        }
        total += Errors {
            edits: s.edits,
            reference_words: s.reference_words,
        };
        audio_s += s.audio_s;
        let mut out = stdout.lock();
        if args.json {
            serde_json::to_writer(&mut out, &s)?;
            writeln!(out)?;
        } else if s.error.is_none() {
            writeln!(
                out,
                "{:>6.1}%  {:>4} words  {:>7.1} s  {}",
                s.wer.unwrap_or(0.0) * 100.0,
                s.reference_words,
                s.audio_s,
                s.file
            )?;
        }
    }
    let wall_s = wall0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu0;
    let summary = Summary {
        files,
        failed,
        wer: total.wer(),
        reference_words: total.reference_words,
        edits: total.edits,
        audio_s,
        wall_s,
        cpu_s,
        speed: audio_s / wall_s.max(1e-9),
        speed_per_cpu: audio_s / cpu_s.max(1e-9),
        model,
        engine: asr.as_deref().map(EngineSummary::of),
    };
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "overall: WER {:.2}% over {} words in {} files ({} failed); {:.1} s of audio in {:.2} s: \
             {:.1}x realtime, {:.1}x per CPU second",
            summary.wer * 100.0,
            summary.reference_words,
            files,
            failed,
            audio_s,
            wall_s,
            summary.speed,
            summary.speed_per_cpu
        )?;
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Scores a transcript given in `--hypotheses`: a string, or an object of per-channel strings.
fn score_given(entry: Entry, hyp: Option<serde_json::Value>) -> FileScore {
    let text_of = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => map
            .values()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let Some(hyp) = hyp else {
        let error = format!("{}: no transcript given", entry.file);
        return entry.failed(error);
    };
    let errors = match (&entry.channel_references, &entry.reference) {
        (Some(refs), _) => {
            let mut errors = Errors::default();
            for (channel, reference) in refs {
                let h = hyp.get(channel).map(text_of).unwrap_or_default();
                errors += wer::errors(reference, &h);
            }
            errors
        }
        (None, Some(reference)) => wer::errors(reference, &text_of(&hyp)),
        (None, None) => Errors::default(),
    };
    FileScore {
        file: entry.file,
        wer: Some(errors.wer()),
        reference_words: errors.reference_words,
        edits: errors.edits,
        audio_s: 0.0,
        hypothesis: text_of(&hyp),
        error: None,
    }
}

fn score(entry: Entry, result: Result<super::transcribe::FileTranscript, String>) -> FileScore {
    let ft = match result {
        Ok(ft) => ft,
        Err(e) => return entry.failed(e),
    };
    let file = entry.file.clone();
    let t = &ft.transcript;
    let (errors, hypothesis) = match (&entry.channel_references, &entry.reference) {
        (Some(refs), _) => {
            let mut errors = Errors::default();
            let mut hyps = Vec::new();
            for (channel, reference) in refs {
                let hyp = channel
                    .parse::<usize>()
                    .ok()
                    .and_then(|c| t.channels.iter().find(|ch| ch.channel == c))
                    .map(|ch| ch.text())
                    .unwrap_or_default();
                errors += wer::errors(reference, &hyp);
                hyps.push(format!("[{channel}] {hyp}"));
            }
            (errors, hyps.join(" "))
        }
        (None, Some(reference)) => {
            let hyp = t.text();
            (wer::errors(reference, &hyp), hyp)
        }
        (None, None) => unreachable!("unlabelled entries are filtered out"),
    };
    FileScore {
        file,
        wer: Some(errors.wer()),
        reference_words: errors.reference_words,
        edits: errors.edits,
        audio_s: ft.duration_s,
        hypothesis,
        error: None,
    }
}
