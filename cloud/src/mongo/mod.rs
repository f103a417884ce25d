//! [`MetadataStore`] on MongoDB Atlas, through the `mongodb` driver.
//!
//! Keyword search is not served here: in the cloud configuration OpenSearch holds the segment
//! text (`KeywordIndex`).
//!
//! # Layout
//! Three collections in one database:
//! - `calls`: one document per call, `_id` = the call id, holding the [`CallRecord`]'s fields
//!   beside the store's own: `fence` (the largest fencing token applied), `modified_ms` (the
//!   newest revision's time), `version` (bumped by every write) and `vectors` (the current
//!   [`VectorSet`], `{batch, ids}`).
//! - `segments`: one document per segment, `_id` = its [`SegmentKey`] (`call/rev/channel/seq`),
//!   with the key's fields, `role`, `start_s`, `end_s`, `text` and `avg_logprob`. Only a commit
//!   writes them, together with the indexed revision they belong to.
//! - `vector_batches`: one document per batch not yet forgotten, `_id` = the batch id, with
//!   `call_id`, `revision`, `state` (`open`, `current` or `garbage`), `started_at_ms` and `ids`
//!   once a commit recorded them.
//! - `backfill_jobs`: one document per backfill job, `_id` = its id, holding the
//!   [`BackfillJob`](callpipe_common::store::BackfillJob); written by compare-and-set on its
//!   `version` ([`JobStore`](callpipe_common::store::JobStore), in `jobs.rs`).
//!
//! # Conditional writes
//! Every write to a call document is a compare-and-set: the call is read, [`Guard::refusal`]
//! decides on what was read, and the write replaces the document only if its `version` is
//! still the one read (and bumps it). A writer that loses the race reads again and decides
//! again, so a decision is never made on a state that is gone. `put_call` is that one
//! document write. `commit_call` and `delete_call` are multi-document transactions: the call's
//! compare-and-set, the segment replacement and the batch states commit together or not at
//! all, and a transaction that hits a write conflict runs again from its read. A commit costs
//! a fixed number of round trips (read, call, delete segments, insert segments, one or two
//! batch updates, commit), however many segments it carries.
//!
//! # Failure behaviour
//! - Server selection and connecting give up after 3 s, and a whole operation after 30 s, so a
//!   dead server is a quick [`StoreError::Unavailable`]; the driver reconnects on its own when
//!   the server is back.
//! - With `secret_arn`, an authentication failure re-reads the secret, rebuilds the client and
//!   runs the operation once more (at most one re-read per 30 s), so a rotated password needs
//!   no redeploy.
//! - Credentials and permissions are [`StoreError::Denied`]; duplicate keys and documents this
//!   module did not write are [`StoreError::Failed`]. Every error names the operation and the
//!   call.
//!
//! # Indexes
//! [`MongoMetadata::ensure_indexes`] (`callpipe setup`) creates what the queries need;
//! [`MetadataStore::check_ready`] names what is missing.

mod client;
mod docs;
mod error;
mod indexes;
mod jobs;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use callpipe_common::config::redact_url;
use callpipe_common::ids::CallId;
use callpipe_common::store::{
    check_commit, now_ms, CallRecord, CallStatus, Garbage, Guard, MetadataStore, SearchFilter,
    SegmentDoc, SegmentKey, StoreError, VectorBatch, VectorSet,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::Error as DriverError;
use mongodb::options::ClientOptions;
use mongodb::{ClientSession, Collection};

use self::client::{Connection, Handles};
use self::docs::{
    call_document, call_from_document, calls_filter, prefix_regex, server_limit, set_batch,
    BatchRow, Internal, SegmentRow, Stored, CURRENT, GARBAGE, INDEXED_REVISION, OPEN,
};
use self::error::{is_transient_transaction_error, server_code, Failure, DUPLICATE_KEY};
use self::indexes::{satisfies, INDEXES};

const BACKEND: &str = "mongodb";

/// How often a conditional write or a transaction is tried before the call counts as too
/// contended for now.
const MAX_ATTEMPTS: u32 = 10;
/// `listIndexes` on a collection that does not exist yet.
const NAMESPACE_NOT_FOUND: i32 = 26;
/// A write that met another transaction's write to the same document.
const WRITE_CONFLICT: i32 = 112;

/// Where the database is: the `[mongodb]` section of the configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoSettings {
    /// A connection string (`mongodb://` or `mongodb+srv://`), for local use. Not together
    /// with `secret_arn`.
    pub uri: String,
    /// Secrets Manager ARN of the connection string: a plain string, or a JSON object with a
    /// `uri` (or `connection_string`) field. Read at start-up and after authentication
    /// failures.
    pub secret_arn: String,
    /// The database the collections live in.
    pub database: String,
}

