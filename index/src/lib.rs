//! The index stage: transcripts in, searchable segments out; and the search that reads them.
//!
//! It is the pipeline's last stage (ingest → transcribe → **index**). A transcript's segments
//! are grouped into searchable units (a segment, or a few consecutive segments of one
//! speaker), embedded, written to the vector index, and then committed with the call's record
//! to the metadata store, which is what makes the call searchable. Search fuses keyword (BM25)
//! and vector (kNN) results by query coverage and similarity, and joins them back to the
//! metadata store.
//!
//! # Layout
//! - [`embed`]: the [`embed::Embedder`] trait and MiniLM (all-MiniLM-L6-v2) on candle.
//! - [`units`]: transcript segments → searchable units with deterministic keys.
//! - [`store`]: the embedded backends: SQLite + FTS5 metadata, the on-disk vector index.
//! - [`indexer`]: the stage itself: embed, write vectors, commit the call.
//! - [`query`]: what a user typed, parsed once for every backend (phrases, exclusions, call
//!   ids, phone numbers).
//! - [`fusion`]: keyword coverage and semantic similarity as one score.
//! - [`search`]: hybrid search: both candidate lists, fusion, filters and context.
//! - [`relevance`]: a labelled set of calls and queries, and the metrics `eval-search` reports.

pub mod embed;
pub mod fusion;
pub mod indexer;
pub mod query;
pub mod relevance;
pub mod search;
pub mod store;
pub mod units;

pub use indexer::Indexer;
pub use search::{HybridSearch, SearchHit};
