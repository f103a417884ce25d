//! The embedded vector index: exact cosine search over vectors held in memory, persisted in a
//! SQLite file.
//!
//! Exact, not ANN: a scan of 100k 384-d vectors takes milliseconds on one core (see the
//! README's search benchmark), recall is 1.0 by construction, and there is no graph to rebuild
//! or tune. Rows are appended; a replaced call's rows are tombstoned and the arrays are
//! compacted once a quarter of them are dead, so replacing a call costs O(its size), not O(index).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use callpipe_common::ids::CallId;
use callpipe_common::store::{
    now_ms, CallFacets, ScoredKey, SearchFilter, SegmentKey, StoreError, VectorDoc, VectorIndex,
};
use callpipe_common::Role;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::sqlite::{key_at, role_at, Db};

const BACKEND: &str = "vector index";

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE vectors (
    id              INTEGER PRIMARY KEY,
    call_id         TEXT NOT NULL,
    revision        TEXT NOT NULL,
    channel         INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL,
    source          TEXT NOT NULL,
    recorded_at_ms  INTEGER NOT NULL,
    call_duration_s REAL NOT NULL,
    vector          BLOB NOT NULL
);
CREATE INDEX vectors_by_call ON vectors (call_id);
";

/// Schema 2: every row belongs to a batch (one indexing attempt), and the row id is the
/// document id the metadata store records. Rows from before batches get one legacy batch per
/// call, which the metadata store's own migration names as the call's current set.
const BATCHES: &str = "
ALTER TABLE vectors ADD COLUMN batch TEXT NOT NULL DEFAULT '';
UPDATE vectors SET batch = 'legacy:' || call_id;
CREATE INDEX vectors_by_batch ON vectors (batch);
";

/// One stored vector's key and filter facts; its components live in [`Table::data`].
#[derive(Debug)]
struct Row {
    id: i64,
    key: SegmentKey,
    role: Role,
    source: Arc<str>,
    recorded_at_ms: i64,
    call_duration_s: f64,
    alive: bool,
}

impl Row {
    fn facets(&self) -> CallFacets<'_> {
        CallFacets {
            call_id: &self.key.call_id,
            source: &self.source,
            recorded_at_ms: self.recorded_at_ms,
            duration_s: self.call_duration_s,
        }
    }
}

/// The in-memory copy: row `i`'s vector is `data[i * dim..(i + 1) * dim]`.
#[derive(Debug, Default)]
struct Table {
    data: Vec<f32>,
    rows: Vec<Row>,
    /// Live rows per call, for counts.
    by_call: HashMap<CallId, usize>,
    by_id: HashMap<i64, usize>,
    dead: usize,
}

impl Table {
    fn push(&mut self, row: Row, vector: &[f32]) {
        let i = self.rows.len();
        self.by_id.insert(row.id, i);
        *self.by_call.entry(row.key.call_id.clone()).or_default() += 1;
        self.data.extend_from_slice(vector);
        self.rows.push(row);
    }

    fn remove(&mut self, id: i64) {
        let Some(i) = self.by_id.remove(&id) else {
            return;
        };
        self.rows[i].alive = false;
        self.dead += 1;
        let call = &self.rows[i].key.call_id;
        if let Some(live) = self.by_call.get_mut(call) {
            *live -= 1;
            if *live == 0 {
                self.by_call.remove(call);
            }
        }
    }

    /// Drops dead rows once they are a quarter of the table.
    fn maybe_compact(&mut self, dim: usize) {
        if self.dead < 1024 || self.dead * 4 < self.rows.len() {
            return;
        }
        let old_rows = std::mem::take(&mut self.rows);
        let old_data = std::mem::take(&mut self.data);
        self.by_call.clear();
        self.by_id.clear();
        self.dead = 0;
        self.data.reserve(old_data.len());
        for (i, row) in old_rows.into_iter().enumerate() {
            if row.alive {
                self.push(row, &old_data[i * dim..(i + 1) * dim]);
            }
        }
    }
}

/// Segment vectors on disk (`vectors.db`) and in memory.
#[derive(Debug, Clone)]
pub struct DiskVectorIndex {
    db: Db,
    dim: usize,
    table: Arc<RwLock<Table>>,
    /// Put before every row id handed out, unique to this file: a rebuilt index starts its row
    /// ids again, and the ids the metadata store recorded for the lost one must not name the
    /// new one's documents.
    id_prefix: Arc<str>,
}

