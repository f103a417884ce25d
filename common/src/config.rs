//! Configuration: one TOML file plus `CALLPIPE_*` environment overrides.
//!
//! Every key has a default, so `callpipe` runs with no file at all. Each section is one
//! documented struct with `deny_unknown_fields`, so a typo fails at start-up with the key's
//! name instead of being silently ignored. Environment variables override the file:
//! `CALLPIPE_INGEST__MAX_DURATION_S=7200` sets `[ingest] max_duration_s`.
//!
//! These doc comments are the reference for every key. The keys that
//! `environments/*/callpipe.toml` and `terraform/modules/compute` (its `task_env`) pass are the
//! contract between the infrastructure and the binary; `tests/config_envs.rs` runs
//! `callpipe config check` on every environment's file with every task's overrides.
//!
//! # Layout
//! - the pipeline: `[ingest]` (with `[ingest.vad]`), `[pool]`, `[transcribe]`, `[index]`,
//!   `[search]`, `[run]`;
//! - the backends: `[storage]` (which implementation backs the object store, the metadata store
//!   and the vector index, and the buckets), `[queue]` (the stage queues: in-process or SQS),
//!   `[redis]` (coordination: in-process or Redis), `[mongodb]`, `[opensearch]`;
//! - the long-running processes: `[worker]` (`callpipe worker`), `[serve]`, `[live]`.
//!
//! [`Config::load`] reads and validates; [`Config::check_stage`] adds what one worker stage
//! needs on top (its queues all SQS or all in-process). No key holds a secret: secrets are named
//! by Secrets Manager ARN. A local `redis.url` or `mongodb.uri` may still carry a password, so
//! `Debug` and [`Config::redacted`] mask it.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::audio::Role;
use crate::messages::Stage;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Decode, channel split, resample and VAD.
    pub ingest: IngestConfig,
    /// The CPU pool shared by every CPU-heavy step.
    pub pool: PoolConfig,
    /// The Whisper engine and its decoding.
    pub transcribe: TranscribeConfig,
    /// Embeddings and how transcripts become searchable units.
    pub index: IndexConfig,
    /// Hybrid search.
    pub search: SearchConfig,
    /// Where calls, transcripts and vectors are kept, and which backends keep them.
    pub storage: StorageConfig,
    /// `callpipe run`.
    pub run: RunConfig,
    /// The queues between the stages: in-process, or SQS.
    pub queue: QueueConfig,
    /// `callpipe worker`: leases, consumers, retries, health and shutdown.
    pub worker: WorkerConfig,
    /// Coordination (leases with fencing, done markers, live-call state): in-process or Redis.
    pub redis: RedisConfig,
    /// The MongoDB metadata store (`storage.metadata = "mongodb"`).
    pub mongodb: MongodbConfig,
    /// The OpenSearch vector index (`storage.vector_index = "opensearch"`).
    pub opensearch: OpensearchConfig,
    /// `callpipe serve`: the analyst API.
    pub serve: ServeConfig,
    /// `callpipe live`: the live-call gateway.
    pub live: LiveConfig,
    /// `callpipe backfill`: admission control and the estimates of `--dry-run`.
    pub backfill: BackfillConfig,
}

/// `[ingest]`: limits and the audio front end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest recording accepted, in bytes. Larger files fail before any decoding.
    pub max_file_bytes: u64,
    /// Longest recording accepted, in seconds. Checked against the decoded audio as it streams;
    /// a header's claim is only a hint, so a lying header can neither get past the limit nor
    /// get a short file refused.
    pub max_duration_s: f64,
    /// Roles of the left and right channels of a stereo recording.
    pub stereo_roles: [Role; 2],
    /// Most memory one call may hold while it waits for transcription, in MiB: the 16 kHz
    /// audio kept around its speech (4 bytes a sample, 230 MB per hour of speech on one
    /// channel) plus, when the recording is read into memory, its encoded bytes. Silence is
    /// dropped as it streams, so this bounds a call by its speech, not by its length. A call
    /// that needs more fails as permanent. The default holds about 4.6 channel-hours of
    /// speech.
    pub max_call_memory_mb: u64,
    /// Voice activity detection.
    pub vad: VadConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            max_duration_s: 4.0 * 3600.0,
            stereo_roles: [Role::Agent, Role::Customer],
            max_call_memory_mb: 1024,
            vad: VadConfig::default(),
        }
    }
}

/// `[ingest.vad]`: how speech segments are found and shaped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VadConfig {
    /// Score in [0, 1] above which a 16 ms frame counts as speech.
    pub threshold: f32,
    /// Frames quieter than this RMS level (dBFS) are taken as silence without running the
    /// model. Call audio is mostly one party listening, so this skips a large share of frames.
    /// Set it to -120 to run the model on every frame.
    pub gate_dbfs: f32,
    /// Speech shorter than this (seconds) is dropped as a click or a cough. At most the speech
    /// one segment holds (`max_segment_s - 2 * pad_s`).
    pub min_speech_s: f64,
    /// Silence shorter than this (seconds) between two speech stretches is bridged. At most a
    /// quarter of the speech one segment holds (`(max_segment_s - 2 * pad_s) / 4`), so the
    /// length cap never cuts a segment out of a bridged pause.
    pub merge_gap_s: f64,
    /// Padding added before and after each segment (seconds), so word onsets and trailing
    /// consonants are not clipped. At most `max_segment_s / 4`, so padding never takes more
    /// than half of a segment.
    pub pad_s: f64,
    /// Longest segment (seconds), padding included. Whisper sees at most 30 s at once; longer
    /// speech is split at its quietest point.
    pub max_segment_s: f64,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold: 0.5,
            gate_dbfs: -50.0,
            min_speech_s: 0.12,
            merge_gap_s: 0.5,
            pad_s: 0.15,
            max_segment_s: 30.0,
        }
    }
}

/// `[pool]`: the CPU pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
}

/// Where the engine runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    #[default]
    Cpu,
    /// An NVIDIA GPU: needs its driver and cuBLAS 12 (`scripts/install-engine.sh --cuda`).
    Cuda,
}

/// `[transcribe]`: the Whisper engine, its replicas and its decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscribeConfig {
    /// A model installed with `callpipe model` (its name), or a CTranslate2 Whisper directory.
    pub model: String,
    pub device: Device,
    /// CTranslate2 compute type: `int8`, `int8_float32`, `float32`, `float16`, `auto`, ...
    pub compute_type: String,
    /// Engine replicas sharing the pool; each decodes one batch at a time. 0 = one per core.
    pub replicas: usize,
    /// Threads inside each replica. One per replica scales best on contended CPUs.
    pub threads_per_replica: usize,
    /// Windows decoded together in one engine call.
    pub batch_size: usize,
    /// Beam width at temperature 0; 1 is greedy search.
    pub beam_size: usize,
    /// Samples drawn at each fallback temperature.
    pub best_of: usize,
    /// Temperatures tried in order until a decode passes the thresholds below.
    pub temperatures: Vec<f32>,
    /// A decode whose text compresses better than this (gzip ratio) is repetitive: retry.
    pub compression_ratio_threshold: f32,
    /// A decode whose mean token log-probability is below this is unsure: retry.
    pub log_prob_threshold: f32,
    /// A window whose no-speech probability exceeds this (and that is unsure) is dropped.
    pub no_speech_threshold: f32,
    /// Word-level timestamps and probabilities (cross-attention alignment).
    pub word_timestamps: bool,
    /// ISO 639-1 code to force; empty = detect (multilingual models) or `en` (`.en` models).
    pub language: String,
}

