//! The call lifecycle and the runners that compose the stages.
//!
//! The stage crates (ingest, transcribe, index) know nothing of queues or of each other; this
//! crate wires them:
//! - [`stages`]: each stage as a function of one message, with the call lifecycle (skip an
//!   indexed revision unless forced, record the attempt, record a permanent failure, commit)
//!   and the handoff objects (the call plan, the transcript) in the artifact store.
//! - [`plan`]: the call plan artifact: per channel the speech segments and the audio around
//!   them.
//! - [`worker`]: one stage's consumers over a [`Queue`](callpipe_common::queue::Queue): leases,
//!   done markers, heartbeats, and what each error kind does to the message.
//! - [`run`]: `callpipe run`: the same consumers over in-process queues, fed from a stream of
//!   sources with a bounded number of calls in flight.
//! - [`backfill`]: `callpipe backfill`: listings fed into the backfill lane (or `run`'s
//!   pipeline) under admission control, with checkpoints in the job store.
//! - [`telemetry`]: worker metrics (Prometheus) and health (`/healthz`, `/metrics`).
//! - [`error`]: [`JobError`](error::JobError), which carries the error kind the retry and
//!   acknowledgement logic decides by, and the cause chain for the logs.
//!
//! The binary builds the backends from config (embedded or cloud) and hands them in as trait
//! objects, so this crate compiles no SDK.

pub mod backfill;
pub mod error;
pub mod plan;
pub mod run;
pub mod stages;
pub mod telemetry;
pub mod worker;

pub use error::JobError;
pub use stages::{CallOutcome, Stages};
