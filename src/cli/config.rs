//! `callpipe config check`: load a configuration the way every command does, validate it, and
//! say which backend each trait would use, without starting or contacting anything.

use std::io::Write as _;
use std::process::ExitCode;

use serde_json::json;

use callpipe_common::config::{
    ConfigError, MetadataKind, ObjectStoreKind, QueueConfig, VectorIndexKind,
};
use callpipe_common::messages::Stage;
use callpipe_common::Config;

use super::worker::StageArg;
use super::Cli;

/// `println!` that hands a failed write (a closed pipe) back as an error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Validate a configuration without starting anything.
    ///
    /// Loads the configuration exactly as every other command does (the defaults, then
    /// --config FILE or $CALLPIPE_CONFIG, then CALLPIPE_SECTION__KEY environment variables,
    /// then --threads and --data-dir), validates it, and prints which backend each trait uses
    /// (object store, recordings, the queue of each stage, coordination, metadata, vectors) and
    /// the worker settings. It opens no file but the config, connects to nothing and reads no
    /// secret, so it runs anywhere the task's environment can be reproduced, such as CI.
    ///
    /// With --stage it also checks what `callpipe worker --stage STAGE` needs: the queues the
    /// stage reads and writes are either all SQS or all in-process (ingest reads
    /// queue.ingest_url and writes queue.transcribe_url, and queue.index_url for the calls it
    /// rejects; transcribe reads transcribe_url and writes index_url; index reads index_url;
    /// `all` needs all three or none), and a stage on SQS needs storage.object_store = "s3",
    /// because workers on other machines cannot read this one's data directory.
    ///
    /// Exits 0 when the configuration is valid, 1 with one line per problem on stderr, each
    /// naming its key.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Also check what this worker stage needs (`all`: every stage in one process).
    #[arg(long, value_enum, value_name = "STAGE")]
    stage: Option<StageArg>,

    /// Print one JSON object instead of the summary: ok, problems (key, message), backends,
    /// stages and the configuration itself, with passwords masked.
    #[arg(long)]
    json: bool,
}

pub fn run(cli: &Cli, args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ConfigCommand::Check(check) => run_check(cli, check),
    }
}

/// One problem, as printed: the key when there is one (figment's load errors name theirs in
/// the message).
struct Problem {
    key: Option<&'static str>,
    message: String,
}

impl Problem {
    fn from_error(err: &ConfigError) -> Problem {
        Problem {
            key: err.key(),
            message: err.to_string(),
        }
    }
}

