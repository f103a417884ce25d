//! The Whisper engine: CTranslate2 replicas and the decoding loop around them.
//!
//! CTranslate2 gives encode, one decoding pass, language scores and cross-attention alignment.
//! Everything else Whisper needs is here, following faster-whisper's `transcribe.py`:
//! - the prompt (`<|startoftranscript|>`, plus `<|lang|><|transcribe|>` for multilingual models);
//! - timestamp tokens parsed into segments, and the seek that moves on to whatever the model
//!   did not finish;
//! - temperature fallback on the compression-ratio and log-probability thresholds;
//! - the no-speech gate;
//! - word timestamps and probabilities from `align()`.
//!
//! Windows are decoded in batches: one encoder call and one decoding call for the batch, with
//! a single-window retry only for the windows that need a fallback temperature.
//!
//! # Bounded work
//! Noise or music that VAD let through can make every decode fail the thresholds, and Whisper's
//! loop would then run the whole temperature ladder on every pass of every window, with a seek
//! that may move a frame at a time. The work is bounded at three levels:
//! - one decode generates at most 224 tokens: CTranslate2 caps it at `min(max_length / 2,
//!   max_length - prompt)`, Whisper's `sample_len`, with `max_length` 448 (prompt included);
//! - one window gets at most [`max_passes_per_window`] passes and
//!   [`MAX_FALLBACKS_PER_WINDOW`] fallback decodes over all of them;
//! - one call shares a [`FallbackBudget`] of fallback decodes proportional to its audio; once
//!   it is spent, each decode keeps its best result so far and a warning names the call.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use callpipe_common::config::{Device, TranscribeConfig};
use ct2rs::sys::{self, ComputeType, StorageView, WhisperOptions};

use crate::mel::{LogMel, HOP, WINDOW_FRAMES};
use crate::model::{self, ModelInfo};
use crate::tokenizer::Tokenizer;

/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per timestamp token.
const INPUT_STRIDE: usize = 2;
/// Alignment frames per second (the encoder halves the 100 Hz mel rate).
const TOKENS_PER_SECOND: f64 = 50.0;
/// Speech that starts this soon (frames) after the last timestamp counts as transcribed.
const RESUME_MARGIN_FRAMES: usize = 50;
/// Least a pass that produced no text moves the seek (1 s).
const MIN_EMPTY_ADVANCE_FRAMES: usize = 100;
/// The decoder's context; prompts plus output must fit. CTranslate2 generates at most half of
/// it per decode (224 tokens), which bounds the tokens of one pass.
const MAX_LENGTH: usize = 448;
/// Passes every window may take. Speech needs one to three: the model stops before the end of
/// the window and decoding resumes at its last unfinished segment.
const BASE_PASSES_PER_WINDOW: usize = 4;
/// Passes no window may exceed, however many pieces it holds. Without a cap a decode that
/// keeps ending on a timestamp just after the seek moves it a frame or two per pass: up to
/// 1500 passes of one window.
const MAX_PASSES_PER_WINDOW: usize = 32;
/// Fallback decodes one window may spend over all its passes: two default ladders (five
/// temperatures each). A window that still fails the thresholds after that is noise or music,
/// and more sampling does not find speech in it; it also caps a long configured ladder.
pub const MAX_FALLBACKS_PER_WINDOW: usize = 10;
/// A call's fallback budget starts at two full default ladders, so a short call keeps Whisper's
/// behaviour unchanged ...
pub const FALLBACK_BUDGET_BASE: usize = 10;
/// ... and grows by two decodes per minute of audio: one per 30 s window on average. On speech
/// only a few windows in a hundred need a fallback, so the budget binds only on calls that are
/// mostly noise, where it holds fallback work to about one extra decode per window instead of
/// five.
pub const FALLBACK_BUDGET_PER_MINUTE: usize = 2;
/// Least number of tokens a decode may generate, however short its audio: room for the
/// prompt's echo, two timestamps and a few words.
const MIN_NEW_TOKENS: usize = 16;
/// Tokens per second of audio a decode may generate ([`max_new_tokens`]).
const TOKENS_PER_SECOND_CAP: usize = 12;
/// Punctuation Whisper's word timing glues to the next or the previous word.
const PREPEND_PUNCTUATION: &str = "\"'“¿([{-";
const APPEND_PUNCTUATION: &str = "\"'.。,，!！?？:：”)]}、";

/// An engine failure. CTranslate2 reports errors as text; the model path is added here.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error("{path}: cannot load the model: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error(
        "`{0}` is not a CTranslate2 compute type (int8, int8_float32, float32, float16, auto, ...)"
    )]
    ComputeType(String),
    #[error("the engine failed: {0}")]
    Inference(String),
}

impl EngineError {
    /// A model that cannot be found or loaded is this machine's problem; an inference failure
    /// is taken as the input's (the same engine transcribes other calls fine).
    pub fn kind(&self) -> callpipe_common::ErrorKind {
        match self {
            EngineError::Model(_) | EngineError::Load { .. } | EngineError::ComputeType(_) => {
                callpipe_common::ErrorKind::Environment
            }
            EngineError::Inference(_) => callpipe_common::ErrorKind::Permanent,
        }
    }
}

fn inference(e: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(e.to_string())
}

/// One window of a batch: 16 kHz audio of at most 30 s, and the sample offsets where its
/// separately spoken pieces start. Decoding may resume at a piece if the model stops early,
/// and a segment that runs across the start of a piece is aligned into words, even when word
/// timestamps are off, so that it can be split at the seam.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub samples: &'a [f32],
    pub piece_starts: &'a [usize],
}

/// What one pass decoded of a window ([`Engine::decode_pass`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Pass {
    /// Segments in window time.
    pub segments: Vec<RawSegment>,
    /// The window sample where the model stopped before the end, so the rest is still to be
    /// transcribed; `None` once the window is done.
    pub rest_from: Option<usize>,
}

/// One item of a pass: a window, the mel frame it is decoded from, and what it may spend.
struct PassItem<'a> {
    window: BatchItem<'a>,
    seek: usize,
    budget: &'a FallbackBudget,
    /// The window's index in its batch, for log lines.
    label: usize,
}

/// The decoder prompt, as tokens for `generate` and as ids for `align`.
struct Prompt {
    tokens: Vec<String>,
    ids: Vec<usize>,
    /// Whether the decoder writes timestamp tokens.
    timestamps: bool,
}

fn check_budgets(
    windows: &[BatchItem<'_>],
    budgets: &[&FallbackBudget],
) -> Result<(), EngineError> {
    if budgets.len() == windows.len() {
        Ok(())
    } else {
        Err(inference(format!(
            "{} fallback budgets for {} windows",
            budgets.len(),
            windows.len()
        )))
    }
}

fn frames_to_s(frames: usize) -> f64 {
    frames as f64 * HOP as f64 / crate::SAMPLE_RATE as f64
}

/// Tokens one decode may generate over windows of `sizes` mel frames: about twice the fastest
/// speech (Whisper writes about 6 tokens per second of fast English, timestamps included),
/// plus a margin, and never more than CTranslate2's 224. A full window is unaffected; a short
/// stretch cannot run on for 224 tokens of hallucination, which is what made a fallback on a
/// one-second remainder cost more than a whole window.
fn max_new_tokens(sizes: impl Iterator<Item = usize>) -> usize {
    let frames = sizes.max().unwrap_or(0);
    let by_audio = MIN_NEW_TOKENS + frames * TOKENS_PER_SECOND_CAP / 100;
    by_audio.min(MAX_LENGTH / 2)
}

/// Whether a segment runs from one piece into the next: it starts before a piece's start and
/// ends after it, by more than timestamps drift.
fn crosses_a_seam(segments: &[RawSegment], piece_starts: &[usize]) -> bool {
    const SLACK_S: f64 = 0.1;
    piece_starts.iter().skip(1).any(|&start| {
        let seam = start as f64 / crate::SAMPLE_RATE as f64;
        segments
            .iter()
            .any(|s| s.start + SLACK_S < seam && s.end > seam + SLACK_S)
    })
}

/// A word, in seconds from the start of its window.
#[derive(Debug, Clone, PartialEq)]
pub struct RawWord {
    pub start: f64,
    pub end: f64,
    pub word: String,
    pub probability: f32,
}

/// A decoded segment, in seconds from the start of its window.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<usize>,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    pub words: Vec<RawWord>,
}