impl DiskVectorIndex {
    /// Opens or creates the index at `path` for vectors of `dim` components made by `model`.
    /// An index made by another model or of another dimension is refused: mixing embedding
    /// spaces would make similarity meaningless.
    pub fn open(path: &Path, dim: usize, model: &str) -> Result<Self, StoreError> {
        let db = Db::open(BACKEND, path, &[SCHEMA, BATCHES])?;
        let shown = path.display().to_string();
        let stored = db.run_now(|conn| {
            let get = |key: &str| -> rusqlite::Result<Option<String>> {
                conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
            };
            Ok((get("dim")?, get("model")?))
        })?;
        match stored {
            (Some(d), Some(m)) if d == dim.to_string() && m == model => {}
            (None, None) => {
                let model = model.to_owned();
                db.run_now(move |conn| {
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('dim', ?1), ('model', ?2)",
                        params![dim.to_string(), model],
                    )
                    .map(drop)
                })?;
            }
            (d, m) => {
                return Err(StoreError::Failed {
                    backend: BACKEND,
                    what: shown,
                    reason: format!(
                        "holds vectors of model `{}` ({} dimensions), not `{model}` ({dim}); \
                         use another data directory or re-index with --force",
                        m.unwrap_or_default(),
                        d.unwrap_or_default()
                    ),
                });
            }
        }
        let id_prefix = db.run_now(|conn| {
            // The creation time in nanoseconds: distinct for every file ever made here.
            let fresh = format!(
                "{:x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            );
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('id_prefix', ?1) ON CONFLICT DO NOTHING",
                [fresh],
            )?;
            conn.query_row("SELECT value FROM meta WHERE key = 'id_prefix'", [], |r| {
                r.get::<_, String>(0)
            })
        })?;
        let table = db.run_now(|conn| load(conn, dim))?;
        Ok(DiskVectorIndex {
            db,
            dim,
            table: Arc::new(RwLock::new(table)),
            id_prefix: id_prefix.into(),
        })
    }

    /// [`DiskVectorIndex::open`], except that a file that cannot be read as an index
    /// (corrupt, truncated, not a database, vectors of the wrong size) is moved aside to
    /// `<path>.unreadable-<ms>` and an empty index started in its place; the path it was moved
    /// to is returned, so the caller can rebuild the vectors from the metadata store. An index
    /// of another model is refused as by `open`, never moved. Only the data directory's writer
    /// may call this.
    pub fn open_or_reset(
        path: &Path,
        dim: usize,
        model: &str,
    ) -> Result<(Self, Option<PathBuf>), StoreError> {
        let err = match Self::open(path, dim, model) {
            Ok(index) => return Ok((index, None)),
            Err(e) => e,
        };
        if !path.exists() || !unreadable(path, dim) {
            return Err(err);
        }
        let aside = path.with_extension(format!("db.unreadable-{}", now_ms()));
        let moved = |e: std::io::Error| StoreError::Failed {
            backend: BACKEND,
            what: path.display().to_string(),
            reason: format!("unreadable ({err}), and moving it aside failed: {e}"),
        };
        std::fs::rename(path, &aside).map_err(moved)?;
        // The write-ahead log and shared memory belong to the file moved aside.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            match std::fs::remove_file(PathBuf::from(side)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(moved(e)),
                _ => {}
            }
        }
        tracing::warn!(path = %path.display(), moved_to = %aside.display(), error = %err,
            "the vector index was unreadable; starting an empty one");
        Ok((Self::open(path, dim, model)?, Some(aside)))
    }

    fn doc_id(&self, row: i64) -> String {
        format!("{}-{row}", self.id_prefix)
    }

    /// The row a document id names, if it is one of this file's.
    fn row_of(&self, id: &str) -> Option<i64> {
        id.strip_prefix(&*self.id_prefix)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    fn invalid(&self, what: String, reason: String) -> StoreError {
        StoreError::Failed {
            backend: BACKEND,
            what,
            reason,
        }
    }
}

/// Whether `path` is damaged as a database or as an index of `dim`-component vectors, as
/// opposed to a sound index that was refused for another reason (another model).
fn unreadable(path: &Path, dim: usize) -> bool {
    use rusqlite::ErrorCode;
    let check = || -> rusqlite::Result<bool> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if verdict != "ok" {
            return Ok(true);
        }
        let bad: i64 = conn.query_row(
            "SELECT count(*) FROM vectors WHERE length(vector) != ?1",
            [dim as i64 * 4],
            |r| r.get(0),
        )?;
        Ok(bad > 0)
    };
    match check() {
        Ok(damaged) => damaged,
        Err(e) => {
            matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
            ) || matches!(e, rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table"))
        }
    }
}

