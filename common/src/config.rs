//! Configuration: one TOML file plus `CALLPIPE_*` environment overrides.
//!
//! Every key has a default, so `callpipe` runs with no file at all. Each section is one
//! documented struct with `deny_unknown_fields`, so a typo fails at start-up with the key's
//! name instead of being silently ignored. Environment variables override the file:
//! `CALLPIPE_INGEST__MAX_DURATION_S=7200` sets `[ingest] max_duration_s`.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::audio::Role;

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
    /// The `k` of reciprocal rank fusion, `score = sum of 1 / (k + rank)`.
    pub rrf_k: f32,
    /// Units of context shown before and after each hit.
    pub context: usize,
    /// Results returned when `--limit` is not given.
    pub limit: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            candidates: 50,
            rrf_k: 60.0,
            context: 1,
            limit: 10,
        }
    }
}

/// Which implementation backs the object store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectStoreKind {
    /// A directory: `<data_dir>/objects`.
    #[default]
    Local,
}

/// Which implementation backs the metadata store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataKind {
    /// SQLite with FTS5: `<data_dir>/metadata.db`.
    #[default]
    Sqlite,
}

/// Which implementation backs the vector index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VectorIndexKind {
    /// Exact search in memory, persisted in `<data_dir>/vectors.db`.
    #[default]
    Embedded,
}

/// `[storage]`: the data directory and the backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the embedded backends keep their files (`--data-dir` overrides).
    pub data_dir: PathBuf,
    pub object_store: ObjectStoreKind,
    pub metadata: MetadataKind,
    pub vector_index: VectorIndexKind,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("callpipe-data"),
            object_store: ObjectStoreKind::Local,
            metadata: MetadataKind::Sqlite,
            vector_index: VectorIndexKind::Embedded,
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

