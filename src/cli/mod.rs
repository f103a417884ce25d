//! Argument parsing and dispatch.

mod backends;
mod backfill;
mod calls;
mod config;
mod data;
mod eval;
mod eval_search;
mod gc;
mod model;
mod probe;
mod run;
mod search;
mod setup;
mod transcribe;
mod worker;

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

    /// Log lines as text for people, or as one JSON object per line (for log collectors: each
    /// job's lines carry call_id, revision and stage as fields).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CALLPIPE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline (ingest, transcribe, index) over files, directories and S3
    /// prefixes, in one process; resumable.
    Run(run::RunArgs),
    /// Consume a stage's queue (SQS): the distributed workers, with /healthz and /metrics.
    Worker(worker::WorkerArgs),
    /// Feed historical recordings (S3 prefixes, directories) into the pipeline below live
    /// work: resumable, rate-limited; `backfill status|pause|resume|cancel JOB`.
    Backfill(Box<backfill::BackfillArgs>),
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
    /// Search relevance (MRR, recall@k, nDCG@10) and latency on a labelled set, for keyword,
    /// semantic and hybrid search, per query kind; --tune chooses the fusion weight.
    EvalSearch(eval_search::EvalSearchArgs),
    /// Install, import and list models (Whisper for ASR, MiniLM for embeddings).
    Model(model::ModelArgs),
    /// Check a configuration (file + CALLPIPE_* overrides) without starting anything.
    Config(config::ConfigArgs),
    /// Create the cloud stores' indexes and mappings (MongoDB, OpenSearch); with --provision
    /// also the OpenSearch Serverless collection and its policies. Idempotent.
    Setup(setup::SetupArgs),
    /// Delete vector garbage now: replaced revisions' and crashed attempts' documents (the
    /// index workers also do it now and then).
    Gc(gc::GcArgs),
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_tracing(verbose: u8, format: LogFormat) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // Span fields (call_id, revision, stage) on every line of a job, flattened with the
        // event's own fields so a log query needs no nesting.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Shared start-up: configuration and the CPU pool.
struct Context {
    config: Config,
    pool: CpuPool,
    /// The AWS SDK's configuration, loaded on first use (only cloud backends need it).
    aws: tokio::sync::OnceCell<aws_config::SdkConfig>,
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
        Ok(Context {
            config,
            pool,
            aws: tokio::sync::OnceCell::new(),
        })
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Model(args) = cli.command {
        return model::run(args);
    }
    // Before the pool and the runtime: a config check starts nothing.
    if let Command::Config(args) = &cli.command {
        return config::run(&cli, args);
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
        Command::EvalSearch(args) => runtime.block_on(eval_search::run(&ctx, args)),
        Command::Run(args) => runtime.block_on(run::run(&ctx, args)),
        Command::Worker(args) => runtime.block_on(worker::run(&ctx, args)),
        Command::Backfill(args) => runtime.block_on(backfill::run(&ctx, *args)),
        Command::Search(args) => runtime.block_on(search::run(&ctx, args)),
        Command::Calls(args) => runtime.block_on(calls::run(&ctx, args)),
        Command::Setup(args) => runtime.block_on(setup::run(&ctx, args)),
        Command::Gc(args) => runtime.block_on(gc::run(&ctx, args)),
        Command::Model(_) | Command::Config(_) => unreachable!("handled above"),
    }
}
