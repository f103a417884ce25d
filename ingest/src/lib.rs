//! The ingest stage: recordings in, normalized per-channel audio and speech segments out.
//!
//! This is the first stage of the pipeline (ingest → transcribe → index). It turns any
//! real-world call recording (WAV in any PCM flavour including G.711 mu-law/A-law, MP3, FLAC,
//! Ogg Vorbis, Opus, AAC in MP4/M4A, AIFF, CAF, NIST SPHERE, headerless PCM) into 16 kHz mono
//! audio per channel with speech segments marked, which is what transcription consumes.
//!
//! # Layout
//! - [`decode`]: streaming decode to planar f32, one packet at a time (symphonia, libopus),
//!   and [`read_recording`], which reads a regular file into memory within a byte limit.
//! - [`resample`]: per-channel streaming resampling to 16 kHz (rubato).
//! - [`vad`]: per-channel voice activity detection (earshot) with an energy pre-gate, and the
//!   segment shaping rules (padding, gap merging, ≤ 30 s cap).
//! - [`frontend`]: ties them together; channels are processed in parallel on the rayon pool.
//! - [`source`]: local recordings: directory walks, call identity, when the call took place.
//! - [`s3_event`]: S3 event notifications (direct, SNS-wrapped, test events) from the ingest
//!   queue, turned into the objects to ingest, keys decoded.
//! - [`error`]: [`IngestError`], every variant naming the file.
//!
//! Everything here is synchronous CPU work. Call it from the CPU pool
//! (`callpipe_common::CpuPool`), never from an async task.

pub mod decode;
pub mod error;
pub mod frontend;
pub mod resample;
pub mod s3_event;
pub mod source;
pub mod vad;

pub use decode::{read_recording, DecodeOptions, Decoder, RawEncoding, RawFormat, SourceInfo};
pub use error::IngestError;
pub use frontend::{process_bytes, process_file, CallAudio, ChannelAudio, FrontEndOptions};
