//! Argument parsing and dispatch.

mod calls;
mod data;
mod eval;
mod model;
mod probe;
mod run;
mod search;
mod transcribe;

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use callpipe_common::config::limits;
use callpipe_common::{Config, CpuPool};

/// callpipe turns call recordings into searchable, timestamped transcripts.
#[derive(Debug, Parser)]
#[command(name = "callpipe", version, about, max_term_width = 100)]
pub struct Cli {
    /// Configuration file (TOML). Every key has a default; `CALLPIPE_*` environment variables
    /// override it, e.g. CALLPIPE_INGEST__MAX_DURATION_S=7200.
    #[arg(long, global = true, env = "CALLPIPE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// CPU worker threads for decode, resample, VAD and inference, up to 1024 (default: one
    /// per core).
    #[arg(long, global = true, value_name = "N", value_parser = within(limits::THREADS))]
    threads: Option<usize>,

    /// Where the embedded backends keep calls, transcripts and vectors
    /// [config: storage.data_dir, default ./callpipe-data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline (ingest, transcribe, index) over files and directories; resumable.
    Run(run::RunArgs),
    /// Hybrid keyword + semantic search over indexed calls.
    Search(search::SearchArgs),
    /// List processed calls, or show one call's transcript.
    Calls(calls::CallsArgs),
    /// Decode recordings and report format, duration, truncation and speech segments per channel.
    Probe(probe::ProbeArgs),
    /// Transcribe recordings: per-channel (role) segments with times, text and word timings.
    Transcribe(transcribe::TranscribeArgs),
    /// Word error rate and speed on a manifest of labelled recordings, to choose a model.
    Eval(eval::EvalArgs),
    /// Install, import and list models (Whisper for ASR, MiniLM for embeddings).
    Model(model::ModelArgs),
}

/// A whole-number flag within `range`: the same bounds the config key it overrides has.
fn within(range: RangeInclusive<usize>) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(*range.start() as u64..=*range.end() as u64)
}

/// A duration flag in seconds: a finite number, 0 or more.
fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a number of seconds (0 or more)")),
    }
}

pub fn init_tracing(verbose: u8) {
    // symphonia reports recoverable oddities (junk bytes, short streams) through `log`; the
    // front end already turns those into `truncated` or an error line, so they stay quiet
    // unless asked for.
    let default = match verbose {
        0 => "warn,symphonia=off",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Shared start-up: configuration and the CPU pool.
struct Context {
    config: Config,
    pool: CpuPool,
}

impl Context {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        let mut config = Config::load(cli.config.as_deref())?;
        if let Some(threads) = cli.threads {
            config.pool.threads = threads;
        }
        if let Some(dir) = &cli.data_dir {
            config.storage.data_dir = dir.clone();
        }
        let pool = CpuPool::new(config.pool.threads).context("starting the CPU pool")?;
        Ok(Context { config, pool })
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Model(args) = cli.command {
        return model::run(args);
    }
    let ctx = Context::new(&cli)?;
    // A small runtime: it only awaits results; CPU work runs on the pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Probe(args) => runtime.block_on(probe::run(&ctx, args)),
        Command::Transcribe(args) => runtime.block_on(transcribe::run(&ctx, args)),
        Command::Eval(args) => runtime.block_on(eval::run(&ctx, args)),
        Command::Run(args) => runtime.block_on(run::run(&ctx, args)),
        Command::Search(args) => runtime.block_on(search::run(&ctx, args)),
        Command::Calls(args) => runtime.block_on(calls::run(&ctx, args)),
        Command::Model(_) => unreachable!("handled above"),
    }
}