impl Config {
    /// Defaults, then `file` if given, then `CALLPIPE_*` environment variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
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
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let ingest = &self.ingest;
        if ingest.max_file_bytes == 0 {
            return invalid("ingest.max_file_bytes", "must be greater than 0");
        }
        if ingest.max_duration_s.is_nan() || ingest.max_duration_s <= 0.0 {
            return invalid("ingest.max_duration_s", "must be greater than 0");
        }
        // MiB to bytes must not overflow; 1 TiB is far past any machine this runs on.
        if !(1..=1 << 20).contains(&ingest.max_call_memory_mb) {
            return invalid("ingest.max_call_memory_mb", "must be within [1, 1048576]");
        }
        let vad = &ingest.vad;
        if !(0.0..=1.0).contains(&vad.threshold) {
            return invalid("ingest.vad.threshold", "must be within [0, 1]");
        }
        if !(1.0..=30.0).contains(&vad.max_segment_s) {
            return invalid("ingest.vad.max_segment_s", "must be within [1, 30]");
        }
        for (key, value) in [
            ("ingest.vad.min_speech_s", vad.min_speech_s),
            ("ingest.vad.merge_gap_s", vad.merge_gap_s),
            ("ingest.vad.pad_s", vad.pad_s),
        ] {
            if !(0.0..=10.0).contains(&value) {
                return invalid(key, "must be within [0, 10] seconds");
            }
        }
        if !(-120.0..=0.0).contains(&vad.gate_dbfs) {
            return invalid("ingest.vad.gate_dbfs", "must be within [-120, 0]");
        }
        // The length cap splits speech into pieces of at most `max_segment_s - 2 * pad_s` and
        // pads each. So padding must leave most of a segment to speech (with `2 * pad_s` near
        // `max_segment_s` the pieces shrink to single frames), the shortest speech kept must fit
        // in one piece, and a bridged pause must stay shorter than the shortest piece the cap
        // cuts (half of one; a quarter leaves room for rounding to 16 ms frames), or a piece
        // could hold nothing but the pause, which Whisper fills with invented words.
        if vad.pad_s * 4.0 > vad.max_segment_s {
            return invalid(
                "ingest.vad.pad_s",
                "must be at most a quarter of ingest.vad.max_segment_s (2 * pad_s is padding \
                 inside every segment)",
            );
        }
        let speech_s = vad.max_segment_s - 2.0 * vad.pad_s;
        if vad.min_speech_s > speech_s {
            return invalid(
                "ingest.vad.min_speech_s",
                "must be at most ingest.vad.max_segment_s - 2 * ingest.vad.pad_s (the speech \
                 one segment holds)",
            );
        }
        if vad.merge_gap_s * 4.0 > speech_s {
            return invalid(
                "ingest.vad.merge_gap_s",
                "must be at most (ingest.vad.max_segment_s - 2 * ingest.vad.pad_s) / 4, so the \
                 length cap never cuts a segment out of a bridged pause",
            );
        }
        let t = &self.transcribe;
        if t.model.trim().is_empty() {
            return invalid("transcribe.model", "must name a model");
        }
        if !limits::BATCH_SIZE.contains(&t.batch_size) {
            return invalid("transcribe.batch_size", "must be within [1, 64]");
        }
        if !limits::BEAM_SIZE.contains(&t.beam_size) {
            return invalid("transcribe.beam_size", "must be within [1, 16]");
        }
        if !limits::REPLICAS.contains(&t.replicas) {
            return invalid(
                "transcribe.replicas",
                "must be within [0, 256] (0 = one per core)",
            );
        }
        if !limits::THREADS.contains(&self.pool.threads) {
            return invalid(
                "pool.threads",
                "must be within [0, 1024] (0 = one per core)",
            );
        }
        if t.threads_per_replica > 256 {
            return invalid("transcribe.threads_per_replica", "must be at most 256");
        }
        if self.index.embed_threads > 256 {
            return invalid(
                "index.embed_threads",
                "must be at most 256 (0 = one per core)",
            );
        }
        if self.run.calls_in_flight > 1024 {
            return invalid(
                "run.calls_in_flight",
                "must be at most 1024 (0 = automatic)",
            );
        }
        if !(1..=16).contains(&t.best_of) {
            return invalid("transcribe.best_of", "must be within [1, 16]");
        }
        if t.threads_per_replica == 0 {
            return invalid("transcribe.threads_per_replica", "must be at least 1");
        }
        if t.temperatures.is_empty() || t.temperatures.iter().any(|x| !(0.0..=2.0).contains(x)) {
            return invalid(
                "transcribe.temperatures",
                "must be a non-empty list of values within [0, 2]",
            );
        }
        let code_ok = t.language.len() <= 3 && t.language.chars().all(|c| c.is_ascii_lowercase());
        if !code_ok {
            return invalid(
                "transcribe.language",
                "must be an ISO 639-1 code such as `en`",
            );
        }
        let index = &self.index;
        if index.embedding_model.trim().is_empty() {
            return invalid("index.embedding_model", "must name a model");
        }
        if !(1.0..=120.0).contains(&index.unit_max_s) {
            return invalid("index.unit_max_s", "must be within [1, 120] seconds");
        }
        if !(1..=400).contains(&index.unit_max_words) {
            return invalid("index.unit_max_words", "must be within [1, 400]");
        }
        if !(0.0..=30.0).contains(&index.unit_max_gap_s) {
            return invalid("index.unit_max_gap_s", "must be within [0, 30] seconds");
        }
        let search = &self.search;
        if !(1..=10_000).contains(&search.candidates) {
            return invalid("search.candidates", "must be within [1, 10000]");
        }
        if search.rrf_k.is_nan() || search.rrf_k < 0.0 {
            return invalid("search.rrf_k", "must be 0 or more");
        }
        if search.context > 20 {
            return invalid("search.context", "must be at most 20");
        }
        if !limits::SEARCH_LIMIT.contains(&search.limit) {
            return invalid("search.limit", "must be within [1, 1000]");
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return invalid("storage.data_dir", "must name a directory");
        }
        if self.run.extensions.is_empty() {
            return invalid("run.extensions", "must list at least one extension");
        }
        Ok(())
    }
}

#[cfg(test)]
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
}
