//! The index stage: a transcript in, a searchable call out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callpipe_common::ids::CallId;
use callpipe_common::store::{
    now_ms, CallRecord, CallStatus, Guard, MetadataStore, ObjectStore, SearchFilter, SegmentDoc,
    StoreError, VectorBatch, VectorDoc, VectorIndex, VectorSet,
};
use callpipe_common::{ErrorKind, Transcript};

use crate::embed::{EmbedError, Embedder};
use crate::units::{units, UnitRules};

/// Why a call could not be indexed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("call {call_id}: embedding: {source}")]
    Embed {
        call_id: String,
        #[source]
        source: EmbedError,
    },
    #[error("call {call_id}: {source}")]
    Store {
        call_id: String,
        #[source]
        source: StoreError,
    },
    #[error("call {call_id}: the embedding task failed: {reason}")]
    Task { call_id: String, reason: String },
}

impl IndexError {
    /// Whether the commit was refused because a newer revision of the call is recorded.
    pub fn is_newer_revision(&self) -> bool {
        matches!(self, IndexError::Store { source, .. } if source.is_newer_revision())
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            IndexError::Embed { source, .. } => source.kind(),
            IndexError::Store { source, .. } => source.kind(),
            IndexError::Task { .. } => ErrorKind::Permanent,
        }
    }
}

/// The object key of a revision's full transcript (segments and words, as JSON).
pub fn transcript_key(call_id: &CallId, revision: &callpipe_common::Revision) -> String {
    format!("transcripts/{call_id}/{revision}.json")
}

/// Where a call's indexing time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexTimes {
    pub embed_s: f64,
    pub write_s: f64,
    pub units: usize,
}

/// What one sweep of vector garbage did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Batches whose documents are gone and which the metadata store forgot.
    pub batches: u64,
    /// Documents deleted.
    pub vectors: u64,
    /// Batches left for a later sweep (more documents than one pass deletes).
    pub left: u64,
}

/// How long an uncommitted vector batch may stay open before a sweep takes it for the
/// orphan of a dead attempt. Far above one index job, and above the ~60 s after which
/// OpenSearch Serverless shows new documents to the search that finds them.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(15 * 60);

/// Documents one sweep looks up per garbage batch.
const SWEEP_PAGE: usize = 1000;

/// Embeds a transcript's units and writes them to the backends, in an order that makes a
/// crash at any point harmless:
/// 1. the full transcript to the object store (replacing any earlier write of this revision);
/// 2. a new vector batch is recorded as begun, then its documents inserted (the index assigns
///    their ids);
/// 3. the segments, the batch's ids and the call record, in one conditional commit that marks
///    the call `indexed` and makes the previous batch garbage;
/// 4. the previous batch's documents are deleted by id, and earlier revisions' transcripts.
///
/// Until step 3 the call is not indexed, so a rerun redoes it; a batch that never commits is
/// found by [`Indexer::sweep`] once it is older than [`ORPHAN_GRACE`]. Search only returns
/// segments the metadata store calls current, so vectors of an interrupted run, or of a
/// revision being replaced, never surface.
#[derive(Debug, Clone)]
pub struct Indexer {
    embedder: Arc<dyn Embedder>,
    metadata: Arc<dyn MetadataStore>,
    vectors: Arc<dyn VectorIndex>,
    objects: Arc<dyn ObjectStore>,
    rules: UnitRules,
}

impl Indexer {
    pub fn new(
        embedder: Arc<dyn Embedder>,
        metadata: Arc<dyn MetadataStore>,
        vectors: Arc<dyn VectorIndex>,
        objects: Arc<dyn ObjectStore>,
        rules: UnitRules,
    ) -> Self {
        Indexer {
            embedder,
            metadata,
            vectors,
            objects,
            rules,
        }
    }

    /// Indexes `transcript` as the current revision of `call`, and on success sets `call` to
    /// `indexed` with its unit count and models. The commit is conditional on `guard`.
    pub async fn index(
        &self,
        call: &mut CallRecord,
        transcript: &Transcript,
        guard: &Guard,
    ) -> Result<IndexTimes, IndexError> {
        self.index_with(call, transcript, true, guard).await
    }

