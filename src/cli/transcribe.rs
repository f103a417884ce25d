//! `callpipe transcribe`: recordings in, per-channel timestamped transcripts out.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use futures::stream::{self, StreamExt as _};
use serde::Serialize;

use callpipe_common::transcript::Transcript;
use callpipe_ingest::{CallAudio, FrontEndOptions, RawFormat};
use callpipe_transcribe::model::ModelStore;
use callpipe_transcribe::{ChannelSpeech, Engine, Transcriber};

use super::data::clock_with;
use super::Context;

/// Engine settings shared by `transcribe` and `eval`; each overrides `[transcribe]` config.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Installed model name or CTranslate2 Whisper directory [config: transcribe.model].
    #[arg(long, value_name = "NAME|DIR")]
    model: Option<String>,

    /// CTranslate2 compute type: int8, int8_float32, float32, ... [config: transcribe.compute_type].
    #[arg(long, value_name = "TYPE")]
    compute_type: Option<String>,

    /// Engine replicas, up to 256; 0 = one per CPU thread [config: transcribe.replicas].
    #[arg(long, value_name = "N", value_parser = super::within(callpipe_common::config::limits::REPLICAS))]
    replicas: Option<usize>,

    /// Windows decoded together per engine call, 1 to 64 [config: transcribe.batch_size].
    #[arg(long, value_name = "N", value_parser = super::within(callpipe_common::config::limits::BATCH_SIZE))]
    batch_size: Option<usize>,

    /// Beam width at temperature 0, 1 to 16; 1 = greedy [config: transcribe.beam_size,
    /// default 5].
    #[arg(long, value_name = "N", value_parser = super::within(callpipe_common::config::limits::BEAM_SIZE))]
    beam_size: Option<usize>,

    /// Force a language (ISO 639-1) instead of detecting it [config: transcribe.language].
    #[arg(long, value_name = "CODE")]
    language: Option<String>,

    /// Skip word-level timestamps [config: transcribe.word_timestamps = false].
    #[arg(long)]
    no_words: bool,

    /// Transcribe whole channels instead of the speech VAD finds.
    #[arg(long)]
    no_vad: bool,

    /// Treat the files as headerless PCM: ENCODING:RATE:CHANNELS (see `probe --help`).
    #[arg(long, value_name = "ENC:RATE:CH")]
    raw: Option<RawFormat>,
}

#[derive(Debug, clap::Args)]
pub struct TranscribeArgs {
    /// Recordings to transcribe.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// One JSON object per file, one per line, with word timings.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    engine: EngineArgs,
}

/// A loaded engine plus the front-end settings that feed it.
pub struct Asr {
    pub transcriber: Arc<Transcriber>,
    pub front_end: Arc<FrontEndOptions>,
}

impl Asr {
    pub fn load(ctx: &Context, args: &EngineArgs) -> anyhow::Result<Self> {
        let mut config = ctx.config.transcribe.clone();
        if let Some(model) = &args.model {
            config.model = model.clone();
        }
        if let Some(t) = &args.compute_type {
            config.compute_type = t.clone();
        }
        if let Some(n) = args.replicas {
            config.replicas = n;
        }
        if let Some(n) = args.batch_size {
            config.batch_size = n.clamp(1, 64);
        }
        if let Some(n) = args.beam_size {
            config.beam_size = n.clamp(1, 16);
        }
        if let Some(code) = &args.language {
            config.language = code.clone();
        }
        if args.no_words {
            config.word_timestamps = false;
        }
        let (dir, name) = ModelStore::new(ModelStore::default_root())
            .resolve(&config.model)
            .context("finding the model (install one with `callpipe model install`)")?;
        let replicas = if config.replicas == 0 {
            ctx.pool.threads()
        } else {
            config.replicas
        };
        let engine = Engine::load(&dir, &config, replicas)?;
        let mut front_end = FrontEndOptions::from_config(&ctx.config.ingest).with_raw(args.raw);
        front_end.keep_audio = true;
        if args.no_vad {
            front_end.vad = None;
        }
        Ok(Asr {
            transcriber: Arc::new(Transcriber::new(engine, name)),
            front_end: Arc::new(front_end),
        })
    }

