//! Opening what `run`, the workers, `search` and `calls` share: the backends named by
//! `[storage]` (under the data directory, or MongoDB and OpenSearch), and the embedding model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use callpipe_cloud::mongo::{MongoMetadata, MongoSettings};
use callpipe_cloud::opensearch::{OpenSearchIndex, OpenSearchSettings};
use callpipe_common::config::{MetadataKind, VectorIndexKind};
use callpipe_common::store::{
    JobStore, KeywordIndex, MetadataStore, ObjectStore, VectorIndex, WriterLock,
};
use callpipe_index::embed::{Embedder, MiniLm};
use callpipe_index::fusion::FusionWeights;
use callpipe_index::search::SearchSettings;
use callpipe_index::store::{DiskVectorIndex, SqliteMetadata};
use callpipe_index::units::UnitRules;
use callpipe_index::Indexer;
use callpipe_transcribe::model::ModelStore;

use super::Context;

/// The stores search and the index stage read and write, as `[storage]` names them.
pub struct Stores {
    pub metadata: Arc<dyn MetadataStore>,
    pub vectors: Arc<dyn VectorIndex>,
    /// SQLite FTS5 beside the embedded metadata, OpenSearch's BM25 beside its vectors.
    pub keyword: Arc<dyn KeywordIndex>,
}

impl Context {
    /// `--data-dir`, else `[storage] data_dir`.
    pub fn data_dir(&self) -> &Path {
        &self.config.storage.data_dir
    }

    /// Whether any store lives in the data directory (and so needs its writer lock).
    fn uses_data_dir(&self) -> bool {
        self.config.storage.metadata == MetadataKind::Sqlite
            || self.config.storage.vector_index == VectorIndexKind::Embedded
    }

    async fn open_sqlite(&self) -> anyhow::Result<Arc<SqliteMetadata>> {
        let path = self.data_dir().join("metadata.db");
        Ok(Arc::new(SqliteMetadata::open(&path)?))
    }

    pub async fn mongo(&self) -> anyhow::Result<Arc<MongoMetadata>> {
        let m = &self.config.mongodb;
        let settings = MongoSettings {
            uri: m.uri.clone(),
            secret_arn: m.secret_arn.clone(),
            database: m.database.clone(),
        };
        let aws = if m.secret_arn.is_empty() {
            None
        } else {
            Some(self.aws().await)
        };
        let store = MongoMetadata::connect(settings, aws)
            .await
            .context("connecting to MongoDB ([mongodb])")?;
        Ok(Arc::new(store))
    }

    async fn open_opensearch(
        &self,
        embedder: &dyn Embedder,
    ) -> anyhow::Result<Arc<OpenSearchIndex>> {
        self.opensearch_at(&self.config.opensearch.endpoint, embedder)
            .await
    }

    /// The OpenSearch index at `endpoint` (`callpipe setup --provision` knows it before the
    /// config does).
    pub async fn opensearch_at(
        &self,
        endpoint: &str,
        embedder: &dyn Embedder,
    ) -> anyhow::Result<Arc<OpenSearchIndex>> {
        let o = &self.config.opensearch;
        let aws = self.aws().await;
        let settings = OpenSearchSettings {
            endpoint: endpoint.to_owned(),
            index: o.index.clone(),
            region: None,
        };
        let index = OpenSearchIndex::new(&settings, embedder.dim(), embedder.model(), aws)
            .context("opening the OpenSearch vector index ([opensearch])")?;
        Ok(Arc::new(index))
    }

    /// The metadata store alone (`calls`), checked for use.
    pub async fn open_metadata(&self) -> anyhow::Result<Arc<dyn MetadataStore>> {
        let metadata: Arc<dyn MetadataStore> = match self.config.storage.metadata {
            MetadataKind::Sqlite => self.open_sqlite().await?,
            MetadataKind::Mongodb => self.mongo().await?,
        };
        metadata.check_ready().await?;
        Ok(metadata)
    }

    /// The metadata store and, beside it, its backfill jobs; checked for use.
    pub async fn open_job_store(
        &self,
    ) -> anyhow::Result<(Arc<dyn MetadataStore>, Arc<dyn JobStore>)> {
        let (metadata, jobs): (Arc<dyn MetadataStore>, Arc<dyn JobStore>) =
            match self.config.storage.metadata {
                MetadataKind::Sqlite => {
                    let s = self.open_sqlite().await?;
                    (s.clone(), s)
                }
                MetadataKind::Mongodb => {
                    let m = self.mongo().await?;
                    (m.clone(), m)
                }
            };
        metadata.check_ready().await?;
        Ok((metadata, jobs))
    }

