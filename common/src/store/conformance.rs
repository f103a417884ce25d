//! The conformance suites: one per backend trait, run against every implementation (the
//! embedded ones in their crates' tests, the cloud ones against real local servers).
//!
//! Each suite takes a fresh, empty backend and panics with a message naming the broken rule.
//! They check behaviour a caller relies on, not implementation details.

use super::{
    CallRecord, CallStatus, MetadataStore, ObjectStore, SearchFilter, SegmentDoc, SegmentKey,
    StoreError, VectorDoc, VectorIndex,
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

/// Asserts that the billing call's first revision (4 segments, two saying `duplicate`) is
/// what search shows.
async fn r1_visible(store: &dyn MetadataStore, call_id: &CallId, what: &str) {
    let hits = store
        .keyword_search("duplicate", &SearchFilter::default(), 10)
        .await
        .expect("search");
    assert_eq!(hits.len(), 2, "r1 stays searchable {what}");
    assert!(hits.iter().all(|h| &h.key.call_id == call_id), "{what}");
    assert_eq!(
        store.count_segments(Some(call_id)).await.expect("count"),
        4,
        "{what}"
    );
}

/// Records, atomic segment replacement by revision, keyword search with every filter, and
/// hostile query text.
pub async fn metadata_store(store: &dyn MetadataStore) {
    assert_eq!(
        store.count_segments(None).await.expect("count"),
        0,
        "the suite needs an empty store"
    );
    let billing = call(1, "r1", 0, 300.0, "s3://calls/2024/01/billing.wav");
    let internet = call(2, "r1", 40, 90.0, "s3://calls/2024/02/internet.wav");
    let parcel = call(3, "r1", 80, 600.0, "file:///archive/parcel.wav");

    assert!(store
        .get_call(&billing.call_id)
        .await
        .expect("get")
        .is_none());
    store.put_call(&billing).await.expect("put pending");
    let got = store.get_call(&billing.call_id).await.expect("get");
    assert_eq!(got.as_ref().map(|c| c.status), Some(CallStatus::Pending));
    assert_eq!(
        got.as_ref(),
        Some(&billing),
        "a record round-trips unchanged"
    );

    let billing_segs = vec![
        segment(
            &billing,
            0,
            0,
            0.0,
            "Thank you for calling, how can I help?",
        ),
        segment(
            &billing,
            1,
            0,
            3.0,
            "I was charged twice, I want a refund of the duplicate charge.",
        ),
        segment(
            &billing,
            0,
            1,
            6.0,
            "I can see the duplicate charge and I will refund it today.",
        ),
        segment(&billing, 1, 1, 9.0, "Great, thank you."),
    ];
    let internet_segs = vec![
        segment(
            &internet,
            1,
            0,
            1.0,
            "My router keeps dropping the connection every evening.",
        ),
        segment(
            &internet,
            0,
            0,
            4.0,
            "I will book a technician for Monday morning.",
        ),
    ];
    let parcel_segs = vec![
        segment(
            &parcel,
            1,
            0,
            0.5,
            "My parcel never arrived, the tracking says delivered.",
        ),
        segment(
            &parcel,
            0,
            0,
            3.5,
            "I will ask the courier to redeliver it to your neighbour.",
        ),
    ];
    let billing = indexed(billing, 4);
    store
        .commit_call(&billing, &billing_segs)
        .await
        .expect("commit");
    store
        .commit_call(&indexed(internet.clone(), 2), &internet_segs)
        .await
        .expect("commit");
    store
        .commit_call(&indexed(parcel.clone(), 2), &parcel_segs)
        .await
        .expect("commit");
    // Repeating a commit changes nothing.
    store
        .commit_call(&billing, &billing_segs)
        .await
        .expect("recommit");
    assert_eq!(store.count_segments(None).await.expect("count"), 8);
    assert_eq!(
        store
            .count_segments(Some(&billing.call_id))
            .await
            .expect("count"),
        4
    );

    // Segments come back in time order.
    let segs = store.segments(&billing.call_id).await.expect("segments");
    let starts: Vec<f64> = segs.iter().map(|s| s.start_s).collect();
    assert_eq!(starts, [0.0, 3.0, 6.0, 9.0]);
    assert_eq!(segs[1], billing_segs[1], "a segment round-trips unchanged");

    // Keyword search: the rare word finds its segments, best first.
    let hits = store
        .keyword_search("duplicate", &SearchFilter::default(), 10)
        .await
        .expect("search");
    assert_eq!(hits.len(), 2, "both segments saying `duplicate`: {hits:?}");
    assert!(hits.iter().all(|h| h.key.call_id == billing.call_id));
    assert!(hits[0].score >= hits[1].score, "best first");
    // Several words: any of them matches, more matches rank higher.
    let hits = store
        .keyword_search("technician router", &SearchFilter::default(), 10)
        .await
        .expect("search");
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.key.call_id == internet.call_id));
    // Case and punctuation do not matter.
    let hits = store
        .keyword_search("NEIGHBOUR!", &SearchFilter::default(), 10)
        .await
        .expect("search");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].key, parcel_segs[1].key);
    // The limit holds.
    let hits = store
        .keyword_search("i", &SearchFilter::default(), 3)
        .await
        .expect("search");
    assert!(hits.len() <= 3);

    // Filters.
    let with = |f: SearchFilter| f;
    let cases: Vec<(&str, SearchFilter, Vec<&SegmentKey>)> = vec![
        (
            "role",
            with(SearchFilter {
                role: Some(Role::Agent),
                ..Default::default()
            }),
            vec![&billing_segs[2].key],
        ),
        (
            "from",
            with(SearchFilter {
                from_ms: Some(DAY0_MS + DAY_MS),
                ..Default::default()
            }),
            vec![],
        ),
        (
            "to",
            with(SearchFilter {
                to_ms: Some(DAY0_MS + DAY_MS),
                ..Default::default()
            }),
            vec![&billing_segs[1].key, &billing_segs[2].key],
        ),
        (
            "call",
            with(SearchFilter {
                call_id: Some(internet.call_id.clone()),
                ..Default::default()
            }),
            vec![],
        ),
        (
            "source prefix",
            with(SearchFilter {
                source_prefix: Some("s3://calls/2024/01/".into()),
                ..Default::default()
            }),
            vec![&billing_segs[1].key, &billing_segs[2].key],
        ),
        (
            "min duration",
            with(SearchFilter {
                min_duration_s: Some(301.0),
                ..Default::default()
            }),
            vec![],
        ),
        (
            "max duration",
            with(SearchFilter {
                max_duration_s: Some(300.0),
                ..Default::default()
            }),
            vec![&billing_segs[1].key, &billing_segs[2].key],
        ),
    ];
    for (name, filter, expected) in cases {
        let hits = store
            .keyword_search("duplicate", &filter, 10)
            .await
            .expect("search");
        let mut got: Vec<&SegmentKey> = hits.iter().map(|h| &h.key).collect();
        got.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected, "filter `{name}`");
    }

    // Hostile text is plain words, never query syntax, and never an error.
    for query in [
        "\"unbalanced",
        "AND OR NOT",
        "refund*",
        "NEAR(a b)",
        "col:refund",
        "'; DROP TABLE calls; --",
        "",
        "   ",
        "ünïcödé 电话",
    ] {
        store
            .keyword_search(query, &SearchFilter::default(), 10)
            .await
            .unwrap_or_else(|e| panic!("query {query:?} failed: {e}"));
    }

    // A new revision replaces the old one's segments only once it is committed: while it is
    // pending, and after it fails, the indexed revision stays searchable.
    let mut billing2 = call(1, "r2", 0, 300.0, "s3://calls/2024/01/billing.wav");
    billing2.channels = vec![Role::Agent, Role::Customer];
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
    store.put_call(&pending).await.expect("put pending r2");
    let got = store.get_call(&billing.call_id).await.expect("get");
    let got = got.expect("the call");
    assert_eq!(got.revision, billing2.revision, "the attempt is recorded");
    assert_eq!(got.status, CallStatus::Pending);
    assert_eq!(got.indexed_revision, billing.indexed_revision, "r1 is kept");
    r1_visible(store, &billing.call_id, "while r2 is pending").await;
    let mut failed_r2 = pending.clone();
    failed_r2.status = CallStatus::Failed;
    failed_r2.error = Some(super::CallError {
        stage: "transcribe".into(),
        reason: "r2 did not decode".into(),
    });
    store.put_call(&failed_r2).await.expect("put failed r2");
    r1_visible(store, &billing.call_id, "after r2 failed").await;
    let mut moved = billing2.clone();
    moved.indexed_revision = Some(Revision::new("r2"));
    store.put_call(&moved).await.expect("put");
    r1_visible(
        store,
        &billing.call_id,
        "after a put naming another indexed revision",
    )
    .await;
    // A commit must make its own revision the indexed one.
    assert!(
        store.commit_call(&billing2, &billing2_segs).await.is_err(),
        "a commit of a record that is not indexed is refused"
    );
    r1_visible(store, &billing.call_id, "after a refused commit").await;
    store
        .commit_call(&indexed(billing2.clone(), 1), &billing2_segs)
        .await
        .expect("commit r2");
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
    assert_eq!(
        store
            .keyword_search("overcharge", &SearchFilter::default(), 10)
            .await
            .expect("search")
            .len(),
        1
    );

    // Listing: newest recording first, by status, with call-level filters.
    let mut failed = call(4, "r1", 100, 10.0, "file:///archive/broken.wav");
    failed.status = CallStatus::Failed;
    failed.error = Some(super::CallError {
        stage: "ingest".into(),
        reason: "file:///archive/broken.wav: not audio".into(),
    });
    store.put_call(&failed).await.expect("put failed");
    let all = store
        .list_calls(None, &SearchFilter::default(), 100)
        .await
        .expect("list");
    let ids: Vec<&CallId> = all.iter().map(|c| &c.call_id).collect();
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
    assert_eq!(only_failed.len(), 1);
    assert_eq!(only_failed[0].error, failed.error, "the reason is kept");
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

    // Deleting removes the call and its segments, and is idempotent.
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
        vector,
    }
}