/// Passes a window of `pieces` VAD pieces may take: [`BASE_PASSES_PER_WINDOW`], plus one per
/// piece (decoding resumes at the next piece when the model claims the rest is silence but VAD
/// found speech there), at most [`MAX_PASSES_PER_WINDOW`].
pub fn max_passes_per_window(pieces: usize) -> usize {
    BASE_PASSES_PER_WINDOW
        .saturating_add(pieces)
        .min(MAX_PASSES_PER_WINDOW)
}

/// The fallback decodes a call of `samples` samples (16 kHz, all channels) may spend.
pub fn fallback_budget_for(samples: usize) -> usize {
    let per_minute = 60 * crate::SAMPLE_RATE as u64;
    let earned = samples as u64 * FALLBACK_BUDGET_PER_MINUTE as u64 / per_minute;
    FALLBACK_BUDGET_BASE.saturating_add(usize::try_from(earned).unwrap_or(usize::MAX))
}

/// The temperature-fallback decodes one call may still spend, shared by all its windows, on
/// whichever worker they are decoded. Once spent, a window that fails the thresholds keeps its
/// best decode so far, and one warning names the call.
#[derive(Debug)]
pub struct FallbackBudget {
    left: AtomicUsize,
    warned: AtomicBool,
    /// What the warning names: the call (and channel) the budget belongs to.
    call: String,
}

impl FallbackBudget {
    /// A budget of `decodes` fallback decodes for the call named `call` in logs.
    pub fn new(decodes: usize, call: impl Into<String>) -> Self {
        FallbackBudget {
            left: AtomicUsize::new(decodes),
            warned: AtomicBool::new(false),
            call: call.into(),
        }
    }

    /// The budget for a call of `samples` samples ([`fallback_budget_for`]).
    pub fn for_audio(samples: usize, call: impl Into<String>) -> Self {
        FallbackBudget::new(fallback_budget_for(samples), call)
    }

    /// Fallback decodes left.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Relaxed)
    }

    pub fn call(&self) -> &str {
        &self.call
    }

    /// Takes one decode; false once none is left.
    fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Warns, once per call, that fallbacks have stopped.
    fn warn_spent(&self, window: usize, seek: usize) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                call = %self.call,
                window,
                seek_s = seek as f64 * HOP as f64 / crate::SAMPLE_RATE as f64,
                "fallback budget spent: the rest of the call is decoded without temperature \
                 fallback (noisy audio?)"
            );
        }
    }
}

/// Why a fallback decode was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spent {
    Window,
    Call,
}

/// What one window may still spend on passes and fallback decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WindowAllowance {
    passes_left: usize,
    fallbacks_left: usize,
}

impl WindowAllowance {
    fn new(pieces: usize) -> Self {
        WindowAllowance {
            passes_left: max_passes_per_window(pieces),
            fallbacks_left: MAX_FALLBACKS_PER_WINDOW,
        }
    }

    /// Takes one pass; false once the window has had all of its passes.
    fn start_pass(&mut self) -> bool {
        match self.passes_left.checked_sub(1) {
            Some(n) => {
                self.passes_left = n;
                true
            }
            None => false,
        }
    }

    /// Takes one fallback decode from the window and from its call. The window's own cap is
    /// checked first, so a window at its cap leaves the call's budget to the others.
    fn take_fallback(&mut self, call: &FallbackBudget) -> Result<(), Spent> {
        if self.fallbacks_left == 0 {
            return Err(Spent::Window);
        }
        if !call.take() {
            return Err(Spent::Call);
        }
        self.fallbacks_left -= 1;
        Ok(())
    }
}

/// The decoding work an engine has done since it was loaded, summed over its replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeWork {
    /// Windows encoded (a batch of four counts four), fallback re-encodes included.
    pub encodes: u64,
    /// Passes: first decodes of a window from its seek, at temperature 0.
    pub passes: u64,
    /// Decodes at a fallback temperature.
    pub fallback_decodes: u64,
    /// Engine time per phase, summed over threads.
    pub phases: PhaseTimes,
}

/// Where engine time goes: nanoseconds per phase, summed over threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PhaseTimes {
    /// Log-mel spectrograms.
    pub mel_ns: u64,
    /// Encoder passes, fallback re-encodes included.
    pub encode_ns: u64,
    /// Decoding at temperature 0.
    pub generate_ns: u64,
    /// Decoding at fallback temperatures.
    pub fallback_ns: u64,
    /// Word alignment.
    pub align_ns: u64,
}

impl PhaseTimes {
    fn since(&self, e: &PhaseTimes) -> PhaseTimes {
        PhaseTimes {
            mel_ns: self.mel_ns.saturating_sub(e.mel_ns),
            encode_ns: self.encode_ns.saturating_sub(e.encode_ns),
            generate_ns: self.generate_ns.saturating_sub(e.generate_ns),
            fallback_ns: self.fallback_ns.saturating_sub(e.fallback_ns),
            align_ns: self.align_ns.saturating_sub(e.align_ns),
        }
    }
}

impl DecodeWork {
    /// The work done between `earlier` and `self`.
    pub fn since(&self, earlier: &DecodeWork) -> DecodeWork {
        DecodeWork {
            encodes: self.encodes.saturating_sub(earlier.encodes),
            passes: self.passes.saturating_sub(earlier.passes),
            fallback_decodes: self
                .fallback_decodes
                .saturating_sub(earlier.fallback_decodes),
            phases: self.phases.since(&earlier.phases),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Mel,
    Encode,
    Generate,
    Fallback,
    Align,
}

#[derive(Debug, Default)]
struct WorkCounters {
    encodes: AtomicU64,
    passes: AtomicU64,
    fallback_decodes: AtomicU64,
    /// Nanoseconds per [`Phase`], in its order.
    phases: [AtomicU64; 5],
}

impl WorkCounters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn time(&self, phase: Phase, since: Instant) {
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.phases[phase as usize].fetch_add(ns, Ordering::Relaxed);
    }

    fn phases(&self) -> PhaseTimes {
        let at = |p: Phase| self.phases[p as usize].load(Ordering::Relaxed);
        PhaseTimes {
            mel_ns: at(Phase::Mel),
            encode_ns: at(Phase::Encode),
            generate_ns: at(Phase::Generate),
            fallback_ns: at(Phase::Fallback),
            align_ns: at(Phase::Align),
        }
    }
}

/// A loaded model: a CTranslate2 pool of replicas, its vocabulary and the decoding settings.
/// It is `Sync`: any number of threads may call [`Engine::transcribe_batch`], and CTranslate2
/// hands each call to a free replica.
pub struct Engine {
    whisper: sys::Whisper,
    tokenizer: Tokenizer,
    info: ModelInfo,
    path: PathBuf,
    config: TranscribeConfig,
    replicas: usize,
    /// Whether the CPU kernels are Intel MKL's.
    mkl: bool,
    work: WorkCounters,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .field("replicas", &self.replicas)
            .field("info", &self.info)
            .finish()
    }
}