impl Default for TranscribeConfig {
    fn default() -> Self {
        TranscribeConfig {
            model: "whisper-tiny.en".into(),
            device: Device::Cpu,
            compute_type: "int8".into(),
            replicas: 0,
            threads_per_replica: 1,
            batch_size: 8,
            beam_size: 5,
            best_of: 5,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: 2.4,
            log_prob_threshold: -1.0,
            no_speech_threshold: 0.6,
            word_timestamps: true,
            language: String::new(),
        }
    }
}

/// `[index]`: embeddings and searchable units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// The sentence-embedding model: an installed model's name or a model directory.
    pub embedding_model: String,
    /// Threads the embedder uses; 0 = one per core. It runs between the engine's batches, so
    /// one thread keeps it from competing with the Whisper replicas.
    pub embed_threads: usize,
    /// A searchable unit (consecutive segments of one speaker) spans at most this many seconds.
    pub unit_max_s: f64,
    /// ... and holds at most this many words.
    pub unit_max_words: usize,
    /// Segments further apart than this (seconds) start a new unit.
    pub unit_max_gap_s: f64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            embedding_model: "all-minilm-l6-v2".into(),
            embed_threads: 1,
            unit_max_s: 20.0,
            unit_max_words: 60,
            unit_max_gap_s: 1.5,
        }
    }
}

/// `[search]`: hybrid (keyword + vector) search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Candidates taken from each of the keyword and the vector list before fusion.
    pub candidates: usize,
    /// How much a segment holding every query word gains in the fused score, in units of the
    /// semantic list's spread (`score = semantic + keyword_weight × coverage`, see
    /// `callpipe_index::fusion`); 0 ranks by meaning alone. Set by `callpipe eval-search --tune`.
    pub keyword_weight: f32,
    /// How much the keyword list's best BM25 score gains over none, in the same units
    /// (`+ bm25_weight × bm25 / best bm25`). Set by `callpipe eval-search --tune`.
    pub bm25_weight: f32,
    /// Units of context shown before and after each hit.
    pub context: usize,
    /// Results returned when `--limit` is not given.
    pub limit: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            candidates: 50,
            keyword_weight: 1.25,
            bm25_weight: 0.3,
            context: 1,
            limit: 10,
        }
    }
}

/// Which implementation backs the object store: callpipe's own objects (call plans,
/// transcripts), not the customers' recordings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectStoreKind {
    /// A directory: `<data_dir>/objects`.
    #[default]
    Local,
    /// An S3 bucket: `storage.artifacts_bucket`, under `storage.artifacts_prefix`. Required
    /// when stages run on separate machines (SQS queues): they cannot share a local directory.
    S3,
}

/// Which implementation backs the metadata store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataKind {
    /// SQLite with FTS5: `<data_dir>/metadata.db`.
    #[default]
    Sqlite,
    /// MongoDB (Atlas): `[mongodb]`.
    Mongodb,
}

/// Which implementation backs the vector index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VectorIndexKind {
    /// Exact search in memory, persisted in `<data_dir>/vectors.db`.
    #[default]
    Embedded,
    /// An OpenSearch Serverless vector collection: `[opensearch]`.
    Opensearch,
}

/// `[storage]`: the data directory, the buckets and the backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the embedded backends keep their files (`--data-dir` overrides). In a task on AWS,
    /// task-local scratch.
    pub data_dir: PathBuf,
    /// `local` (`<data_dir>/objects`) or `s3` (`artifacts_bucket`, which must then be set).
    pub object_store: ObjectStoreKind,
    /// The bucket customers' recordings arrive in: where `callpipe live` writes finished calls,
    /// and whose S3 notifications feed the ingest queue. Recordings are read where they are,
    /// from any `s3://` URI the task's role may read, so this names the bucket callpipe writes
    /// to, not a limit on what it reads. Empty = none (`callpipe live` then has nowhere to
    /// write).
    pub recordings_bucket: String,
    /// The bucket of callpipe's own objects when `object_store = "s3"`: call plans and
    /// transcripts, keyed by (call_id, revision).
    pub artifacts_bucket: String,
    /// Key prefix inside the artifacts bucket, so several deployments can share one:
    /// `callpipe/prod` (with or without a trailing `/`) keeps every object under
    /// `callpipe/prod/`. Empty = the bucket's root.
    pub artifacts_prefix: String,
    /// Address buckets by path (`http://host/bucket/key`) instead of by virtual host. Only for
    /// local S3 servers (moto, MinIO) named by `AWS_ENDPOINT_URL`; AWS itself wants `false`.
    pub s3_force_path_style: bool,
    /// `sqlite` (`<data_dir>/metadata.db`) or `mongodb` (`[mongodb] uri` or `secret_arn`
    /// must then be set).
    pub metadata: MetadataKind,
    /// `embedded` (`<data_dir>/vectors.db`) or `opensearch` (`[opensearch] endpoint` must then
    /// be set).
    pub vector_index: VectorIndexKind,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("callpipe-data"),
            object_store: ObjectStoreKind::Local,
            recordings_bucket: String::new(),
            artifacts_bucket: String::new(),
            artifacts_prefix: String::new(),
            s3_force_path_style: false,
            metadata: MetadataKind::Sqlite,
            vector_index: VectorIndexKind::Embedded,
        }
    }
}

/// `[queue]`: the queues between the stages.
///
/// A URL names an SQS queue; an empty one means an in-process bounded queue, which only
/// works when the stages on both of its ends run in one process (`callpipe run`,
/// `callpipe worker --stage all`). The ingest stage reads `ingest_url` (and `backfill_url`)
/// and writes `transcribe_url`, plus `index_url` for the calls it rejects; transcribe reads
/// `transcribe_url` and writes `index_url`; index reads `index_url`. So a worker stage needs
/// either all the URLs it reads and writes, or none ([`Config::check_stage`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The ingest stage's queue: S3 ObjectCreated notifications of the recordings bucket and
    /// callpipe ingest messages (`callpipe backfill`, `callpipe live`).
    pub ingest_url: String,
    /// The transcribe stage's queue: call plans from ingest.
    pub transcribe_url: String,
    /// The index stage's queue: transcripts from transcribe, and the failures that ingest and
    /// transcribe record on a call (the index stage owns the metadata store).
    pub index_url: String,
    /// A second queue for the ingest stage, the backfill lane: `callpipe backfill` sends here
    /// when set, and ingest workers take from it only when `ingest_url` has nothing waiting,
    /// so history never delays new uploads. Empty = backfill work goes to `ingest_url`.
    /// Needs `ingest_url`.
    pub backfill_url: String,
    /// Receives before an in-process queue gives a message up as a dead letter. SQS queues
    /// use their redrive policy (maxReceiveCount) instead.
    pub max_receives: u32,
    /// Messages each in-process queue holds, waiting or in flight, before `send` waits: what
    /// keeps a fast stage from running ahead of a slow one.
    pub capacity: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            ingest_url: String::new(),
            transcribe_url: String::new(),
            index_url: String::new(),
            backfill_url: String::new(),
            max_receives: 5,
            capacity: 64,
        }
    }
}

impl QueueConfig {
    /// The URL of the queue `stage` reads; empty = in-process.
    pub fn url(&self, stage: Stage) -> &str {
        match stage {
            Stage::Ingest => &self.ingest_url,
            Stage::Transcribe => &self.transcribe_url,
            Stage::Index => &self.index_url,
        }
    }

    /// The `[queue]` keys `stage` receives from and sends to (results and recorded failures);
    /// `backfill_url` aside, which is optional even on SQS.
    pub fn stage_keys(stage: Stage) -> StageQueues {
        match stage {
            Stage::Ingest => StageQueues {
                reads: &[Stage::Ingest],
                writes: &[Stage::Transcribe, Stage::Index],
            },
            Stage::Transcribe => StageQueues {
                reads: &[Stage::Transcribe],
                writes: &[Stage::Index],
            },
            Stage::Index => StageQueues {
                reads: &[Stage::Index],
                writes: &[],
            },
        }
    }

