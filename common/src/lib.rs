//! Plumbing shared by every callpipe stage.
//!
//! `common` holds what two or more stages must agree on and nothing else: no decoding, no
//! inference, no storage logic. Stage crates depend on it; it depends on no stage.
//!
//! # Layout
//! - [`ids`]: stable call identities derived from the source, and revisions.
//! - [`audio`]: the domain types the front end hands to transcription: channels, roles, speech
//!   segments, the 16 kHz working rate.
//! - [`transcript`]: what transcription hands to indexing: per-channel segments and words on
//!   the call's timeline.
//! - [`config`]: the TOML + environment configuration, one documented struct per section,
//!   validated once at start-up.
//! - [`pool`]: the CPU pool. CPU-heavy work (decode, resample, VAD, inference) runs on a rayon
//!   pool, never on tokio worker threads; [`pool::CpuPool::run`] is the bridge.
//! - [`store`]: the backend traits (object store, metadata store, vector index), their
//!   shared types and conformance suites, and the local-directory object store.
//! - [`lane`]: live, upload and backfill priority, which every scheduler of calls orders by.
//! - [`error`]: the transient/permanent/environment split that retry and acknowledgement logic
//!   matches on.
//! - [`messages`]: the typed, versioned stage messages (references to objects, never audio).
//! - [`queue`]: the queue trait between stages (receive with a deadline, ack, extend, release,
//!   send) and the in-process queue.
//! - [`coord`]: leases with fencing tokens, markers and counters shared by workers, and the
//!   in-process implementation.

pub mod audio;
pub mod config;
pub mod coord;
pub mod error;
pub mod ids;
pub mod lane;
pub mod messages;
pub mod pool;
pub mod queue;
pub mod store;
pub mod transcript;

pub use audio::{AudioSpan, Role, SpeechSegment, SAMPLE_RATE};
pub use config::Config;
pub use error::ErrorKind;
pub use ids::{CallId, Revision};
pub use lane::Lane;
pub use pool::CpuPool;
pub use transcript::{ChannelTranscript, Segment, Transcript, Word};
