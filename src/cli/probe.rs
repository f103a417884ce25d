//! `callpipe probe`: what is in these recordings?

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use futures::stream::{self, StreamExt as _};
use serde::Serialize;

use callpipe_ingest::{CallAudio, FrontEndOptions, IngestError, RawFormat};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Recordings to probe.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// One JSON object per file, one per line.
    #[arg(long)]
    json: bool,

    /// Decode and resample only; skip voice activity detection.
    #[arg(long)]
    no_vad: bool,

    /// Treat the files as headerless PCM in this layout: ENCODING:RATE:CHANNELS, e.g.
    /// s16le:16000:1 or mulaw:8000:2. Encodings: u8 s8 s16le s16be s24le s32le f32le f64le
    /// mulaw alaw.
    #[arg(long, value_name = "ENC:RATE:CH")]
    raw: Option<RawFormat>,
}

/// The `--json` line for one file.
#[derive(Debug, Serialize)]
struct ProbeReport {
    file: String,
    container: Option<String>,
    codec: Option<String>,
    sample_rate: Option<u32>,
    channels: Option<usize>,
    duration_s: Option<f64>,
    truncated: Option<bool>,
    /// Both channels carry the same audio; transcription treats it as mono.
    mirrored: Option<bool>,
    error: Option<String>,
    tracks: Vec<TrackReport>,
}

#[derive(Debug, Serialize)]
struct TrackReport {
    channel: usize,
    role: &'static str,
    speech_s: f64,
    segments: Vec<[f64; 2]>,
}

fn ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

impl ProbeReport {
    fn new(file: String, result: Result<CallAudio, IngestError>) -> Self {
        match result {
            Ok(call) => ProbeReport {
                file,
                container: Some(call.info.container.clone()),
                codec: Some(call.info.codec.clone()),
                sample_rate: Some(call.info.sample_rate),
                channels: Some(call.info.channels),
                duration_s: Some(ms(call.duration_s)),
                truncated: Some(call.truncated),
                mirrored: Some(call.mirrored),
                error: None,
                tracks: call
                    .channels
                    .iter()
                    .map(|ch| TrackReport {
                        channel: ch.channel,
                        role: ch.role.as_str(),
                        speech_s: ms(ch.speech_s()),
                        segments: ch
                            .segments
                            .iter()
                            .map(|s| [ms(s.start_s), ms(s.end_s)])
                            .collect(),
                    })
                    .collect(),
            },
            Err(err) => ProbeReport {
                file,
                container: None,
                codec: None,
                sample_rate: None,
                channels: None,
                duration_s: None,
                truncated: None,
                mirrored: None,
                error: Some(err.to_string()),
                tracks: Vec::new(),
            },
        }
    }

    fn print_text(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "{}", self.file)?;
        let (Some(container), Some(codec), Some(rate), Some(channels), Some(duration)) = (
            &self.container,
            &self.codec,
            self.sample_rate,
            self.channels,
            self.duration_s,
        ) else {
            return Ok(());
        };
        let truncated = if self.truncated == Some(true) {
            "  TRUNCATED"
        } else {
            ""
        };
        writeln!(
            out,
            "  {container}, {codec}, {rate} Hz, {channels} ch, {duration:.3} s{truncated}"
        )?;
        for track in &self.tracks {
            write!(
                out,
                "  ch{} {:<8} speech {:>8.3} s  {} segments",
                track.channel,
                track.role,
                track.speech_s,
                track.segments.len()
            )?;
            for [start, end] in track.segments.iter().take(12) {
                write!(out, " [{start:.2}-{end:.2}]")?;
            }
            if track.segments.len() > 12 {
                write!(out, " ...")?;
            }
            writeln!(out)?;
        }
        Ok(())
    }
}

pub async fn run(ctx: &Context, args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let mut opts = FrontEndOptions::from_config(&ctx.config.ingest).with_raw(args.raw);
    if args.no_vad {
        opts.vad = None;
    }
    let opts = Arc::new(opts);

    // Files run in parallel on the pool, a bounded number in flight; reports print in input
    // order as soon as each is ready.
    let in_flight = ctx.pool.threads() * 2;
    let mut reports = stream::iter(args.files)
        .map(|path| {
            let opts = Arc::clone(&opts);
            let pool = ctx.pool.clone();
            async move {
                let file = path.display().to_string();
                let result = pool
                    .run(move || callpipe_ingest::process_file(&path, &opts))
                    .await;
                let result = result.unwrap_or_else(|panic| {
                    Err(IngestError::Malformed {
                        path: PathBuf::from(&file),
                        reason: format!("internal error while decoding: {panic}"),
                    })
                });
                ProbeReport::new(file, result)
            }
        })
        .buffered(in_flight);

    let mut failed = 0usize;
    let stdout = std::io::stdout();
    while let Some(report) = reports.next().await {
        let mut out = stdout.lock();
        if let Some(error) = &report.error {
            failed += 1;
            eprintln!("error: {error}");
        }
        if args.json {
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        } else if report.error.is_none() {
            report.print_text(&mut out)?;
        }
        out.flush()?;
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
