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

use std::io::Write;
use std::path::{Path, PathBuf};

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
/// The decoder's context; prompts plus output must fit.
const MAX_LENGTH: usize = 448;
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

fn inference(e: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(e.to_string())
}

/// One window of a batch: 16 kHz audio of at most 30 s, and the sample offsets where its
/// separately spoken pieces start (where decoding may resume if the model stops early).
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub samples: &'a [f32],
    pub piece_starts: &'a [usize],
    /// Align words even when word timestamps are off: the window mixes channels, and only
    /// words can split a segment at the seam between them.
    pub needs_words: bool,
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

impl Engine {
    /// Validates and loads the model directory `dir`. `replicas` is the resolved count
    /// (the caller maps 0 to the core count).
    pub fn load(
        dir: &Path,
        config: &TranscribeConfig,
        replicas: usize,
    ) -> Result<Self, EngineError> {
        if config.device == Device::Cuda && !cfg!(feature = "cuda") {
            return Err(EngineError::Load {
                path: dir.to_owned(),
                reason: "transcribe.device is `cuda`, but this binary was built without the \
                         `cuda` feature (cargo build --release --features cuda)"
                    .into(),
            });
        }
        let info = model::validate(dir)?;
        let tokenizer = Tokenizer::load(dir, info.multilingual)?;
        let replicas = replicas.max(1);
        let ct2_config = sys::Config {
            device: match config.device {
                Device::Cpu => sys::Device::CPU,
                Device::Cuda => sys::Device::CUDA,
            },
            compute_type: compute_type(&config.compute_type)?,
            // One replica per index; on the CPU every index is device 0.
            device_indices: vec![0; replicas],
            tensor_parallel: false,
            num_threads_per_replica: config.threads_per_replica.max(1),
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
        })
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
        let results = self.whisper.detect_language(&view).map_err(inference)?;
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
    /// Returns each window's segments in window time.
    pub fn transcribe_batch(
        &self,
        mel: &mut LogMel,
        windows: &[BatchItem<'_>],
        language: Option<&str>,
    ) -> Result<Vec<Vec<RawSegment>>, EngineError> {
        let sot_sequence = self.sot_sequence(language)?;
        let sot_ids: Vec<usize> = sot_sequence
            .iter()
            .filter_map(|t| self.tokenizer.id(t))
            .collect();
        let content: Vec<usize> = windows.iter().map(|w| w.samples.len() / HOP).collect();
        let mut seeks = vec![0usize; windows.len()];
        let mut out: Vec<Vec<RawSegment>> = vec![Vec::new(); windows.len()];

        // Each round decodes what is left of every unfinished window, from its seek onwards.
        loop {
            let active: Vec<usize> = (0..windows.len())
                .filter(|&i| content[i] > seeks[i] + 1)
                .collect();
            if active.is_empty() {
                break;
            }
            let (mut features, sizes) =
                self.features(mel, active.iter().map(|&i| (windows[i].samples, seeks[i])));
            let sizes: Vec<usize> = sizes
                .iter()
                .zip(&active)
                .map(|(&frames, &i)| frames.min(content[i] - seeks[i]))
                .collect();
            let per_item = mel.n_mels() * WINDOW_FRAMES;
            let t_encode = std::time::Instant::now();
            let encoded = {
                let view = StorageView::new(
                    &[active.len(), mel.n_mels(), WINDOW_FRAMES],
                    &mut features,
                    Default::default(),
                )
                .map_err(inference)?;
                self.whisper.encode(&view, false).map_err(inference)?
            };

            let encode_s = t_encode.elapsed().as_secs_f64();
            let t_generate = std::time::Instant::now();
            let prompts = vec![sot_sequence.clone(); active.len()];
            let first = self
                .whisper
                .generate(&encoded, &prompts, &self.options(0.0))
                .map_err(inference)?;

            let offsets: Vec<f64> = active
                .iter()
                .map(|&i| seeks[i] as f64 * HOP as f64 / crate::SAMPLE_RATE as f64)
                .collect();
            let mut pass_segments: Vec<Vec<RawSegment>> = Vec::with_capacity(active.len());
            // Per item: frames to seek, and whether the model claimed the rest is silence.
            let mut advances: Vec<(usize, bool, Option<usize>)> = Vec::with_capacity(active.len());
            for (k, (&i, result)) in active.iter().zip(first).enumerate() {
                let mut decoded = self.score(result, 0.0);
                if self.needs_fallback(&decoded) {
                    // A batch of one already has this window's encoder output; a larger batch's
                    // output cannot be sliced, so the window is encoded again on its own.
                    let reuse = (active.len() == 1).then_some(&encoded);
                    let item = &mut features[k * per_item..(k + 1) * per_item];
                    decoded = self.fallback(item, mel.n_mels(), &sot_sequence, decoded, reuse)?;
                }
                let size = sizes[k];
                if decoded.no_speech_prob > self.config.no_speech_threshold
                    && decoded.avg_logprob < self.config.log_prob_threshold
                {
                    tracing::debug!(window = i, seek = seeks[i], size, "no speech: skipped");
                    advances.push((size, false, None));
                    pass_segments.push(Vec::new());
                    continue;
                }
                let (segments, mut advance) = self.split_segments(&decoded, offsets[k], size);
                if segments.is_empty() {
                    // Nothing usable came out (say, a bare pair of timestamps at the start):
                    // move on by at least a second, or a noisy window could take hundreds of
                    // one-frame passes.
                    advance = advance.max(MIN_EMPTY_ADVANCE_FRAMES.min(size));
                }
                tracing::debug!(
                    window = i,
                    seek = seeks[i],
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

            let generate_s = t_generate.elapsed().as_secs_f64();
            let t_align = std::time::Instant::now();
            if self.config.word_timestamps || active.iter().any(|&i| windows[i].needs_words) {
                self.add_word_timestamps(&encoded, &sot_ids, &sizes, &offsets, &mut pass_segments)?;
            }
            tracing::debug!(
                batch = active.len(),
                encode_s,
                generate_s,
                align_s = t_align.elapsed().as_secs_f64(),
                "pass timings"
            );
            for (k, (&i, segments)) in active.iter().zip(pass_segments).enumerate() {
                let (mut advance, claims_done, last_ts) = advances[k];
                if let (true, Some(last_ts)) = (claims_done, last_ts) {
                    // The model says the rest is silence, but VAD found speech after what it
                    // transcribed: resume at the next piece instead of dropping it. What was
                    // transcribed ends at the last word when words were aligned (timestamps
                    // drift over speech the model skipped), else at the last timestamp.
                    let covered = segments
                        .last()
                        .and_then(|s| s.words.last())
                        .map(|w| (w.end * crate::SAMPLE_RATE as f64) as usize / HOP)
                        .unwrap_or(seeks[i] + last_ts);
                    if let Some(next) = windows[i]
                        .piece_starts
                        .iter()
                        .map(|&s| s / HOP)
                        .find(|&f| f > covered + RESUME_MARGIN_FRAMES && f > seeks[i])
                    {
                        tracing::debug!(
                            window = i,
                            from = seeks[i],
                            to = next,
                            "resuming at the next speech piece"
                        );
                        advance = advance.min(next - seeks[i]);
                    }
                }
                seeks[i] += advance.max(1);
                out[i].extend(segments);
            }
        }
        Ok(out)
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

    fn options(&self, temperature: f32) -> WhisperOptions {
        let mut o = WhisperOptions {
            beam_size: self.config.beam_size,
            patience: 1.0,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            max_length: MAX_LENGTH,
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

    /// Retries one window at the fallback temperatures. If none passes, keeps the best
    /// result that was not repetitive (or the best of all), by mean log-probability.
    fn fallback(
        &self,
        item: &mut [f32],
        n_mels: usize,
        sot_sequence: &[String],
        first: Decoded,
        encoded: Option<&StorageView<'static>>,
    ) -> Result<Decoded, EngineError> {
        let mut tried = vec![first];
        let own;
        let encoded = match encoded {
            Some(e) => e,
            None => {
                let view = StorageView::new(&[1, n_mels, WINDOW_FRAMES], item, Default::default())
                    .map_err(inference)?;
                own = self.whisper.encode(&view, false).map_err(inference)?;
                &own
            }
        };
        for &t in self.config.temperatures.iter().filter(|&&t| t > 0.0) {
            let result = self
                .whisper
                .generate(encoded, &[sot_sequence.to_vec()], &self.options(t))
                .map_err(inference)?
                .into_iter()
                .next()
                .ok_or_else(|| inference("no result"))?;
            let decoded = self.score(result, t);
            if !self.needs_fallback(&decoded) {
                return Ok(decoded);
            }
            tried.push(decoded);
        }
        let threshold = self.config.compression_ratio_threshold;
        let pool: Vec<&Decoded> = if tried.iter().any(|d| d.compression_ratio <= threshold) {
            tried
                .iter()
                .filter(|d| d.compression_ratio <= threshold)
                .collect()
        } else {
            tried.iter().collect()
        };
        let best = pool
            .into_iter()
            .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
            .cloned()
            .expect("at least the first decode");
        Ok(best)
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

    /// Word timings from cross-attention alignment for every item of the pass. Items with no
    /// text are aligned against a placeholder token (the batch must stay whole) and ignored.
    fn add_word_timestamps(
        &self,
        encoded: &StorageView<'static>,
        sot_ids: &[usize],
        sizes: &[usize],
        offsets: &[f64],
        pass_segments: &mut [Vec<RawSegment>],
    ) -> Result<(), EngineError> {
        let eot = self.tokenizer.eot;
        let text_tokens: Vec<Vec<usize>> = pass_segments
            .iter()
            .map(|segments| {
                segments
                    .iter()
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
        let num_frames: Vec<usize> = sizes.iter().map(|&s| s.max(1)).collect();
        let results = self
            .whisper
            .align(encoded, sot_ids, &placeholder, &num_frames, 7)
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
