//! Opening what `run`, `search` and `calls` share: the backends named by `[storage]` under the
//! data directory, and the embedding model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use callpipe_common::config::{MetadataKind, VectorIndexKind};
use callpipe_common::store::{MetadataStore, ObjectStore, VectorIndex, WriterLock};
use callpipe_index::embed::{Embedder, MiniLm};
use callpipe_index::search::SearchSettings;
use callpipe_index::store::{DiskVectorIndex, SqliteMetadata};
use callpipe_index::units::UnitRules;
use callpipe_index::Indexer;
use callpipe_transcribe::model::ModelStore;

use super::Context;

impl Context {
    /// `--data-dir`, else `[storage] data_dir`.
    pub fn data_dir(&self) -> &Path {
        &self.config.storage.data_dir
    }

    pub fn open_metadata(&self) -> anyhow::Result<Arc<dyn MetadataStore>> {
        match self.config.storage.metadata {
            MetadataKind::Sqlite => {
                let path = self.data_dir().join("metadata.db");
                Ok(Arc::new(SqliteMetadata::open(&path)?))
            }
            MetadataKind::Mongodb => {
                Err(not_yet("metadata = \"mongodb\"", "metadata = \"sqlite\""))
            }
        }
    }

    /// The metadata store of an existing data directory, for commands that only read.
    pub fn open_existing_metadata(&self) -> anyhow::Result<Arc<dyn MetadataStore>> {
        if self.config.storage.metadata == MetadataKind::Sqlite
            && !self.data_dir().join("metadata.db").is_file()
        {
            anyhow::bail!(
                "{}: no calls indexed here yet (run `callpipe run SOURCE...` first, or pass --data-dir)",
                self.data_dir().display()
            );
        }
        self.open_metadata()
    }

    pub fn open_vectors(&self, embedder: &dyn Embedder) -> anyhow::Result<Arc<dyn VectorIndex>> {
        match self.config.storage.vector_index {
            VectorIndexKind::Embedded => {
                let path = self.data_dir().join("vectors.db");
                let index = DiskVectorIndex::open(&path, embedder.dim(), embedder.model())
                    .context("opening the vector index (`callpipe run` rebuilds a damaged one)")?;
                Ok(Arc::new(index))
            }
            VectorIndexKind::Opensearch => Err(not_yet(
                "vector_index = \"opensearch\"",
                "vector_index = \"embedded\"",
            )),
        }
    }

    /// What `run` opens to write: the data directory's writer lock first (a second writer
    /// fails at once with a clear message; readers need no lock), then the backends, with the
    /// temporary files of interrupted writes cleared, and a vector index that was lost or is
    /// unreadable rebuilt from the metadata store's segment text.
    pub async fn open_writer(&self) -> anyhow::Result<Writer> {
        let lock = WriterLock::acquire(self.data_dir())?;
        let metadata = self.open_metadata()?;
        let objects = self.artifacts().await?;
        let embedder = self.load_embedder()?;
        let (vectors, moved): (Arc<dyn VectorIndex>, _) = match self.config.storage.vector_index {
            VectorIndexKind::Embedded => {
                let path = self.data_dir().join("vectors.db");
                let (index, moved) =
                    DiskVectorIndex::open_or_reset(&path, embedder.dim(), embedder.model())?;
                (Arc::new(index), moved)
            }
            VectorIndexKind::Opensearch => {
                return Err(not_yet(
                    "vector_index = \"opensearch\"",
                    "vector_index = \"embedded\"",
                ))
            }
        };
        let indexer = Indexer::new(
            embedder,
            metadata.clone(),
            vectors.clone(),
            objects.clone(),
            self.unit_rules(),
        );
        let lost = vectors.count(None).await? == 0 && metadata.count_segments(None).await? > 0;
        if let Some(moved) = &moved {
            eprintln!(
                "warning: the vector index was unreadable and was moved to {}; rebuilding it",
                moved.display()
            );
        }
        if moved.is_some() || lost {
            let written = indexer
                .rebuild_vectors()
                .await
                .context("rebuilding the vector index from the metadata store")?;
            eprintln!("rebuilt the vector index: {written} vectors");
        }
        Ok(Writer {
            _lock: lock,
            metadata,
            indexer,
            artifacts: objects,
        })
    }