    /// `queue.ingest_url`, `queue.transcribe_url`, `queue.index_url`.
    pub fn key(stage: Stage) -> &'static str {
        match stage {
            Stage::Ingest => "queue.ingest_url",
            Stage::Transcribe => "queue.transcribe_url",
            Stage::Index => "queue.index_url",
        }
    }
}

/// The queues one stage reads and writes, named by the stage each belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageQueues {
    pub reads: &'static [Stage],
    pub writes: &'static [Stage],
}

/// `[worker]`: `callpipe worker`, the distributed stage workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Seconds a received message stays invisible to other workers at first, and the time to
    /// live of the job's lease. Both are extended while the job runs, so this bounds how soon a
    /// crashed worker's message comes back, not how long a job may take. Within [10, 43200]
    /// (SQS allows at most 12 h). The SQS queue's own visibility timeout should match.
    pub visibility_timeout_s: u64,
    /// Address of the `/healthz` and `/metrics` server, as `IP:port` (`0.0.0.0:9187` in a
    /// container). Empty = no HTTP server.
    pub listen: String,
    /// Seconds a worker lets its jobs in flight finish after SIGTERM before it releases them
    /// for other workers and exits. Keep it well below the orchestrator's kill timeout (ECS
    /// `stopTimeout`, 120 s at most on Fargate): releasing takes a few seconds more.
    pub drain_timeout_s: u64,
    /// Concurrent ingest jobs (each decodes one recording on the CPU pool); 0 = one per pool
    /// thread.
    pub ingest_consumers: usize,
    /// Concurrent transcribe jobs; 0 = enough calls to keep every engine replica's batches
    /// full.
    pub transcribe_consumers: usize,
    /// Concurrent index jobs; at least 1. Embedding runs between engine batches, so one is
    /// usually enough.
    pub index_consumers: usize,
    /// Seconds one receive waits for a message (SQS long polling): fewer empty receives, and
    /// so fewer requests, on an idle queue. At most 20 (SQS's limit); 0 = short polling.
    pub poll_wait_s: u64,
    /// Seconds before a job that failed with a transient error is retried, doubled on each
    /// further failure of the same message (with jitter) up to `retry_max_s`.
    pub retry_base_s: f64,
    /// The longest retry delay, in seconds. At most 43200 (SQS hides a message at most 12 h).
    pub retry_max_s: f64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            visibility_timeout_s: 300,
            listen: "127.0.0.1:9187".into(),
            drain_timeout_s: 60,
            ingest_consumers: 0,
            transcribe_consumers: 0,
            index_consumers: 1,
            poll_wait_s: 20,
            retry_base_s: 2.0,
            retry_max_s: 300.0,
        }
    }
}

/// `[redis]`: coordination (leases with fencing tokens, done markers, live-call state, rate
/// limits). With neither `url` nor `endpoint` set it is in-process, which fences only the
/// workers of one process.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// A whole Redis URL, `redis://host:port` or `rediss://` for TLS, for local use. It may
    /// carry a password (`redis://:password@host`); `Debug` and `callpipe config check` mask it.
    /// On AWS use `endpoint` and `auth_secret_arn` instead. Not together with `endpoint`.
    pub url: String,
    /// The Redis host (an ElastiCache primary endpoint), without scheme or port.
    pub endpoint: String,
    /// The port of `endpoint`.
    pub port: u16,
    /// TLS to `endpoint` (ElastiCache in-transit encryption). A `url` says it with its scheme.
    pub tls: bool,
    /// Secrets Manager ARN of the AUTH token (the secret's `password` or `token` field, or the
    /// whole secret string), read with the task's role at start-up. Empty = no AUTH.
    pub auth_secret_arn: String,
    /// Put before every key, so deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            endpoint: String::new(),
            port: 6379,
            tls: false,
            auth_secret_arn: String::new(),
            key_prefix: "callpipe:".into(),
        }
    }
}

impl RedisConfig {
    /// Whether a Redis server is named (else coordination is in-process).
    pub fn is_configured(&self) -> bool {
        !self.url.is_empty() || !self.endpoint.is_empty()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("auth_secret_arn", &self.auth_secret_arn)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `[mongodb]`: the metadata store when `storage.metadata = "mongodb"`. Read by the stores'
/// builder (the index stage, `callpipe serve`, `calls`, `search`); accepted and validated
/// before that backend is built in.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongodbConfig {
    /// A connection string, `mongodb://` or `mongodb+srv://`, for local use. It may carry a
    /// password; `Debug` and `callpipe config check` mask it. On AWS use `secret_arn`. Not
    /// together with `secret_arn`.
    pub uri: String,
    /// Secrets Manager ARN of the connection string (with its password), read with the
    /// task's role at start-up and again after an authentication failure, so a rotated
    /// password needs no redeploy. Not together with `uri`.
    pub secret_arn: String,
    /// The database callpipe's collections live in.
    pub database: String,
}

impl Default for MongodbConfig {
    fn default() -> Self {
        MongodbConfig {
            uri: String::new(),
            secret_arn: String::new(),
            database: "callpipe".into(),
        }
    }
}

impl fmt::Debug for MongodbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongodbConfig")
            .field("uri", &redact_url(&self.uri))
            .field("secret_arn", &self.secret_arn)
            .field("database", &self.database)
            .finish()
    }
}

/// `[opensearch]`: the vector index when `storage.vector_index = "opensearch"` (OpenSearch
/// Serverless, signed with SigV4 for service `aoss`). Read by the stores' builder (the index
/// stage, `callpipe serve`, `search`) and by `callpipe setup`; accepted and validated before
/// that backend is built in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpensearchConfig {
    /// The collection's endpoint, `https://<id>.<region>.aoss.amazonaws.com` (`http://` only
    /// for a local server).
    pub endpoint: String,
    /// The index of segment vectors (and their text, for keyword search).
    pub index: String,
}

impl Default for OpensearchConfig {
    fn default() -> Self {
        OpensearchConfig {
            endpoint: String::new(),
            index: "callpipe-segments".into(),
        }
    }
}

/// `[serve]`: `callpipe serve`, the analyst HTTP API and web UI. Accepted and validated now;
/// read by `serve` once it lands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on, as `IP:port` (`0.0.0.0:8080` behind a load balancer).
    pub listen: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

/// `[live]`: `callpipe live`, the live-call gateway (Twilio Media Streams, Genesys AudioHook).
/// Accepted and validated now; read by `live` once it lands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Address the media-stream WebSockets connect to, as `IP:port`.
    pub listen: String,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            listen: "127.0.0.1:8081".into(),
        }
    }
}

/// `[run]`: the in-process pipeline of `callpipe run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Calls decoded ahead of the engine; 0 = enough to keep every replica busy. Bounds memory:
    /// each holds at most `ingest.max_call_memory_mb`, in practice the audio around its speech.
    pub calls_in_flight: usize,
    /// File extensions taken when a directory is walked (case-insensitive).
    pub extensions: Vec<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            calls_in_flight: 0,
            extensions: [
                "wav", "wave", "mp3", "flac", "ogg", "oga", "opus", "m4a", "mp4", "aac", "aif",
                "aiff", "caf", "mkv", "webm",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// `[backfill]`: how much history `callpipe backfill` lets into the pipeline.
///
/// The limits hold across every backfill process of a deployment at once: admission goes
/// through the coordination store (Redis), one place per call from its enqueue until its
/// outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackfillConfig {
    /// Backfill calls in the pipeline at once (enqueued and not yet indexed or failed), all
    /// backfill processes together. Keeps a backfill of millions of objects from flooding
    /// the queues (SQS allows 120,000 in flight) and the index; also what one ingest worker's
    /// backlog can hold when it falls behind.
    pub max_in_flight: u64,
    /// Calls admitted per second, all backfill processes together; 0 = no rate limit (the
    /// in-flight bound alone).
    pub rate: f64,
    /// A call's place expires this long after its admission if no stage retires it (its
    /// message went to a dead-letter queue, a worker died while recording the outcome).
    pub in_flight_ttl_s: u64,
    /// Transcribe workers `--dry-run` assumes for its time and cost estimate.
    pub workers: u64,
    /// What one transcribe worker costs per hour (USD), for `--dry-run`; 0 = no cost shown.
    pub worker_hour_usd: f64,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            max_in_flight: 500,
            rate: 0.0,
            in_flight_ttl_s: 86_400,
            workers: 1,
            worker_hour_usd: 0.0,
        }
    }
}