    /// [`Indexer::index`] for a transcript that the transcribe stage already wrote at
    /// [`transcript_key`]: step 1 is skipped.
    pub async fn index_stored(
        &self,
        call: &mut CallRecord,
        transcript: &Transcript,
        guard: &Guard,
    ) -> Result<IndexTimes, IndexError> {
        self.index_with(call, transcript, false, guard).await
    }

    async fn index_with(
        &self,
        call: &mut CallRecord,
        transcript: &Transcript,
        write_transcript: bool,
        guard: &Guard,
    ) -> Result<IndexTimes, IndexError> {
        let call_id = call.call_id.to_string();
        let store_err = |source| IndexError::Store {
            call_id: call_id.clone(),
            source,
        };
        let docs = units(&call.call_id, &call.revision, transcript, &self.rules);

        let started = Instant::now();
        let vectors = self.embed(&call.call_id, &docs).await?;
        let embed_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        if write_transcript {
            let json = serde_json::to_vec(transcript).expect("a transcript serialises");
            self.objects
                .put(&transcript_key(&call.call_id, &call.revision), json)
                .await
                .map_err(store_err)?;
        }
        call.status = CallStatus::Indexed;
        call.indexed_revision = Some(call.revision.clone());
        call.error = None;
        call.segments = docs.len() as u32;
        call.language = Some(transcript.language.clone());
        call.asr_model = Some(transcript.model.clone());
        call.embedding_model = Some(self.embedder.model().to_owned());
        call.updated_at_ms = now_ms();
        self.write_vectors(call, &docs, vectors, guard)
            .await
            .map_err(store_err)?;
        // Earlier revisions' transcripts are orphans now. Removing them after the commit means
        // a crash can at worst leave one behind, which the next index of this call removes.
        let current = transcript_key(&call.call_id, &call.revision);
        let prefix = format!("transcripts/{}/", call.call_id);
        for old in self.objects.list(&prefix).await.map_err(store_err)? {
            if old.key != current {
                self.objects.delete(&old.key).await.map_err(store_err)?;
            }
        }
        Ok(IndexTimes {
            embed_s,
            write_s: started.elapsed().as_secs_f64(),
            units: docs.len(),
        })
    }

    /// Steps 2 to 4: a new batch, the commit, the superseded batch's deletion.
    async fn write_vectors(
        &self,
        call: &CallRecord,
        docs: &[SegmentDoc],
        vectors: Vec<Vec<f32>>,
        guard: &Guard,
    ) -> Result<(), StoreError> {
        let batch = VectorBatch::new(&call.call_id, &call.revision);
        self.metadata.begin_batch(&batch).await?;
        let ids = self
            .vectors
            .insert(&batch.batch, &vector_docs(call, docs, vectors))
            .await?;
        let set = VectorSet {
            batch: batch.batch.clone(),
            ids,
        };
        let superseded = match self.metadata.commit_call(call, docs, &set, guard).await {
            Ok(superseded) => superseded,
            Err(e) => {
                // Refused or failed: this attempt's documents are orphans. Removing them now
                // saves the sweep the work; if this fails too, the sweep still will.
                if self.vectors.delete(&set.ids).await.is_ok() {
                    let _ = self.metadata.forget_batch(&set.batch).await;
                }
                return Err(e);
            }
        };
        for old in superseded {
            self.remove_batch(&old).await;
        }
        Ok(())
    }

    /// Deletes a superseded batch's documents and forgets it. The call is indexed already, so
    /// a failure here is logged, and the batch left to the sweep, not returned.
    async fn remove_batch(&self, old: &VectorSet) {
        // A batch without recorded ids (one from before batches existed) is the sweep's to
        // find by its tag.
        if old.ids.is_empty() {
            return;
        }
        let removed = match self.vectors.delete(&old.ids).await {
            Ok(()) => self.metadata.forget_batch(&old.batch).await,
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(batch = %old.batch, error = %e,
                "could not delete a superseded vector batch; the sweep will");
        }
    }

