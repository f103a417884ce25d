//! The error classification shared by every stage.
//!
//! Each library crate has its own `thiserror` enum; each enum exposes `kind()` returning
//! [`ErrorKind`], so queue consumers decide "retry" or "record and acknowledge" without knowing
//! which stage failed.

/// Whether retrying the same work can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A retry may succeed: a timeout, a dropped connection, a throttled request.
    Transient,
    /// A retry will fail the same way: undecodable audio, a missing object, a bad config.
    /// The failure is recorded on the call and the message is acknowledged.
    Permanent,
}