    /// The embedding model named by `[index] embedding_model`, from the model store.
    pub fn load_embedder(&self) -> anyhow::Result<Arc<dyn Embedder>> {
        let index = &self.config.index;
        let (dir, name): (PathBuf, String) = ModelStore::new(ModelStore::default_root())
            .resolve(&index.embedding_model)
            .context("finding the embedding model (install it with `callpipe model install`)")?;
        Ok(Arc::new(MiniLm::load(&dir, &name, index.embed_threads)?))
    }

    pub fn unit_rules(&self) -> UnitRules {
        let index = &self.config.index;
        UnitRules {
            max_s: index.unit_max_s,
            max_words: index.unit_max_words,
            max_gap_s: index.unit_max_gap_s,
        }
    }

    pub fn search_settings(&self) -> SearchSettings {
        let search = &self.config.search;
        SearchSettings {
            candidates: search.candidates,
            rrf_k: search.rrf_k,
            context: search.context,
        }
    }
}

/// A backend the config accepts and this build cannot open yet. The config keys are the
/// contract with the infrastructure, so they are accepted ahead of the implementation, and
/// the process that would use one stops with this message instead of writing elsewhere.
fn not_yet(setting: &str, instead: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "[storage] {setting} is accepted by the configuration but not implemented in this \
         build; the metadata and vectors stay on the embedded stores ([storage] {instead})"
    )
}

/// The backends of a data directory opened for writing, with its lock held until dropped.
pub struct Writer {
    _lock: WriterLock,
    pub metadata: Arc<dyn MetadataStore>,
    pub indexer: Indexer,
    /// Plans and transcripts: `<data dir>/objects` or the artifacts bucket.
    pub artifacts: Arc<dyn ObjectStore>,
}

/// `mm:ss.s`, or `h:mm:ss.s` past the hour: a moment in a call.
pub fn clock(seconds: f64) -> String {
    clock_with(seconds, 1)
}

/// [`clock`] with `decimals` digits after the seconds.
pub fn clock_with(seconds: f64, decimals: usize) -> String {
    let total = seconds.max(0.0);
    let h = (total / 3600.0).floor();
    let m = ((total - h * 3600.0) / 60.0).floor();
    let s = total - h * 3600.0 - m * 60.0;
    let width = 3 + decimals;
    if h > 0.0 {
        format!("{h}:{m:02}:{s:0width$.decimals$}")
    } else {
        format!("{m:02}:{s:0width$.decimals$}")
    }
}

/// A UTC instant as `YYYY-MM-DD HH:MM`.
pub fn date_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// Which end of a range a date bounds: a bare date as an upper bound means "through that day".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    From,
    To,
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (UTC) or RFC 3339 with an offset into ms since
/// the epoch. As an upper bound a bare date means the end of that day, so
/// `--from 2024-03-01 --to 2024-03-31` covers all of March.
pub fn parse_date(text: &str, bound: Bound) -> anyhow::Result<i64> {
    let text = text.trim();
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        if text.len() > 10 {
            return Ok(dt
                .to_zoned(jiff::tz::TimeZone::UTC)?
                .timestamp()
                .as_millisecond());
        }
    }
    let date: jiff::civil::Date = text.parse().with_context(|| {
        format!("`{text}` is not a date (YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339)")
    })?;
    let date = match bound {
        Bound::From => date,
        Bound::To => date.tomorrow()?,
    };
    Ok(date
        .to_zoned(jiff::tz::TimeZone::UTC)?
        .timestamp()
        .as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_as_utc_and_bare_upper_bounds_cover_the_day() {
        assert_eq!(
            parse_date("2026-03-02", Bound::From).unwrap(),
            1_772_409_600_000
        );
        assert_eq!(
            parse_date("2026-03-02", Bound::To).unwrap(),
            1_772_409_600_000 + 86_400_000
        );
        assert_eq!(
            parse_date("2026-03-02T09:14:05", Bound::To).unwrap(),
            1_772_442_845_000
        );
        assert_eq!(
            parse_date("2026-03-02T10:14:05+01:00", Bound::From).unwrap(),
            1_772_442_845_000
        );
        assert!(parse_date("last tuesday", Bound::From).is_err());
        assert_eq!(date_time(1_772_442_845_000), "2026-03-02 09:14");
        assert_eq!(clock(65.25), "01:05.2");
        assert_eq!(clock_with(65.25, 2), "01:05.25");
        assert_eq!(clock_with(3725.5, 2), "1:02:05.50");
    }
}
