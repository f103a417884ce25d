//! The index stage: a transcript in, a searchable call out.

use std::sync::Arc;
use std::time::Instant;

use callpipe_common::ids::CallId;
use callpipe_common::store::{
    now_ms, CallRecord, CallStatus, MetadataStore, ObjectStore, SearchFilter, SegmentDoc,
    StoreError, VectorDoc, VectorIndex,
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

/// Embeds a transcript's units and writes them to the backends, in an order that makes a
/// crash at any point harmless:
/// 1. the full transcript to the object store (replacing any earlier write of this revision);
/// 2. the vectors, replacing all of the call's earlier vectors;
/// 3. the segments and the call record, in one commit that marks the call `indexed`;
/// 4. earlier revisions' transcripts are deleted.
///
/// Until step 3 the call is not indexed, so a rerun redoes it; steps 1 and 2 are replacements,
/// so redoing them leaves no duplicates. Search only returns segments the metadata store calls
/// current, so vectors written by an interrupted run never surface.
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
    /// `indexed` with its unit count and models.
    pub async fn index(
        &self,
        call: &mut CallRecord,
        transcript: &Transcript,
    ) -> Result<IndexTimes, IndexError> {
        self.index_with(call, transcript, true).await
    }

    /// [`Indexer::index`] for a transcript that the transcribe stage already wrote at
    /// [`transcript_key`]: step 1 is skipped.
    pub async fn index_stored(
        &self,
        call: &mut CallRecord,
        transcript: &Transcript,
    ) -> Result<IndexTimes, IndexError> {
        self.index_with(call, transcript, false).await
    }

    async fn index_with(
        &self,
        call: &mut CallRecord,
        transcript: &Transcript,
        write_transcript: bool,
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
        self.vectors
            .replace_call(&call.call_id, &vector_docs(call, &docs, vectors))
            .await
            .map_err(store_err)?;

        call.status = CallStatus::Indexed;
        call.indexed_revision = Some(call.revision.clone());
        call.error = None;
        call.segments = docs.len() as u32;
        call.language = Some(transcript.language.clone());
        call.asr_model = Some(transcript.model.clone());
        call.embedding_model = Some(self.embedder.model().to_owned());
        call.updated_at_ms = now_ms();
        self.metadata
            .commit_call(call, &docs)
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
            self.vectors
                .replace_call(&call.call_id, &vector_docs(call, &docs, vectors))
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
            vector,
        })
        .collect()
}