fn run_check(cli: &Cli, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let file = cli.config.as_deref();
    // The names (never the values) of the environment overrides, as `Config::read` takes them.
    let mut overrides: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with("CALLPIPE_") && name.contains("__"))
        .collect();
    overrides.sort();

    let loaded = Config::read(file).map(|mut config| {
        // As `Context::new` applies them.
        if let Some(threads) = cli.threads {
            config.pool.threads = threads;
        }
        if let Some(dir) = &cli.data_dir {
            config.storage.data_dir = dir.clone();
        }
        config
    });
    let stages = args.stage.map(StageArg::stages).unwrap_or_default();
    let mut problems = Vec::new();
    let config = match loaded {
        Ok(config) => {
            problems.extend(config.problems().iter().map(Problem::from_error));
            Some(config)
        }
        Err(ConfigError::Load(err)) => {
            // figment may collect several errors; one line each.
            problems.extend((*err).into_iter().map(|e| Problem {
                key: None,
                message: format!("config: {e}"),
            }));
            None
        }
        Err(err) => {
            problems.push(Problem::from_error(&err));
            None
        }
    };
    // Per stage: its own problems, each key told once across the stages of `all`.
    let mut stage_reports = Vec::new();
    if let Some(config) = &config {
        for stage in &stages {
            let found = config.stage_problems(*stage);
            for err in &found {
                if !problems
                    .iter()
                    .any(|p| p.key.is_some() && p.key == err.key())
                {
                    problems.push(Problem::from_error(err));
                }
            }
            stage_reports.push((*stage, found));
        }
    }
    let notes = config
        .as_ref()
        .map(|c| notes(c, args.stage))
        .unwrap_or_default();

    if args.json {
        let problems_json: Vec<_> = problems
            .iter()
            .map(|p| json!({ "key": p.key, "message": p.message }))
            .collect();
        let report = json!({
            "ok": problems.is_empty(),
            "file": file.map(|f| f.display().to_string()),
            "overrides": overrides,
            "stage": args.stage.map(StageArg::as_str),
            "problems": problems_json,
            "backends": config.as_ref().map(backends_json),
            "stages": config.as_ref().map(|c| stages_json(c, &stage_reports)),
            "notes": notes,
            "config": config.as_ref().map(Config::redacted),
        });
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else if let Some(config) = &config {
        print_summary(config, file, &overrides, &stage_reports, &notes)?;
    }
    for problem in &problems {
        eprintln!("error: {}", problem.message);
    }
    if problems.is_empty() {
        if !args.json {
            out!("ok");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        if !args.json {
            let n = problems.len();
            out!("{n} problem{}", if n == 1 { "" } else { "s" });
        }
        Ok(ExitCode::FAILURE)
    }
}

/// The SQS URL of `stage`'s queue, or `in-process`.
fn queue_text(config: &Config, stage: Stage) -> String {
    match config.queue.url(stage) {
        "" => format!(
            "in-process (bounded at {}, dead letter after {} receives)",
            config.queue.capacity, config.queue.max_receives
        ),
        url => format!("sqs {url}"),
    }
}

fn backfill_text(config: &Config) -> String {
    match config.queue.backfill_url.as_str() {
        "" => "the ingest queue".into(),
        url => format!("sqs {url} (below the ingest queue)"),
    }
}

fn object_store_text(config: &Config) -> String {
    let storage = &config.storage;
    match storage.object_store {
        ObjectStoreKind::Local => format!("local {}", storage.data_dir.join("objects").display()),
        ObjectStoreKind::S3 => {
            let prefix = storage.artifacts_prefix.trim_matches('/');
            let mut text = format!("s3 s3://{}/", storage.artifacts_bucket);
            if !prefix.is_empty() {
                text.push_str(prefix);
                text.push('/');
            }
            if storage.s3_force_path_style {
                text.push_str(" (path-style addressing)");
            }
            text
        }
    }
}

fn recordings_text(config: &Config) -> String {
    let reads = "local paths, and s3:// URIs with the default AWS credentials";
    match config.storage.recordings_bucket.as_str() {
        "" => reads.to_owned(),
        bucket => format!("{reads}; live calls are written to s3://{bucket}/"),
    }
}

fn coordination_text(config: &Config) -> String {
    let redis = &config.redis;
    if !redis.is_configured() {
        return "in-process (fences the workers of this process only)".into();
    }
    let mut text = if redis.url.is_empty() {
        let scheme = if redis.tls { "rediss" } else { "redis" };
        format!("redis {scheme}://{}:{}", redis.endpoint, redis.port)
    } else {
        format!("redis {}", config.redacted().redis.url)
    };
    if !redis.auth_secret_arn.is_empty() {
        text.push_str(&format!(", AUTH token from {}", redis.auth_secret_arn));
    }
    text.push_str(&format!(", keys {}*", redis.key_prefix));
    text
}

fn metadata_text(config: &Config) -> String {
    match config.storage.metadata {
        MetadataKind::Sqlite => format!(
            "sqlite {}",
            config.storage.data_dir.join("metadata.db").display()
        ),
        MetadataKind::Mongodb => {
            let m = &config.mongodb;
            let from = if m.secret_arn.is_empty() {
                config.redacted().mongodb.uri
            } else {
                format!("URI from {}", m.secret_arn)
            };
            format!("mongodb {from}, database {}", m.database)
        }
    }
}

fn vectors_text(config: &Config) -> String {
    match config.storage.vector_index {
        VectorIndexKind::Embedded => format!(
            "embedded {}",
            config.storage.data_dir.join("vectors.db").display()
        ),
        VectorIndexKind::Opensearch => format!(
            "opensearch {}, index {}",
            config.opensearch.endpoint, config.opensearch.index
        ),
    }
}

fn worker_text(config: &Config) -> String {
    let w = &config.worker;
    let auto = |n: usize, what: &str| match n {
        0 => format!("auto ({what})"),
        n => n.to_string(),
    };
    let listen = match w.listen.as_str() {
        "" => "no HTTP server".to_owned(),
        addr => format!("/healthz and /metrics on {addr}"),
    };
    format!(
        "visibility {} s, poll wait {} s, drain {} s, retry {} s doubling to {} s; consumers: \
         ingest {}, transcribe {}, index {}; {listen}",
        w.visibility_timeout_s,
        w.poll_wait_s,
        w.drain_timeout_s,
        w.retry_base_s,
        w.retry_max_s,
        auto(w.ingest_consumers, "one per pool thread"),
        auto(w.transcribe_consumers, "fills every replica's batches"),
        w.index_consumers,
    )
}

/// What a stage reads and writes, and whether that is SQS, in-process, or (a problem) both.
fn stage_text(config: &Config, stage: Stage, problems: &[ConfigError]) -> String {
    let queues = QueueConfig::stage_keys(stage);
    let keys: Vec<&str> = queues
        .reads
        .iter()
        .chain(queues.writes)
        .map(|s| QueueConfig::key(*s))
        .collect();
    if !problems.is_empty() {
        let bad: Vec<&str> = problems.iter().filter_map(ConfigError::key).collect();
        return format!("not ready: {}", bad.join(", "));
    }
    let sqs = !config.queue.url(stage).is_empty();
    let mode = if sqs { "SQS" } else { "in-process queues" };
    format!("ready: {mode} ({})", keys.join(", "))
}

/// Things worth knowing that are not errors.
fn notes(config: &Config, stage: Option<StageArg>) -> Vec<String> {
    let mut notes = Vec::new();
    let storage = &config.storage;
    if storage.object_store == ObjectStoreKind::Local && !storage.artifacts_bucket.is_empty() {
        notes.push(
            "storage.artifacts_bucket is set but unused: storage.object_store is \"local\"".into(),
        );
    }
    if storage.metadata == MetadataKind::Sqlite
        && !(config.mongodb.uri.is_empty() && config.mongodb.secret_arn.is_empty())
    {
        notes.push("[mongodb] is set but unused: storage.metadata is \"sqlite\"".into());
    }
    if storage.vector_index == VectorIndexKind::Embedded && !config.opensearch.endpoint.is_empty() {
        notes.push("[opensearch] is set but unused: storage.vector_index is \"embedded\"".into());
    }
    let Some(stage) = stage else {
        return notes;
    };
    let on_sqs = stage
        .stages()
        .iter()
        .any(|s| !config.queue.url(*s).is_empty());
    if on_sqs && !config.redis.is_configured() {
        notes.push(
            "coordination is in-process: a job's lease fences only this process's workers, so \
             several workers of a stage should share [redis] (url or endpoint)"
                .into(),
        );
    }
    if !on_sqs && stage != StageArg::All {
        notes.push(format!(
            "the {} stage's queues are in-process: only `--stage all` (or `callpipe run`) puts \
             work on them",
            stage.as_str()
        ));
    }
    notes
}

fn print_summary(
    config: &Config,
    file: Option<&std::path::Path>,
    overrides: &[String],
    stage_reports: &[(Stage, Vec<ConfigError>)],
    notes: &[String],
) -> anyhow::Result<()> {
    let source = match file {
        Some(file) => file.display().to_string(),
        None => "no file (defaults)".into(),
    };
    out!("{:<14}{source}", "config");
    if !overrides.is_empty() {
        out!("{:<14}{}", "overrides", overrides.join(" "));
    }
    out!("{:<14}{}", "object store", object_store_text(config));
    out!("{:<14}{}", "recordings", recordings_text(config));
    for (i, stage) in Stage::ALL.iter().enumerate() {
        let label = if i == 0 { "queues" } else { "" };
        out!("{label:<14}{stage}: {}", queue_text(config, *stage));
    }
    out!("{:<14}backfill: {}", "", backfill_text(config));
    out!("{:<14}{}", "coordination", coordination_text(config));
    out!("{:<14}{}", "metadata", metadata_text(config));
    out!("{:<14}{}", "vectors", vectors_text(config));
    out!("{:<14}{}", "worker", worker_text(config));
    for (stage, problems) in stage_reports {
        out!(
            "{:<14}{}",
            format!("stage {stage}"),
            stage_text(config, *stage, problems)
        );
    }
    for note in notes {
        out!("note: {note}");
    }
    Ok(())
}

fn backends_json(config: &Config) -> serde_json::Value {
    json!({
        "object_store": object_store_text(config),
        "recordings": recordings_text(config),
        "queues": {
            "ingest": queue_text(config, Stage::Ingest),
            "transcribe": queue_text(config, Stage::Transcribe),
            "index": queue_text(config, Stage::Index),
            "backfill": backfill_text(config),
        },
        "coordination": coordination_text(config),
        "metadata": metadata_text(config),
        "vectors": vectors_text(config),
    })
}

fn stages_json(config: &Config, reports: &[(Stage, Vec<ConfigError>)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = reports
        .iter()
        .map(|(stage, problems)| {
            let sqs = !config.queue.url(*stage).is_empty();
            (
                stage.to_string(),
                json!({
                    "ready": problems.is_empty(),
                    "queues": if sqs { "sqs" } else { "in_process" },
                    "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    serde_json::Value::Object(map)
}
