//! The embedded metadata store: SQLite with an FTS5 index over segment text.

use std::path::Path;

use async_trait::async_trait;
use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{
    check_commit, now_ms, CallRecord, CallStatus, Garbage, Guard, KeywordHits, KeywordIndex,
    KeywordQuery, MetadataStore, ScoredKey, SearchFilter, SegmentDoc, SegmentKey, StoreError,
    VectorBatch, VectorSet,
};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};

use super::sqlite::{json_error, key_at, role_at, Db};

const BACKEND: &str = "metadata store";

/// `calls` keeps the whole record as JSON plus the columns filters need; `segments` is the
/// FTS5 external content table, so the text is stored once.
const SCHEMA: &str = "
CREATE TABLE calls (
    call_id        TEXT PRIMARY KEY,
    revision       TEXT NOT NULL,
    source         TEXT NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    duration_s     REAL NOT NULL,
    status         TEXT NOT NULL,
    record         TEXT NOT NULL
);
CREATE INDEX calls_by_time ON calls (recorded_at_ms DESC, call_id);
CREATE TABLE segments (
    id          INTEGER PRIMARY KEY,
    call_id     TEXT NOT NULL,
    revision    TEXT NOT NULL,
    channel     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    role        TEXT NOT NULL,
    start_s     REAL NOT NULL,
    end_s       REAL NOT NULL,
    text        TEXT NOT NULL,
    avg_logprob REAL NOT NULL,
    UNIQUE (call_id, revision, channel, seq)
);
CREATE INDEX segments_by_call ON segments (call_id, start_s);
-- Porter stemming so `refund` finds `refunded`; diacritics folded so `cafe` finds `café`.
CREATE VIRTUAL TABLE segments_fts USING fts5 (
    text, content = 'segments', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER segments_ai AFTER INSERT ON segments BEGIN
    INSERT INTO segments_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER segments_ad AFTER DELETE ON segments BEGIN
    INSERT INTO segments_fts (segments_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
";

/// Schema 2: the indexed revision is kept apart from the one in progress, so a call stays
/// searchable while a newer revision is processed or after it failed. In schema 1 the record's
/// revision was the searchable one exactly when the call was indexed.
const INDEXED_REVISION: &str = "
ALTER TABLE calls ADD COLUMN indexed_revision TEXT;
UPDATE calls SET indexed_revision = revision, record = json_set(record, '$.indexed_revision', revision)
    WHERE status = 'indexed';
";

/// Schema 3: conditional writes and vector batches. `fence` is the largest fencing token
/// applied to the call and `modified_ms` the newest revision's time (see `Guard`); `vectors`
/// is the current vector set (JSON); `vector_batches` holds every batch not yet forgotten.
const GUARDS_AND_BATCHES: &str = "
ALTER TABLE calls ADD COLUMN fence INTEGER;
ALTER TABLE calls ADD COLUMN modified_ms INTEGER;
ALTER TABLE calls ADD COLUMN vectors TEXT;
CREATE TABLE vector_batches (
    batch         TEXT PRIMARY KEY,
    call_id       TEXT NOT NULL,
    revision      TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('open', 'current', 'garbage')),
    started_at_ms INTEGER NOT NULL,
    ids           TEXT
);
CREATE INDEX vector_batches_by_state ON vector_batches (state, started_at_ms);
CREATE INDEX vector_batches_by_call ON vector_batches (call_id);
-- Indexed calls from before batches: their vectors form one legacy batch per call (the vector
-- index's own migration tags them so), whose ids the sweep finds by batch when superseded.
UPDATE calls SET vectors = json_object('batch', 'legacy:' || call_id, 'ids', json('[]'))
    WHERE indexed_revision IS NOT NULL;
INSERT INTO vector_batches (batch, call_id, revision, state, started_at_ms, ids)
    SELECT 'legacy:' || call_id, call_id, indexed_revision, 'current', 0, '[]'
    FROM calls WHERE indexed_revision IS NOT NULL;
";

/// Schema 4: backfill jobs (see `jobs.rs`), and the backfill pass that enqueued each call, by
/// which a job counts what became of its calls.
const BACKFILL: &str = "
ALTER TABLE calls ADD COLUMN backfill TEXT;
CREATE INDEX calls_by_backfill ON calls (backfill, status) WHERE backfill IS NOT NULL;
CREATE TABLE backfill_jobs (
    id            TEXT PRIMARY KEY,
    version       INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    job           TEXT NOT NULL
);
CREATE INDEX backfill_jobs_by_update ON backfill_jobs (updated_at_ms DESC);
";

/// Every schema change, oldest first (see `Db::open`).
const MIGRATIONS: &[&str] = &[SCHEMA, INDEXED_REVISION, GUARDS_AND_BATCHES, BACKFILL];

/// Calls, segments and keyword search in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteMetadata {
    pub(super) db: Db,
}

impl SqliteMetadata {
    /// Opens or creates the store at `path` (conventionally `<data dir>/metadata.db`).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(SqliteMetadata {
            db: Db::open(BACKEND, path, MIGRATIONS)?,
        })
    }
}