    /// Calls in flight at once. Each holds the 16 kHz audio around its speech (230 MB per hour
    /// of speech on one channel; silence is dropped as it decodes), at most
    /// `ingest.max_call_memory_mb`, so this stays small. Every replica's batches must stay full
    /// from the calls in flight: a long call gives several windows, but a short one, or any
    /// call's leftovers, only one: so one call per replica, plus half a batch more.
    pub fn in_flight(&self) -> usize {
        let engine = self.transcriber.engine();
        engine.replicas() + engine.config().batch_size.div_ceil(2)
    }

    /// What the engine transcribes of a decoded call: each channel's speech, or (with `--no-vad`)
    /// the whole channel. The same audio on both channels is one mixed channel, transcribed once.
    pub fn channels(&self, call: CallAudio) -> Vec<ChannelSpeech> {
        callpipe_pipeline::stages::speech_channels(call, self.front_end.vad.is_some())
    }

    /// Front end then transcription for one file.
    pub async fn run_file(&self, ctx: &Context, path: PathBuf) -> Result<FileTranscript, String> {
        let opts = Arc::clone(&self.front_end);
        let file = path.display().to_string();
        let call = ctx
            .pool
            .run(move || callpipe_ingest::process_file(&path, &opts))
            .await
            .map_err(|panic| format!("{file}: internal error while decoding: {panic}"))?
            .map_err(|e| e.to_string())?;
        let (duration_s, truncated) = (call.duration_s, call.truncated);
        let channels = self.channels(call);
        let transcriber = Arc::clone(&self.transcriber);
        let label = file.clone();
        let transcript =
            tokio::task::spawn_blocking(move || transcriber.transcribe_call(&label, &channels))
                .await
                .map_err(|e| format!("{file}: internal error while transcribing: {e}"))?
                .map_err(|e| format!("{file}: {e}"))?;
        Ok(FileTranscript {
            file,
            duration_s,
            truncated,
            transcript,
        })
    }
}

/// One file's transcript, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct FileTranscript {
    pub file: String,
    pub duration_s: f64,
    pub truncated: bool,
    #[serde(flatten)]
    pub transcript: Transcript,
}

impl FileTranscript {
    fn print_text(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let t = &self.transcript;
        let truncated = if self.truncated { ", TRUNCATED" } else { "" };
        writeln!(
            out,
            "{}  ({:.1} s, {}{truncated})",
            self.file, self.duration_s, t.language
        )?;
        // Turns in time order, each labelled with its channel's role.
        for (channel, segment) in t.turns() {
            writeln!(
                out,
                "  [{} → {}] {:<8} {}",
                clock_with(segment.start_s, 2),
                clock_with(segment.end_s, 2),
                channel.role.as_str(),
                segment.text
            )?;
        }
        Ok(())
    }
}

pub async fn run(ctx: &Context, args: TranscribeArgs) -> anyhow::Result<ExitCode> {
    let asr = Asr::load(ctx, &args.engine)?;
    let asr = &asr;
    let mut results = stream::iter(args.files)
        .map(|path| asr.run_file(ctx, path))
        .buffered(asr.in_flight());
    let mut failed = 0usize;
    let stdout = std::io::stdout();
    while let Some(result) = results.next().await {
        let mut out = stdout.lock();
        match result {
            Ok(file) if args.json => {
                serde_json::to_writer(&mut out, &file)?;
                writeln!(out)?;
            }
            Ok(file) => file.print_text(&mut out)?,
            Err(error) => {
                failed += 1;
                eprintln!("error: {error}");
                if args.json {
                    serde_json::to_writer(&mut out, &serde_json::json!({ "error": error }))?;
                    writeln!(out)?;
                }
            }
        }
        out.flush()?;
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Used by `eval` to resolve manifest paths.
pub fn relative_to(base: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}
