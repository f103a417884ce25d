//! A job's failure: its kind decides what happens to the message, its message names the call
//! or object, and its cause chain is kept for the logs.

use std::error::Error as StdError;
use std::fmt;

use callpipe_common::ErrorKind;

/// Why a job did not finish. Built from every library error at the point where the pipeline
/// calls the library, so the kind comes from the error that knows (a store's timeout is
/// transient, undecodable audio permanent, a missing model environment) and nothing above
/// it guesses.
#[derive(Debug)]
pub struct JobError {
    kind: ErrorKind,
    /// One line for people: what failed and on what (`s3://b/k.wav: ...`).
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl JobError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        JobError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// `context: cause`, keeping the cause as the source.
    pub fn with_source(
        kind: ErrorKind,
        context: impl fmt::Display,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        JobError {
            kind,
            message: format!("{context}: {source}"),
            source: Some(Box::new(source)),
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        JobError::new(ErrorKind::Transient, message)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        JobError::new(ErrorKind::Permanent, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message and every cause below it that adds something, for a log line.
    pub fn chain(&self) -> String {
        let mut out = self.message.clone();
        let mut cause = self.source.as_deref().and_then(StdError::source);
        while let Some(e) = cause {
            let text = e.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cause = e.source();
        }
        out
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for JobError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Library errors that know their kind.
pub trait Classified: StdError + Send + Sync + Sized + 'static {
    fn error_kind(&self) -> ErrorKind;

    /// This error as a job failure, with `context` (the call or object) in front.
    fn job(self, context: impl fmt::Display) -> JobError {
        let kind = self.error_kind();
        JobError::with_source(kind, context, self)
    }

    /// This error as a job failure, for errors that already name their file or object.
    fn bare(self) -> JobError {
        JobError {
            kind: self.error_kind(),
            message: self.to_string(),
            source: Some(Box::new(self)),
        }
    }
}

macro_rules! classified {
    ($($ty:ty),* $(,)?) => {
        $(impl Classified for $ty {
            fn error_kind(&self) -> ErrorKind {
                self.kind()
            }
        })*
    };
}

classified!(
    callpipe_common::store::StoreError,
    callpipe_common::queue::QueueError,
    callpipe_common::coord::CoordError,
    callpipe_common::messages::MessageError,
    callpipe_ingest::IngestError,
    callpipe_transcribe::EngineError,
    callpipe_index::indexer::IndexError,
);
