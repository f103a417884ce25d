//! Calls, their segments and their stage status: the source of truth for what is indexed.

use async_trait::async_trait;

use super::{CallRecord, CallStatus, ScoredKey, SearchFilter, SegmentDoc, SegmentKey, StoreError};
use crate::ids::CallId;

/// Call metadata and segment text, with keyword search.
///
/// The store decides which revision of a call is current (its indexed revision): segments of
/// any other revision are invisible to every read, so a half-replaced call never shows two
/// transcripts, and a revision in progress or failed never hides the indexed one.
#[async_trait]
pub trait MetadataStore: std::fmt::Debug + Send + Sync + 'static {
    /// The call's record, or `None` if it was never seen.
    async fn get_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError>;

    /// Creates or replaces the call's record (an attempt started, a recorded failure). The
    /// indexed revision is never changed by a put: the stored one is kept, whatever
    /// `call.indexed_revision` says, and so are its segments, which stay searchable.
    async fn put_call(&self, call: &CallRecord) -> Result<(), StoreError>;

    /// Atomically replaces every segment of the call (all revisions) with `segments`, which
    /// all carry `call.revision`, and writes `call`, which must be `indexed` with
    /// `indexed_revision == revision` (anything else is refused). After a crash the store
    /// holds either the old state or the new one, never a mix; repeating the commit changes
    /// nothing.
    async fn commit_call(
        &self,
        call: &CallRecord,
        segments: &[SegmentDoc],
    ) -> Result<(), StoreError>;

    /// Removes the call and all its segments. Removing an unknown call succeeds.
    async fn delete_call(&self, call_id: &CallId) -> Result<(), StoreError>;

    /// Calls matching `filter` (its call-level fields; `role` is ignored) and, if given,
    /// `status`, most recently recorded first, at most `limit`.
    async fn list_calls(
        &self,
        status: Option<CallStatus>,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError>;

    /// The current revision's segments of a call, in time order (ties by channel).
    async fn segments(&self, call_id: &CallId) -> Result<Vec<SegmentDoc>, StoreError>;

    /// The segments among `keys` that exist and belong to their call's current revision, in
    /// the order of `keys`. Unknown or stale keys are left out.
    async fn segments_by_key(&self, keys: &[SegmentKey]) -> Result<Vec<SegmentDoc>, StoreError>;

    /// Keyword (BM25-style) search over current segments' text, best first, at most `limit`.
    /// `query` is plain words as a user types them; no query syntax is interpreted, so any
    /// input is safe.
    async fn keyword_search(
        &self,
        query: &str,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<ScoredKey>, StoreError>;

    /// Current segments of one call, or of all calls.
    async fn count_segments(&self, call_id: Option<&CallId>) -> Result<u64, StoreError>;
}