/// The columns every segment read selects, in [`segment_from_row`]'s order.
const SEGMENT_COLUMNS: &str =
    "s.call_id, s.revision, s.channel, s.seq, s.role, s.start_s, s.end_s, s.text, s.avg_logprob";

/// Joins segments to their call's indexed revision: the rule that hides stale segments and
/// those of a revision still in progress.
const CURRENT: &str = "JOIN calls c ON c.call_id = s.call_id AND c.indexed_revision = s.revision";

fn segment_from_row(row: &Row<'_>) -> rusqlite::Result<SegmentDoc> {
    Ok(SegmentDoc {
        key: key_at(row, 0)?,
        role: role_at(row, 4)?,
        start_s: row.get(5)?,
        end_s: row.get(6)?,
        text: row.get(7)?,
        avg_logprob: row.get(8)?,
    })
}

fn call_from_json(json: String) -> rusqlite::Result<CallRecord> {
    serde_json::from_str(&json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

/// Writes `call` as it is, `indexed_revision` included; callers decide that field (a commit
/// sets it, a plain put keeps the stored one). The guard's token and time only ever grow.
fn put_call_row(conn: &Connection, call: &CallRecord, guard: &Guard) -> rusqlite::Result<()> {
    let json = serde_json::to_string(call).map_err(json_error)?;
    conn.prepare_cached(
        "INSERT INTO calls
            (call_id, revision, indexed_revision, source, recorded_at_ms, duration_s, status,
             record, fence, modified_ms, backfill)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (call_id) DO UPDATE SET
            revision = excluded.revision, indexed_revision = excluded.indexed_revision,
            source = excluded.source, recorded_at_ms = excluded.recorded_at_ms,
            duration_s = excluded.duration_s, status = excluded.status, record = excluded.record,
            backfill = excluded.backfill,
            fence = max(coalesce(fence, excluded.fence), coalesce(excluded.fence, fence)),
            modified_ms = max(coalesce(modified_ms, excluded.modified_ms),
                              coalesce(excluded.modified_ms, modified_ms))",
    )?
    .execute(params![
        call.call_id.as_str(),
        call.revision.as_str(),
        call.indexed_revision.as_ref().map(|r| r.as_str()),
        call.source,
        call.recorded_at_ms,
        call.duration_s,
        call.status.as_str(),
        json,
        guard.token.map(|t| t as i64),
        guard.modified_ms,
        call.backfill,
    ])?;
    Ok(())
}

/// What the store holds for a call that a guard is checked against.
struct Stored {
    revision: Revision,
    indexed_revision: Option<Revision>,
    fence: Option<u64>,
    modified_ms: Option<i64>,
    vectors: Option<VectorSet>,
}

fn stored(conn: &Connection, call_id: &CallId) -> rusqlite::Result<Option<Stored>> {
    conn.prepare_cached(
        "SELECT revision, indexed_revision, fence, modified_ms, vectors FROM calls
         WHERE call_id = ?1",
    )?
    .query_row([call_id.as_str()], |r| {
        let vectors: Option<String> = r.get(4)?;
        Ok(Stored {
            revision: Revision::new(r.get::<_, String>(0)?),
            indexed_revision: r.get::<_, Option<String>>(1)?.map(Revision::new),
            fence: r.get::<_, Option<i64>>(2)?.map(|t| t as u64),
            modified_ms: r.get(3)?,
            vectors: vectors
                .map(|v| serde_json::from_str(&v).map_err(json_error))
                .transpose()?,
        })
    })
    .optional()
}

/// A guard's refusal, returned from inside the transaction (which then rolls back, so nothing
/// is written).
#[derive(Debug)]
struct Refused {
    newer_revision: bool,
    reason: String,
}

impl Refused {
    fn check(stored: Option<&Stored>, revision: &Revision, guard: &Guard) -> Option<Refused> {
        let stored = stored?;
        guard
            .refusal(revision, &stored.revision, stored.fence, stored.modified_ms)
            .map(|(newer_revision, reason)| Refused {
                newer_revision,
                reason,
            })
    }

    fn into_error(self, call_id: &CallId) -> StoreError {
        StoreError::Superseded {
            backend: BACKEND,
            what: format!("call {call_id}"),
            reason: self.reason,
            newer_revision: self.newer_revision,
        }
    }
}

fn set_batch_state(
    conn: &Connection,
    batch: &str,
    state: &str,
    ids: Option<&[String]>,
) -> rusqlite::Result<()> {
    let ids = ids
        .map(|ids| serde_json::to_string(ids).map_err(json_error))
        .transpose()?;
    conn.prepare_cached(
        "UPDATE vector_batches SET state = ?2, ids = coalesce(?3, ids) WHERE batch = ?1",
    )?
    .execute(params![batch, state, ids])?;
    Ok(())
}

/// Appends the call-level conditions of `filter` (on alias `c`) to `sql`, and its role
/// condition (on alias `s`) when `with_role`.
fn push_filter(sql: &mut String, args: &mut Vec<Value>, filter: &SearchFilter, with_role: bool) {
    if let Some(from) = filter.from_ms {
        sql.push_str(" AND c.recorded_at_ms >= ?");
        args.push(Value::Integer(from));
    }
    if let Some(to) = filter.to_ms {
        sql.push_str(" AND c.recorded_at_ms < ?");
        args.push(Value::Integer(to));
    }
    if let Some(call_id) = &filter.call_id {
        sql.push_str(" AND c.call_id = ?");
        args.push(Value::Text(call_id.as_str().to_owned()));
    }
    if let Some(prefix) = &filter.source_prefix {
        // substr, not LIKE: no wildcard characters to escape in a path or key.
        sql.push_str(" AND substr(c.source, 1, ?) = ?");
        args.push(Value::Integer(prefix.chars().count() as i64));
        args.push(Value::Text(prefix.clone()));
    }
    if let Some(min) = filter.min_duration_s {
        sql.push_str(" AND c.duration_s >= ?");
        args.push(Value::Real(min));
    }
    if let Some(max) = filter.max_duration_s {
        sql.push_str(" AND c.duration_s <= ?");
        args.push(Value::Real(max));
    }
    if with_role {
        if let Some(role) = filter.role {
            sql.push_str(" AND s.role = ?");
            args.push(Value::Text(role.as_str().to_owned()));
        }
    }
}

/// An FTS5 string: the words of a phrase (or one word) in double quotes. Words hold only
/// letters, digits and inner apostrophes (see [`callpipe_common::store::words`]), so nothing
/// in them is FTS5 syntax.
fn fts_phrase(words: &[String]) -> String {
    format!("\"{}\"", words.join(" "))
}

/// The FTS5 expression for `query`: every phrase (`AND`), or else any term (`OR`), minus any
/// segment holding an excluded word or phrase; `None` when nothing positive is asked for.
pub(crate) fn fts_query(query: &KeywordQuery) -> Option<String> {
    let phrases: Vec<String> = query
        .phrases
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| fts_phrase(p))
        .collect();
    let positive = if phrases.is_empty() {
        let terms: Vec<String> = query
            .terms
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| fts_phrase(std::slice::from_ref(t)))
            .collect();
        if terms.is_empty() {
            return None;
        }
        terms.join(" OR ")
    } else {
        phrases.join(" AND ")
    };
    let excluded: Vec<String> = query
        .excluded
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| fts_phrase(p))
        .collect();
    Some(if excluded.is_empty() {
        positive
    } else {
        format!("({positive}) NOT ({})", excluded.join(" OR "))
    })
}

