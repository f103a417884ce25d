//! Text embeddings: transcript segments in, unit-length vectors out, for semantic search.
//!
//! [`Embedder`] is the seam: the indexer holds an `Arc<dyn Embedder>` and does not care whether
//! the vectors come from [`MiniLm`] (all-MiniLM-L6-v2 run in-process on the CPU with candle) or
//! from a remote embedding service. Every implementation returns L2-normalised vectors, so a
//! dot product is the cosine similarity and any vector store's inner-product or cosine space
//! gives the same ranking.
//!
//! # Layout
//! - [`Embedder`] and [`EmbedError`]: the contract and its one error type.
//! - [`minilm`]: the sentence-transformers model `all-MiniLM-L6-v2` (BERT, 6 layers, 384-d,
//!   mean pooling), loaded from a model directory that `callpipe model install` puts in the
//!   model store.

pub mod minilm;

use std::path::PathBuf;

use callpipe_common::ErrorKind;

pub use self::minilm::MiniLm;

/// Turns text into unit-length vectors. Blocking: call it from a dedicated thread or
/// `spawn_blocking`, never on a tokio worker. A remote embedding service implements it too.
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// Model name recorded with the vectors (a change of model means re-embedding).
    fn model(&self) -> &str;
    /// Length of every vector [`embed`](Embedder::embed) returns; the vector index is created
    /// with it, so it must not change for a given [`model`](Embedder::model).
    fn dim(&self) -> usize;
    /// One L2-normalised vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Why embedding failed.
///
/// Load errors name the file, so a damaged or incomplete model directory is fixed by reading
/// the message rather than the source.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A file the model needs is not there.
    #[error("{path}: missing ({what})")]
    Missing { path: PathBuf, what: &'static str },
    /// A file is there but unusable: unparsable, truncated, or describing a model this
    /// embedder cannot run (another architecture, another pooling).
    #[error("{path}: corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// The model could not run on the input (tokenizer or tensor error).
    #[error("embedding failed: {0}")]
    Inference(String),
}

impl EmbedError {
    /// A missing or corrupt model is the worker's fault ([`ErrorKind::Environment`]): it stays so
    /// until someone installs the model, and the call itself is fine. In-process inference is a
    /// deterministic function of its input, so a batch that fails fails the same way on a retry
    /// ([`ErrorKind::Permanent`]). A remote embedder, which can time out or be throttled, will
    /// add a transient variant.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EmbedError::Missing { .. } | EmbedError::Corrupt { .. } => ErrorKind::Environment,
            EmbedError::Inference(_) => ErrorKind::Permanent,
        }
    }
}