/// Bounds shared by [`Config::validate`] and the command-line flags that override the same
/// keys, so a flag can never ask for what the config would refuse.
pub mod limits {
    use std::ops::RangeInclusive;

    pub const SEARCH_LIMIT: RangeInclusive<usize> = 1..=1000;
    pub const BATCH_SIZE: RangeInclusive<usize> = 1..=64;
    pub const BEAM_SIZE: RangeInclusive<usize> = 1..=16;
    /// 0 = one per core.
    pub const REPLICAS: RangeInclusive<usize> = 0..=256;
    /// 0 = one per core.
    pub const THREADS: RangeInclusive<usize> = 0..=1024;
    /// `calls list --limit`.
    pub const LIST_LIMIT: RangeInclusive<usize> = 1..=1_000_000;
    /// Characters in a search query: far more than anyone types, and the embedder reads only
    /// its first 256 tokens anyway.
    pub const QUERY_CHARS: usize = 1000;
}

/// A configuration that could not be loaded or is invalid. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("config: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl ConfigError {
    /// A bad configuration is the deployment's fault, never a call's.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Environment
    }
}

impl ConfigError {
    /// The key an invalid value is at (`None` for a file that could not be read or parsed;
    /// figment's message names the key there).
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Load(_) => None,
        }
    }
}

/// The problems [`Config::problems`] collects, each naming its key.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, key: &'static str, problem: impl Into<String>) {
        self.0.push(ConfigError::Invalid {
            key,
            problem: problem.into(),
        });
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