/// Whether the GPU path can run here; otherwise the one-line reason.
///
/// Checked before loading because the engine would only find out at the first matrix product,
/// in the middle of a call.
fn cuda_ready() -> Result<(), String> {
    if cfg!(feature = "engine-source") && !cfg!(feature = "cuda") {
        return Err(
            "transcribe.device is `cuda`, but this binary was built from source without \
                    the `cuda` feature (the default upstream-library build has it)"
                .into(),
        );
    }
    if sys::get_device_count(sys::Device::CUDA) == 0 {
        return Err(
            "transcribe.device is `cuda`, but no CUDA device is visible (no NVIDIA GPU, \
                    or no driver: libcuda.so.1)"
                .into(),
        );
    }
    // The upstream library loads cuBLAS at run time; a from-source CUDA build links it.
    if !cfg!(feature = "cuda") && !can_load("libcublas.so.12") {
        return Err(
            "transcribe.device is `cuda`, but cuBLAS (libcublas.so.12) is not installed: \
                    run scripts/install-engine.sh --cuda"
                .into(),
        );
    }
    Ok(())
}

/// Whether the engine's CPU kernels are Intel MKL's, by the library's own rule: `CT2_USE_MKL`
/// when set, else an Intel CPU. The from-source build has oneDNN only.
///
/// MKL is the faster of the two here (about a quarter on int8 tiny.en, one thread), but on
/// virtualised Xeons its `gemm_s8u8s32` divides by zero (SIGFPE) as soon as two threads run it
/// at once; one thread at a time, with intra-op threads inside it, is safe.
pub fn mkl_backend() -> bool {
    static MKL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MKL.get_or_init(|| {
        if cfg!(feature = "engine-source") {
            return false;
        }
        match std::env::var("CT2_USE_MKL") {
            Ok(v) => matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "on"),
            Err(_) => intel_cpu(),
        }
    })
}

fn intel_cpu() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .find(|l| l.starts_with("vendor_id"))
            .is_some_and(|l| l.contains("GenuineIntel"))
    })
}