impl From<&callpipe_common::config::MongodbConfig> for MongoSettings {
    fn from(config: &callpipe_common::config::MongodbConfig) -> Self {
        MongoSettings {
            uri: config.uri.clone(),
            secret_arn: config.secret_arn.clone(),
            database: config.database.clone(),
        }
    }
}

/// Shows everything but the password in the URI.
impl fmt::Debug for MongoSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSettings")
            .field("uri", &redact_url(&self.uri))
            .field("secret_arn", &self.secret_arn)
            .field("database", &self.database)
            .finish()
    }
}

/// Call metadata, segments and vector batches in MongoDB. See the module docs for the
/// conditional writes and the failure behaviour.
#[derive(Debug)]
pub struct MongoMetadata {
    connection: Connection,
}

impl MongoMetadata {
    /// Reads the connection string (from `settings.uri`, or the secret `settings.secret_arn`
    /// through `aws`), connects and checks that the server answers and takes the credentials.
    pub async fn connect(
        settings: MongoSettings,
        aws: Option<&SdkConfig>,
    ) -> Result<Self, StoreError> {
        Self::connect_with(settings, aws, |_| {}).await
    }

    /// [`MongoMetadata::connect`], with `adjust` applied to the driver's options of every client
    /// built (the first, and each one rebuilt after a rotated password): command monitoring, a
    /// pool size. callpipe's defaults are set before it runs.
    pub async fn connect_with(
        settings: MongoSettings,
        aws: Option<&SdkConfig>,
        adjust: impl Fn(&mut ClientOptions) + Send + Sync + 'static,
    ) -> Result<Self, StoreError> {
        crate::tls::install_default_provider();
        let connection = Connection::open(settings, aws.cloned(), Arc::new(adjust)).await?;
        tracing::debug!(database = connection.database(), "connected to mongodb");
        Ok(MongoMetadata { connection })
    }

    /// Creates the indexes the queries need (and so the collections). Safe to run repeatedly
    /// and concurrently: an index that exists with the same keys is left as it is.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.connection
            .run("index creation", |h| async move {
                for collection in distinct_collections() {
                    let models = INDEXES
                        .iter()
                        .filter(|spec| spec.collection == collection)
                        .map(|spec| spec.model());
                    h.db.collection::<Document>(collection)
                        .create_indexes(models)
                        .await?;
                }
                Ok(())
            })
            .await
    }

    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<Handles>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.connection.run(what, op).await
    }
}

fn distinct_collections() -> Vec<&'static str> {
    let mut seen = Vec::new();
    for spec in INDEXES {
        if !seen.contains(&spec.collection) {
            seen.push(spec.collection);
        }
    }
    seen
}

