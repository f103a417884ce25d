//! The conformance suites: one per backend trait, run against every implementation (the
//! embedded ones in their crates' tests, the cloud ones against real local servers).
//!
//! Each suite takes a fresh, empty backend and panics with a message naming the broken rule.
//! They check behaviour a caller relies on, not implementation details. What a backend cannot
//! promise is a capability flag ([`super::Capabilities`]) that changes how a rule is checked
//! (waiting with [`eventually`], recall instead of exact order), never whether it is.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{
    CallRecord, CallStatus, Guard, KeywordHits, KeywordIndex, KeywordQuery, MetadataStore,
    ObjectStore, SearchFilter, SegmentDoc, SegmentKey, StoreError, VectorBatch, VectorDoc,
    VectorIndex, VectorSet,
};
use crate::audio::Role;
use crate::ids::{CallId, Revision};

/// Day 1 of the suite's calendar: 2024-01-01T00:00:00Z.
const DAY0_MS: i64 = 1_704_067_200_000;
const DAY_MS: i64 = 86_400_000;

/// Put, get, head, list and delete, overwrite atomicity from the caller's view, missing keys
/// and bad keys.
pub async fn object_store(store: &dyn ObjectStore) {
    assert!(
        store.list("").await.expect("list").is_empty(),
        "the suite needs an empty store"
    );
    store
        .put("transcripts/a/r1.json", b"{\"v\":1}".to_vec())
        .await
        .expect("put");
    store
        .put("transcripts/a/r2.json", b"second".to_vec())
        .await
        .expect("put");
    store
        .put("audio/a.f32", vec![7u8; 100_000])
        .await
        .expect("put");
    assert_eq!(
        store.get("transcripts/a/r1.json").await.expect("get"),
        b"{\"v\":1}"
    );
    assert_eq!(store.get("audio/a.f32").await.expect("get").len(), 100_000);

    // Overwrite replaces the whole object.
    store
        .put("transcripts/a/r1.json", b"x".to_vec())
        .await
        .expect("overwrite");
    assert_eq!(store.get("transcripts/a/r1.json").await.expect("get"), b"x");

    let head = store.head("audio/a.f32").await.expect("head");
    assert_eq!(head.map(|m| m.size), Some(100_000));
    assert!(store.head("audio/missing").await.expect("head").is_none());

    let missing = store.get("no/such/key").await.expect_err("missing key");
    assert!(
        missing.is_not_found(),
        "missing key must be NotFound: {missing}"
    );
    assert!(
        missing.to_string().contains("no/such/key"),
        "the error names the key: {missing}"
    );

    let keys = |list: Vec<super::ObjectMeta>| list.into_iter().map(|m| m.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list("transcripts/").await.expect("list")),
        ["transcripts/a/r1.json", "transcripts/a/r2.json"]
    );
    assert_eq!(
        keys(store.list("").await.expect("list")),
        [
            "audio/a.f32",
            "transcripts/a/r1.json",
            "transcripts/a/r2.json"
        ]
    );
    assert_eq!(
        keys(store.list("transcripts/a/r2").await.expect("list")),
        ["transcripts/a/r2.json"]
    );
    assert!(store.list("nothing/").await.expect("list").is_empty());

    store.delete("transcripts/a/r2.json").await.expect("delete");
    store
        .delete("transcripts/a/r2.json")
        .await
        .expect("deleting twice succeeds");
    assert!(store.get("transcripts/a/r2.json").await.is_err());

    for bad in ["", "/abs", "a/../b", "a//b", "dir/"] {
        let err = store.put(bad, b"x".to_vec()).await.expect_err(bad);
        assert!(!err.is_not_found(), "bad key `{bad}`: {err}");
    }
}

fn call(n: u32, revision: &str, day: i64, duration_s: f64, source: &str) -> CallRecord {
    let mut record = CallRecord::pending(
        CallId::from_source(&format!("conformance://call/{n}")),
        Revision::new(revision),
        source.to_owned(),
        DAY0_MS + day * DAY_MS,
    );
    record.duration_s = duration_s;
    record.speech_s = duration_s / 2.0;
    record.channels = vec![Role::Agent, Role::Customer];
    record
}

fn segment(call: &CallRecord, channel: u32, seq: u32, start_s: f64, text: &str) -> SegmentDoc {
    SegmentDoc {
        key: SegmentKey {
            call_id: call.call_id.clone(),
            revision: call.revision.clone(),
            channel,
            seq,
        },
        role: call.channels[channel as usize],
        start_s,
        end_s: start_s + 2.0,
        text: text.to_owned(),
        avg_logprob: -0.2,
    }
}

fn indexed(mut call: CallRecord, segments: u32) -> CallRecord {
    call.status = CallStatus::Indexed;
    call.indexed_revision = Some(call.revision.clone());
    call.segments = segments;
    call
}

