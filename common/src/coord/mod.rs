//! Coordination between workers: leases with fencing tokens, markers, counters.
//!
//! Delivery is at least once, so two workers can hold the same stage of the same call (a
//! duplicate notification, a redelivery after a visibility timeout while the first worker is
//! only slow). A worker therefore takes a [`Lease`] on `(call, revision, stage)` before it
//! works: only one holds it at a time, it expires on its own if the holder dies, and each new
//! holder gets a larger fencing token. Before an effect lands the worker checks that its token
//! is still the current one ([`Coordination::holds`]), so a worker that lost its lease (paused,
//! partitioned) cannot overwrite its successor's work.
//!
//! Markers remember that a stage of a revision is done, so a redelivered message is
//! acknowledged without redoing the work; counters serve rate limits. Admission sets bound
//! how much of a lane is in the pipeline at once: a producer [`Coordination::admit`]s a call
//! before it sends it, the stage that finishes the call [`Coordination::retire`]s it, and a
//! member whose finisher died expires after its ttl instead of holding its place for ever.
//!
//! [`InProcessCoordination`] is the embedded implementation; Redis (`fred`) lives in
//! `callpipe-cloud`. Both pass [`conformance::coordination`].

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod in_process;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::ErrorKind;

pub use self::in_process::InProcessCoordination;

/// A held lease. `token` is larger than every token handed out before for the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub token: u64,
    pub ttl: Duration,
}

/// Why a coordination call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The store could not be reached or timed out: retry later; no call is at fault.
    #[error("coordination store {store}: {reason} (retryable)")]
    Unavailable { store: String, reason: String },
    /// Authentication, a bad endpoint, a script the server refuses: this worker cannot use it.
    #[error("coordination store {store}: {reason}")]
    Misconfigured { store: String, reason: String },
}

impl CoordError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoordError::Unavailable { .. } => ErrorKind::Transient,
            CoordError::Misconfigured { .. } => ErrorKind::Environment,
        }
    }
}

/// Leases, markers and counters shared by every worker of a deployment.
///
/// Keys are plain strings chosen by the caller (`lease/<call>/<revision>/<stage>`); each kind
/// (lease, marker, counter) has its own namespace, so the same key may name one of each.
#[async_trait]
pub trait Coordination: std::fmt::Debug + Send + Sync + 'static {
    /// A name for logs (`in-process`, `redis://host:port`).
    fn name(&self) -> &str;

    /// Takes the lease on `key` for `ttl` if no one holds it. `None` if someone does.
    async fn acquire(&self, key: &str, ttl: Duration) -> Result<Option<Lease>, CoordError>;

    /// Extends a held lease by its ttl from now. `false` if it was lost (it expired, and may
    /// have been taken by another worker): the holder must stop and write nothing more.
    async fn renew(&self, lease: &Lease) -> Result<bool, CoordError>;

    /// Gives the lease up if it is still held with this token; otherwise does nothing.
    async fn release(&self, lease: &Lease) -> Result<(), CoordError>;

    /// Whether `lease` is still held with its token: the check before an effect lands.
    async fn holds(&self, lease: &Lease) -> Result<bool, CoordError>;

    /// Records that `key` happened, forgotten after `ttl`.
    async fn set_marker(&self, key: &str, ttl: Duration) -> Result<(), CoordError>;

    /// Whether a marker is set (and not yet expired).
    async fn has_marker(&self, key: &str) -> Result<bool, CoordError>;

    /// Adds `by` (may be negative) to the counter at `key` and returns the new value. A counter
    /// that did not exist starts at 0 and expires `ttl` after its creation (zero: never), which
    /// makes fixed-window rate limits one call.
    async fn add(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, CoordError>;

    /// Adds `members` to the admission set at `key`, in order, while the set has fewer than
    /// `limit` live members, atomically against every other caller. Returns how many were
    /// taken: always a prefix of `members`. A member already in the set counts as taken
    /// without taking a second place (its expiry is renewed), so a producer that retries
    /// after a crash is not admitted twice. Each member expires `ttl` after its admission.
    async fn admit(
        &self,
        key: &str,
        members: &[String],
        limit: u64,
        ttl: Duration,
    ) -> Result<usize, CoordError>;

    /// Removes `member` from the set; `true` if it was there (and live).
    async fn retire(&self, key: &str, member: &str) -> Result<bool, CoordError>;

    /// For each of `members`, whether it is in the set and live.
    async fn admitted(&self, key: &str, members: &[String]) -> Result<Vec<bool>, CoordError>;

    /// Live members of the set.
    async fn occupancy(&self, key: &str) -> Result<u64, CoordError>;
}