/// The larger of what is stored and what the guard brings: tokens and revision times only
/// ever grow.
fn newest<T: Ord>(stored: Option<T>, mine: Option<T>) -> Option<T> {
    match (stored, mine) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// What the guard says about writing `call` over `stored`.
fn refusal(guard: &Guard, call: &CallRecord, stored: Option<&Stored>) -> Result<(), Failure> {
    let Some(stored) = stored else {
        return Ok(());
    };
    match guard.refusal(
        &call.revision,
        &stored.revision,
        stored.fence,
        stored.modified_ms,
    ) {
        Some((newer_revision, reason)) => Err(Failure::Refused {
            newer_revision,
            reason,
        }),
        None => Ok(()),
    }
}

async fn read_stored(
    calls: &Collection<Document>,
    call_id: &CallId,
    session: Option<&mut ClientSession>,
) -> Result<Option<Stored>, Failure> {
    let mut find = calls
        .find_one(doc! { "_id": call_id.as_str() })
        .projection(Stored::projection());
    if let Some(session) = session {
        find = find.session(session);
    }
    find.await?
        .map(|doc| Stored::from_document(&doc).map_err(Failure::Malformed))
        .transpose()
}

/// Writes the call document `doc` if the call is still as `stored` says (absent, or at the
/// same version); [`Failure::LostRace`] if another writer got there first.
async fn write_call(
    calls: &Collection<Document>,
    call_id: &CallId,
    stored: Option<&Stored>,
    doc: Document,
    session: Option<&mut ClientSession>,
) -> Result<(), Failure> {
    match stored {
        Some(stored) => {
            let mut replace = calls.replace_one(stored.unchanged(call_id), doc);
            if let Some(session) = session {
                replace = replace.session(session);
            }
            if replace.await?.matched_count == 0 {
                return Err(Failure::LostRace);
            }
        }
        None => {
            let mut insert = calls.insert_one(doc);
            if let Some(session) = session {
                insert = insert.session(session);
            }
            match insert.await {
                Err(e) if server_code(&e) == Some(DUPLICATE_KEY) => return Err(Failure::LostRace),
                result => {
                    result?;
                }
            }
        }
    }
    Ok(())
}

/// A short pause before another attempt, growing with `attempt` and jittered, so two writers
/// that collided do not collide again in step.
async fn back_off(attempt: u32) {
    let ceiling_ms = 5u64 << attempt.min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1 + nanos % ceiling_ms)).await;
}

/// Runs `body` in a transaction and commits it, from the start again while it loses a race or
/// a write conflict. `body` gets the session and hands it back with its result.
///
/// Only conflicts the server reported are retried here: a server that cannot be reached is the
/// caller's `Unavailable` at once (its retry replays the whole operation, which is
/// idempotent), rather than a loop of server-selection timeouts.
async fn in_transaction<T, F, Fut>(h: &Handles, mut body: F) -> Result<T, Failure>
where
    F: FnMut(ClientSession) -> Fut,
    Fut: Future<Output = (ClientSession, Result<T, Failure>)>,
{
    for attempt in 0..MAX_ATTEMPTS {
        let mut session = h.client.start_session().await?;
        session.start_transaction().await?;
        let (mut session, result) = body(session).await;
        match result {
            // The driver sends a commit again once by itself when its outcome is unknown.
            Ok(value) => match session.commit_transaction().await {
                Ok(()) => return Ok(value),
                Err(e) if is_retryable_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            },
            Err(failure) => {
                let reachable = match &failure {
                    Failure::Driver(e) => server_code(e).is_some(),
                    _ => true,
                };
                // Aborting frees the transaction's locks now. An unreachable server drops it
                // on its own (and so does the session's drop), so nothing waits for it here.
                if reachable {
                    let _ = session.abort_transaction().await;
                }
                match failure {
                    Failure::LostRace => {}
                    Failure::Driver(e) if is_retryable_conflict(&e) => {}
                    other => return Err(other),
                }
            }
        }
        back_off(attempt).await;
    }
    Err(Failure::LostRace)
}

/// A transaction the server aborted for a reason that running it again can fix: a write
/// conflict with another transaction, a primary that stepped down.
fn is_retryable_conflict(e: &DriverError) -> bool {
    is_transient_transaction_error(e) && server_code(e).is_some()
}

