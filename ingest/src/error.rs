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

    #[error("{path}: unsupported {what}")]
    Unsupported { path: PathBuf, what: String },

    /// The bytes are not a recording this decoder can read: a garbage header, no audio data,
    /// an impossible sample rate.
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

impl IngestError {
    /// Only I/O can succeed on retry; a file that is malformed stays malformed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngestError::Io { source, .. }
                if !matches!(
                    source.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ) =>
            {
                ErrorKind::Transient
            }
            _ => ErrorKind::Permanent,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            IngestError::NotFound { path }
            | IngestError::Io { path, .. }
            | IngestError::Empty { path }
            | IngestError::TooLarge { path, .. }
            | IngestError::TooLong { path, .. }
            | IngestError::Unsupported { path, .. }
            | IngestError::Malformed { path, .. } => path,
        }
    }
}