/// Whether the dynamic loader finds `name` the way the engine library will (the binary's
/// rpath holds the engine's directory, where `install-engine.sh --cuda` puts cuBLAS).
fn can_load(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a NUL-terminated name; the handle is closed at once and nothing from the library
    // is called.
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

impl Engine {
    /// Validates and loads the model directory `dir`. `replicas` is the resolved count
    /// (the caller maps 0 to the core count).
    pub fn load(
        dir: &Path,
        config: &TranscribeConfig,
        replicas: usize,
    ) -> Result<Self, EngineError> {
        if config.device == Device::Cuda {
            cuda_ready().map_err(|reason| EngineError::Load {
                path: dir.to_owned(),
                reason,
            })?;
        }
        let info = model::validate(dir)?;
        let tokenizer = Tokenizer::load(dir, info.multilingual)?;
        let requested = replicas.max(1);
        let threads = config.threads_per_replica.max(1);
        let mkl = config.device == Device::Cpu && mkl_backend();
        // MKL's int8 GEMM dies (SIGFPE) when two threads run it at once on some CPUs, so on
        // MKL the engine is one replica whose intra-op threads do the work the replicas would.
        let (replicas, threads) = if mkl {
            (1, requested.saturating_mul(threads).min(256))
        } else {
            (requested, threads)
        };
        if mkl && requested > 1 {
            tracing::info!(
                replicas = requested,
                threads,
                "Intel MKL backend: one engine replica with the replicas' threads (set \
                 CT2_USE_MKL=0 for oneDNN and separate replicas)"
            );
        }
        let ct2_config = sys::Config {
            device: match config.device {
                Device::Cpu => sys::Device::CPU,
                Device::Cuda => sys::Device::CUDA,
            },
            compute_type: compute_type(&config.compute_type)?,
            // One replica per index; on the CPU every index is device 0.
            device_indices: vec![0; replicas],
            tensor_parallel: false,
            num_threads_per_replica: threads,
            max_queued_batches: 0,
            cpu_core_offset: -1,
        };
        sys::set_log_level(sys::LogLevel::Warning);
        // Fallback temperatures sample; a fixed seed makes a re-run give the same transcript.
        sys::set_random_seed(0);
        let whisper = sys::Whisper::new(dir, ct2_config).map_err(|e| EngineError::Load {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Engine {
            whisper,
            tokenizer,
            info,
            path: dir.to_owned(),
            config: config.clone(),
            replicas,
            mkl,
            work: WorkCounters::default(),
        })
    }

    /// Runs one engine call. On MKL, calls from every engine in the process take turns (see
    /// [`mkl_backend`]); with one engine of one replica, as the binary runs, the lock is never
    /// contended.
    fn ct2<T>(&self, call: impl FnOnce() -> T) -> T {
        static MKL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = self
            .mkl
            .then(|| MKL.lock().unwrap_or_else(|e| e.into_inner()));
        call()
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn replicas(&self) -> usize {
        self.replicas
    }

    pub fn config(&self) -> &TranscribeConfig {
        &self.config
    }

    /// The decoding work done so far (all threads), to check the bounds and for metrics.
    pub fn work(&self) -> DecodeWork {
        DecodeWork {
            encodes: self.work.encodes.load(Ordering::Relaxed),
            passes: self.work.passes.load(Ordering::Relaxed),
            fallback_decodes: self.work.fallback_decodes.load(Ordering::Relaxed),
            phases: self.work.phases(),
        }
    }

    /// A log-mel extractor with this model's bin count, one per worker thread.
    pub fn log_mel(&self) -> LogMel {
        LogMel::new(self.info.n_mels as usize)
    }

    /// The language to decode in: the configured one, `en` for English-only models, or `None`
    /// when it must be detected.
    pub fn fixed_language(&self) -> Option<String> {
        if !self.config.language.is_empty() {
            Some(self.config.language.clone())
        } else if !self.info.multilingual {
            Some("en".into())
        } else {
            None
        }
    }

    /// Language probabilities summed over `windows` (16 kHz audio, each at most 30 s), so the
    /// choice rests on speech from across the call rather than its first seconds. Returns the
    /// best language code and its mean probability.
    pub fn detect_language(
        &self,
        mel: &mut LogMel,
        windows: &[&[f32]],
    ) -> Result<(String, f32), EngineError> {
        if windows.is_empty() {
            return Ok(("en".into(), 0.0));
        }
        let (mut features, _) = self.features(mel, windows.iter().map(|w| (*w, 0)));
        let view = StorageView::new(
            &[windows.len(), mel.n_mels(), WINDOW_FRAMES],
            &mut features,
            Default::default(),
        )
        .map_err(inference)?;
        let results = self
            .ct2(|| self.whisper.detect_language(&view))
            .map_err(inference)?;
        let mut totals: Vec<(String, f32)> = Vec::new();
        for per_window in results {
            for r in per_window {
                let Some((token, p)) = parse_detection(&format!("{r:?}")) else {
                    continue;
                };
                match totals.iter_mut().find(|(t, _)| *t == token) {
                    Some((_, sum)) => *sum += p,
                    None => totals.push((token, p)),
                }
            }
        }
        let (token, sum) = totals
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(|| inference("language detection returned nothing"))?;
        let code = token
            .trim_start_matches("<|")
            .trim_end_matches("|>")
            .to_owned();
        Ok((code, sum / windows.len() as f32))
    }

    /// Transcribes a batch of windows in `language` (`None` only for English-only models).
    /// Returns each window's segments in window time. Each window gets its own fallback budget,
    /// as if it were a call of its own; [`Engine::transcribe_batch_budgeted`] shares one per
    /// call.
    pub fn transcribe_batch(
        &self,
        mel: &mut LogMel,
        windows: &[BatchItem<'_>],
        language: Option<&str>,
    ) -> Result<Vec<Vec<RawSegment>>, EngineError> {
        let budgets: Vec<FallbackBudget> = windows
            .iter()
            .map(|w| FallbackBudget::for_audio(w.samples.len(), ""))
            .collect();
        let budgets: Vec<&FallbackBudget> = budgets.iter().collect();
        self.transcribe_batch_budgeted(mel, windows, language, &budgets)
    }

    /// [`Engine::transcribe_batch`], with `budgets[i]` the fallback budget of the call that
    /// window `i` belongs to (windows of one call share one).
    ///
    /// Each window is decoded to its end: a pass that stops early is followed by another from
    /// where it stopped, re-encoding the rest of the window. The transcriber does better with
    /// [`Engine::decode_pass`], handing the rest to its packer instead.
    pub fn transcribe_batch_budgeted(
        &self,
        mel: &mut LogMel,
        windows: &[BatchItem<'_>],
        language: Option<&str>,
        budgets: &[&FallbackBudget],
    ) -> Result<Vec<Vec<RawSegment>>, EngineError> {
        check_budgets(windows, budgets)?;
        let prompt = self.prompt(language)?;
        let content: Vec<usize> = windows.iter().map(|w| w.samples.len() / HOP).collect();
        let mut seeks = vec![0usize; windows.len()];
        let mut allowances: Vec<WindowAllowance> = windows
            .iter()
            .map(|w| WindowAllowance::new(w.piece_starts.len()))
            .collect();
        let mut out: Vec<Vec<RawSegment>> = vec![Vec::new(); windows.len()];

        // Each round decodes what is left of every unfinished window, from its seek onwards.
        loop {
            let mut active: Vec<usize> = Vec::with_capacity(windows.len());
            for i in 0..windows.len() {
                if content[i] <= seeks[i] + 1 {
                    continue;
                }
                if allowances[i].start_pass() {
                    active.push(i);
                } else {
                    tracing::warn!(
                        call = %budgets[i].call(),
                        window = i,
                        from_s = frames_to_s(seeks[i]),
                        to_s = frames_to_s(content[i]),
                        passes = max_passes_per_window(windows[i].piece_starts.len()),
                        "pass limit reached: the rest of the window is not transcribed"
                    );
                    seeks[i] = content[i];
                }
            }
            if active.is_empty() {
                break;
            }
            let items: Vec<PassItem<'_>> = active
                .iter()
                .map(|&i| PassItem {
                    window: windows[i],
                    seek: seeks[i],
                    budget: budgets[i],
                    label: i,
                })
                .collect();
            let mut held: Vec<WindowAllowance> = active.iter().map(|&i| allowances[i]).collect();
            let passes = self.pass(mel, &prompt, &items, &mut held)?;
            for ((&i, pass), allowance) in active.iter().zip(passes).zip(held) {
                allowances[i] = allowance;
                seeks[i] = pass.rest_from.map_or(content[i], |s| s / HOP);
                out[i].extend(pass.segments);
            }
        }
        Ok(out)
    }

    /// One pass over each window of a batch, from its start: its segments in window time, and
    /// where the model stopped when it did not reach the end. The caller decides what to do
    /// with the rest (the transcriber packs it with other rests into a later window, so no
    /// window is encoded twice). `budgets[i]` is the fallback budget of window `i`'s call.
    pub fn decode_pass(
        &self,
        mel: &mut LogMel,
        windows: &[BatchItem<'_>],
        language: Option<&str>,
        budgets: &[&FallbackBudget],
    ) -> Result<Vec<Pass>, EngineError> {
        check_budgets(windows, budgets)?;
        let prompt = self.prompt(language)?;
        let items: Vec<PassItem<'_>> = windows
            .iter()
            .zip(budgets)
            .enumerate()
            .map(|(label, (&window, &budget))| PassItem {
                window,
                seek: 0,
                budget,
                label,
            })
            .collect();
        let mut allowances: Vec<WindowAllowance> = windows
            .iter()
            .map(|w| WindowAllowance::new(w.piece_starts.len()))
            .collect();
        self.pass(mel, &prompt, &items, &mut allowances)
    }

    /// The work of one pass: one encoder call for the batch, one decoding call at temperature
    /// 0, batched fallbacks for the windows that fail the thresholds, and one alignment call for
    /// the windows whose words are wanted or whose segments cross a seam between pieces.
    fn pass(
        &self,
        mel: &mut LogMel,
        prompt: &Prompt,
        items: &[PassItem<'_>],
        allowances: &mut [WindowAllowance],
    ) -> Result<Vec<Pass>, EngineError> {
        let n = items.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let (mut features, sizes) =
            self.features(mel, items.iter().map(|it| (it.window.samples, it.seek)));
        let content: Vec<usize> = items
            .iter()
            .map(|it| it.window.samples.len() / HOP)
            .collect();
        let sizes: Vec<usize> = sizes
            .iter()
            .zip(items.iter().zip(&content))
            .map(|(&frames, (it, &c))| frames.min(c.saturating_sub(it.seek)))
            .collect();
        self.work.time(Phase::Mel, started);
        let encoded = self.encode(&mut features, n, mel.n_mels())?;

        let started = Instant::now();
        let prompts = vec![prompt.tokens.clone(); n];
        let options = self.options(0.0, max_new_tokens(sizes.iter().copied()));
        let first = self
            .ct2(|| self.whisper.generate(&encoded, &prompts, &options))
            .map_err(inference)?;
        WorkCounters::add(&self.work.passes, n);
        let mut decoded: Vec<Decoded> = first.into_iter().map(|r| self.score(r, 0.0)).collect();
        if decoded.len() != n {
            return Err(inference(format!(
                "{} results for {n} windows",
                decoded.len()
            )));
        }
        self.work.time(Phase::Generate, started);
        self.fallbacks(
            &mut decoded,
            &encoded,
            &features,
            mel.n_mels(),
            &sizes,
            prompt,
            items,
            allowances,
        )?;

        let offsets: Vec<f64> = items.iter().map(|it| frames_to_s(it.seek)).collect();
        let mut pass_segments: Vec<Vec<RawSegment>> = Vec::with_capacity(n);
        // Per item: frames to seek, and whether the model claimed the rest is silence.
        let mut advances: Vec<(usize, bool, Option<usize>)> = Vec::with_capacity(n);
        for (k, decoded) in decoded.iter().enumerate() {
            let (label, seek, size) = (items[k].label, items[k].seek, sizes[k]);
            if decoded.no_speech_prob > self.config.no_speech_threshold
                && decoded.avg_logprob < self.config.log_prob_threshold
            {
                tracing::debug!(window = label, seek, size, "no speech: skipped");
                advances.push((size, false, None));
                pass_segments.push(Vec::new());
                continue;
            }
            let (segments, mut advance) = self.split_segments(decoded, offsets[k], size);
            if segments.is_empty() {
                // Nothing usable came out (say, a bare pair of timestamps at the start): move
                // on by at least a second, or a noisy window could take hundreds of one-frame
                // passes.
                advance = advance.max(MIN_EMPTY_ADVANCE_FRAMES.min(size));
            }
            tracing::debug!(
                window = label,
                seek,
                size,
                advance,
                temperature = decoded.temperature,
                avg_logprob = decoded.avg_logprob,
                no_speech_prob = decoded.no_speech_prob,
                compression_ratio = decoded.compression_ratio,
                text = %self.tokenizer.decode(&decoded.tokens),
                "decoded"
            );
            let last_ts = self.last_timestamp_frames(&decoded.tokens);
            advances.push((advance, advance >= size, Some(last_ts)));
            pass_segments.push(segments);
        }

        let started = Instant::now();
        let wanted: Vec<bool> = items
            .iter()
            .zip(&pass_segments)
            .map(|(it, segments)| {
                self.config.word_timestamps || crosses_a_seam(segments, it.window.piece_starts)
            })
            .collect();
        if wanted.iter().any(|&w| w) {
            self.add_word_timestamps(
                &encoded,
                &prompt.ids,
                &sizes,
                &offsets,
                &wanted,
                &mut pass_segments,
            )?;
            self.work.time(Phase::Align, started);
        }
        if !prompt.timestamps {
            for segments in &mut pass_segments {
                *segments = split_sentences(std::mem::take(segments));
            }
        }

        let mut out = Vec::with_capacity(n);
        for (k, segments) in pass_segments.into_iter().enumerate() {
            let (label, seek) = (items[k].label, items[k].seek);
            let (mut advance, claims_done, last_ts) = advances[k];
            if let (true, Some(last_ts)) = (claims_done, last_ts) {
                // The model says the rest is silence, but VAD found speech after what it
                // transcribed: resume at the next piece instead of dropping it. What was
                // transcribed ends at the last word when words were aligned (timestamps drift
                // over speech the model skipped), else at the last timestamp.
                let covered = segments
                    .last()
                    .and_then(|s| s.words.last())
                    .map(|w| (w.end * crate::SAMPLE_RATE as f64) as usize / HOP)
                    .unwrap_or(seek + last_ts);
                if let Some(next) = items[k]
                    .window
                    .piece_starts
                    .iter()
                    .map(|&s| s / HOP)
                    .find(|&f| f > covered.saturating_add(RESUME_MARGIN_FRAMES) && f > seek)
                {
                    tracing::debug!(
                        window = label,
                        from = seek,
                        to = next,
                        "resuming at the next speech piece"
                    );
                    advance = advance.min(next - seek);
                }
            }
            let next = seek + advance.max(1);
            out.push(Pass {
                segments,
                rest_from: (content[k] > next + 1).then_some(next * HOP),
            });
        }
        Ok(out)
    }

    /// Encodes `n` stacked `[n_mels, 3000]` items in one call.
    fn encode(
        &self,
        features: &mut [f32],
        n: usize,
        n_mels: usize,
    ) -> Result<StorageView<'static>, EngineError> {
        let started = Instant::now();
        let view = StorageView::new(&[n, n_mels, WINDOW_FRAMES], features, Default::default())
            .map_err(inference)?;
        let encoded = self
            .ct2(|| self.whisper.encode(&view, false))
            .map_err(inference)?;
        WorkCounters::add(&self.work.encodes, n);
        self.work.time(Phase::Encode, started);
        Ok(encoded)
    }

    /// Temperature fallback for the items of a pass whose decode fails the thresholds, one
    /// temperature at a time, all failing items of the pass in one decoding call per step. Each
    /// re-decode is capped at tokens in proportion to the audio it covers, so a short stretch
    /// that fails costs a short decode. Items that stop failing drop out; those that never
    /// pass keep their best decode, as [`Engine::best_of`] picks it.
    #[allow(clippy::too_many_arguments)]
    fn fallbacks(
        &self,
        decoded: &mut [Decoded],
        batch: &StorageView<'static>,
        features: &[f32],
        n_mels: usize,
        sizes: &[usize],
        prompt: &Prompt,
        items: &[PassItem<'_>],
        allowances: &mut [WindowAllowance],
    ) -> Result<(), EngineError> {
        let mut failing: Vec<usize> = (0..decoded.len())
            .filter(|&k| self.needs_fallback(&decoded[k]))
            .collect();
        if failing.is_empty() {
            return Ok(());
        }
        let per_item = n_mels * WINDOW_FRAMES;
        let mut tried: Vec<Vec<Decoded>> = vec![Vec::new(); decoded.len()];
        // The encoder output of the failing items, kept while the set stays the same.
        let mut encoded: Option<(Vec<usize>, StorageView<'static>)> = None;
        for &t in self.config.temperatures.iter().filter(|&&t| t > 0.0) {
            failing.retain(|&k| {
                let it = &items[k];
                match allowances[k].take_fallback(it.budget) {
                    Ok(()) => true,
                    Err(Spent::Window) => {
                        tracing::debug!(
                            window = it.label,
                            seek = it.seek,
                            "window fallback limit reached: keeping the best decode"
                        );
                        false
                    }
                    Err(Spent::Call) => {
                        it.budget.warn_spent(it.label, it.seek);
                        false
                    }
                }
            });
            if failing.is_empty() {
                break;
            }
            // The batch's encoder output serves while every item fails; a subset is encoded
            // on its own (the output cannot be sliced), only once a fallback is allowed.
            let all = failing.len() == decoded.len();
            if !all && encoded.as_ref().is_none_or(|(set, _)| *set != failing) {
                let mut subset: Vec<f32> = Vec::with_capacity(failing.len() * per_item);
                for &k in &failing {
                    subset.extend_from_slice(&features[k * per_item..(k + 1) * per_item]);
                }
                let view = self.encode(&mut subset, failing.len(), n_mels)?;
                encoded = Some((failing.clone(), view));
            }
            let view = match (&encoded, all) {
                (_, true) => batch,
                (Some((_, view)), false) => view,
                (None, false) => return Err(inference("no encoder output for the fallback")),
            };
            let started = Instant::now();
            let cap = max_new_tokens(failing.iter().map(|&k| sizes[k]));
            let prompts = vec![prompt.tokens.clone(); failing.len()];
            let options = self.options(t, cap);
            let results = self
                .ct2(|| self.whisper.generate(view, &prompts, &options))
                .map_err(inference)?;
            WorkCounters::add(&self.work.fallback_decodes, failing.len());
            let mut still = Vec::with_capacity(failing.len());
            for (&k, result) in failing.iter().zip(results) {
                let d = self.score(result, t);
                if self.needs_fallback(&d) {
                    tried[k].push(d);
                    still.push(k);
                } else {
                    decoded[k] = d;
                }
            }
            self.work.time(Phase::Fallback, started);
            failing = still;
        }
        for (k, tried) in tried.into_iter().enumerate() {
            if !tried.is_empty() && self.needs_fallback(&decoded[k]) {
                let first = decoded[k].clone();
                decoded[k] = self.best_of(first, tried);
            }
        }
        Ok(())
    }

    /// The decode kept when none passes the thresholds: the best by mean log-probability among
    /// those that were not repetitive, or among all if every one was.
    fn best_of(&self, first: Decoded, mut tried: Vec<Decoded>) -> Decoded {
        tried.insert(0, first);
        let threshold = self.config.compression_ratio_threshold;
        let any_fluent = tried.iter().any(|d| d.compression_ratio <= threshold);
        let fallback = tried[0].clone();
        tried
            .into_iter()
            .filter(|d| !any_fluent || d.compression_ratio <= threshold)
            .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
            .unwrap_or(fallback)
    }

    /// Frames from the pass start to the last timestamp the decode emitted (0 if none).
    fn last_timestamp_frames(&self, tokens: &[usize]) -> usize {
        tokens
            .iter()
            .rev()
            .find(|&&t| self.tokenizer.is_timestamp(t))
            .map_or(0, |&t| (t - self.tokenizer.timestamp_begin) * INPUT_STRIDE)
    }

    /// Log-mel of each `(audio, seek)` from its seek frame, padded to 3000 frames, stacked
    /// as `[batch, n_mels, 3000]`. Also returns each item's content frames.
    fn features<'a>(
        &self,
        mel: &mut LogMel,
        items: impl Iterator<Item = (&'a [f32], usize)>,
    ) -> (Vec<f32>, Vec<usize>) {
        let mut features = Vec::new();
        let mut sizes = Vec::new();
        let mut one = Vec::new();
        for (audio, seek) in items {
            let from = (seek * HOP).min(audio.len());
            sizes.push(mel.compute(&audio[from..], WINDOW_FRAMES, &mut one));
            features.extend_from_slice(&one);
        }
        (features, sizes)
    }

    /// With word timestamps on, the decoder writes no timestamp tokens: the words' aligned
    /// times place every segment, so timestamps would only cost decoding steps (and, under
    /// beam search, the timestamp rules on every hypothesis at every step). Segments are then
    /// cut at sentence ends and pauses ([`split_sentences`]).
    fn prompt(&self, language: Option<&str>) -> Result<Prompt, EngineError> {
        let mut tokens = self.sot_sequence(language)?;
        // `align` adds `<|notimestamps|>` itself.
        let ids = tokens.iter().filter_map(|t| self.tokenizer.id(t)).collect();
        let timestamps = !self.config.word_timestamps;
        if !timestamps {
            tokens.push(
                self.tokenizer
                    .token(self.tokenizer.no_timestamps)
                    .to_owned(),
            );
        }
        Ok(Prompt {
            tokens,
            ids,
            timestamps,
        })
    }

    fn sot_sequence(&self, language: Option<&str>) -> Result<Vec<String>, EngineError> {
        let mut seq = vec![self.tokenizer.token(self.tokenizer.sot).to_owned()];
        if self.info.multilingual {
            let code = language.unwrap_or("en");
            let token = self
                .tokenizer
                .language_token(code)
                .ok_or_else(|| inference(format!("the model has no language `{code}`")))?;
            seq.push(token);
            seq.push("<|transcribe|>".into());
        }
        Ok(seq)
    }

    /// Decoding options at `temperature`, generating at most `max_new` tokens.
    fn options(&self, temperature: f32, max_new: usize) -> WhisperOptions {
        let mut o = WhisperOptions {
            beam_size: self.config.beam_size,
            patience: 1.0,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            // CTranslate2 generates at most half of max_length.
            max_length: (2 * max_new).clamp(2 * MIN_NEW_TOKENS, MAX_LENGTH),
            sampling_topk: 1,
            sampling_temperature: 1.0,
            num_hypotheses: 1,
            return_scores: true,
            return_logits_vocab: false,
            return_no_speech_prob: true,
            // Whisper's rule: the first timestamp is at most 1 s into the window.
            max_initial_timestamp_index: (1.0 / TIME_PRECISION).round() as usize,
            suppress_blank: true,
            // -1 expands to the model's own list of non-speech tokens.
            suppress_tokens: std::iter::once(-1)
                .chain(self.tokenizer.suppress.iter().copied())
                .collect(),
        };
        if temperature > 0.0 {
            o.beam_size = 1;
            o.num_hypotheses = self.config.best_of;
            o.sampling_topk = 0;
            o.sampling_temperature = temperature;
        }
        o
    }

    fn score(&self, result: sys::WhisperGenerationResult, temperature: f32) -> Decoded {
        let tokens = result.sequences_ids.into_iter().next().unwrap_or_default();
        let score = result.scores.first().copied().unwrap_or(f32::NEG_INFINITY);
        // CTranslate2 returns the length-normalised score; undo it (length penalty 1).
        let avg_logprob = score * tokens.len() as f32 / (tokens.len() + 1) as f32;
        let text = self.tokenizer.decode(&tokens);
        let compression_ratio = compression_ratio(text.trim());
        Decoded {
            tokens,
            avg_logprob,
            no_speech_prob: result.no_speech_prob,
            compression_ratio,
            temperature,
        }
    }

    fn needs_fallback(&self, d: &Decoded) -> bool {
        let repetitive = d.compression_ratio > self.config.compression_ratio_threshold;
        let unsure = d.avg_logprob < self.config.log_prob_threshold;
        // A silent window is unsure by nature: let the no-speech gate drop it instead.
        let silent = d.no_speech_prob > self.config.no_speech_threshold && unsure;
        (repetitive || unsure) && !silent
    }

    /// Cuts a decode into segments at its timestamp tokens and says how far to seek (frames).
    fn split_segments(
        &self,
        d: &Decoded,
        time_offset: f64,
        size: usize,
    ) -> (Vec<RawSegment>, usize) {
        let tok = &self.tokenizer;
        let tokens = &d.tokens;
        let ts = |t: usize| tok.is_timestamp(t);
        let single_timestamp_ending =
            tokens.len() >= 2 && !ts(tokens[tokens.len() - 2]) && ts(tokens[tokens.len() - 1]);
        let consecutive: Vec<usize> = (1..tokens.len())
            .filter(|&i| ts(tokens[i]) && ts(tokens[i - 1]))
            .collect();
        let make = |slice: &[usize], start: f64, end: f64| RawSegment {
            start,
            end,
            text: tok.decode(slice),
            tokens: slice.to_vec(),
            avg_logprob: d.avg_logprob,
            no_speech_prob: d.no_speech_prob,
            words: Vec::new(),
        };
        let position = |t: usize| (t - tok.timestamp_begin) as f64 * TIME_PRECISION;
        let mut segments = Vec::new();
        let advance;
        if !consecutive.is_empty() {
            let mut slices = consecutive.clone();
            if single_timestamp_ending {
                slices.push(tokens.len());
            }
            let mut last = 0;
            for &cut in &slices {
                let slice = &tokens[last..cut];
                if let (Some(&a), Some(&b)) = (slice.first(), slice.last()) {
                    if ts(a) && ts(b) {
                        segments.push(make(
                            slice,
                            time_offset + position(a),
                            time_offset + position(b),
                        ));
                    }
                }
                last = cut;
            }
            advance = if single_timestamp_ending {
                size
            } else {
                // The last segment is unfinished: resume at its start.
                let last_ts = tokens[last - 1];
                (last_ts - tok.timestamp_begin) * INPUT_STRIDE
            };
        } else {
            let mut duration = size as f64 * HOP as f64 / crate::SAMPLE_RATE as f64;
            if let Some(&last_ts) = tokens.iter().rev().find(|&&t| ts(t)) {
                if last_ts != tok.timestamp_begin {
                    duration = position(last_ts);
                }
            }
            segments.push(make(tokens, time_offset, time_offset + duration));
            advance = size;
        }
        segments.retain(|s| s.end > s.start && !s.text.trim().is_empty());
        (segments, advance.min(size))
    }

    /// Word timings from cross-attention alignment for the `wanted` items of the pass, in one
    /// call. The others, and items with no text, are aligned against a placeholder token (the
    /// batch must stay whole, as its encoder output cannot be sliced) and ignored.
    fn add_word_timestamps(
        &self,
        encoded: &StorageView<'static>,
        sot_ids: &[usize],
        sizes: &[usize],
        offsets: &[f64],
        wanted: &[bool],
        pass_segments: &mut [Vec<RawSegment>],
    ) -> Result<(), EngineError> {
        let eot = self.tokenizer.eot;
        let text_tokens: Vec<Vec<usize>> = pass_segments
            .iter()
            .zip(wanted)
            .map(|(segments, &wanted)| {
                segments
                    .iter()
                    .filter(|_| wanted)
                    .flat_map(|s| s.tokens.iter().copied().filter(|&t| t < eot))
                    .collect()
            })
            .collect();
        if text_tokens.iter().all(Vec::is_empty) {
            return Ok(());
        }
        let placeholder: Vec<Vec<usize>> = text_tokens
            .iter()
            .map(|t| if t.is_empty() { vec![0] } else { t.clone() })
            .collect();
        let num_frames: Vec<usize> = sizes
            .iter()
            .zip(&text_tokens)
            .map(|(&s, t)| if t.is_empty() { 1 } else { s.max(1) })
            .collect();
        let results = self
            .ct2(|| {
                self.whisper
                    .align(encoded, sot_ids, &placeholder, &num_frames, 7)
            })
            .map_err(inference)?;
        for (((segments, tokens), result), &offset) in pass_segments
            .iter_mut()
            .zip(&text_tokens)
            .zip(results)
            .zip(offsets)
        {
            if tokens.is_empty() || segments.is_empty() {
                continue;
            }
            let pairs: Vec<(i64, i64)> = result
                .alignments
                .iter()
                .map(|a| (a.token_x, a.frame_x))
                .collect();
            let mut words = self.words_from_alignment(tokens, &pairs, &result.text_token_probs);
            let median = fix_long_words(&mut words);
            merge_punctuations(&mut words);
            assign_words(segments, words, offset, median, self.tokenizer.eot);
        }
        Ok(())
    }

    /// faster-whisper's `find_alignment`: a word starts where the alignment path first reaches
    /// its first token and ends where it reaches the next word's.
    fn words_from_alignment(
        &self,
        tokens: &[usize],
        alignments: &[(i64, i64)],
        probs: &[f32],
    ) -> Vec<AlignedWord> {
        let mut with_eot = tokens.to_vec();
        with_eot.push(self.tokenizer.eot);
        let words = self.tokenizer.split_words(&with_eot);
        if words.len() <= 1 {
            return Vec::new();
        }
        let mut jump_times = Vec::with_capacity(alignments.len());
        let mut previous: Option<i64> = None;
        for &(token_x, frame_x) in alignments {
            if previous != Some(token_x) {
                jump_times.push(frame_x as f64 / TOKENS_PER_SECOND);
            }
            previous = Some(token_x);
        }
        let mut out = Vec::with_capacity(words.len());
        let mut boundary = 0usize;
        for (word, word_tokens) in words.iter().take(words.len() - 1) {
            let next = boundary + word_tokens.len();
            let start = jump_times.get(boundary).copied();
            let end = jump_times.get(next).copied().or(jump_times.last().copied());
            let p = &probs[boundary.min(probs.len())..next.min(probs.len())];
            let probability = if p.is_empty() {
                0.0
            } else {
                p.iter().sum::<f32>() / p.len() as f32
            };
            if let (Some(start), Some(end)) = (start, end) {
                out.push(AlignedWord {
                    word: word.clone(),
                    tokens: word_tokens.len(),
                    start,
                    end: end.max(start),
                    probability,
                });
            }
            boundary = next;
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Decoded {
    tokens: Vec<usize>,
    avg_logprob: f32,
    no_speech_prob: f32,
    compression_ratio: f32,
    temperature: f32,
}

#[derive(Debug, Clone)]
struct AlignedWord {
    word: String,
    tokens: usize,
    start: f64,
    end: f64,
    probability: f32,
}

/// Caps words at sentence boundaries to twice the median word length, as faster-whisper
/// does, since alignment tends to stretch them over the following pause.
fn fix_long_words(words: &mut [AlignedWord]) -> f64 {
    let mut durations: Vec<f64> = words
        .iter()
        .map(|w| w.end - w.start)
        .filter(|&d| d > 0.0)
        .collect();
    if durations.is_empty() {
        return 0.0;
    }
    durations.sort_by(f64::total_cmp);
    let median = durations[durations.len() / 2].min(0.7);
    let max = median * 2.0;
    let sentence_end = |w: &str| ".。!！?？".contains(w.trim()) && !w.trim().is_empty();
    for i in 1..words.len() {
        if words[i].end - words[i].start > max {
            if sentence_end(&words[i].word) {
                words[i].end = words[i].start + max;
            } else if sentence_end(&words[i - 1].word) {
                words[i].start = words[i].end - max;
            }
        }
    }
    median
}

/// Glues leading punctuation to the next word and trailing punctuation to the previous one.
fn merge_punctuations(words: &mut Vec<AlignedWord>) {
    if words.len() >= 2 {
        let mut i = words.len() as isize - 2;
        let mut j = words.len() - 1;
        while i >= 0 {
            let iu = i as usize;
            let prev = &words[iu];
            if prev.word.starts_with(' ')
                && !prev.word.trim().is_empty()
                && PREPEND_PUNCTUATION.contains(prev.word.trim())
            {
                let prev = std::mem::take(&mut words[iu].word);
                let tokens = std::mem::take(&mut words[iu].tokens);
                words[j].word = prev + &words[j].word;
                words[j].tokens += tokens;
            } else {
                j = iu;
            }
            i -= 1;
        }
        let mut i = 0;
        let mut j = 1;
        while j < words.len() {
            if !words[i].word.ends_with(' ')
                && !words[j].word.is_empty()
                && APPEND_PUNCTUATION.contains(words[j].word.as_str())
            {
                let following = std::mem::take(&mut words[j].word);
                let tokens = std::mem::take(&mut words[j].tokens);
                words[i].word.push_str(&following);
                words[i].tokens += tokens;
            } else {
                i = j;
            }
            j += 1;
        }
    }
    words.retain(|w| !w.word.is_empty());
}

/// Hands the pass's words to its segments in token order, shifted by the pass's `offset` into
/// window time. Each segment then spans its words (faster-whisper's preference for word
/// times), except that a first or last word stretched more than 0.5 s past the decoded
/// segment boundary is cut back to it. Words are finally clamped into their segment.
fn assign_words(
    segments: &mut [RawSegment],
    words: Vec<AlignedWord>,
    offset: f64,
    median: f64,
    eot: usize,
) {
    let mut words = words.into_iter().peekable();
    for segment in segments.iter_mut() {
        let count = segment.tokens.iter().filter(|&&t| t < eot).count();
        let mut taken = 0;
        let mut mine = Vec::new();
        while taken < count {
            let Some(w) = words.next() else { break };
            taken += w.tokens;
            mine.push(RawWord {
                start: offset + w.start,
                end: offset + w.end,
                word: w.word,
                probability: w.probability,
            });
        }
        if let (Some(first), Some(last)) = (mine.first().cloned(), mine.last().cloned()) {
            if segment.start < first.end && segment.start - 0.5 > first.start {
                mine[0].start = (first.end - median).min(segment.start).max(0.0);
            } else {
                segment.start = first.start;
            }
            let n = mine.len() - 1;
            if segment.end > last.start && segment.end + 0.5 < last.end {
                mine[n].end = (last.start + median).max(segment.end);
            } else {
                segment.end = last.end;
            }
            segment.end = segment.end.max(segment.start);
            for w in &mut mine {
                w.start = w.start.clamp(segment.start, segment.end);
                w.end = w.end.clamp(w.start, segment.end);
            }
        }
        segment.words = mine;
    }
}

/// Pause between two words (seconds) long enough to start a new segment.
const SEGMENT_PAUSE_S: f64 = 1.0;

/// Cuts segments decoded without timestamps at their words: after a word that ends a sentence,
/// and at a pause of [`SEGMENT_PAUSE_S`]. Each part spans exactly its words, so segments are
/// as fine as Whisper's own (a sentence or a clause) and never bridge a silence.
fn split_sentences(segments: Vec<RawSegment>) -> Vec<RawSegment> {
    let mut out = Vec::with_capacity(segments.len());
    for segment in segments {
        if segment.words.len() < 2 {
            out.push(segment);
            continue;
        }
        let mut part: Vec<RawWord> = Vec::new();
        let flush = |part: &mut Vec<RawWord>, out: &mut Vec<RawSegment>| {
            if let (Some(first), Some(last)) = (part.first(), part.last()) {
                out.push(RawSegment {
                    start: first.start,
                    end: last.end.max(first.start),
                    text: part.iter().map(|w| w.word.as_str()).collect(),
                    tokens: Vec::new(),
                    avg_logprob: segment.avg_logprob,
                    no_speech_prob: segment.no_speech_prob,
                    words: std::mem::take(part),
                });
            }
        };
        for w in &segment.words {
            if part
                .last()
                .is_some_and(|last| w.start - last.end >= SEGMENT_PAUSE_S)
            {
                flush(&mut part, &mut out);
            }
            part.push(w.clone());
            let ends_sentence = w
                .word
                .trim_end()
                .ends_with(['.', '?', '!', '。', '？', '！']);
            if ends_sentence {
                flush(&mut part, &mut out);
            }
        }
        flush(&mut part, &mut out);
    }
    out
}

/// How well the text compresses: Whisper's repetition detector.
fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(text.as_bytes());
    let compressed = encoder.finish().map(|v| v.len()).unwrap_or(text.len());
    text.len() as f32 / compressed.max(1) as f32
}

fn compute_type(name: &str) -> Result<ComputeType, EngineError> {
    Ok(match name {
        "default" => ComputeType::DEFAULT,
        "auto" => ComputeType::AUTO,
        "float32" => ComputeType::FLOAT32,
        "int8" => ComputeType::INT8,
        "int8_float32" => ComputeType::INT8_FLOAT32,
        "int8_float16" => ComputeType::INT8_FLOAT16,
        "int8_bfloat16" => ComputeType::INT8_BFLOAT16,
        "int16" => ComputeType::INT16,
        "float16" => ComputeType::FLOAT16,
        "bfloat16" => ComputeType::BFLOAT16,
        other => return Err(EngineError::ComputeType(other.to_owned())),
    })
}

/// Reads `DetectionResult { language: "<|en|>", probability: 0.97 }`: ct2rs keeps the
/// fields private, and its `Debug` output is the only way to them.
fn parse_detection(debug: &str) -> Option<(String, f32)> {
    let lang_at = debug.find("language: \"")? + "language: \"".len();
    let lang_end = lang_at + debug[lang_at..].find('"')?;
    let p_at = debug.find("probability: ")? + "probability: ".len();
    let p_end = p_at
        + debug[p_at..]
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
            .unwrap_or(debug.len() - p_at);
    Some((
        debug[lang_at..lang_end].to_owned(),
        debug[p_at..p_end].parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_budget_grows_with_its_audio_and_is_shared() {
        let minute = 60 * crate::SAMPLE_RATE as usize;
        assert_eq!(fallback_budget_for(0), FALLBACK_BUDGET_BASE);
        assert_eq!(fallback_budget_for(minute / 2), FALLBACK_BUDGET_BASE + 1);
        assert_eq!(
            fallback_budget_for(60 * minute),
            FALLBACK_BUDGET_BASE + 60 * FALLBACK_BUDGET_PER_MINUTE
        );
        assert!(fallback_budget_for(usize::MAX) > 0, "no overflow");

        // Two windows of one call draw on one budget: 3 decodes in all.
        let call = FallbackBudget::new(3, "call-1");
        let (mut a, mut b) = (WindowAllowance::new(1), WindowAllowance::new(1));
        assert_eq!(a.take_fallback(&call), Ok(()));
        assert_eq!(b.take_fallback(&call), Ok(()));
        assert_eq!(a.take_fallback(&call), Ok(()));
        assert_eq!(b.take_fallback(&call), Err(Spent::Call));
        assert_eq!(a.take_fallback(&call), Err(Spent::Call));
        assert_eq!(call.left(), 0);
        // A refused decode is not charged to the window.
        assert_eq!(b.fallbacks_left, MAX_FALLBACKS_PER_WINDOW - 1);
    }

    #[test]
    fn a_window_caps_its_fallbacks_without_spending_the_call_budget() {
        let call = FallbackBudget::new(1000, "call-2");
        let mut w = WindowAllowance::new(1);
        let taken = (0..100).filter(|_| w.take_fallback(&call).is_ok()).count();
        assert_eq!(taken, MAX_FALLBACKS_PER_WINDOW);
        assert_eq!(w.take_fallback(&call), Err(Spent::Window));
        assert_eq!(call.left(), 1000 - MAX_FALLBACKS_PER_WINDOW);
    }

    #[test]
    fn passes_per_window_grow_with_its_pieces_up_to_a_cap() {
        assert_eq!(max_passes_per_window(0), BASE_PASSES_PER_WINDOW);
        assert_eq!(max_passes_per_window(3), BASE_PASSES_PER_WINDOW + 3);
        assert_eq!(max_passes_per_window(usize::MAX), MAX_PASSES_PER_WINDOW);
        let mut w = WindowAllowance::new(2);
        let passes = (0..1000).take_while(|_| w.start_pass()).count();
        assert_eq!(passes, BASE_PASSES_PER_WINDOW + 2);
        assert!(!w.start_pass());
    }

    #[test]
    fn the_worst_case_work_of_a_call_is_linear_in_its_audio() {
        // An hour of noise in 120 full windows, every decode failing the thresholds: the
        // fallbacks the budget allows, against the 5 per pass an unbounded ladder would run.
        let windows = 120;
        let samples = windows * 30 * crate::SAMPLE_RATE as usize;
        let call = FallbackBudget::for_audio(samples, "noise");
        let mut spent = 0;
        for _ in 0..windows {
            let mut w = WindowAllowance::new(1);
            while w.start_pass() {
                for _ in 0..5 {
                    if w.take_fallback(&call).is_ok() {
                        spent += 1;
                    }
                }
            }
        }
        assert_eq!(spent, fallback_budget_for(samples));
        assert!(spent <= FALLBACK_BUDGET_BASE + windows, "{spent}");
    }

    #[test]
    fn detection_debug_output_parses() {
        assert_eq!(
            parse_detection(r#"DetectionResult { language: "<|de|>", probability: 0.8125 }"#),
            Some(("<|de|>".into(), 0.8125))
        );
        assert_eq!(parse_detection("garbage"), None);
    }

    #[test]
    fn repetitive_text_compresses_well() {
        let normal = compression_ratio(
            "And so my fellow Americans, ask not what your country can do for you.",
        );
        let looped = compression_ratio(&"thank you ".repeat(40));
        assert!(normal < 2.4, "{normal}");
        assert!(looped > 2.4, "{looped}");
    }

    #[test]
    fn untimestamped_segments_split_at_sentences_and_pauses() {
        let w = |word: &str, start: f64, end: f64| RawWord {
            start,
            end,
            word: word.into(),
            probability: 0.9,
        };
        let words = vec![
            w(" Hello.", 0.0, 0.4),
            w(" I", 0.5, 0.6),
            w(" called", 0.6, 0.9),
            // A pause of 1.5 s starts a new segment, punctuation or not.
            w(" yesterday", 2.4, 2.9),
            w(" about", 3.0, 3.2),
            w(" billing?", 3.2, 3.6),
        ];
        let segment = RawSegment {
            start: 0.0,
            end: 3.6,
            text: words.iter().map(|w| w.word.as_str()).collect(),
            tokens: Vec::new(),
            avg_logprob: -0.2,
            no_speech_prob: 0.01,
            words,
        };
        let parts = split_sentences(vec![segment]);
        let spans: Vec<(&str, f64, f64)> = parts
            .iter()
            .map(|s| (s.text.as_str(), s.start, s.end))
            .collect();
        assert_eq!(
            spans,
            [
                (" Hello.", 0.0, 0.4),
                (" I called", 0.5, 0.9),
                (" yesterday about billing?", 2.4, 3.6)
            ]
        );
        assert!(parts.iter().all(|s| s.avg_logprob == -0.2));
    }

    #[test]
    fn punctuation_merges_into_neighbours() {
        let w = |word: &str| AlignedWord {
            word: word.into(),
            tokens: 1,
            start: 0.0,
            end: 0.1,
            probability: 1.0,
        };
        let mut words = vec![w(" \""), w(" Hello"), w(","), w(" world"), w(".")];
        merge_punctuations(&mut words);
        let texts: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(texts, [" \" Hello,", " world."]);
    }
}