/// A put: one conditional document write, read and tried again while other writers win.
async fn put(h: &Handles, call: &CallRecord, guard: &Guard) -> Result<(), Failure> {
    for attempt in 0..MAX_ATTEMPTS {
        let stored = read_stored(&h.calls, &call.call_id, None).await?;
        let stored = stored.as_ref();
        refusal(guard, call, stored)?;
        // Only a commit moves the indexed revision and the vector set: they are written back
        // as read, and the version condition makes sure they still are.
        let doc = call_document(
            call,
            &Internal {
                indexed_revision: stored.and_then(|s| s.indexed_revision.as_ref()),
                fence: newest(stored.and_then(|s| s.fence), guard.token),
                modified_ms: newest(stored.and_then(|s| s.modified_ms), guard.modified_ms),
                version: Stored::next_version(stored),
                vectors: stored.and_then(|s| s.vectors.as_ref()),
            },
        )
        .map_err(Failure::Malformed)?;
        match write_call(&h.calls, &call.call_id, stored, doc, None).await {
            Err(Failure::LostRace) => {}
            // A commit's transaction holds the document; some servers answer a plain write
            // that meets it with a conflict instead of waiting.
            Err(Failure::Driver(e)) if server_code(&e) == Some(WRITE_CONFLICT) => {}
            result => return result,
        }
        back_off(attempt).await;
    }
    Err(Failure::LostRace)
}

/// One attempt at a commit, inside its transaction: returns the vector sets it superseded.
async fn commit_once(
    h: &Handles,
    s: &mut ClientSession,
    call: &CallRecord,
    segments: &[SegmentDoc],
    vectors: &VectorSet,
    guard: &Guard,
) -> Result<Vec<VectorSet>, Failure> {
    let call_id = &call.call_id;
    let stored = read_stored(&h.calls, call_id, Some(&mut *s)).await?;
    refusal(guard, call, stored.as_ref())?;
    let doc = call_document(
        call,
        &Internal {
            indexed_revision: Some(&call.revision),
            fence: newest(stored.as_ref().and_then(|s| s.fence), guard.token),
            modified_ms: newest(
                stored.as_ref().and_then(|s| s.modified_ms),
                guard.modified_ms,
            ),
            version: Stored::next_version(stored.as_ref()),
            vectors: Some(vectors),
        },
    )
    .map_err(Failure::Malformed)?;
    write_call(&h.calls, call_id, stored.as_ref(), doc, Some(&mut *s)).await?;

    h.segments
        .delete_many(doc! { "call_id": call_id.as_str() })
        .session(&mut *s)
        .await?;
    if !segments.is_empty() {
        h.segments
            .insert_many(segments.iter().map(SegmentRow::new))
            .session(&mut *s)
            .await?;
    }

    let now = now_ms();
    let (filter, update) = set_batch(vectors, CURRENT, call_id, &call.revision, now);
    h.batches
        .update_one(filter, update)
        .upsert(true)
        .session(&mut *s)
        .await?;
    let mut superseded = Vec::new();
    if let Some(stored) = stored {
        if let Some(old) = stored.vectors.filter(|old| old.batch != vectors.batch) {
            let revision = stored.indexed_revision.unwrap_or(stored.revision);
            let (filter, update) = set_batch(&old, GARBAGE, call_id, &revision, now);
            h.batches
                .update_one(filter, update)
                .upsert(true)
                .session(&mut *s)
                .await?;
            superseded.push(old);
        }
    }
    Ok(superseded)
}

/// One attempt at deleting a call, inside its transaction.
async fn delete_once(h: &Handles, s: &mut ClientSession, call_id: &CallId) -> Result<(), Failure> {
    h.batches
        .update_many(
            doc! { "call_id": call_id.as_str() },
            doc! { "$set": { "state": GARBAGE } },
        )
        .session(&mut *s)
        .await?;
    h.segments
        .delete_many(doc! { "call_id": call_id.as_str() })
        .session(&mut *s)
        .await?;
    h.calls
        .delete_one(doc! { "_id": call_id.as_str() })
        .session(&mut *s)
        .await?;
    Ok(())
}

