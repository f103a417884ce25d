//! The error classification shared by every stage.
//!
//! Each library crate has its own `thiserror` enum; each enum exposes `kind()` returning
//! [`ErrorKind`], so queue consumers decide "retry", "record and acknowledge" or "stop taking
//! work" without knowing which stage failed.

/// Whether retrying the same work can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A retry may succeed: a timeout, a dropped connection, a throttled request.
    Transient,
    /// A retry will fail the same way: undecodable audio, a missing object, a bad config.
    /// The failure is recorded on the call and the message is acknowledged.
    Permanent,
    /// The worker's fault, not the input's: out of memory, permission denied, a missing model,
    /// a bad config. The work is released untouched for a healthy worker, and the call is never
    /// marked failed, because the same input may well succeed elsewhere.
    Environment,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Environment => "environment",
        }
    }

    /// How an I/O error is classed: out of memory and permission problems belong to the machine,
    /// a short or garbled read to the input, the rest (interrupted, timed out, reset) may pass.
    pub fn of_io(error: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as Io;
        match error.kind() {
            Io::OutOfMemory
            | Io::PermissionDenied
            | Io::StorageFull
            | Io::QuotaExceeded
            | Io::ReadOnlyFilesystem => ErrorKind::Environment,
            Io::UnexpectedEof | Io::InvalidData | Io::NotFound | Io::IsADirectory => {
                ErrorKind::Permanent
            }
            _ => ErrorKind::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classed_by_whose_fault_they_are() {
        let kind = |k| ErrorKind::of_io(&std::io::Error::from(k));
        assert_eq!(
            kind(std::io::ErrorKind::OutOfMemory),
            ErrorKind::Environment
        );
        assert_eq!(
            kind(std::io::ErrorKind::PermissionDenied),
            ErrorKind::Environment
        );
        assert_eq!(
            kind(std::io::ErrorKind::UnexpectedEof),
            ErrorKind::Permanent
        );
        assert_eq!(kind(std::io::ErrorKind::TimedOut), ErrorKind::Transient);
    }
}