impl Config {
    /// Defaults, then `file` if given, then `CALLPIPE_*` environment variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config = Config::read(file)?;
        config.validate()?;
        Ok(config)
    }

    /// What [`Config::load`] reads, before validation: for `callpipe config check`, which
    /// lists every problem instead of the first. Everything else calls `load`.
    pub fn read(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    problem: format!("file {} does not exist", file.display()),
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only `SECTION__KEY` variables are config; others that share the prefix
        // (CALLPIPE_CONFIG naming the file, variables of scripts) are not.
        figment = figment.merge(
            Env::prefixed("CALLPIPE_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        Ok(figment.extract().map_err(Box::new)?)
    }

    /// Checks what serde cannot express: ranges, formats, and the settings each chosen backend
    /// needs. Fails with the first problem; [`Config::problems`] lists them all.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every problem [`Config::validate`] checks for, in key order within each section.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut p = Problems::default();
        let ingest = &self.ingest;
        if ingest.max_file_bytes == 0 {
            p.add("ingest.max_file_bytes", "must be greater than 0");
        }
        if ingest.max_duration_s.is_nan() || ingest.max_duration_s <= 0.0 {
            p.add("ingest.max_duration_s", "must be greater than 0");
        }
        // MiB to bytes must not overflow; 1 TiB is far past any machine this runs on.
        if !(1..=1 << 20).contains(&ingest.max_call_memory_mb) {
            p.add("ingest.max_call_memory_mb", "must be within [1, 1048576]");
        }
        let vad = &ingest.vad;
        let before_vad = p.len();
        if !(0.0..=1.0).contains(&vad.threshold) {
            p.add("ingest.vad.threshold", "must be within [0, 1]");
        }
        if !(1.0..=30.0).contains(&vad.max_segment_s) {
            p.add("ingest.vad.max_segment_s", "must be within [1, 30]");
        }
        for (key, value) in [
            ("ingest.vad.min_speech_s", vad.min_speech_s),
            ("ingest.vad.merge_gap_s", vad.merge_gap_s),
            ("ingest.vad.pad_s", vad.pad_s),
        ] {
            if !(0.0..=10.0).contains(&value) {
                p.add(key, "must be within [0, 10] seconds");
            }
        }
        if !(-120.0..=0.0).contains(&vad.gate_dbfs) {
            p.add("ingest.vad.gate_dbfs", "must be within [-120, 0]");
        }
        // The length cap splits speech into pieces of at most `max_segment_s - 2 * pad_s` and
        // pads each. So padding must leave most of a segment to speech (with `2 * pad_s` near
        // `max_segment_s` the pieces shrink to single frames), the shortest speech kept must fit
        // in one piece, and a bridged pause must stay shorter than the shortest piece the cap
        // cuts (half of one; a quarter leaves room for rounding to 16 ms frames), or a piece
        // could hold nothing but the pause, which Whisper fills with invented words.
        // Each rule assumes the ones before it hold, so only the first that fails is told.
        let speech_s = vad.max_segment_s - 2.0 * vad.pad_s;
        if p.len() == before_vad {
            if vad.pad_s * 4.0 > vad.max_segment_s {
                p.add(
                    "ingest.vad.pad_s",
                    "must be at most a quarter of ingest.vad.max_segment_s (2 * pad_s is \
                     padding inside every segment)",
                );
            } else if vad.min_speech_s > speech_s {
                p.add(
                    "ingest.vad.min_speech_s",
                    "must be at most ingest.vad.max_segment_s - 2 * ingest.vad.pad_s (the \
                     speech one segment holds)",
                );
            } else if vad.merge_gap_s * 4.0 > speech_s {
                p.add(
                    "ingest.vad.merge_gap_s",
                    "must be at most (ingest.vad.max_segment_s - 2 * ingest.vad.pad_s) / 4, so \
                     the length cap never cuts a segment out of a bridged pause",
                );
            }
        }
        let t = &self.transcribe;
        if t.model.trim().is_empty() {
            p.add("transcribe.model", "must name a model");
        }
        if !limits::BATCH_SIZE.contains(&t.batch_size) {
            p.add("transcribe.batch_size", "must be within [1, 64]");
        }
        if !limits::BEAM_SIZE.contains(&t.beam_size) {
            p.add("transcribe.beam_size", "must be within [1, 16]");
        }
        if !limits::REPLICAS.contains(&t.replicas) {
            p.add(
                "transcribe.replicas",
                "must be within [0, 256] (0 = one per core)",
            );
        }
        if !limits::THREADS.contains(&self.pool.threads) {
            p.add(
                "pool.threads",
                "must be within [0, 1024] (0 = one per core)",
            );
        }
        if t.threads_per_replica > 256 {
            p.add("transcribe.threads_per_replica", "must be at most 256");
        }
        if self.index.embed_threads > 256 {
            p.add(
                "index.embed_threads",
                "must be at most 256 (0 = one per core)",
            );
        }
        if self.run.calls_in_flight > 1024 {
            p.add(
                "run.calls_in_flight",
                "must be at most 1024 (0 = automatic)",
            );
        }
        if !(1..=16).contains(&t.best_of) {
            p.add("transcribe.best_of", "must be within [1, 16]");
        }
        if t.threads_per_replica == 0 {
            p.add("transcribe.threads_per_replica", "must be at least 1");
        }
        if t.temperatures.is_empty() || t.temperatures.iter().any(|x| !(0.0..=2.0).contains(x)) {
            p.add(
                "transcribe.temperatures",
                "must be a non-empty list of values within [0, 2]",
            );
        }
        let code_ok = t.language.len() <= 3 && t.language.chars().all(|c| c.is_ascii_lowercase());
        if !code_ok {
            p.add(
                "transcribe.language",
                "must be an ISO 639-1 code such as `en`",
            );
        }
        let index = &self.index;
        if index.embedding_model.trim().is_empty() {
            p.add("index.embedding_model", "must name a model");
        }
        if !(1.0..=120.0).contains(&index.unit_max_s) {
            p.add("index.unit_max_s", "must be within [1, 120] seconds");
        }
        if !(1..=400).contains(&index.unit_max_words) {
            p.add("index.unit_max_words", "must be within [1, 400]");
        }
        if !(0.0..=30.0).contains(&index.unit_max_gap_s) {
            p.add("index.unit_max_gap_s", "must be within [0, 30] seconds");
        }
        let search = &self.search;
        if !(1..=10_000).contains(&search.candidates) {
            p.add("search.candidates", "must be within [1, 10000]");
        }
        if !search.keyword_weight.is_finite() || search.keyword_weight < 0.0 {
            p.add("search.keyword_weight", "must be a number, 0 or more");
        }
        if !search.bm25_weight.is_finite() || search.bm25_weight < 0.0 {
            p.add("search.bm25_weight", "must be a number, 0 or more");
        }
        if search.context > 20 {
            p.add("search.context", "must be at most 20");
        }
        if !limits::SEARCH_LIMIT.contains(&search.limit) {
            p.add("search.limit", "must be within [1, 1000]");
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            p.add("storage.data_dir", "must name a directory");
        }
        if self.run.extensions.is_empty() {
            p.add("run.extensions", "must list at least one extension");
        }
        self.backend_problems(&mut p);
        self.process_problems(&mut p);
        p.0
    }

    /// `[storage]` beyond the data directory, `[queue]`, `[redis]`, `[mongodb]` and
    /// `[opensearch]`.
    fn backend_problems(&self, p: &mut Problems) {
        let storage = &self.storage;
        for (key, bucket) in [
            ("storage.recordings_bucket", &storage.recordings_bucket),
            ("storage.artifacts_bucket", &storage.artifacts_bucket),
        ] {
            if let Some(problem) = bucket_name_problem(bucket) {
                p.add(key, problem);
            }
        }
        if storage.object_store == ObjectStoreKind::S3 && storage.artifacts_bucket.is_empty() {
            p.add(
                "storage.artifacts_bucket",
                "must name a bucket when storage.object_store = \"s3\"",
            );
        }
        if storage.artifacts_prefix.len() > 512 || has_control(&storage.artifacts_prefix) {
            p.add(
                "storage.artifacts_prefix",
                "must be at most 512 bytes, without control characters",
            );
        }
        if storage.metadata == MetadataKind::Mongodb
            && self.mongodb.uri.is_empty()
            && self.mongodb.secret_arn.is_empty()
        {
            p.add(
                "mongodb.secret_arn",
                "or mongodb.uri must be set when storage.metadata = \"mongodb\"",
            );
        }
        if storage.metadata == MetadataKind::Mongodb
            && storage.vector_index != VectorIndexKind::Opensearch
        {
            // Keyword search runs where the segment text is indexed for it: FTS5 beside the
            // SQLite metadata, BM25 in OpenSearch. MongoDB offers neither here.
            p.add(
                "storage.vector_index",
                "must be \"opensearch\" when storage.metadata = \"mongodb\" (OpenSearch serves \
                 keyword search in the cloud configuration)",
            );
        }
        if storage.vector_index == VectorIndexKind::Opensearch
            && self.opensearch.endpoint.is_empty()
        {
            p.add(
                "opensearch.endpoint",
                "must be set when storage.vector_index = \"opensearch\"",
            );
        }

        let queue = &self.queue;
        let urls = [
            ("queue.ingest_url", &queue.ingest_url),
            ("queue.transcribe_url", &queue.transcribe_url),
            ("queue.index_url", &queue.index_url),
            ("queue.backfill_url", &queue.backfill_url),
        ];
        for (i, (key, url)) in urls.iter().enumerate() {
            if url.is_empty() {
                continue;
            }
            if let Some(problem) = queue_url_problem(url) {
                p.add(key, problem);
            } else if let Some((other, _)) = urls[..i].iter().find(|(_, u)| u == url) {
                p.add(
                    key,
                    format!("names the same queue as {other}: each stage needs its own"),
                );
            }
        }
        if !queue.backfill_url.is_empty() && queue.ingest_url.is_empty() {
            p.add(
                "queue.backfill_url",
                "needs queue.ingest_url: the backfill lane is a second SQS queue beside the \
                 ingest queue",
            );
        }
        if !(1..=1000).contains(&queue.max_receives) {
            p.add("queue.max_receives", "must be within [1, 1000]");
        }
        if !(1..=65_536).contains(&queue.capacity) {
            p.add("queue.capacity", "must be within [1, 65536]");
        }

        let backfill = &self.backfill;
        if !(1..=100_000).contains(&backfill.max_in_flight) {
            p.add(
                "backfill.max_in_flight",
                "must be within [1, 100000] (SQS holds at most 120000 messages in flight)",
            );
        }
        if !(0.0..=10_000.0).contains(&backfill.rate) {
            p.add(
                "backfill.rate",
                "must be within [0, 10000] calls per second",
            );
        }
        if !(60..=14 * 86_400).contains(&backfill.in_flight_ttl_s) {
            p.add(
                "backfill.in_flight_ttl_s",
                "must be within [60, 1209600] seconds (a queue keeps a message 14 days at most)",
            );
        }
        if !(1..=100_000).contains(&backfill.workers) {
            p.add("backfill.workers", "must be within [1, 100000]");
        }
        if !(0.0..=10_000.0).contains(&backfill.worker_hour_usd) {
            p.add("backfill.worker_hour_usd", "must be within [0, 10000]");
        }

        let redis = &self.redis;
        if !redis.url.is_empty() {
            let scheme_ok = redis.url.starts_with("redis://") || redis.url.starts_with("rediss://");
            if !scheme_ok || has_space_or_control(&redis.url) {
                p.add(
                    "redis.url",
                    "must be a URL like redis://host:6379 (rediss:// for TLS)",
                );
            } else if !redis.endpoint.is_empty() {
                p.add(
                    "redis.url",
                    "and redis.endpoint are both set: give one (the URL for local use, the \
                     endpoint with redis.port, redis.tls and redis.auth_secret_arn on AWS)",
                );
            } else if redis.tls && redis.url.starts_with("redis://") {
                p.add(
                    "redis.tls",
                    "is true but redis.url is plain redis://: use rediss:// for TLS",
                );
            }
        }
        if !redis.endpoint.is_empty() && !is_host_name(&redis.endpoint) {
            p.add(
                "redis.endpoint",
                "must be a host name alone (no scheme, no port: the port is redis.port)",
            );
        }
        if redis.port == 0 {
            p.add("redis.port", "must be within [1, 65535]");
        }
        if !redis.auth_secret_arn.is_empty() && !redis.is_configured() {
            p.add(
                "redis.auth_secret_arn",
                "is set but neither redis.endpoint nor redis.url is",
            );
        }
        if redis.key_prefix.len() > 128 || has_space_or_control(&redis.key_prefix) {
            p.add(
                "redis.key_prefix",
                "must be at most 128 bytes, without spaces or control characters",
            );
        }

        let mongodb = &self.mongodb;
        if !mongodb.uri.is_empty() {
            let scheme_ok =
                mongodb.uri.starts_with("mongodb://") || mongodb.uri.starts_with("mongodb+srv://");
            if !scheme_ok || has_space_or_control(&mongodb.uri) {
                p.add(
                    "mongodb.uri",
                    "must be a connection string starting mongodb:// or mongodb+srv://",
                );
            } else if !mongodb.secret_arn.is_empty() {
                p.add(
                    "mongodb.uri",
                    "and mongodb.secret_arn are both set: give one",
                );
            }
        }
        let bad_db_char = |c: char| "/\\. \"$*<>:|?".contains(c) || c.is_control();
        if mongodb.database.is_empty()
            || mongodb.database.len() > 63
            || mongodb.database.contains(bad_db_char)
        {
            p.add(
                "mongodb.database",
                "must be a MongoDB database name: 1 to 63 bytes, none of / \\ . space \" $ * < > \
                 : | ?",
            );
        }

        let opensearch = &self.opensearch;
        if !opensearch.endpoint.is_empty() && !is_http_endpoint(&opensearch.endpoint) {
            p.add(
                "opensearch.endpoint",
                "must be a URL like https://<collection id>.<region>.aoss.amazonaws.com",
            );
        }
        if !is_index_name(&opensearch.index) {
            p.add(
                "opensearch.index",
                "must be an OpenSearch index name: lowercase, 1 to 255 bytes, not starting with \
                 _ - or +, none of \\ / * ? \" < > | , # : or spaces",
            );
        }

        for (key, arn) in [
            ("redis.auth_secret_arn", &redis.auth_secret_arn),
            ("mongodb.secret_arn", &mongodb.secret_arn),
        ] {
            if !arn.is_empty() && !is_secret_arn(arn) {
                p.add(
                    key,
                    "must be a Secrets Manager ARN: \
                     arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME",
                );
            }
        }
    }

    /// `[worker]`, `[serve]` and `[live]`.
    fn process_problems(&self, p: &mut Problems) {
        let w = &self.worker;
        if !(10..=43_200).contains(&w.visibility_timeout_s) {
            p.add(
                "worker.visibility_timeout_s",
                "must be within [10, 43200] seconds (SQS allows at most 12 h)",
            );
        }
        if !w.listen.is_empty() && w.listen.parse::<SocketAddr>().is_err() {
            p.add(
                "worker.listen",
                "must be an IP address and port such as 0.0.0.0:9187, or empty for no server",
            );
        }
        if w.drain_timeout_s > 3600 {
            p.add("worker.drain_timeout_s", "must be at most 3600 seconds");
        }
        for (key, n) in [
            ("worker.ingest_consumers", w.ingest_consumers),
            ("worker.transcribe_consumers", w.transcribe_consumers),
        ] {
            if n > 1024 {
                p.add(key, "must be within [0, 1024] (0 = automatic)");
            }
        }
        if !(1..=1024).contains(&w.index_consumers) {
            p.add("worker.index_consumers", "must be within [1, 1024]");
        }
        if w.poll_wait_s > 20 {
            p.add(
                "worker.poll_wait_s",
                "must be at most 20 seconds (SQS's long-polling limit)",
            );
        }
        let base_ok = w.retry_base_s > 0.0 && w.retry_base_s <= 3600.0;
        if !base_ok {
            p.add(
                "worker.retry_base_s",
                "must be greater than 0 and at most 3600 seconds",
            );
        }
        let max_ok = w.retry_max_s > 0.0
            && w.retry_max_s <= 43_200.0
            && (!base_ok || w.retry_max_s >= w.retry_base_s);
        if !max_ok {
            p.add(
                "worker.retry_max_s",
                "must be within [worker.retry_base_s, 43200] seconds (SQS delays a message at \
                 most 12 h)",
            );
        }
        for (key, addr) in [
            ("serve.listen", &self.serve.listen),
            ("live.listen", &self.live.listen),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                p.add(key, "must be an IP address and port such as 0.0.0.0:8080");
            }
        }
    }

    /// What a worker of `stage` needs beyond [`Config::validate`]; `callpipe worker` calls it
    /// for each stage it runs, before it starts anything. Fails with the first problem;
    /// [`Config::stage_problems`] lists them all.
    pub fn check_stage(&self, stage: Stage) -> Result<(), ConfigError> {
        match self.stage_problems(stage).into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// The rule: the queues a stage reads and writes ([`QueueConfig::stage_keys`]) are either
    /// all SQS or all in-process. One in-process end would strand messages in a queue that no
    /// other process can see: the ingest stage sends plans to transcribe and the calls it
    /// rejects to index, so with SQS it needs `ingest_url`, `transcribe_url` and `index_url`;
    /// transcribe needs `transcribe_url` and `index_url`; index needs `index_url`. Checked for
    /// every stage of `--stage all`, which comes to all three URLs or none. And a stage on SQS
    /// needs `storage.object_store = "s3"`: its workers run on other machines, which cannot
    /// read this one's data directory.
    pub fn stage_problems(&self, stage: Stage) -> Vec<ConfigError> {
        let mut p = Problems::default();
        let queues = QueueConfig::stage_keys(stage);
        let all: Vec<Stage> = queues.reads.iter().chain(queues.writes).copied().collect();
        let set: Vec<Stage> = all
            .iter()
            .copied()
            .filter(|s| !self.queue.url(*s).is_empty())
            .collect();
        if set.is_empty() {
            return p.0;
        }
        let list = |stages: &[Stage]| {
            stages
                .iter()
                .map(|s| QueueConfig::key(*s))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        let uses = if queues.writes.is_empty() {
            format!("the {stage} stage reads {}", list(queues.reads))
        } else {
            format!(
                "the {stage} stage reads {} and writes {}",
                list(queues.reads),
                list(queues.writes)
            )
        };
        for missing in all.iter().filter(|s| !set.contains(s)) {
            p.add(
                QueueConfig::key(*missing),
                format!(
                    "is empty but {} is set: {uses}; set all of them (SQS) or none (in-process \
                     queues, one process)",
                    QueueConfig::key(set[0])
                ),
            );
        }
        if self.storage.object_store != ObjectStoreKind::S3 {
            p.add(
                "storage.object_store",
                format!(
                    "must be \"s3\" when the {stage} stage's queues are SQS: workers on other \
                     machines cannot read this machine's data directory"
                ),
            );
        }
        p.0
    }

    /// A copy that is safe to print: the password of `redis.url` and `mongodb.uri` (the only
    /// keys that can hold one) replaced by `***`.
    pub fn redacted(&self) -> Config {
        let mut config = self.clone();
        config.redis.url = redact_url(&self.redis.url).into_owned();
        config.mongodb.uri = redact_url(&self.mongodb.uri).into_owned();
        config
    }
}

/// `scheme://user:password@host...` with the password replaced by `***` (the whole user info
/// when it has no `:`, as Redis reads a lone one as the password). The user info ends at the
/// last `@` before the path; a password with an unescaped `/` or `?` makes it end at the last
/// `@` of all, which may hide more than the password, never less.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(url);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@').or_else(|| rest.rfind('@'));
    let Some(at) = at else {
        return Cow::Borrowed(url);
    };
    let user_info = &rest[..at];
    let masked = match user_info.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    Cow::Owned(format!("{}{masked}{}", &url[..scheme_end], &rest[at..]))
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

fn has_space_or_control(text: &str) -> bool {
    text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// S3's bucket naming rules, for a non-empty name.
fn bucket_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return None;
    }
    let chars_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = (3..=63).contains(&name.len())
        && chars_ok
        && ends_ok(name.bytes().next())
        && ends_ok(name.bytes().last())
        && !name.contains("..");
    (!ok).then_some(
        "must be an S3 bucket name (3 to 63 of a-z 0-9 . -, starting and ending with a letter \
         or digit), not a URI",
    )
}