fn load(conn: &mut rusqlite::Connection, dim: usize) -> rusqlite::Result<Table> {
    let mut table = Table::default();
    let mut sources: HashMap<String, Arc<str>> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT call_id, revision, channel, seq, role, source, recorded_at_ms, call_duration_s,
                vector, id FROM vectors ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    let mut vector = vec![0f32; dim];
    while let Some(r) = rows.next()? {
        let blob = r.get_ref(8)?.as_blob()?;
        if blob.len() != dim * 4 {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Blob,
                format!("vector of {} bytes, expected {}", blob.len(), dim * 4).into(),
            ));
        }
        for (v, b) in vector.iter_mut().zip(blob.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let source: String = r.get(5)?;
        let source = sources
            .entry(source.clone())
            .or_insert_with(|| source.into())
            .clone();
        let row = Row {
            id: r.get(9)?,
            key: key_at(r, 0)?,
            role: role_at(r, 4)?,
            source,
            recorded_at_ms: r.get(6)?,
            call_duration_s: r.get(7)?,
            alive: true,
        };
        table.push(row, &vector);
    }
    Ok(table)
}

/// A candidate in the top-k heap, ordered so the heap's top is the *worst* kept.
struct Candidate {
    score: f32,
    row: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.row.cmp(&other.row))
    }
}

/// The inner product, in 8 independent lanes so the compiler vectorises it.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn top_k(
    table: &Table,
    dim: usize,
    query: &[f32],
    k: usize,
    filter: &SearchFilter,
) -> Vec<ScoredKey> {
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k + 1);
    for (i, row) in table.rows.iter().enumerate() {
        if !row.alive || !filter.matches(row.role, row.facets()) {
            continue;
        }
        let score = dot(&table.data[i * dim..(i + 1) * dim], query);
        if heap.len() < k {
            heap.push(Candidate { score, row: i });
        } else if heap.peek().is_some_and(|worst| score > worst.score) {
            heap.pop();
            heap.push(Candidate { score, row: i });
        }
    }
    heap.into_sorted_vec()
        .into_iter()
        .map(|c| ScoredKey {
            key: table.rows[c.row].key.clone(),
            score: c.score,
        })
        .collect()
}