/// Replacement per call, exact top-k against brute force, every filter, and dimension checks.
pub async fn vector_index(index: &dyn VectorIndex) {
    let dim = index.dim();
    assert!(dim >= 8, "the suite needs at least 8 dimensions");
    assert_eq!(
        index.count(None).await.expect("count"),
        0,
        "the suite needs an empty index"
    );
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
    for (n, c) in calls.iter().enumerate() {
        let docs: Vec<VectorDoc> = (0..20)
            .map(|i| vector_doc(c, i % 2, i / 2, unit_vector(dim, n, 1000 * n as u32 + i)))
            .collect();
        index
            .replace_call(&c.call_id, &docs)
            .await
            .expect("replace");
        all_docs.extend(docs);
    }
    assert_eq!(index.count(None).await.expect("count"), 120);
    assert_eq!(
        index.count(Some(&calls[2].call_id)).await.expect("count"),
        20
    );

    // Exact order against brute force, for several queries and filters.
    let brute = |query: &[f32], k: usize, filter: &SearchFilter| -> Vec<SegmentKey> {
        let mut scored: Vec<(f32, &VectorDoc)> = all_docs
            .iter()
            .filter(|d| filter.matches(d.role, d.facets()))
            .map(|d| (d.vector.iter().zip(query).map(|(a, b)| a * b).sum(), d))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(k)
            .map(|(_, d)| d.key.clone())
            .collect()
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
        let expected = brute(&query, 10, filter);
        let got: Vec<SegmentKey> = hits.iter().map(|h| h.key.clone()).collect();
        // Ties may order differently; compare as sets, then check scores are sorted.
        let mut a = got.clone();
        let mut b = expected.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "top-10 for filter {filter:?}");
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

    // Replacing a call (a new revision, or a rerun) leaves exactly the new documents.
    let mut c0_r2 = calls[0].clone();
    c0_r2.revision = Revision::new("r2");
    let new_docs: Vec<VectorDoc> = (0..3)
        .map(|i| vector_doc(&c0_r2, 0, i, unit_vector(dim, 0, 9000 + i)))
        .collect();
    index
        .replace_call(&c0_r2.call_id, &new_docs)
        .await
        .expect("replace");
    index
        .replace_call(&c0_r2.call_id, &new_docs)
        .await
        .expect("replace again");
    assert_eq!(index.count(Some(&c0_r2.call_id)).await.expect("count"), 3);
    assert_eq!(index.count(None).await.expect("count"), 103);
    let hits = index
        .knn(
            &unit_vector(dim, 0, 1),
            50,
            &SearchFilter {
                call_id: Some(c0_r2.call_id.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("knn");
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.key.revision.as_str() == "r2"));

    // k larger than the index, and k = 0.
    assert_eq!(
        index
            .knn(&unit_vector(dim, 1, 5), 1000, &SearchFilter::default())
            .await
            .expect("knn")
            .len(),
        103
    );
    assert!(index
        .knn(&unit_vector(dim, 1, 5), 0, &SearchFilter::default())
        .await
        .expect("knn")
        .is_empty());

    // Wrong dimensions are refused, naming the problem.
    let err = index
        .knn(&vec![0.5; dim + 1], 5, &SearchFilter::default())
        .await
        .expect_err("query of the wrong length");
    assert!(matches!(err, StoreError::Failed { .. }), "{err}");
    let mut bad = vector_doc(&calls[1], 0, 0, vec![0.1; dim - 1]);
    bad.key.seq = 99;
    let err = index
        .replace_call(&calls[1].call_id, &[bad])
        .await
        .expect_err("doc of the wrong length");
    assert!(err.to_string().contains("dimension"), "{err}");
    assert_eq!(
        index.count(Some(&calls[1].call_id)).await.expect("count"),
        20,
        "a refused replace leaves the call as it was"
    );
    // A doc of another call is refused.
    let other = vector_doc(&calls[2], 0, 0, unit_vector(dim, 2, 3));
    assert!(index
        .replace_call(&calls[1].call_id, &[other])
        .await
        .is_err());

    index.delete_call(&calls[3].call_id).await.expect("delete");
    index
        .delete_call(&calls[3].call_id)
        .await
        .expect("delete again");
    assert_eq!(index.count(None).await.expect("count"), 83);
    let hits = index
        .knn(&unit_vector(dim, 3, 1), 100, &SearchFilter::default())
        .await
        .expect("knn");
    assert!(hits.iter().all(|h| h.key.call_id != calls[3].call_id));
}