/// `https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`, or `http://` for a local server.
fn queue_url_problem(url: &str) -> Option<&'static str> {
    let problem = "must be an SQS queue URL like \
                   https://sqs.us-east-1.amazonaws.com/123456789012/callpipe-ingest";
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Some(problem);
    };
    let Some((host, path)) = rest.split_once('/') else {
        return Some(problem);
    };
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let name_ok = (1..=80).contains(&name.trim_end_matches(".fifo").len())
        && name
            .trim_end_matches(".fifo")
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if host.is_empty() || has_space_or_control(url) || !name_ok {
        return Some(problem);
    }
    None
}

fn is_http_endpoint(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split('/').next().unwrap_or("");
        !host.is_empty() && !has_space_or_control(url)
    })
}

/// A DNS name or an IPv4 address: no scheme, no port, no path.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// OpenSearch's index naming rules.
fn is_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with(['_', '-', '+'])
        && !name
            .chars()
            .any(|c| c.is_ascii_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c))
}

/// `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME`.
fn is_secret_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    let [prefix, partition, service, region, account, kind, name] = parts[..] else {
        return false;
    };
    prefix == "arn"
        && partition.starts_with("aws")
        && service == "secretsmanager"
        && !region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && kind == "secret"
        && !name.is_empty()
        && !has_space_or_control(arn)
}

