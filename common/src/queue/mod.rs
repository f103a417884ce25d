//! The queue between stages: at-least-once delivery with a visibility deadline, in the shape of
//! SQS (and of Quickwit's queue sources): receive, acknowledge, extend, release, send.
//!
//! A received message is invisible to other consumers until its deadline. The consumer either
//! acknowledges it (deletes it: the work is durable and the next stage's message is sent),
//! extends the deadline while the work runs, or releases it for redelivery after a delay. A
//! consumer that dies simply lets the deadline pass, and the message comes back with its
//! receive count raised; a message received too often goes to a dead-letter queue.
//!
//! [`InProcessQueue`] is the embedded implementation (`callpipe run`); SQS lives in
//! `callpipe-cloud`. Both pass [`conformance::queue`].

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod in_process;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::ErrorKind;

pub use self::in_process::InProcessQueue;

/// A received message: its body, the handle to acknowledge it by, and how often it has been
/// received (1 on first delivery).
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    /// Opaque to callers; valid until the message's visibility deadline passes.
    pub receipt: String,
    /// The queue's own id of the message, for logs.
    pub message_id: String,
    pub receive_count: u32,
}

/// Why a queue operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The queue service could not be reached or throttled us: retry later.
    #[error("queue {queue}: {reason} (retryable)")]
    Unavailable { queue: String, reason: String },
    /// The receipt is no longer valid: the deadline passed and the message may be with another
    /// consumer. The work done for it must not be acknowledged as this consumer's.
    #[error("queue {queue}: message receipt expired (the message's deadline passed)")]
    ReceiptExpired { queue: String },
    /// The body is over the queue's size limit, or another request the queue refuses.
    #[error("queue {queue}: {reason}")]
    Rejected { queue: String, reason: String },
    /// Credentials, permissions, a queue that does not exist: this worker cannot use it.
    #[error("queue {queue}: {reason}")]
    Misconfigured { queue: String, reason: String },
}

impl QueueError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            QueueError::Unavailable { .. } | QueueError::ReceiptExpired { .. } => {
                ErrorKind::Transient
            }
            QueueError::Rejected { .. } => ErrorKind::Permanent,
            QueueError::Misconfigured { .. } => ErrorKind::Environment,
        }
    }
}

/// One queue of stage messages.
#[async_trait]
pub trait Queue: std::fmt::Debug + Send + Sync + 'static {
    /// A name for logs and metrics (the queue's URL or its in-process name).
    fn name(&self) -> &str;

    /// Up to `max` messages (at least 1, at most 10), each invisible to other consumers for
    /// `visibility`. Waits up to `wait` for the first one (long polling); an empty result is
    /// normal.
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError>;

    /// Deletes the message: its work is done and durable. Acknowledging a message twice, or
    /// one already gone, succeeds.
    async fn ack(&self, receipt: &str) -> Result<(), QueueError>;

    /// Moves the message's deadline to `visibility` from now, while its work runs.
    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError>;

    /// Gives the message back: it becomes visible again after `delay` (zero: at once).
    async fn release(&self, receipt: &str, delay: Duration) -> Result<(), QueueError>;

    /// Enqueues a message. The body is a stage message as JSON.
    async fn send(&self, body: &str) -> Result<(), QueueError>;

    /// Enqueues several messages: one result per body, in order, since some may be taken and
    /// others not. SQS takes ten per request (a tenth of the requests, and of their cost).
    async fn send_batch(&self, bodies: &[String]) -> Vec<Result<(), QueueError>> {
        let mut out = Vec::with_capacity(bodies.len());
        for body in bodies {
            out.push(self.send(body).await);
        }
        out
    }

    /// Messages waiting (visible) and in flight (received, not yet acknowledged), as far as
    /// the queue can tell; SQS reports approximate numbers.
    async fn depth(&self) -> Result<QueueDepth, QueueError>;
}

/// How full a queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
}

/// The delay before a released message comes back: exponential in its receive count, with
/// jitter, capped, so a dependency that is down is not hammered and retries spread out.
pub fn backoff(receive_count: u32, base: Duration, cap: Duration) -> Duration {
    let exp = receive_count.saturating_sub(1).min(16);
    let raw = base.saturating_mul(1u32 << exp).min(cap);
    // Jitter from the clock's nanoseconds: no RNG dependency, different per call.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.5 + (nanos % 1000) as f64 / 2000.0;
    raw.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        assert!(backoff(1, base, cap) <= base);
        assert!(backoff(3, base, cap) >= Duration::from_secs(2));
        assert!(backoff(30, base, cap) <= cap);
    }
}