/// Waits until `check` passes or `deadline` passes, for backends whose reads lag their writes
/// ([`Capabilities::eventually_consistent`]). The last failure is the panic message, so a
/// broken rule is named as plainly as with a direct assertion.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let until = Instant::now() + deadline;
    let mut pause = Duration::from_millis(20);
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if Instant::now() >= until => {
                panic!("{what}: still failing after {deadline:?}: {why}")
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// An empty vector set, for commits in suites that do not look at vectors.
fn no_vectors(call: &CallRecord) -> VectorSet {
    VectorSet {
        batch: format!("none-{}-{}", call.call_id, call.revision),
        ids: Vec::new(),
    }
}

fn set(batch: &str, ids: &[&str]) -> VectorSet {
    VectorSet {
        batch: batch.to_owned(),
        ids: ids.iter().map(|s| s.to_string()).collect(),
    }
}

/// Asserts that the billing call's first revision (4 segments) is what reads show.
async fn r1_visible(store: &dyn MetadataStore, billing: &[SegmentDoc], what: &str) {
    let call_id = &billing[0].key.call_id;
    assert_eq!(
        store.count_segments(Some(call_id)).await.expect("count"),
        4,
        "r1 stays readable {what}"
    );
    let found = store
        .segments_by_key(&[billing[1].key.clone()])
        .await
        .expect("by key");
    assert_eq!(found.len(), 1, "r1's segments stay current {what}");
}

/// Records, conditional writes, atomic segment replacement by revision, vector batches and
/// their garbage, listings.
pub async fn metadata_store(store: &dyn MetadataStore) {
    assert_eq!(
        store.count_segments(None).await.expect("count"),
        0,
        "the suite needs an empty store"
    );
    let none = Guard::none();
    let billing = call(1, "r1", 0, 300.0, "s3://calls/2024/01/billing.wav");
    let internet = call(2, "r1", 40, 90.0, "s3://calls/2024/02/internet.wav");
    let parcel = call(3, "r1", 80, 600.0, "file:///archive/parcel.wav");

    assert!(store
        .get_call(&billing.call_id)
        .await
        .expect("get")
        .is_none());
    store.put_call(&billing, &none).await.expect("put pending");
    let got = store.get_call(&billing.call_id).await.expect("get");
    assert_eq!(got.as_ref().map(|c| c.status), Some(CallStatus::Pending));
    assert_eq!(
        got.as_ref(),
        Some(&billing),
        "a record round-trips unchanged"
    );

    let billing_segs = billing_segments(&billing);
    let internet_segs = internet_segments(&internet);
    let parcel_segs = parcel_segments(&parcel);
    let billing = indexed(billing, 4);
    let b1 = set("b1", &["v1", "v2", "v3", "v4"]);
    store
        .begin_batch(&batch_of(&billing, "b1"))
        .await
        .expect("begin");
    let superseded = store
        .commit_call(&billing, &billing_segs, &b1, &none)
        .await
        .expect("commit");
    assert!(superseded.is_empty(), "a first commit supersedes nothing");
    store
        .commit_call(
            &indexed(internet.clone(), 2),
            &internet_segs,
            &no_vectors(&internet),
            &none,
        )
        .await
        .expect("commit");
    store
        .commit_call(
            &indexed(parcel.clone(), 2),
            &parcel_segs,
            &no_vectors(&parcel),
            &none,
        )
        .await
        .expect("commit");
    // Repeating a commit changes nothing.
    let again = store
        .commit_call(&billing, &billing_segs, &b1, &none)
        .await
        .expect("recommit");
    assert!(again.is_empty(), "a repeated commit supersedes nothing");
    assert_eq!(store.count_segments(None).await.expect("count"), 8);
    assert_eq!(
        store
            .count_segments(Some(&billing.call_id))
            .await
            .expect("count"),
        4
    );
    assert!(
        store
            .garbage(i64::MAX, 100)
            .await
            .expect("garbage")
            .is_empty(),
        "committed batches are not garbage"
    );

    // Segments come back in time order.
    let segs = store.segments(&billing.call_id).await.expect("segments");
    let starts: Vec<f64> = segs.iter().map(|s| s.start_s).collect();
    assert_eq!(starts, [0.0, 3.0, 6.0, 9.0]);
    assert_eq!(segs[1], billing_segs[1], "a segment round-trips unchanged");

    // A new revision replaces the old one's segments only once it is committed: while it is
    // pending, and after it fails, the indexed revision stays readable.
    let billing2 = call(1, "r2", 0, 300.0, "s3://calls/2024/01/billing.wav");
    let billing2_segs = vec![segment(
        &billing2,
        1,
        0,
        2.0,
        "A refund for the overcharge please.",
    )];
    // put_call never moves the indexed revision, whatever the record it is given says.
    let mut pending = billing2.clone();
    pending.indexed_revision = None;
    store
        .put_call(&pending, &none)
        .await
        .expect("put pending r2");
    let got = store.get_call(&billing.call_id).await.expect("get");
    let got = got.expect("the call");
    assert_eq!(got.revision, billing2.revision, "the attempt is recorded");
    assert_eq!(got.status, CallStatus::Pending);
    assert_eq!(got.indexed_revision, billing.indexed_revision, "r1 is kept");
    r1_visible(store, &billing_segs, "while r2 is pending").await;
    let mut failed_r2 = pending.clone();
    failed_r2.status = CallStatus::Failed;
    failed_r2.error = Some(super::CallError {
        stage: "transcribe".into(),
        reason: "r2 did not decode".into(),
    });
    store
        .put_call(&failed_r2, &none)
        .await
        .expect("put failed r2");
    r1_visible(store, &billing_segs, "after r2 failed").await;
    let mut moved = billing2.clone();
    moved.indexed_revision = Some(Revision::new("r2"));
    store.put_call(&moved, &none).await.expect("put");
    r1_visible(
        store,
        &billing_segs,
        "after a put naming another indexed revision",
    )
    .await;
    // A commit must make its own revision the indexed one.
    let b2 = set("b2", &["v5"]);
    assert!(
        store
            .commit_call(&billing2, &billing2_segs, &b2, &none)
            .await
            .is_err(),
        "a commit of a record that is not indexed is refused"
    );
    r1_visible(store, &billing_segs, "after a refused commit").await;

    // An attempt that begins a batch and dies is garbage once it is old enough, with its ids
    // unknown; a younger one is left alone (it may still be running).
    store
        .begin_batch(&batch_of(&billing2, "dead"))
        .await
        .expect("begin");
    assert!(
        store.garbage(0, 100).await.expect("garbage").is_empty(),
        "a young open batch is not garbage"
    );
    let garbage = store.garbage(i64::MAX, 100).await.expect("garbage");
    assert_eq!(garbage.len(), 1, "{garbage:?}");
    assert_eq!(garbage[0].batch, "dead");
    assert_eq!(garbage[0].call_id, billing.call_id);
    assert_eq!(garbage[0].ids, None, "an open batch's ids are unknown");
    store.forget_batch("dead").await.expect("forget");
    assert!(store
        .garbage(i64::MAX, 100)
        .await
        .expect("garbage")
        .is_empty());

    store
        .begin_batch(&batch_of(&billing2, "b2"))
        .await
        .expect("begin");
    let superseded = store
        .commit_call(&indexed(billing2.clone(), 1), &billing2_segs, &b2, &none)
        .await
        .expect("commit r2");
    assert_eq!(
        superseded,
        std::slice::from_ref(&b1),
        "r1's vectors are superseded"
    );
    assert_eq!(
        garbage_of(store).await,
        [("b1".to_owned(), Some(b1.ids.clone()))],
        "a superseded batch is garbage at once, with its ids"
    );
    store.forget_batch("b1").await.expect("forget");
    store.forget_batch("b1").await.expect("forget twice");
    store.forget_batch("b2").await.expect("forget current");
    assert!(store
        .garbage(i64::MAX, 100)
        .await
        .expect("garbage")
        .is_empty());
    let again = store
        .commit_call(&indexed(billing2.clone(), 1), &billing2_segs, &b2, &none)
        .await
        .expect("recommit r2");
    assert!(again.is_empty(), "the current batch was never forgotten");
    assert_eq!(
        store
            .get_call(&billing.call_id)
            .await
            .expect("get")
            .and_then(|c| c.indexed_revision),
        Some(Revision::new("r2"))
    );
    assert_eq!(
        store
            .count_segments(Some(&billing.call_id))
            .await
            .expect("count"),
        1
    );
    let found = store
        .segments_by_key(&[
            billing_segs[0].key.clone(),
            billing2_segs[0].key.clone(),
            internet_segs[1].key.clone(),
        ])
        .await
        .expect("by key");
    assert_eq!(
        found.iter().map(|s| &s.key).collect::<Vec<_>>(),
        [&billing2_segs[0].key, &internet_segs[1].key],
        "stale keys are dropped, order is kept"
    );

    guards(store).await;

    // Listing: newest recording first, by status, with call-level filters.
    let mut failed = call(4, "r1", 100, 10.0, "file:///archive/broken.wav");
    failed.status = CallStatus::Failed;
    failed.error = Some(super::CallError {
        stage: "ingest".into(),
        reason: "file:///archive/broken.wav: not audio".into(),
    });
    store.put_call(&failed, &none).await.expect("put failed");
    let all = store
        .list_calls(None, &SearchFilter::default(), 100)
        .await
        .expect("list");
    let ids: Vec<&CallId> = all
        .iter()
        .map(|c| &c.call_id)
        .filter(|id| {
            [&failed, &parcel, &internet, &billing]
                .iter()
                .any(|c| &c.call_id == *id)
        })
        .collect();
    assert_eq!(
        ids,
        [
            &failed.call_id,
            &parcel.call_id,
            &internet.call_id,
            &billing.call_id
        ]
    );
    let only_failed = store
        .list_calls(Some(CallStatus::Failed), &SearchFilter::default(), 100)
        .await
        .expect("list");
    assert!(only_failed.iter().all(|c| c.status == CallStatus::Failed));
    let broken = only_failed
        .iter()
        .find(|c| c.call_id == failed.call_id)
        .expect("the failed call is listed");
    assert_eq!(broken.error, failed.error, "the reason is kept");
    let prefixed = store
        .list_calls(
            None,
            &SearchFilter {
                source_prefix: Some("file:///archive/".into()),
                ..Default::default()
            },
            1,
        )
        .await
        .expect("list");
    assert_eq!(prefixed.len(), 1, "limit holds");
    assert_eq!(prefixed[0].call_id, failed.call_id);
    for (name, filter, expected) in [
        (
            "from",
            SearchFilter {
                from_ms: Some(DAY0_MS + 40 * DAY_MS),
                to_ms: Some(DAY0_MS + 81 * DAY_MS),
                ..Default::default()
            },
            vec![&parcel.call_id, &internet.call_id],
        ),
        (
            "duration",
            SearchFilter {
                min_duration_s: Some(50.0),
                max_duration_s: Some(300.0),
                ..Default::default()
            },
            vec![&internet.call_id, &billing.call_id],
        ),
        (
            "call",
            SearchFilter {
                call_id: Some(internet.call_id.clone()),
                ..Default::default()
            },
            vec![&internet.call_id],
        ),
    ] {
        let got = store.list_calls(None, &filter, 100).await.expect("list");
        let got: Vec<&CallId> = got.iter().map(|c| &c.call_id).collect();
        assert_eq!(got, expected, "list filter `{name}`");
    }

    // Lookup by id prefix.
    let id = billing.call_id.as_str();
    let by_prefix = store
        .calls_by_id_prefix(&id[..6], 10)
        .await
        .expect("by prefix");
    assert!(by_prefix.iter().any(|c| c.call_id == billing.call_id));
    assert!(by_prefix
        .iter()
        .all(|c| c.call_id.as_str().starts_with(&id[..6])));
    assert_eq!(
        store
            .calls_by_id_prefix(id, 10)
            .await
            .expect("by prefix")
            .len(),
        1
    );
    for hostile in ["", ".*", "^(", "%", "_", "\\", "zzzz-no-such"] {
        let got = store
            .calls_by_id_prefix(hostile, 100)
            .await
            .unwrap_or_else(|e| panic!("prefix {hostile:?} failed: {e}"));
        assert!(
            got.iter().all(|c| c.call_id.as_str().starts_with(hostile)),
            "prefix {hostile:?} is plain text"
        );
    }

    // Deleting removes the call and its segments, makes its vectors garbage, and is
    // idempotent.
    let p1 = set("p1", &["v9"]);
    store
        .begin_batch(&batch_of(&parcel, "p1"))
        .await
        .expect("begin");
    store
        .commit_call(&indexed(parcel.clone(), 2), &parcel_segs, &p1, &none)
        .await
        .expect("commit parcel");
    let garbage = store.garbage(0, 100).await.expect("garbage");
    for g in garbage {
        store.forget_batch(&g.batch).await.expect("forget");
    }
    store.delete_call(&parcel.call_id).await.expect("delete");
    store
        .delete_call(&parcel.call_id)
        .await
        .expect("delete again");
    assert!(store
        .get_call(&parcel.call_id)
        .await
        .expect("get")
        .is_none());
    assert_eq!(
        store
            .count_segments(Some(&parcel.call_id))
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        garbage_of(store).await,
        [("p1".to_owned(), Some(p1.ids.clone()))],
        "a deleted call's vectors are garbage"
    );
    store.forget_batch("p1").await.expect("forget");
}

/// Every batch that is garbage now (open ones included however young), as (batch, ids).
async fn garbage_of(store: &dyn MetadataStore) -> Vec<(String, Option<Vec<String>>)> {
    let garbage = store.garbage(0, 100).await.expect("garbage");
    garbage.into_iter().map(|g| (g.batch, g.ids)).collect()
}

/// Conditional writes: fencing tokens and revision order.
async fn guards(store: &dyn MetadataStore) {
    let c = call(7, "r1", 5, 60.0, "s3://calls/guarded.wav");
    let segs = vec![segment(&c, 0, 0, 0.0, "hello there")];
    let guard = |token: u64, modified_ms: i64| Guard {
        token: Some(token),
        modified_ms: Some(modified_ms),
    };
    store.put_call(&c, &guard(10, 1_000)).await.expect("put");
    // A smaller token on the same revision is a late worker: refused, retryable.
    let err = store
        .put_call(&c, &guard(9, 1_000))
        .await
        .expect_err("older token");
    assert!(
        matches!(
            err,
            StoreError::Superseded {
                newer_revision: false,
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .commit_call(
            &indexed(c.clone(), 1),
            &segs,
            &no_vectors(&c),
            &guard(9, 1_000),
        )
        .await
        .expect_err("older token");
    assert!(!err.is_newer_revision(), "{err}");
    assert_eq!(
        store.count_segments(Some(&c.call_id)).await.expect("count"),
        0,
        "a refused commit writes nothing"
    );
    // The same or a newer token goes ahead.
    store
        .put_call(&c, &guard(10, 1_000))
        .await
        .expect("same token");
    store
        .commit_call(
            &indexed(c.clone(), 1),
            &segs,
            &no_vectors(&c),
            &guard(11, 1_000),
        )
        .await
        .expect("newer token");

    // A newer revision is recorded; an older revision's late work is refused for good.
    let mut c2 = call(7, "r2", 5, 60.0, "s3://calls/guarded.wav");
    c2.status = CallStatus::Pending;
    store.put_call(&c2, &guard(20, 2_000)).await.expect("r2");
    let mut late_failure = c.clone();
    late_failure.status = CallStatus::Failed;
    late_failure.error = Some(super::CallError {
        stage: "index".into(),
        reason: "late".into(),
    });
    let err = store
        .put_call(&late_failure, &guard(30, 1_000))
        .await
        .expect_err("older revision");
    assert!(err.is_newer_revision(), "{err}");
    let err = store
        .commit_call(
            &indexed(c.clone(), 1),
            &segs,
            &no_vectors(&c),
            &guard(31, 1_000),
        )
        .await
        .expect_err("older revision");
    assert!(err.is_newer_revision(), "{err}");
    let got = store
        .get_call(&c.call_id)
        .await
        .expect("get")
        .expect("call");
    assert_eq!(
        got.revision.as_str(),
        "r2",
        "the newer revision stays recorded"
    );
    assert_eq!(got.status, CallStatus::Pending);
    assert_eq!(
        got.indexed_revision.as_ref().map(|r| r.as_str()),
        Some("r1")
    );
    store.delete_call(&c.call_id).await.expect("delete");
    for g in store.garbage(0, 100).await.expect("garbage") {
        store.forget_batch(&g.batch).await.expect("forget");
    }
}

fn batch_of(call: &CallRecord, batch: &str) -> VectorBatch {
    VectorBatch {
        batch: batch.to_owned(),
        call_id: call.call_id.clone(),
        revision: call.revision.clone(),
    }
}

fn billing_segments(billing: &CallRecord) -> Vec<SegmentDoc> {
    vec![
        segment(billing, 0, 0, 0.0, "Thank you for calling, how can I help?"),
        segment(
            billing,
            1,
            0,
            3.0,
            "I was charged twice, I want a refund of the duplicate charge.",
        ),
        segment(
            billing,
            0,
            1,
            6.0,
            "I can see the duplicate charge and I will refund it today.",
        ),
        segment(billing, 1, 1, 9.0, "Great, thank you."),
    ]
}

fn internet_segments(internet: &CallRecord) -> Vec<SegmentDoc> {
    vec![
        segment(
            internet,
            1,
            0,
            1.0,
            "My router keeps dropping the connection every evening.",
        ),
        segment(
            internet,
            0,
            0,
            4.0,
            "I will book a technician for Monday morning.",
        ),
    ]
}

fn parcel_segments(parcel: &CallRecord) -> Vec<SegmentDoc> {
    vec![
        segment(
            parcel,
            1,
            0,
            0.5,
            "My parcel never arrived, the tracking says delivered.",
        ),
        segment(
            parcel,
            0,
            0,
            3.5,
            "I will ask the courier to redeliver it to your neighbour.",
        ),
    ]
}

/// How the keyword suite puts its calls where the [`KeywordIndex`] under test reads them: a
/// metadata store's commit, or a vector index's insert.
#[async_trait::async_trait]
pub trait KeywordLoader: Send + Sync {
    async fn load(&self, call: &CallRecord, segments: &[SegmentDoc]);
}

/// Keyword search: rare words first, several words, case and punctuation, the limit, every
/// filter, and hostile query text. Reads are retried until `consistency` passes when the
/// backend is eventually consistent (pass `Duration::ZERO` otherwise).
pub async fn keyword_index(
    index: &dyn KeywordIndex,
    loader: &dyn KeywordLoader,
    consistency: Duration,
) {
    let billing = indexed(call(1, "r1", 0, 300.0, "s3://calls/2024/01/billing.wav"), 4);
    let internet = indexed(
        call(2, "r1", 40, 90.0, "s3://calls/2024/02/internet.wav"),
        2,
    );
    let parcel = indexed(call(3, "r1", 80, 600.0, "file:///archive/parcel.wav"), 2);
    let billing_segs = billing_segments(&billing);
    let internet_segs = internet_segments(&internet);
    let parcel_segs = parcel_segments(&parcel);
    loader.load(&billing, &billing_segs).await;
    loader.load(&internet, &internet_segs).await;
    loader.load(&parcel, &parcel_segs).await;

    let query_hits = |query: KeywordQuery, filter: SearchFilter, limit: usize| async move {
        index
            .keyword_search(&query, &filter, limit)
            .await
            .map_err(|e| format!("search {query:?}: {e}"))
    };
    let search = |query: &'static str, filter: SearchFilter, limit: usize| async move {
        query_hits(KeywordQuery::any_of(query), filter, limit)
            .await
            .map(|h| h.hits)
    };
    // The rare word finds its segments, best first.
    eventually(consistency, "keyword `duplicate`", || async {
        let hits = search("duplicate", SearchFilter::default(), 10).await?;
        let mut keys: Vec<&SegmentKey> = hits.iter().map(|h| &h.key).collect();
        keys.sort();
        let mut want = vec![&billing_segs[1].key, &billing_segs[2].key];
        want.sort();
        if keys != want {
            return Err(format!("both segments saying `duplicate`: {hits:?}"));
        }
        if hits[0].score < hits[1].score {
            return Err("not best first".into());
        }
        Ok(())
    })
    .await;
    eventually(consistency, "all calls loaded", || async {
        let hits = search("neighbour", SearchFilter::default(), 10).await?;
        (hits.len() == 1).then_some(()).ok_or(format!("{hits:?}"))
    })
    .await;
    // Several words: any of them matches.
    let hits = search("technician router", SearchFilter::default(), 10)
        .await
        .expect("search");
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h.key.call_id == internet.call_id));
    // Case and punctuation do not matter.
    let hits = search("NEIGHBOUR!", SearchFilter::default(), 10)
        .await
        .expect("search");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].key, parcel_segs[1].key);
    // The limit holds.
    let hits = search("i", SearchFilter::default(), 3)
        .await
        .expect("search");
    assert!(hits.len() <= 3);

    let cases: Vec<(&str, SearchFilter, Vec<&SegmentKey>)> = vec![
        (
            "role",
            SearchFilter {
                role: Some(Role::Agent),
                ..Default::default()
            },
            vec![&billing_segs[2].key],
        ),
        (
            "from",
            SearchFilter {
                from_ms: Some(DAY0_MS + DAY_MS),
                ..Default::default()
            },
            vec![],
        ),
        (
            "to",
            SearchFilter {
                to_ms: Some(DAY0_MS + DAY_MS),
                ..Default::default()
            },
            vec![&billing_segs[1].key, &billing_segs[2].key],
        ),
        (
            "call",
            SearchFilter {
                call_id: Some(internet.call_id.clone()),
                ..Default::default()
            },
            vec![],
        ),
        (
            "source prefix",
            SearchFilter {
                source_prefix: Some("s3://calls/2024/01/".into()),
                ..Default::default()
            },
            vec![&billing_segs[1].key, &billing_segs[2].key],
        ),
        (
            "min duration",
            SearchFilter {
                min_duration_s: Some(301.0),
                ..Default::default()
            },
            vec![],
        ),
        (
            "max duration",
            SearchFilter {
                max_duration_s: Some(300.0),
                ..Default::default()
            },
            vec![&billing_segs[1].key, &billing_segs[2].key],
        ),
    ];
    for (name, filter, expected) in cases {
        let hits = search("duplicate", filter, 10).await.expect("search");
        let mut got: Vec<&SegmentKey> = hits.iter().map(|h| &h.key).collect();
        got.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected, "filter `{name}`");
    }

    // Word statistics: every document counts, whatever the filter; a word in none counts 0.
    let stats = query_hits(
        KeywordQuery::any_of("duplicate refund courier zebra"),
        SearchFilter {
            role: Some(Role::Agent),
            ..Default::default()
        },
        10,
    )
    .await
    .expect("search");
    assert_eq!(stats.documents, 8, "{stats:?}");
    assert_eq!(stats.frequencies, [2, 2, 1, 0], "{stats:?}");

    // A phrase must occur; other terms then only rank. A backend may return a superset of a
    // phrase's matches (its words in any order), never a segment lacking one of its words.
    let sorted = |hits: KeywordHits| {
        let mut keys: Vec<SegmentKey> = hits.hits.into_iter().map(|h| h.key).collect();
        keys.sort();
        keys
    };
    let phrase = KeywordQuery {
        terms: vec!["charge".into()],
        phrases: vec![vec!["refund".into(), "it".into()]],
        excluded: vec![],
    };
    let hits = query_hits(phrase, SearchFilter::default(), 10)
        .await
        .expect("search");
    assert_eq!(hits.frequencies.len(), 3, "charge, refund, it: {hits:?}");
    assert_eq!(sorted(hits), [billing_segs[2].key.clone()]);
    // An excluded word removes every segment holding it.
    let excluding = KeywordQuery {
        terms: vec!["duplicate".into()],
        phrases: vec![],
        excluded: vec![vec!["today".into()]],
    };
    let hits = query_hits(excluding, SearchFilter::default(), 10)
        .await
        .expect("search");
    assert_eq!(sorted(hits), [billing_segs[1].key.clone()]);

    // Hostile text is plain words, never query syntax, and never an error.
    for query in [
        "\"unbalanced",
        "AND OR NOT",
        "refund*",
        "NEAR(a b)",
        "col:refund",
        "'; DROP TABLE calls; --",
        "{\"match_all\": {}}",
        "",
        "   ",
        "ünïcödé 电话",
    ] {
        index
            .keyword_search(&KeywordQuery::any_of(query), &SearchFilter::default(), 10)
            .await
            .unwrap_or_else(|e| panic!("query {query:?} failed: {e}"));
    }
}