#[async_trait]
impl VectorIndex for DiskVectorIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    async fn insert(&self, batch: &str, docs: &[VectorDoc]) -> Result<Vec<String>, StoreError> {
        for doc in docs {
            if doc.vector.len() != self.dim {
                return Err(self.invalid(
                    format!("document {}", doc.key),
                    format!(
                        "dimension {} does not match the index's {}",
                        doc.vector.len(),
                        self.dim
                    ),
                ));
            }
        }
        let batch = batch.to_owned();
        let written = docs.to_vec();
        let ids = self
            .db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut ids = Vec::with_capacity(written.len());
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO vectors (call_id, revision, channel, seq, role, source,
                            recorded_at_ms, call_duration_s, vector, batch)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )?;
                    let mut blob = Vec::new();
                    for d in &written {
                        blob.clear();
                        blob.extend(d.vector.iter().flat_map(|v| v.to_le_bytes()));
                        insert.execute(params![
                            d.key.call_id.as_str(),
                            d.key.revision.as_str(),
                            d.key.channel,
                            d.key.seq,
                            d.role.as_str(),
                            d.source,
                            d.recorded_at_ms,
                            d.call_duration_s,
                            blob,
                            batch,
                        ])?;
                        ids.push(tx.last_insert_rowid());
                    }
                }
                tx.commit()?;
                Ok(ids)
            })
            .await?;
        // The file is the truth; the memory copy follows once the write is durable.
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        for (d, &id) in docs.iter().zip(&ids) {
            let row = Row {
                id,
                key: d.key.clone(),
                role: d.role,
                source: d.source.as_str().into(),
                recorded_at_ms: d.recorded_at_ms,
                call_duration_s: d.call_duration_s,
                alive: true,
            };
            table.push(row, &d.vector);
        }
        Ok(ids.iter().map(|&id| self.doc_id(id)).collect())
    }

    async fn delete(&self, ids: &[String]) -> Result<(), StoreError> {
        // Ids are this index's row ids; anything else names no document here.
        let rows: Vec<i64> = ids.iter().filter_map(|id| self.row_of(id)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let deleted = rows.clone();
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut delete = tx.prepare_cached("DELETE FROM vectors WHERE id = ?1")?;
                    for id in &deleted {
                        delete.execute([id])?;
                    }
                }
                tx.commit()
            })
            .await?;
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        for id in rows {
            table.remove(id);
        }
        table.maybe_compact(self.dim);
        Ok(())
    }

    async fn batch_ids(&self, batch: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let batch = batch.to_owned();
        let limit = limit.min(1 << 40) as i64;
        let rows: Vec<i64> = self
            .db
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id FROM vectors WHERE batch = ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![batch, limit], |r| r.get::<_, i64>(0))?;
                rows.collect()
            })
            .await?;
        Ok(rows.into_iter().map(|id| self.doc_id(id)).collect())
    }

    async fn knn(
        &self,
        query: &[f32],
        k: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredKey>, StoreError> {
        if query.len() != self.dim {
            return Err(self.invalid(
                "query".into(),
                format!(
                    "dimension {} does not match the index's {}",
                    query.len(),
                    self.dim
                ),
            ));
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let table = self.table.clone();
        let dim = self.dim;
        let query = query.to_vec();
        let filter = filter.clone();
        // A scan is CPU work: keep it off the async runtime.
        tokio::task::spawn_blocking(move || {
            let table = table.read().unwrap_or_else(|p| p.into_inner());
            top_k(&table, dim, &query, k, &filter)
        })
        .await
        .map_err(|e| self.invalid("knn".into(), e.to_string()))
    }

    async fn count(&self, call_id: Option<&CallId>) -> Result<u64, StoreError> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        Ok(match call_id {
            Some(id) => table.by_call.get(id).copied().unwrap_or(0) as u64,
            None => (table.rows.len() - table.dead) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpipe_common::ids::Revision;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let index = DiskVectorIndex::open(&dir.path().join("vectors.db"), 16, "test").unwrap();
        callpipe_common::store::conformance::vector_index(&index, std::time::Duration::ZERO).await;
    }

    #[tokio::test]
    async fn a_reopened_index_finds_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.db");
        let index = DiskVectorIndex::open(&path, 8, "test").unwrap();
        let doc = |seq| VectorDoc {
            key: SegmentKey {
                call_id: CallId::from_source("file:///a.wav"),
                revision: Revision::new("r1"),
                channel: 0,
                seq,
            },
            role: Role::Agent,
            source: "file:///a.wav".into(),
            recorded_at_ms: 0,
            call_duration_s: 1.0,
            text: String::new(),
            vector: vec![0.5; 8],
        };
        let ids = index.insert("b1", &[doc(0), doc(1), doc(2)]).await.unwrap();
        index.delete(&ids[..1]).await.unwrap();
        drop(index);
        let reopened = DiskVectorIndex::open(&path, 8, "test").unwrap();
        assert_eq!(reopened.count(None).await.unwrap(), 2);
        assert_eq!(reopened.batch_ids("b1", 10).await.unwrap(), ids[1..]);
        reopened.delete(&ids).await.unwrap();
        assert_eq!(reopened.count(None).await.unwrap(), 0);
        // A new file's ids never name an earlier file's documents, though both number rows
        // from 1.
        let other = DiskVectorIndex::open(&dir.path().join("other.db"), 8, "test").unwrap();
        let fresh = other.insert("b2", &[doc(0)]).await.unwrap();
        assert_ne!(fresh, ids[..1]);
        other.delete(&ids).await.unwrap();
        assert_eq!(other.count(None).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn another_model_or_dimension_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.db");
        DiskVectorIndex::open(&path, 16, "a").unwrap();
        let err = DiskVectorIndex::open(&path, 16, "b").unwrap_err();
        assert!(err.to_string().contains("model `a`"), "{err}");
        assert!(DiskVectorIndex::open(&path, 8, "a").is_err());
    }

    #[test]
    fn an_unreadable_file_is_moved_aside_but_another_model_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.db");
        DiskVectorIndex::open(&path, 16, "a").unwrap();
        // Another model: refused, and the file stays where it is.
        assert!(DiskVectorIndex::open_or_reset(&path, 16, "b").is_err());
        assert!(path.exists());
        // Garbage over the file (a torn copy, a disk error): moved aside, a fresh index opens.
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        assert!(DiskVectorIndex::open(&path, 16, "a").is_err());
        let (index, aside) = DiskVectorIndex::open_or_reset(&path, 16, "a").unwrap();
        let aside = aside.expect("moved aside");
        assert!(aside.exists(), "{}", aside.display());
        assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 8192]);
        drop(index);
        let (_, again) = DiskVectorIndex::open_or_reset(&path, 16, "a").unwrap();
        assert!(again.is_none(), "the new file is sound");
    }

    #[test]
    fn compaction_keeps_live_rows_and_their_vectors() {
        let dim = 8;
        let mut table = Table::default();
        for n in 0..2000u32 {
            let call_id = CallId::from_source(&format!("c{}", n / 10));
            let row = Row {
                id: i64::from(n),
                key: SegmentKey {
                    call_id,
                    revision: Revision::new("r"),
                    channel: 0,
                    seq: n,
                },
                role: Role::Agent,
                source: "s".into(),
                recorded_at_ms: 0,
                call_duration_s: 1.0,
                alive: true,
            };
            table.push(row, &[n as f32; 8]);
        }
        for id in 0..1500 {
            table.remove(id);
        }
        table.maybe_compact(dim);
        assert_eq!(table.dead, 0);
        assert_eq!(table.rows.len(), 500);
        for (i, row) in table.rows.iter().enumerate() {
            assert_eq!(table.data[i * dim], row.key.seq as f32);
            assert_eq!(table.by_id[&row.id], i);
        }
    }
}