/// How many documents hold each of `words`, and how many there are: the statistics fusion
/// weighs keyword matches by. FTS5 counts a word's document list (its own tokenizer stems it,
/// as the search does); a word it cannot tokenize counts 0.
fn term_stats(conn: &Connection, words: &[&str]) -> rusqlite::Result<(u64, Vec<u64>)> {
    let documents: i64 = conn
        .prepare_cached("SELECT count(*) FROM segments")?
        .query_row([], |r| r.get(0))?;
    let mut count =
        conn.prepare_cached("SELECT count(*) FROM segments_fts WHERE segments_fts MATCH ?1")?;
    let mut frequencies = Vec::with_capacity(words.len());
    for word in words {
        let n: i64 = count.query_row([fts_phrase(&[(*word).to_owned()])], |r| r.get(0))?;
        frequencies.push(n as u64);
    }
    Ok((documents as u64, frequencies))
}

#[async_trait]
impl MetadataStore for SqliteMetadata {
    async fn get_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        let id = call_id.as_str().to_owned();
        self.db
            .run(move |conn| {
                conn.prepare_cached("SELECT record FROM calls WHERE call_id = ?1")?
                    .query_row([&id], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(call_from_json)
                    .transpose()
            })
            .await
    }

    async fn put_call(&self, call: &CallRecord, guard: &Guard) -> Result<(), StoreError> {
        let mut call = call.clone();
        let guard = *guard;
        let call_id = call.call_id.clone();
        self.db
            .run(move |conn| {
                // Only a commit moves the indexed revision; read it and write it back as it is.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let stored = stored(&tx, &call.call_id)?;
                if let Some(refused) = Refused::check(stored.as_ref(), &call.revision, &guard) {
                    return Ok(Err(refused));
                }
                call.indexed_revision = stored.and_then(|s| s.indexed_revision);
                put_call_row(&tx, &call, &guard)?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?
            .map_err(|r| r.into_error(&call_id))
    }

    async fn begin_batch(&self, batch: &VectorBatch) -> Result<(), StoreError> {
        let batch = batch.clone();
        self.db
            .run(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO vector_batches (batch, call_id, revision, state, started_at_ms)
                     VALUES (?1, ?2, ?3, 'open', ?4) ON CONFLICT (batch) DO NOTHING",
                )?
                .execute(params![
                    batch.batch,
                    batch.call_id.as_str(),
                    batch.revision.as_str(),
                    now_ms()
                ])?;
                Ok(())
            })
            .await
    }

