//! Calls, their segments, their stage status and their vector batches: the source of truth for
//! what is indexed.

use async_trait::async_trait;

use super::{
    CallRecord, CallStatus, Garbage, Guard, SearchFilter, SegmentDoc, SegmentKey, StoreError,
    VectorBatch, VectorSet,
};
use crate::ids::CallId;

/// Call metadata and segment text.
///
/// The store decides which revision of a call is current (its indexed revision): segments of
/// any other revision are invisible to every read, so a half-replaced call never shows two
/// transcripts, and a revision in progress or failed never hides the indexed one.
///
/// Writes are conditional on a [`Guard`]: a writer whose fencing token is older than the last
/// one applied to the call, or whose revision is older than the call's newest, is refused
/// with [`StoreError::Superseded`], so a late or duplicate worker never overwrites newer work.
///
/// The store also keeps the call's vector batches (the ids the vector index assigned to each
/// revision's documents), because vector indexes without custom ids or delete-by-query
/// (OpenSearch Serverless) can only delete what someone recorded.
#[async_trait]
pub trait MetadataStore: std::fmt::Debug + Send + Sync + 'static {
    /// The call's record, or `None` if it was never seen.
    async fn get_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError>;

    /// The records of those of `ids` that exist, in any order: one round trip where the
    /// backend can (a backfill checks a listing page at a time).
    async fn get_calls(&self, ids: &[CallId]) -> Result<Vec<CallRecord>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.get_call(id).await?);
        }
        Ok(found)
    }

    /// Creates or replaces the call's record (an attempt started, a recorded failure). The
    /// indexed revision is never changed by a put: the stored one is kept, whatever
    /// `call.indexed_revision` says, and so are its segments, which stay searchable.
    async fn put_call(&self, call: &CallRecord, guard: &Guard) -> Result<(), StoreError>;

    /// Records that `batch`'s documents are about to be inserted into the vector index, so
    /// that a sweep finds them if the attempt dies before its commit.
    async fn begin_batch(&self, batch: &VectorBatch) -> Result<(), StoreError>;

    /// Atomically replaces every segment of the call (all revisions) with `segments`, which
    /// all carry `call.revision`, makes `vectors` the call's vector set and writes `call`,
    /// which must be `indexed` with `indexed_revision == revision` (anything else is
    /// refused). Returns the vector sets this commit superseded, which are garbage from now
    /// on: the caller deletes them and then [`MetadataStore::forget_batch`]es them (a sweep
    /// does it if the caller dies first). After a crash the store holds either the old state
    /// or the new one, never a mix; repeating the commit changes nothing and returns nothing.
    async fn commit_call(
        &self,
        call: &CallRecord,
        segments: &[SegmentDoc],
        vectors: &VectorSet,
        guard: &Guard,
    ) -> Result<Vec<VectorSet>, StoreError>;

    /// Removes the call and all its segments; its vector batches become garbage. Removing an
    /// unknown call succeeds.
    async fn delete_call(&self, call_id: &CallId) -> Result<(), StoreError>;

    /// Batches whose vectors must go: superseded or deleted ones (ids known), and batches
    /// begun before `open_before_ms` that never committed (ids unknown), at most `limit`.
    async fn garbage(&self, open_before_ms: i64, limit: usize) -> Result<Vec<Garbage>, StoreError>;

    /// Forgets a batch whose vectors are deleted. Never forgets a call's current batch.
    async fn forget_batch(&self, batch: &str) -> Result<(), StoreError>;

    /// Calls matching `filter` (its call-level fields; `role` is ignored) and, if given,
    /// `status`, most recently recorded first, at most `limit`.
    async fn list_calls(
        &self,
        status: Option<CallStatus>,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError>;

    /// Calls whose id starts with `prefix`, in id order, at most `limit` (an index range, not
    /// a scan).
    async fn calls_by_id_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError>;

    /// The current revision's segments of a call, in time order (ties by channel).
    async fn segments(&self, call_id: &CallId) -> Result<Vec<SegmentDoc>, StoreError>;

    /// The segments among `keys` that exist and belong to their call's current revision, in
    /// the order of `keys`. Unknown or stale keys are left out.
    async fn segments_by_key(&self, keys: &[SegmentKey]) -> Result<Vec<SegmentDoc>, StoreError>;

    /// Current segments of one call, or of all calls.
    async fn count_segments(&self, call_id: Option<&CallId>) -> Result<u64, StoreError>;

    /// Checks that the store is ready for use (schema, indexes), naming what is missing and
    /// the command that creates it.
    async fn check_ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