    /// Deletes the documents of every garbage batch (superseded, deleted, or begun more than
    /// `grace` ago and never committed) and forgets the batches. `callpipe gc` runs it, and
    /// the index workers now and then; it is idempotent and safe beside running workers.
    pub async fn sweep(&self, grace: Duration) -> Result<Swept, IndexError> {
        let store_err = |source| IndexError::Store {
            call_id: "*".into(),
            source,
        };
        let open_before = now_ms().saturating_sub(grace.as_millis() as i64);
        let mut swept = Swept::default();
        let mut seen = HashSet::new();
        loop {
            let page = self
                .metadata
                .garbage(open_before, 100)
                .await
                .map_err(store_err)?;
            let fresh: Vec<_> = page
                .into_iter()
                .filter(|g| seen.insert(g.batch.clone()))
                .collect();
            if fresh.is_empty() {
                return Ok(swept);
            }
            for g in fresh {
                let recorded = g.ids.unwrap_or_default();
                self.vectors.delete(&recorded).await.map_err(store_err)?;
                // Documents the record does not name (an attempt that died before its commit,
                // or a batch from before ids were recorded) are found by their batch tag. A
                // document deleted a moment ago may still be listed by an eventually
                // consistent index; it is not deleted twice.
                let recorded: HashSet<String> = recorded.into_iter().collect();
                let found = self
                    .vectors
                    .batch_ids(&g.batch, SWEEP_PAGE)
                    .await
                    .map_err(store_err)?;
                let complete = found.len() < SWEEP_PAGE;
                let extra: Vec<String> = found
                    .into_iter()
                    .filter(|id| !recorded.contains(id))
                    .collect();
                self.vectors.delete(&extra).await.map_err(store_err)?;
                swept.vectors += (recorded.len() + extra.len()) as u64;
                if complete {
                    self.metadata
                        .forget_batch(&g.batch)
                        .await
                        .map_err(store_err)?;
                    swept.batches += 1;
                } else {
                    swept.left += 1;
                }
            }
        }
    }

    /// Rebuilds every indexed call's vectors from the segment text in the metadata store, for
    /// a vector index that was lost or unreadable. Returns the number of vectors written.
    pub async fn rebuild_vectors(&self) -> Result<u64, IndexError> {
        let all = usize::MAX;
        let calls = self
            .metadata
            .list_calls(None, &SearchFilter::default(), all)
            .await
            .map_err(|source| IndexError::Store {
                call_id: "*".into(),
                source,
            })?;
        let mut written = 0;
        for call in calls.iter().filter(|c| c.indexed_revision.is_some()) {
            let store_err = |source| IndexError::Store {
                call_id: call.call_id.to_string(),
                source,
            };
            let docs = self
                .metadata
                .segments(&call.call_id)
                .await
                .map_err(store_err)?;
            let vectors = self.embed(&call.call_id, &docs).await?;
            // The same commit again, with a new batch: the lost index's ids become garbage,
            // whose deletion finds nothing.
            self.write_vectors(call, &docs, vectors, &Guard::none())
                .await
                .map_err(store_err)?;
            written += docs.len() as u64;
        }
        Ok(written)
    }

    /// The embeddings of `docs`' text, computed on the embedder's own threads.
    async fn embed(
        &self,
        call_id: &CallId,
        docs: &[SegmentDoc],
    ) -> Result<Vec<Vec<f32>>, IndexError> {
        let texts: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
        let embedder = self.embedder.clone();
        // The embedder is CPU work on its own threads: run it from a blocking thread.
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            embedder.embed(&refs)
        })
        .await
        .map_err(|e| IndexError::Task {
            call_id: call_id.to_string(),
            reason: e.to_string(),
        })?
        .map_err(|source| IndexError::Embed {
            call_id: call_id.to_string(),
            source,
        })
    }
}

/// The vector documents of `call`'s units, with the call-level facts filters need.
fn vector_docs(call: &CallRecord, docs: &[SegmentDoc], vectors: Vec<Vec<f32>>) -> Vec<VectorDoc> {
    docs.iter()
        .zip(vectors)
        .map(|(d, vector)| VectorDoc {
            key: d.key.clone(),
            role: d.role,
            source: call.source.clone(),
            recorded_at_ms: call.recorded_at_ms,
            call_duration_s: call.duration_s,
            text: d.text.clone(),
            vector,
        })
        .collect()
}