    async fn commit_call(
        &self,
        call: &CallRecord,
        segments: &[SegmentDoc],
        vectors: &VectorSet,
        guard: &Guard,
    ) -> Result<Vec<VectorSet>, StoreError> {
        check_commit(BACKEND, call, segments)?;
        let call = call.clone();
        let call_id = call.call_id.clone();
        let segments = segments.to_vec();
        let vectors = vectors.clone();
        let guard = *guard;
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let stored = stored(&tx, &call.call_id)?;
                if let Some(refused) = Refused::check(stored.as_ref(), &call.revision, &guard) {
                    return Ok(Err(refused));
                }
                let previous = stored.and_then(|s| s.vectors);
                tx.prepare_cached("DELETE FROM segments WHERE call_id = ?1")?
                    .execute([call.call_id.as_str()])?;
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO segments
                            (call_id, revision, channel, seq, role, start_s, end_s, text, avg_logprob)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?;
                    for s in &segments {
                        insert.execute(params![
                            s.key.call_id.as_str(),
                            s.key.revision.as_str(),
                            s.key.channel,
                            s.key.seq,
                            s.role.as_str(),
                            s.start_s,
                            s.end_s,
                            s.text,
                            s.avg_logprob,
                        ])?;
                    }
                }
                put_call_row(&tx, &call, &guard)?;
                let json = serde_json::to_string(&vectors).map_err(json_error)?;
                tx.prepare_cached("UPDATE calls SET vectors = ?2 WHERE call_id = ?1")?
                    .execute(params![call.call_id.as_str(), json])?;
                // A batch the caller never began (a rebuild) is recorded now, as current.
                tx.prepare_cached(
                    "INSERT INTO vector_batches (batch, call_id, revision, state, started_at_ms)
                     VALUES (?1, ?2, ?3, 'current', ?4) ON CONFLICT (batch) DO NOTHING",
                )?
                .execute(params![
                    vectors.batch,
                    call.call_id.as_str(),
                    call.revision.as_str(),
                    now_ms()
                ])?;
                set_batch_state(&tx, &vectors.batch, "current", Some(&vectors.ids))?;
                let superseded: Vec<VectorSet> = previous
                    .filter(|p| p.batch != vectors.batch)
                    .into_iter()
                    .collect();
                for old in &superseded {
                    set_batch_state(&tx, &old.batch, "garbage", Some(&old.ids))?;
                }
                tx.commit()?;
                Ok(Ok(superseded))
            })
            .await?
            .map_err(|r| r.into_error(&call_id))
    }

    async fn delete_call(&self, call_id: &CallId) -> Result<(), StoreError> {
        let id = call_id.as_str().to_owned();
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute("DELETE FROM segments WHERE call_id = ?1", [&id])?;
                tx.execute("DELETE FROM calls WHERE call_id = ?1", [&id])?;
                tx.execute(
                    "UPDATE vector_batches SET state = 'garbage' WHERE call_id = ?1",
                    [&id],
                )?;
                tx.commit()
            })
            .await
    }

    async fn garbage(&self, open_before_ms: i64, limit: usize) -> Result<Vec<Garbage>, StoreError> {
        let limit = limit.min(1 << 40) as i64;
        self.db
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT batch, call_id, ids FROM vector_batches
                     WHERE state = 'garbage' OR (state = 'open' AND started_at_ms < ?1)
                     ORDER BY started_at_ms, batch LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![open_before_ms, limit], |r| {
                    let ids: Option<String> = r.get(2)?;
                    Ok(Garbage {
                        batch: r.get(0)?,
                        call_id: CallId::from_stored(r.get::<_, String>(1)?),
                        ids: ids
                            .map(|v| serde_json::from_str(&v).map_err(json_error))
                            .transpose()?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn forget_batch(&self, batch: &str) -> Result<(), StoreError> {
        let batch = batch.to_owned();
        self.db
            .run(move |conn| {
                conn.prepare_cached(
                    "DELETE FROM vector_batches WHERE batch = ?1 AND state != 'current'",
                )?
                .execute([&batch])?;
                Ok(())
            })
            .await
    }

    async fn calls_by_id_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let prefix = prefix.to_owned();
        let limit = limit.min(1 << 40) as i64;
        self.db
            .run(move |conn| {
                // A range on the primary key, not LIKE: no wildcard to escape, and the index
                // answers it.
                let mut stmt = conn.prepare_cached(
                    "SELECT record FROM calls WHERE call_id >= ?1
                     AND substr(call_id, 1, length(?1)) = ?1 ORDER BY call_id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![prefix, limit], |r| r.get::<_, String>(0))?;
                rows.map(|json| call_from_json(json?)).collect()
            })
            .await
    }

    async fn list_calls(
        &self,
        status: Option<CallStatus>,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let mut sql = String::from("SELECT c.record FROM calls c WHERE 1 = 1");
        let mut args = Vec::new();
        if let Some(status) = status {
            sql.push_str(" AND c.status = ?");
            args.push(Value::Text(status.as_str().to_owned()));
        }
        push_filter(&mut sql, &mut args, filter, false);
        sql.push_str(" ORDER BY c.recorded_at_ms DESC, c.call_id LIMIT ?");
        args.push(Value::Integer(limit.min(i64::MAX as usize) as i64));
        self.db
            .run(move |conn| {
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(0))?;
                rows.map(|json| call_from_json(json?)).collect()
            })
            .await
    }

    async fn segments(&self, call_id: &CallId) -> Result<Vec<SegmentDoc>, StoreError> {
        let id = call_id.as_str().to_owned();
        self.db
            .run(move |conn| {
                let sql = format!(
                    "SELECT {SEGMENT_COLUMNS} FROM segments s {CURRENT}
                     WHERE s.call_id = ?1 ORDER BY s.start_s, s.channel, s.seq"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map([&id], segment_from_row)?;
                rows.collect()
            })
            .await
    }

    async fn segments_by_key(&self, keys: &[SegmentKey]) -> Result<Vec<SegmentDoc>, StoreError> {
        let keys = keys.to_vec();
        self.db
            .run(move |conn| {
                let sql = format!(
                    "SELECT {SEGMENT_COLUMNS} FROM segments s {CURRENT}
                     WHERE s.call_id = ?1 AND s.revision = ?2 AND s.channel = ?3 AND s.seq = ?4"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut out = Vec::with_capacity(keys.len());
                for k in &keys {
                    let found = stmt
                        .query_row(
                            params![k.call_id.as_str(), k.revision.as_str(), k.channel, k.seq],
                            segment_from_row,
                        )
                        .optional()?;
                    out.extend(found);
                }
                Ok(out)
            })
            .await
    }

    async fn count_segments(&self, call_id: Option<&CallId>) -> Result<u64, StoreError> {
        let id = call_id.map(|c| c.as_str().to_owned());
        self.db
            .run(move |conn| {
                let sql = format!(
                    "SELECT count(*) FROM segments s {CURRENT} WHERE ?1 IS NULL OR s.call_id = ?1"
                );
                conn.prepare_cached(&sql)?
                    .query_row([id], |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
            })
            .await
    }
}

#[async_trait]
impl KeywordIndex for SqliteMetadata {
    async fn keyword_search(
        &self,
        query: &KeywordQuery,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<KeywordHits, StoreError> {
        let words: Vec<String> = query
            .positive_words()
            .into_iter()
            .map(String::from)
            .collect();
        let fts = fts_query(query);
        // FTS5 keeps only the best `n` when asked for `ORDER BY rank LIMIT n`, instead of
        // scoring, joining and sorting every match; filters and stale revisions are applied to
        // that top list, which grows until it yields `limit` hits or holds every match.
        let mut sql = format!(
            "WITH top AS MATERIALIZED (
                SELECT rowid AS id, rank FROM segments_fts
                WHERE segments_fts MATCH ?1 ORDER BY rank LIMIT ?2
             )
             SELECT s.call_id, s.revision, s.channel, s.seq, top.rank, (SELECT count(*) FROM top)
             FROM top JOIN segments s ON s.id = top.id {CURRENT}
             WHERE 1 = 1"
        );
        let mut args = vec![Value::Null, Value::Integer(0)];
        push_filter(&mut sql, &mut args, filter, true);
        sql.push_str(" ORDER BY top.rank LIMIT ?");
        let limit = limit.min(1 << 40) as i64;
        args.push(Value::Integer(limit));
        let filtered = filter != &SearchFilter::default();
        self.db
            .run(move |conn| {
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                let (documents, frequencies) = term_stats(conn, &words)?;
                let hits = match fts {
                    Some(fts) if limit > 0 => top_hits(conn, &sql, args, fts, limit, filtered)?,
                    _ => Vec::new(),
                };
                Ok(KeywordHits {
                    hits,
                    documents,
                    frequencies,
                })
            })
            .await
    }
}

/// The best `limit` keyword hits passing the filter in `sql`: FTS5's top list, grown until
/// enough of it survives the filter.
fn top_hits(
    conn: &Connection,
    sql: &str,
    mut args: Vec<Value>,
    fts: String,
    limit: i64,
    filtered: bool,
) -> rusqlite::Result<Vec<ScoredKey>> {
    args[0] = Value::Text(fts);
    let mut stmt = conn.prepare_cached(sql)?;
    let mut fetch = if filtered { limit * 8 } else { limit };
    loop {
        args[1] = Value::Integer(fetch);
        let mut top_size = 0i64;
        let hits = stmt
            .query_map(params_from_iter(args.iter()), |r| {
                top_size = r.get(5)?;
                Ok(ScoredKey {
                    key: key_at(r, 0)?,
                    // FTS5's rank (bm25) is lower-is-better; the trait wants higher-is-better.
                    score: -(r.get::<_, f64>(4)? as f32),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Done when enough survived, or the top list already held every match.
        if hits.len() as i64 >= limit || (top_size < fetch && !hits.is_empty()) {
            return Ok(hits);
        }
        let total: i64 = conn
            .prepare_cached("SELECT count(*) FROM segments_fts WHERE segments_fts MATCH ?1")?
            .query_row([&args[0]], |r| r.get(0))?;
        if fetch >= total {
            return Ok(hits);
        }
        fetch = (fetch * 8).min(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetadata::open(&dir.path().join("metadata.db")).unwrap();
        callpipe_common::store::conformance::metadata_store(&store).await;
    }

    #[tokio::test]
    async fn job_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetadata::open(&dir.path().join("metadata.db")).unwrap();
        callpipe_common::store::conformance::job_store(&store, &store).await;
    }

    /// Keyword search loads its calls through commits.
    struct Commits<'a>(&'a SqliteMetadata);

    #[async_trait]
    impl callpipe_common::store::conformance::KeywordLoader for Commits<'_> {
        async fn load(&self, call: &CallRecord, segments: &[SegmentDoc]) {
            let set = VectorSet {
                batch: format!("b-{}", call.call_id),
                ids: Vec::new(),
            };
            self.0
                .commit_call(call, segments, &set, &Guard::none())
                .await
                .expect("commit");
        }
    }

    #[tokio::test]
    async fn keyword_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetadata::open(&dir.path().join("metadata.db")).unwrap();
        callpipe_common::store::conformance::keyword_index(
            &store,
            &Commits(&store),
            std::time::Duration::ZERO,
        )
        .await;
    }

    #[test]
    fn user_text_never_becomes_query_syntax() {
        assert_eq!(
            fts_query(&KeywordQuery::any_of("refund NEAR(x)")).unwrap(),
            "\"refund\" OR \"near\" OR \"x\""
        );
        assert_eq!(fts_query(&KeywordQuery::any_of("\"*:^")), None);
        let q = KeywordQuery {
            terms: vec!["fee".into()],
            phrases: vec![vec!["late".into(), "fee".into()]],
            excluded: vec![
                vec!["waived".into()],
                vec!["bank".into(), "transfer".into()],
            ],
        };
        assert_eq!(
            fts_query(&q).unwrap(),
            "(\"late fee\") NOT (\"waived\" OR \"bank transfer\")"
        );
    }

    #[tokio::test]
    async fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        let call = CallRecord::pending(
            CallId::from_source("file:///a.wav"),
            Revision::new("r1"),
            "file:///a.wav".into(),
            0,
        );
        SqliteMetadata::open(&path)
            .unwrap()
            .put_call(&call, &Guard::none())
            .await
            .unwrap();
        let reopened = SqliteMetadata::open(&path).unwrap();
        assert_eq!(reopened.get_call(&call.call_id).await.unwrap(), Some(call));
    }

    /// Processes opening a new file at the same moment (a backfill and its `status`) each
    /// find the schema complete: the migrations take the write lock and re-read the version.
    #[test]
    fn concurrent_opens_of_a_new_file_agree_on_the_schema() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("metadata.db");
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || SqliteMetadata::open(&path).map(|_| ()))
                })
                .collect();
            for t in opened {
                t.join().unwrap().unwrap();
            }
            let version: i64 = rusqlite::Connection::open(&path)
                .unwrap()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64);
        }
    }
}