/// A deterministic unit vector near axis `axis`, perturbed by `seed`.
fn unit_vector(dim: usize, axis: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 0.2
        })
        .collect();
    v[axis % dim] += 1.0;
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn vector_doc(call: &CallRecord, channel: u32, seq: u32, vector: Vec<f32>) -> VectorDoc {
    VectorDoc {
        key: SegmentKey {
            call_id: call.call_id.clone(),
            revision: call.revision.clone(),
            channel,
            seq,
        },
        role: call.channels[channel as usize],
        source: call.source.clone(),
        recorded_at_ms: call.recorded_at_ms,
        call_duration_s: call.duration_s,
        text: format!("segment {seq} of channel {channel}"),
        vector,
    }
}

/// Insert by batch, delete by id, batch lookup, top-k against brute force with every filter,
/// and dimension checks. `consistency` bounds how long reads may lag writes (with
/// [`Capabilities::eventually_consistent`]; `Duration::ZERO` otherwise).
pub async fn vector_index(index: &dyn VectorIndex, consistency: Duration) {
    let caps = index.capabilities();
    let dim = index.dim();
    assert!(dim >= 8, "the suite needs at least 8 dimensions");
    assert_eq!(
        index.count(None).await.expect("count"),
        0,
        "the suite needs an empty index"
    );
    let count_is = |call: Option<CallId>, n: u64, what: &'static str| {
        let call = call.clone();
        async move {
            eventually(consistency, what, || {
                let call = call.clone();
                async move {
                    let got = index
                        .count(call.as_ref())
                        .await
                        .map_err(|e| e.to_string())?;
                    (got == n)
                        .then_some(())
                        .ok_or(format!("count {got}, want {n}"))
                }
            })
            .await
        }
    };
    let calls: Vec<CallRecord> = (0..6)
        .map(|n| {
            call(
                10 + n,
                "r1",
                i64::from(n) * 10,
                60.0 * f64::from(n + 1),
                &format!(
                    "s3://calls/{}/c{n}.wav",
                    if n < 3 { "east" } else { "west" }
                ),
            )
        })
        .collect();
    let mut all_docs = Vec::new();
    let mut ids_of = Vec::new();
    for (n, c) in calls.iter().enumerate() {
        let docs: Vec<VectorDoc> = (0..20)
            .map(|i| vector_doc(c, i % 2, i / 2, unit_vector(dim, n, 1000 * n as u32 + i)))
            .collect();
        let ids = index
            .insert(&format!("batch-{n}"), &docs)
            .await
            .expect("insert");
        assert_eq!(ids.len(), docs.len(), "one id per document");
        ids_of.push(ids);
        all_docs.extend(docs);
    }
    let mut distinct: Vec<&String> = ids_of.iter().flatten().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 120, "ids are distinct");
    count_is(None, 120, "all documents counted").await;
    count_is(Some(calls[2].call_id.clone()), 20, "one call counted").await;

    // Top-k against brute force, for several queries and filters: exactly, or (approximate
    // kNN) with a recall floor.
    let brute = |query: &[f32], k: usize, filter: &SearchFilter, docs: &[VectorDoc]| {
        let mut scored: Vec<(f32, &VectorDoc)> = docs
            .iter()
            .filter(|d| filter.matches(d.role, d.facets()))
            .map(|d| (d.vector.iter().zip(query).map(|(a, b)| a * b).sum(), d))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(k)
            .map(|(_, d)| d.key.clone())
            .collect::<Vec<SegmentKey>>()
    };
    let filters = [
        SearchFilter::default(),
        SearchFilter {
            role: Some(Role::Customer),
            ..Default::default()
        },
        SearchFilter {
            from_ms: Some(DAY0_MS + 15 * DAY_MS),
            to_ms: Some(DAY0_MS + 45 * DAY_MS),
            ..Default::default()
        },
        SearchFilter {
            source_prefix: Some("s3://calls/west/".into()),
            ..Default::default()
        },
        SearchFilter {
            min_duration_s: Some(150.0),
            max_duration_s: Some(250.0),
            ..Default::default()
        },
        SearchFilter {
            call_id: Some(calls[4].call_id.clone()),
            role: Some(Role::Agent),
            ..Default::default()
        },
    ];
    for (q, filter) in filters.iter().enumerate() {
        let query = unit_vector(dim, q % 6, 77 + q as u32);
        let hits = index.knn(&query, 10, filter).await.expect("knn");
        let expected = brute(&query, 10, filter, &all_docs);
        let got: Vec<SegmentKey> = hits.iter().map(|h| h.key.clone()).collect();
        assert!(
            got.iter().all(|k| {
                let d = all_docs.iter().find(|d| &d.key == k).expect("known key");
                filter.matches(d.role, d.facets())
            }),
            "every hit passes filter {filter:?}"
        );
        let found = got.iter().filter(|k| expected.contains(k)).count();
        if caps.approximate_knn {
            assert!(
                found * 10 >= expected.len() * 8 && got.len() == expected.len(),
                "recall@10 at least 0.8 for filter {filter:?}: {found}/{}",
                expected.len()
            );
        } else {
            // Ties may order differently; compare as sets.
            let mut a = got.clone();
            let mut b = expected.clone();
            a.sort();
            b.sort();
            assert_eq!(a, b, "top-10 for filter {filter:?}");
        }
        assert!(
            hits.windows(2).all(|w| w[0].score >= w[1].score),
            "best first"
        );
        for hit in &hits {
            let doc = all_docs.iter().find(|d| d.key == hit.key).expect("known");
            let cos: f32 = doc.vector.iter().zip(&query).map(|(a, b)| a * b).sum();
            assert!((cos - hit.score).abs() < 1e-3, "score is the cosine");
        }
    }

    // A batch's ids can be found again (the sweep's way to orphans of a dead attempt).
    let mut found = index.batch_ids("batch-1", 100).await.expect("batch ids");
    found.sort();
    let mut want = ids_of[1].clone();
    want.sort();
    assert_eq!(found, want, "a batch's ids");
    assert!(index
        .batch_ids("no-such-batch", 100)
        .await
        .expect("batch ids")
        .is_empty());
    assert!(
        index
            .batch_ids("batch-1", 5)
            .await
            .expect("batch ids")
            .len()
            <= 5
    );

    // A new revision: its batch is inserted, then the old one deleted by id, which leaves
    // exactly the new documents.
    let mut c0_r2 = calls[0].clone();
    c0_r2.revision = Revision::new("r2");
    let new_docs: Vec<VectorDoc> = (0..3)
        .map(|i| vector_doc(&c0_r2, 0, i, unit_vector(dim, 0, 9000 + i)))
        .collect();
    index.insert("batch-0b", &new_docs).await.expect("insert");
    index.delete(&ids_of[0]).await.expect("delete old");
    index
        .delete(&ids_of[0])
        .await
        .expect("deleting again succeeds");
    index
        .delete(&["no-such-id".to_owned()])
        .await
        .expect("an unknown id is not an error");
    count_is(Some(c0_r2.call_id.clone()), 3, "old revision gone").await;
    count_is(None, 103, "one call replaced").await;
    let only_c0 = SearchFilter {
        call_id: Some(c0_r2.call_id.clone()),
        ..Default::default()
    };
    let hits = index
        .knn(&unit_vector(dim, 0, 1), 50, &only_c0)
        .await
        .expect("knn");
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.key.revision.as_str() == "r2"));

    // k larger than the index, and k = 0.
    let hits = index
        .knn(&unit_vector(dim, 1, 5), 1000, &SearchFilter::default())
        .await
        .expect("knn");
    assert!(hits.len() <= 103);
    if !caps.approximate_knn {
        assert_eq!(hits.len(), 103);
    }
    assert!(index
        .knn(&unit_vector(dim, 1, 5), 0, &SearchFilter::default())
        .await
        .expect("knn")
        .is_empty());

    // Wrong dimensions are refused, naming the problem, before anything is written.
    let err = index
        .knn(&vec![0.5; dim + 1], 5, &SearchFilter::default())
        .await
        .expect_err("query of the wrong length");
    assert!(matches!(err, StoreError::Failed { .. }), "{err}");
    let mut bad = vector_doc(&calls[1], 0, 0, vec![0.1; dim - 1]);
    bad.key.seq = 99;
    let good = vector_doc(&calls[1], 0, 98, unit_vector(dim, 1, 3));
    let err = index
        .insert("batch-bad", &[good, bad])
        .await
        .expect_err("doc of the wrong length");
    assert!(err.to_string().contains("dimension"), "{err}");
    assert!(
        index
            .batch_ids("batch-bad", 10)
            .await
            .expect("ids")
            .is_empty(),
        "a refused insert writes nothing"
    );
    count_is(Some(calls[1].call_id.clone()), 20, "refused insert").await;
    // Inserting nothing is fine.
    assert!(index.insert("empty", &[]).await.expect("insert").is_empty());

    for ids in &ids_of[1..] {
        index.delete(ids).await.expect("delete");
    }
    index
        .delete(&index.batch_ids("batch-0b", 100).await.expect("ids"))
        .await
        .expect("delete");
    count_is(None, 0, "everything deleted").await;
}