/// The indexed revision of each of `call_ids` that has one.
async fn indexed_revisions(
    calls: &Collection<Document>,
    call_ids: &[&str],
) -> Result<HashMap<String, String>, Failure> {
    let docs: Vec<Document> = calls
        .find(doc! { "_id": { "$in": call_ids } })
        .projection(doc! { INDEXED_REVISION: 1 })
        .await?
        .try_collect()
        .await?;
    let mut out = HashMap::with_capacity(docs.len());
    for doc in docs {
        if let (Some(Bson::String(id)), Some(Bson::String(revision))) =
            (doc.get("_id"), doc.get(INDEXED_REVISION))
        {
            out.insert(id.clone(), revision.clone());
        }
    }
    Ok(out)
}

async fn collect_calls(
    calls: &Collection<Document>,
    filter: Document,
    sort: Document,
    limit: usize,
) -> Result<Vec<CallRecord>, Failure> {
    let docs: Vec<Document> = calls
        .find(filter)
        .sort(sort)
        .limit(server_limit(limit))
        .await?
        .try_collect()
        .await?;
    docs.into_iter()
        .map(|doc| call_from_document(doc).map_err(Failure::Malformed))
        .collect()
}

fn call_what(op: &str, call_id: &CallId) -> String {
    format!("{op} of call {call_id}")
}

