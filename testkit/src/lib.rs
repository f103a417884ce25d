//! Test servers for callpipe's cloud backends, for tests that cannot reach the cloud.
//!
//! - [`aoss::StrictAoss`]: an OpenSearch Serverless *vector collection* on a loopback port:
//!   the `awsim-opensearch` engine behind a wrapper that enforces what Serverless enforces
//!   (SigV4 for `aoss` with the payload hash, no custom ids, upserts or refreshes, writes
//!   visible only after a delay) and injects faults on demand (throttling, 5xx, per-item
//!   refusals in `_bulk`, an outage). `callpipe-cloud`'s OpenSearch tests run the vector and
//!   keyword conformance suites against it.
//!
//! # Layout
//! - `aoss`: the emulator, its options, fault injection and request counts;
//! - `bin/aoss-emulator`: the same server as a process, for trying a client by hand.
//!
//! Test-only: nothing here is linked into the `callpipe` binary.

pub mod aoss;

pub use aoss::{Counts, StrictAoss, StrictAossOptions};