/// Backfill jobs: create once, compare-and-set writes, listing order, and what became of a
/// pass's calls (read from the call records the pass tagged), plus batched call reads.
///
/// `store` is the same backend as `metadata` (the job store lives beside the calls).
pub async fn job_store(store: &dyn super::JobStore, metadata: &dyn MetadataStore) {
    use super::{BackfillJob, Cursor, JobCounts, JobState};

    assert!(
        store.get_job("bf-1").await.expect("get_job").is_none(),
        "rule: an unknown job is None"
    );
    let mut job = BackfillJob {
        id: "bf-1".into(),
        sources: vec!["s3://calls/2024/ ü+x/".into()],
        since_ms: Some(DAY0_MS),
        until_ms: None,
        pass: 1,
        state: JobState::Running,
        cursor: Cursor::default(),
        counts: JobCounts::default(),
        survey: None,
        error: None,
        created_at_ms: DAY0_MS,
        pass_started_at_ms: DAY0_MS,
        updated_at_ms: DAY0_MS,
        finished_at_ms: None,
        version: 0,
    };
    assert!(
        store.put_job(&job, None).await.expect("put_job"),
        "rule: a new job is created"
    );
    assert!(
        !store.put_job(&job, None).await.expect("put_job"),
        "rule: creating a job that exists is refused"
    );
    let stored = store.get_job("bf-1").await.expect("get_job").expect("job");
    assert_eq!(
        stored.version, 1,
        "rule: the stored version is expected + 1 (0 + 1 on creation)"
    );
    assert_eq!(
        BackfillJob {
            version: 0,
            ..stored.clone()
        },
        job,
        "rule: a job reads back as written"
    );

    job = stored;
    job.cursor = Cursor {
        source: 0,
        after: Some("2024/ ü+x/a b.wav".into()),
    };
    job.counts.listed = 10;
    job.counts.enqueued = 7;
    job.updated_at_ms = DAY0_MS + 1;
    assert!(store.put_job(&job, Some(1)).await.expect("put_job"));
    assert!(
        !store.put_job(&job, Some(1)).await.expect("put_job"),
        "rule: a write expecting an old version is refused"
    );
    let stored = store.get_job("bf-1").await.expect("get_job").expect("job");
    assert_eq!(stored.version, 2);
    assert_eq!(
        stored.cursor, job.cursor,
        "rule: the cursor is kept exactly"
    );
    assert_eq!(stored.counts, job.counts);

    let mut other = job.clone();
    other.id = "bf-2".into();
    other.updated_at_ms = DAY0_MS + 5;
    assert!(store.put_job(&other, None).await.expect("put_job"));
    let ids: Vec<String> = store
        .list_jobs(10)
        .await
        .expect("list_jobs")
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, ["bf-2", "bf-1"], "rule: jobs list newest update first");
    assert_eq!(store.list_jobs(1).await.expect("list_jobs").len(), 1);

    // Racing writers with the same expected version: exactly one wins.
    let racers: Vec<BackfillJob> = (0..8)
        .map(|i| {
            let mut j = job.clone();
            j.counts.listed = 100 + i;
            j
        })
        .collect();
    let won = futures::future::join_all(racers.iter().map(|j| store.put_job(j, Some(2)))).await;
    assert_eq!(
        won.into_iter()
            .filter(|w| *w.as_ref().expect("put_job"))
            .count(),
        1,
        "rule: of racing writes expecting one version, exactly one lands"
    );

    // What became of a pass's calls comes from the records it tagged.
    let tag = "bf-1/1";
    let mut a = indexed(call(901, "r1", 0, 60.0, "s3://calls/a.wav"), 0);
    a.backfill = Some(tag.into());
    let mut b = call(902, "r1", 0, 30.0, "s3://calls/b.wav");
    b.backfill = Some(tag.into());
    b.status = CallStatus::Failed;
    b.error = Some(super::CallError {
        stage: "ingest".into(),
        reason: "s3://calls/b.wav: not audio".into(),
    });
    let mut c = call(903, "r1", 0, 30.0, "s3://calls/c.wav");
    c.backfill = Some(tag.into());
    let mut d = indexed(call(904, "r1", 0, 45.0, "s3://calls/d.wav"), 0);
    d.backfill = Some("bf-1/2".into());
    let no_vectors = VectorSet {
        batch: "conformance-jobs".into(),
        ids: Vec::new(),
    };
    for indexed_call in [&a, &d] {
        metadata
            .commit_call(
                indexed_call,
                &[],
                &VectorSet {
                    batch: format!("{}-{}", no_vectors.batch, indexed_call.call_id),
                    ids: Vec::new(),
                },
                &Guard::default(),
            )
            .await
            .expect("commit_call");
    }
    for pending in [&b, &c] {
        metadata
            .put_call(pending, &Guard::default())
            .await
            .expect("put_call");
    }
    let calls = store.job_calls(tag, 10).await.expect("job_calls");
    assert_eq!(
        (calls.indexed, calls.failed, calls.in_progress),
        (1, 1, 1),
        "rule: a pass's calls are counted by status, and only that pass's: {calls:?}"
    );
    assert!(
        (calls.indexed_audio_s - 60.0).abs() < 1e-6,
        "rule: indexed audio is the indexed calls' duration: {calls:?}"
    );
    assert_eq!(calls.failures.len(), 1);
    assert_eq!(calls.failures[0].source, "s3://calls/b.wav");
    assert_eq!(calls.failures[0].stage, "ingest");
    assert!(calls.failures[0].reason.contains("not audio"));
    assert!(
        store
            .job_calls(tag, 0)
            .await
            .expect("job_calls")
            .failures
            .is_empty(),
        "rule: failure reasons are capped by the caller's limit"
    );
    assert_eq!(
        store.job_calls("bf-9/1", 10).await.expect("job_calls"),
        super::JobCalls::default(),
        "rule: an unknown tag has no calls"
    );

    let mut found: Vec<String> = metadata
        .get_calls(&[
            a.call_id.clone(),
            CallId::from_source("conformance://nobody"),
            b.call_id.clone(),
        ])
        .await
        .expect("get_calls")
        .into_iter()
        .map(|c| c.source)
        .collect();
    found.sort();
    assert_eq!(
        found,
        ["s3://calls/a.wav", "s3://calls/b.wav"],
        "rule: get_calls returns the records that exist"
    );
}