#[cfg(test)]
// `figment::Jail` closures return its (large) error type by value.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_and_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "callpipe.toml",
                "[ingest]\nmax_duration_s = 60\nstereo_roles = [\"customer\", \"agent\"]\n",
            )?;
            jail.set_env("CALLPIPE_INGEST__VAD__THRESHOLD", "0.7");
            jail.set_env("CALLPIPE_CONFIG", "callpipe.toml");
            jail.set_env("CALLPIPE_BIN", "/usr/local/bin/callpipe");
            let config = Config::load(Some(Path::new("callpipe.toml"))).unwrap();
            assert_eq!(config.ingest.max_duration_s, 60.0);
            assert_eq!(config.ingest.stereo_roles, [Role::Customer, Role::Agent]);
            assert_eq!(config.ingest.vad.threshold, 0.7);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[ingest]\nmax_duration = 60\n")?;
            let err = Config::load(Some(Path::new("typo.toml"))).unwrap_err();
            assert!(err.to_string().contains("max_duration"), "{err}");

            jail.create_file("bad.toml", "[ingest.vad]\nthreshold = 3.0\n")?;
            let err = Config::load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(err.to_string().contains("ingest.vad.threshold"), "{err}");
            Ok(())
        });
    }

    fn with_vad(edit: impl FnOnce(&mut VadConfig)) -> Result<(), ConfigError> {
        let mut config = Config::default();
        edit(&mut config.ingest.vad);
        config.validate()
    }

    /// The key an invalid config is rejected for; the message must name it too.
    fn rejected_key(result: Result<(), ConfigError>) -> &'static str {
        match result {
            Err(err @ ConfigError::Invalid { key, .. }) => {
                assert!(err.to_string().contains(key), "{err}");
                key
            }
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn vad_settings_that_cannot_shape_segments_are_rejected() {
        // Once hung the segment builder: the padding alone fills the 1 s cap.
        let hang = with_vad(|v| {
            v.pad_s = 0.5;
            v.max_segment_s = 1.0;
        });
        assert_eq!(rejected_key(hang), "ingest.vad.pad_s");

        let long_blips = with_vad(|v| {
            v.max_segment_s = 2.0;
            v.pad_s = 0.25;
            v.min_speech_s = 1.6;
        });
        assert_eq!(rejected_key(long_blips), "ingest.vad.min_speech_s");

        let long_bridge = with_vad(|v| {
            v.max_segment_s = 5.0;
            v.merge_gap_s = 2.0;
        });
        assert_eq!(rejected_key(long_bridge), "ingest.vad.merge_gap_s");

        // The limits themselves are accepted.
        with_vad(|v| {
            v.max_segment_s = 1.0;
            v.pad_s = 0.25;
            v.min_speech_s = 0.5;
            v.merge_gap_s = 0.125;
        })
        .unwrap();
        assert_eq!(
            rejected_key(with_vad(|v| v.pad_s = f64::NAN)),
            "ingest.vad.pad_s"
        );
    }

    #[test]
    fn call_memory_budget_must_be_positive() {
        let mut config = Config::default();
        config.ingest.max_call_memory_mb = 0;
        assert_eq!(rejected_key(config.validate()), "ingest.max_call_memory_mb");
        config.ingest.max_call_memory_mb = 64;
        config.validate().unwrap();
    }

    /// The keys of every problem of `config`, in order.
    fn problem_keys(config: &Config) -> Vec<&'static str> {
        config
            .problems()
            .iter()
            .map(|e| {
                let key = e.key().expect("an invalid key");
                assert!(e.to_string().contains(key), "{e}");
                key
            })
            .collect()
    }

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:callpipe-x-AbCdEf";
    const SQS: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/callpipe-dev";

    /// A fleet's config: every backend in the cloud, every queue on SQS.
    fn cloud() -> Config {
        let mut c = Config::default();
        c.storage.object_store = ObjectStoreKind::S3;
        c.storage.artifacts_bucket = "callpipe-dev-artifacts".into();
        c.storage.recordings_bucket = "callpipe-dev-recordings".into();
        c.storage.metadata = MetadataKind::Mongodb;
        c.mongodb.secret_arn = ARN.into();
        c.storage.vector_index = VectorIndexKind::Opensearch;
        c.opensearch.endpoint = "https://abc123.us-east-1.aoss.amazonaws.com".into();
        c.queue.ingest_url = format!("{SQS}-ingest");
        c.queue.transcribe_url = format!("{SQS}-transcribe");
        c.queue.index_url = format!("{SQS}-index");
        c.redis.endpoint = "master.callpipe-dev.abc123.use1.cache.amazonaws.com".into();
        c.redis.tls = true;
        c.redis.auth_secret_arn = ARN.into();
        c
    }

    #[test]
    fn a_cloud_config_is_valid_for_every_stage() {
        let c = cloud();
        assert_eq!(problem_keys(&c), Vec::<&str>::new());
        for stage in Stage::ALL {
            c.check_stage(stage).unwrap();
        }
        // And the defaults are ready for every stage in one process.
        for stage in Stage::ALL {
            Config::default().check_stage(stage).unwrap();
        }
    }

    #[test]
    fn each_cloud_backend_needs_its_settings() {
        let mut c = cloud();
        c.storage.artifacts_bucket.clear();
        c.mongodb.secret_arn.clear();
        c.opensearch.endpoint.clear();
        assert_eq!(
            problem_keys(&c),
            [
                "storage.artifacts_bucket",
                "mongodb.secret_arn",
                "opensearch.endpoint"
            ]
        );
        // A URI instead of the secret does as well.
        c.mongodb.uri = "mongodb://localhost:27017".into();
        assert!(!problem_keys(&c).contains(&"mongodb.secret_arn"));
    }

    #[test]
    fn the_cloud_kinds_parse_from_toml_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "cloud.toml",
                "[storage]\nobject_store = \"s3\"\nmetadata = \"mongodb\"\n\
                 vector_index = \"opensearch\"\n",
            )?;
            jail.set_env(
                "CALLPIPE_STORAGE__ARTIFACTS_BUCKET",
                "callpipe-dev-artifacts",
            );
            jail.set_env("CALLPIPE_MONGODB__SECRET_ARN", ARN);
            jail.set_env(
                "CALLPIPE_OPENSEARCH__ENDPOINT",
                "https://x.aoss.amazonaws.com",
            );
            jail.set_env("CALLPIPE_REDIS__PORT", "6380");
            jail.set_env("CALLPIPE_REDIS__TLS", "true");
            jail.set_env("CALLPIPE_REDIS__ENDPOINT", "redis.internal");
            jail.set_env("CALLPIPE_WORKER__VISIBILITY_TIMEOUT_S", "900");
            jail.set_env("CALLPIPE_SERVE__LISTEN", "0.0.0.0:8080");
            let c = Config::load(Some(Path::new("cloud.toml"))).unwrap();
            assert_eq!(c.storage.object_store, ObjectStoreKind::S3);
            assert_eq!(c.storage.metadata, MetadataKind::Mongodb);
            assert_eq!(c.storage.vector_index, VectorIndexKind::Opensearch);
            assert_eq!((c.redis.port, c.redis.tls), (6380, true));
            assert_eq!(c.worker.visibility_timeout_s, 900);
            assert_eq!(c.serve.listen, "0.0.0.0:8080");

            jail.set_env("CALLPIPE_QUEUE__INGEST", "https://example.com/q");
            let err = Config::load(Some(Path::new("cloud.toml"))).unwrap_err();
            assert!(err.to_string().contains("ingest"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn malformed_names_urls_and_arns_name_their_key() {
        let mut c = cloud();
        c.storage.artifacts_bucket = "s3://callpipe-dev-artifacts".into();
        c.queue.index_url = "callpipe-dev-index".into();
        c.redis.endpoint = "rediss://master.example.com:6379".into();
        c.mongodb.secret_arn = "callpipe/mongodb".into();
        c.opensearch.endpoint = "abc123.aoss.amazonaws.com".into();
        c.opensearch.index = "Segments".into();
        c.mongodb.database = "call.pipe".into();
        assert_eq!(
            problem_keys(&c),
            [
                "storage.artifacts_bucket",
                "queue.index_url",
                "redis.endpoint",
                "mongodb.database",
                "opensearch.endpoint",
                "opensearch.index",
                "mongodb.secret_arn",
            ]
        );
        assert!(is_secret_arn(
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:a:b"
        ));
        assert!(!is_secret_arn(
            "arn:aws:ssm:us-east-1:123456789012:parameter/x"
        ));
        assert!(queue_url_problem("http://127.0.0.1:5000/123456789012/ingest").is_none());
        assert!(queue_url_problem("https://sqs.us-east-1.amazonaws.com/").is_some());
    }

    #[test]
    fn queues_are_distinct_and_backfill_needs_ingest() {
        let mut c = cloud();
        c.queue.index_url = c.queue.transcribe_url.clone();
        assert_eq!(problem_keys(&c), ["queue.index_url"]);

        let mut c = Config::default();
        c.queue.backfill_url = format!("{SQS}-backfill");
        assert_eq!(problem_keys(&c), ["queue.backfill_url"]);
    }

    #[test]
    fn redis_and_mongodb_take_one_way_to_connect() {
        let mut c = cloud();
        c.redis.url = "redis://127.0.0.1:6379".into();
        c.mongodb.uri = "mongodb://127.0.0.1:27017".into();
        assert_eq!(problem_keys(&c), ["redis.url", "mongodb.uri"]);

        let mut c = Config::default();
        c.redis.url = "redis://127.0.0.1:6379".into();
        c.redis.tls = true;
        c.redis.port = 0;
        assert_eq!(problem_keys(&c), ["redis.tls", "redis.port"]);
        c.redis.url = "rediss://127.0.0.1:6379".into();
        c.redis.port = 6379;
        c.validate().unwrap();

        let mut c = Config::default();
        c.redis.auth_secret_arn = ARN.into();
        assert_eq!(problem_keys(&c), ["redis.auth_secret_arn"]);
    }

    #[test]
    fn worker_settings_stay_within_what_sqs_allows() {
        let worker = |edit: fn(&mut WorkerConfig)| {
            let mut c = Config::default();
            edit(&mut c.worker);
            problem_keys(&c)
        };
        assert_eq!(
            worker(|w| w.visibility_timeout_s = 5),
            ["worker.visibility_timeout_s"]
        );
        assert_eq!(
            worker(|w| w.visibility_timeout_s = 43_201),
            ["worker.visibility_timeout_s"]
        );
        assert!(worker(|w| w.visibility_timeout_s = 43_200).is_empty());
        assert_eq!(worker(|w| w.poll_wait_s = 21), ["worker.poll_wait_s"]);
        assert!(worker(|w| w.poll_wait_s = 0).is_empty());
        assert_eq!(worker(|w| w.listen = "localhost".into()), ["worker.listen"]);
        assert!(worker(|w| w.listen.clear()).is_empty());
        assert_eq!(
            worker(|w| w.index_consumers = 0),
            ["worker.index_consumers"]
        );
        assert_eq!(
            worker(|w| w.retry_base_s = f64::NAN),
            ["worker.retry_base_s"]
        );
        assert_eq!(worker(|w| w.retry_max_s = 1.0), ["worker.retry_max_s"]);
        assert_eq!(worker(|w| w.retry_max_s = 50_000.0), ["worker.retry_max_s"]);

        let mut c = Config::default();
        c.serve.listen = "8080".into();
        c.live.listen = String::new();
        assert_eq!(problem_keys(&c), ["serve.listen", "live.listen"]);
    }

    #[test]
    fn a_stage_has_all_its_queues_on_sqs_or_none() {
        let mut c = cloud();
        c.queue.index_url.clear();
        // Ingest sends the calls it rejects to index; transcribe sends everything there.
        for stage in [Stage::Ingest, Stage::Transcribe] {
            let problems = c.stage_problems(stage);
            let keys: Vec<_> = problems.iter().filter_map(ConfigError::key).collect();
            assert_eq!(keys, ["queue.index_url"], "{stage}");
            assert!(
                problems[0].to_string().contains("or none"),
                "{}",
                problems[0]
            );
        }
        c.check_stage(Stage::Index).unwrap();

        let mut c = cloud();
        c.queue.ingest_url.clear();
        c.queue.transcribe_url.clear();
        c.check_stage(Stage::Transcribe).unwrap_err();
        c.check_stage(Stage::Ingest).unwrap_err();
        c.check_stage(Stage::Index).unwrap();

        // Workers on SQS run on other machines: a local object store cannot be shared.
        let mut c = cloud();
        c.storage.object_store = ObjectStoreKind::Local;
        for stage in Stage::ALL {
            let err = c.check_stage(stage).unwrap_err();
            assert_eq!(err.key(), Some("storage.object_store"), "{err}");
        }
        c.queue = QueueConfig::default();
        for stage in Stage::ALL {
            c.check_stage(stage).unwrap();
        }
    }

    #[test]
    fn passwords_never_print() {
        let mut c = Config::default();
        c.redis.url = "rediss://default:s3cr3t@cache.example.com:6379/0".into();
        c.mongodb.uri = "mongodb+srv://app:p%40ss@cluster0.example.net/?retryWrites=true".into();
        let shown = format!("{:?} {}", c, serde_json::to_string(&c.redacted()).unwrap());
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("p%40ss"),
            "{shown}"
        );
        assert_eq!(
            c.redacted().redis.url,
            "rediss://default:***@cache.example.com:6379/0"
        );
        assert_eq!(
            c.redacted().mongodb.uri,
            "mongodb+srv://app:***@cluster0.example.net/?retryWrites=true"
        );
        assert_eq!(
            redact_url("redis://token@host:6379"),
            "redis://***@host:6379"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        // An unescaped `/` in the password hides more, never less.
        let odd = redact_url("mongodb://u:pa/ss@host/db");
        assert!(!odd.contains("ss@") && !odd.contains("pa/"), "{odd}");
        assert_eq!(redact_url(""), "");
    }
}
