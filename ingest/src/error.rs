//! The ingest stage's error type.

use std::path::PathBuf;

use callpipe_common::ErrorKind;

/// Why a recording could not be turned into channel audio.
///
/// Every variant names the file, so the one-line message is enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },

    #[error("{path}: read failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: file is empty")]
    Empty { path: PathBuf },

    /// The path is a directory, a fifo, a device (`/dev/zero`) or a socket: reading it could
    /// block forever or never end, so it is refused before any read.
    #[error("{path}: not a regular file (it is a {what})")]
    NotRegularFile { path: PathBuf, what: &'static str },

    /// `bytes` is the file's size, or, for a file that grew while it was read, how many bytes
    /// had arrived when reading stopped.
    #[error("{path}: {bytes} bytes exceeds the limit of {limit} bytes (ingest.max_file_bytes)")]
    TooLarge {
        path: PathBuf,
        bytes: u64,
        limit: u64,
    },

    #[error(
        "{path}: {duration_s:.1} s exceeds the limit of {limit_s:.1} s (ingest.max_duration_s)"
    )]
    TooLong {
        path: PathBuf,
        duration_s: f64,
        limit_s: f64,
    },

    /// Holding what transcription needs of the call (the audio around its speech, and the
    /// encoded bytes when they are in memory) would take more than the call's budget. Checked
    /// before each allocation, so the budget is never exceeded, only reached.
    #[error(
        "{path}: the call needs more than the {} MiB one call may hold (ingest.max_call_memory_mb)",
        limit_bytes.div_ceil(1 << 20)
    )]
    CallMemory { path: PathBuf, limit_bytes: u64 },

    #[error("{path}: unsupported {what}")]
    Unsupported { path: PathBuf, what: String },

    /// The bytes are not a recording this decoder can read: a garbage header, no audio data,
    /// an impossible sample rate.
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

impl IngestError {
    /// I/O errors are classed by whose fault they are ([`ErrorKind::of_io`]): out of memory or
    /// permission denied is the worker's, a short read the input's, a timeout may pass. Every
    /// other variant is the input's fault: a file that is malformed stays malformed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngestError::Io { source, .. } => ErrorKind::of_io(source),
            _ => ErrorKind::Permanent,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            IngestError::NotFound { path }
            | IngestError::Io { path, .. }
            | IngestError::Empty { path }
            | IngestError::NotRegularFile { path, .. }
            | IngestError::TooLarge { path, .. }
            | IngestError::TooLong { path, .. }
            | IngestError::CallMemory { path, .. }
            | IngestError::Unsupported { path, .. }
            | IngestError::Malformed { path, .. } => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> IngestError {
        IngestError::Io {
            path: PathBuf::from("call.wav"),
            source: std::io::Error::from(kind),
        }
    }

    #[test]
    fn io_errors_are_classed_by_whose_fault_they_are() {
        use std::io::ErrorKind as Io;
        // The worker's fault: release the message, never mark the call failed.
        assert_eq!(io(Io::OutOfMemory).kind(), ErrorKind::Environment);
        assert_eq!(io(Io::PermissionDenied).kind(), ErrorKind::Environment);
        // The input's fault.
        assert_eq!(io(Io::UnexpectedEof).kind(), ErrorKind::Permanent);
        assert_eq!(io(Io::InvalidData).kind(), ErrorKind::Permanent);
        // May pass on retry.
        assert_eq!(io(Io::TimedOut).kind(), ErrorKind::Transient);
        assert_eq!(io(Io::Interrupted).kind(), ErrorKind::Transient);
    }

    #[test]
    fn input_errors_are_permanent() {
        let path = PathBuf::from("call.wav");
        for error in [
            IngestError::NotFound { path: path.clone() },
            IngestError::Empty { path: path.clone() },
            IngestError::NotRegularFile {
                path: path.clone(),
                what: "fifo",
            },
            IngestError::TooLarge {
                path: path.clone(),
                bytes: 2,
                limit: 1,
            },
            IngestError::Malformed {
                path: path.clone(),
                reason: "garbage".into(),
            },
        ] {
            assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
            assert_eq!(error.path(), path);
        }
    }
}