#[async_trait]
impl MetadataStore for MongoMetadata {
    async fn get_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        self.run(&call_what("read", call_id), |h| async move {
            h.calls
                .find_one(doc! { "_id": call_id.as_str() })
                .await?
                .map(|doc| call_from_document(doc).map_err(Failure::Malformed))
                .transpose()
        })
        .await
    }

    async fn get_calls(&self, ids: &[CallId]) -> Result<Vec<CallRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        let query = doc! { "_id": { "$in": &ids } };
        let n = ids.len();
        self.run(&format!("read of {n} calls"), |h| {
            let query = query.clone();
            async move { collect_calls(&h.calls, query, doc! { "_id": 1 }, n).await }
        })
        .await
    }

    async fn put_call(&self, call: &CallRecord, guard: &Guard) -> Result<(), StoreError> {
        self.run(&call_what("put", &call.call_id), |h| async move {
            put(&h, call, guard).await
        })
        .await
    }

    async fn begin_batch(&self, batch: &VectorBatch) -> Result<(), StoreError> {
        let what = format!("begin of batch {} of call {}", batch.batch, batch.call_id);
        self.run(&what, |h| async move {
            h.batches
                .update_one(
                    doc! { "_id": batch.batch.as_str() },
                    doc! { "$setOnInsert": {
                        "call_id": batch.call_id.as_str(),
                        "revision": batch.revision.as_str(),
                        "state": OPEN,
                        "started_at_ms": now_ms(),
                    } },
                )
                .upsert(true)
                .await?;
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
        self.run(&call_what("commit", &call.call_id), |h| async move {
            in_transaction(&h, |mut s| {
                let h = &h;
                async move {
                    let result = commit_once(h, &mut s, call, segments, vectors, guard).await;
                    (s, result)
                }
            })
            .await
        })
        .await
    }

    async fn delete_call(&self, call_id: &CallId) -> Result<(), StoreError> {
        self.run(&call_what("delete", call_id), |h| async move {
            in_transaction(&h, |mut s| {
                let h = &h;
                async move {
                    let result = delete_once(h, &mut s, call_id).await;
                    (s, result)
                }
            })
            .await
        })
        .await
    }

    async fn garbage(&self, open_before_ms: i64, limit: usize) -> Result<Vec<Garbage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run("garbage listing", |h| async move {
            let rows: Vec<BatchRow> = h
                .batches
                .find(doc! { "$or": [
                    { "state": GARBAGE },
                    { "state": OPEN, "started_at_ms": { "$lt": open_before_ms } },
                ] })
                .sort(doc! { "started_at_ms": 1, "_id": 1 })
                .limit(server_limit(limit))
                .await?
                .try_collect()
                .await?;
            Ok(rows.into_iter().map(BatchRow::into_garbage).collect())
        })
        .await
    }

    async fn forget_batch(&self, batch: &str) -> Result<(), StoreError> {
        self.run(&format!("forget of batch {batch}"), |h| async move {
            h.batches
                .delete_one(doc! { "_id": batch, "state": { "$ne": CURRENT } })
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_calls(
        &self,
        status: Option<CallStatus>,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = calls_filter(status, filter);
        self.run("listing of calls", |h| {
            let query = query.clone();
            async move {
                collect_calls(
                    &h.calls,
                    query,
                    doc! { "recorded_at_ms": -1, "_id": 1 },
                    limit,
                )
                .await
            }
        })
        .await
    }

    async fn calls_by_id_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Anchored and without options, the regex is a range on the `_id` index.
        let query = doc! { "_id": { "$regex": prefix_regex(prefix) } };
        self.run(&format!("lookup of calls by prefix {prefix:?}"), |h| {
            let query = query.clone();
            async move { collect_calls(&h.calls, query, doc! { "_id": 1 }, limit).await }
        })
        .await
    }

    async fn segments(&self, call_id: &CallId) -> Result<Vec<SegmentDoc>, StoreError> {
        self.run(&call_what("segment read", call_id), |h| async move {
            let Some(revision) = indexed_revisions(&h.calls, &[call_id.as_str()])
                .await?
                .remove(call_id.as_str())
            else {
                return Ok(Vec::new());
            };
            let rows: Vec<SegmentRow> = h
                .segments
                .find(doc! { "call_id": call_id.as_str(), "revision": revision })
                .sort(doc! { "start_s": 1, "channel": 1, "seq": 1 })
                .await?
                .try_collect()
                .await?;
            Ok(rows.into_iter().map(SegmentRow::into_doc).collect())
        })
        .await
    }

    async fn segments_by_key(&self, keys: &[SegmentKey]) -> Result<Vec<SegmentDoc>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let call_ids: Vec<&str> = keys
            .iter()
            .map(|k| k.call_id.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let what = match call_ids.as_slice() {
            [one] => format!("segment read of call {one}"),
            many => format!("segment read of {} calls", many.len()),
        };
        let (ids, call_ids) = (&ids, &call_ids);
        self.run(&what, |h| async move {
            let rows: Vec<SegmentRow> = h
                .segments
                .find(doc! { "_id": { "$in": ids.as_slice() } })
                .await?
                .try_collect()
                .await?;
            let current = indexed_revisions(&h.calls, call_ids).await?;
            let found: HashMap<String, SegmentRow> = rows
                .into_iter()
                .filter(|row| {
                    current.get(row.call_id.as_str()).map(String::as_str)
                        == Some(row.revision.as_str())
                })
                .map(|row| (row.id.clone(), row))
                .collect();
            // In the order asked (a key asked twice comes back twice).
            Ok(ids
                .iter()
                .filter_map(|id| found.get(id).cloned().map(SegmentRow::into_doc))
                .collect())
        })
        .await
    }

    async fn count_segments(&self, call_id: Option<&CallId>) -> Result<u64, StoreError> {
        match call_id {
            Some(call_id) => {
                self.run(&call_what("segment count", call_id), |h| async move {
                    let Some(revision) = indexed_revisions(&h.calls, &[call_id.as_str()])
                        .await?
                        .remove(call_id.as_str())
                    else {
                        return Ok(0);
                    };
                    Ok(h.segments
                        .count_documents(doc! { "call_id": call_id.as_str(), "revision": revision })
                        .await?)
                })
                .await
            }
            // Segments are written only by a commit, together with the indexed revision they
            // belong to, and each commit or delete removes the call's others: every stored
            // segment is current.
            None => {
                self.run("segment count", |h| async move {
                    Ok(h.segments.count_documents(doc! {}).await?)
                })
                .await
            }
        }
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let missing = self
            .run("index check", |h| async move {
                let mut missing = Vec::new();
                for collection in distinct_collections() {
                    let listed = match h.db.collection::<Document>(collection).list_indexes().await
                    {
                        Ok(cursor) => cursor.try_collect::<Vec<_>>().await?,
                        Err(e) if server_code(&e) == Some(NAMESPACE_NOT_FOUND) => Vec::new(),
                        Err(e) => return Err(e.into()),
                    };
                    for spec in INDEXES.iter().filter(|s| s.collection == collection) {
                        let present = listed.iter().any(|index| {
                            let name = index
                                .options
                                .as_ref()
                                .and_then(|o| o.name.as_deref())
                                .unwrap_or("");
                            satisfies(spec, name, &index.keys)
                        });
                        if !present {
                            missing.push(format!("{collection}.{}", spec.name));
                        }
                    }
                }
                Ok(missing)
            })
            .await?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::Failed {
            backend: BACKEND,
            what: format!("database {}", self.connection.database()),
            reason: format!(
                "missing indexes {}: run `callpipe setup` to create them",
                missing.join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use callpipe_common::ids::Revision;

    use super::*;

    fn indexed_call() -> CallRecord {
        let mut call = CallRecord::pending(
            CallId::from_source("s3://b/k.wav"),
            Revision::new("r1"),
            "s3://b/k.wav".into(),
            0,
        );
        call.status = CallStatus::Indexed;
        call.indexed_revision = Some(call.revision.clone());
        call.channels = vec![callpipe_common::audio::Role::Agent];
        call
    }

    fn segment(call: &CallRecord, revision: &str, seq: u32) -> SegmentDoc {
        SegmentDoc {
            key: SegmentKey {
                call_id: call.call_id.clone(),
                revision: Revision::new(revision),
                channel: 0,
                seq,
            },
            role: callpipe_common::audio::Role::Agent,
            start_s: f64::from(seq),
            end_s: f64::from(seq) + 1.0,
            text: "hello".into(),
            avg_logprob: -0.1,
        }
    }

    #[test]
    fn commits_that_break_the_contract_are_refused_before_any_io() {
        let call = indexed_call();
        assert!(check_commit(
            BACKEND,
            &call,
            &[segment(&call, "r1", 0), segment(&call, "r1", 1)]
        )
        .is_ok());
        let err = check_commit(BACKEND, &call, &[segment(&call, "r0", 0)]).unwrap_err();
        assert!(err.to_string().contains("not of revision"), "{err}");
        let err = check_commit(
            BACKEND,
            &call,
            &[segment(&call, "r1", 0), segment(&call, "r1", 0)],
        )
        .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let mut pending = call.clone();
        pending.status = CallStatus::Pending;
        assert!(check_commit(BACKEND, &pending, &[]).is_err());
    }

    #[test]
    fn tokens_and_times_only_grow() {
        assert_eq!(newest(Some(5), Some(3)), Some(5));
        assert_eq!(newest(Some(5), Some(9)), Some(9));
        assert_eq!(newest(None, Some(9)), Some(9));
        assert_eq!(newest(Some(5), None), Some(5));
        assert_eq!(newest::<u64>(None, None), None);
    }

    #[test]
    fn settings_never_show_the_password() {
        let settings = MongoSettings {
            uri: "mongodb://callpipe:hunter2@db.example.net/".into(),
            secret_arn: String::new(),
            database: "callpipe".into(),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("db.example.net"),
            "{shown}"
        );
    }
}