    /// The metadata store of an existing data directory (or the cloud store), for commands
    /// that only read.
    pub async fn open_existing_metadata(&self) -> anyhow::Result<Arc<dyn MetadataStore>> {
        self.require_indexed()?;
        self.open_metadata().await
    }

    /// Fails, saying what to do, when the embedded metadata store was never written.
    pub fn require_indexed(&self) -> anyhow::Result<()> {
        if self.config.storage.metadata == MetadataKind::Sqlite
            && !self.data_dir().join("metadata.db").is_file()
        {
            anyhow::bail!(
                "{}: no calls indexed here yet (run `callpipe run SOURCE...` first, or pass --data-dir)",
                self.data_dir().display()
            );
        }
        Ok(())
    }

    /// Every store, checked for use (a cloud index or collection that `callpipe setup` has not
    /// created is named here, at start-up). `writing` opens the embedded vector index the way
    /// its writer must: a damaged file is moved aside (the path is returned) for a rebuild.
    pub async fn open_stores(
        &self,
        embedder: &dyn Embedder,
        writing: bool,
    ) -> anyhow::Result<(Stores, Option<PathBuf>)> {
        let sqlite = match self.config.storage.metadata {
            MetadataKind::Sqlite => Some(self.open_sqlite().await?),
            MetadataKind::Mongodb => None,
        };
        let metadata: Arc<dyn MetadataStore> = match &sqlite {
            Some(s) => s.clone(),
            None => self.mongo().await?,
        };
        metadata.check_ready().await?;
        let mut moved = None;
        let (vectors, keyword): (Arc<dyn VectorIndex>, Option<Arc<dyn KeywordIndex>>) = match self
            .config
            .storage
            .vector_index
        {
            VectorIndexKind::Embedded => {
                let path = self.data_dir().join("vectors.db");
                let index = if writing {
                    let (index, aside) =
                        DiskVectorIndex::open_or_reset(&path, embedder.dim(), embedder.model())?;
                    moved = aside;
                    index
                } else {
                    DiskVectorIndex::open(&path, embedder.dim(), embedder.model()).context(
                        "opening the vector index (`callpipe run` rebuilds a damaged one)",
                    )?
                };
                (Arc::new(index), None)
            }
            VectorIndexKind::Opensearch => {
                let index = self.open_opensearch(embedder).await?;
                index.check_ready().await?;
                (index.clone(), Some(index))
            }
        };
        // Keyword search runs where the segment text is indexed for it: FTS5 in SQLite, else
        // BM25 in OpenSearch (`Config::validate` refuses MongoDB without OpenSearch).
        let keyword: Arc<dyn KeywordIndex> = match (sqlite, keyword) {
            (Some(s), _) => s,
            (None, Some(k)) => k,
            (None, None) => anyhow::bail!(
                "[storage] metadata = \"mongodb\" needs vector_index = \"opensearch\", which \
                 serves keyword search"
            ),
        };
        Ok((
            Stores {
                metadata,
                vectors,
                keyword,
            },
            moved,
        ))
    }

    /// What `run` and the index stage open to write: the data directory's writer lock first
    /// when a store lives there (a second writer fails at once with a clear message; readers
    /// need no lock, and cloud stores take conditional writes from any number of workers),
    /// then the backends, with a vector index that was lost or is unreadable rebuilt from the
    /// metadata store's segment text.
    pub async fn open_writer(&self) -> anyhow::Result<Writer> {
        let lock = if self.uses_data_dir() {
            Some(WriterLock::acquire(self.data_dir())?)
        } else {
            None
        };
        let objects = self.artifacts().await?;
        let embedder = self.load_embedder()?;
        let (stores, moved) = self.open_stores(embedder.as_ref(), true).await?;
        let Stores {
            metadata, vectors, ..
        } = stores;
        let indexer = Indexer::new(
            embedder,
            metadata.clone(),
            vectors.clone(),
            objects.clone(),
            self.unit_rules(),
        );
        if self.config.storage.vector_index == VectorIndexKind::Embedded {
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
            context: search.context,
            weights: FusionWeights {
                keyword_weight: search.keyword_weight,
                bm25_weight: search.bm25_weight,
                ..FusionWeights::default()
            },
        }
    }
}

/// The backends of a data directory opened for writing, with its lock held until dropped.
pub struct Writer {
    _lock: Option<WriterLock>,
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
