//! The embedded backends: everything `callpipe run` needs, in two SQLite files under the data
//! directory, with no server to run.
//!
//! - [`SqliteMetadata`] (`metadata.db`): calls, segments and FTS5 keyword search.
//! - [`DiskVectorIndex`] (`vectors.db`): segment vectors, searched exactly in memory.
//!
//! Both open in WAL mode, so `callpipe search` can read while `callpipe run` writes.

mod jobs;
mod metadata;
mod sqlite;
mod vectors;

pub use self::metadata::SqliteMetadata;
pub use self::vectors::DiskVectorIndex;
