//! `S3ObjectStore` and `S3Recordings` against a real moto server: the object store
//! conformance suite, customers' keys exactly as written, paginated listings, capped and
//! ranged reads, versions, If-Match, the error mapping, and an endpoint that goes away.
//!
//! Each test starts its own moto (about a second), so tests share nothing and run in parallel.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use callpipe_cloud::s3::{S3ObjectStore, S3Recordings};
use callpipe_common::store::{conformance, ObjectStore, RecordingSource, StoreError};
use callpipe_common::ErrorKind;
use futures::{StreamExt, TryStreamExt};

use support::moto::Moto;

async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) -> Option<String> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"))
        .version_id
}

#[tokio::test]
async fn the_object_store_passes_the_conformance_suite() {
    let moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "artifacts").await;
    conformance::object_store(&S3ObjectStore::new(s3, "artifacts", "")).await;
}

#[tokio::test]
async fn a_prefixed_store_passes_the_suite_and_stays_inside_its_prefix() {
    let moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "shared").await;
    // Another deployment's objects in the same bucket, one of them sharing the name's start.
    put(
        &s3,
        "shared",
        "other/transcripts/a/r1.json",
        b"theirs".to_vec(),
    )
    .await;
    put(&s3, "shared", "callpipe/prod-old/x", b"theirs".to_vec()).await;

    let store = S3ObjectStore::new(s3.clone(), "shared", "callpipe/prod/");
    conformance::object_store(&store).await;

    store.put("k", b"ours".to_vec()).await.expect("put");
    let raw = s3
        .get_object()
        .bucket("shared")
        .key("callpipe/prod/k")
        .send()
        .await
        .expect("the key is stored under the prefix");
    assert_eq!(raw.body.collect().await.unwrap().to_vec(), b"ours");
    let listed: Vec<_> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        listed,
        ["audio/a.f32", "k", "transcripts/a/r1.json"],
        "listed keys have the prefix stripped, and nothing outside it shows"
    );
    assert!(store.head("x").await.unwrap().is_none());
}

#[tokio::test]
async fn recording_keys_are_listed_and_read_exactly_as_written() {
    let moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "customer").await;
    let keys = [
        "calls/2024 01 02/agent one.wav",
        "calls/a+b+c.wav",
        "calls/ünïcödé/通话 ☎.wav",
        "calls//double//slash.wav",
        "calls/%41%2F encoded-looking.wav",
        "calls/query?x=1&y=2#frag.wav",
        "calls/tilde~and'quote\".wav",
    ];
    for (i, key) in keys.iter().enumerate() {
        put(&s3, "customer", key, format!("recording {i}").into_bytes()).await;
    }
    let source = S3Recordings::new(s3);

    let listed: Vec<_> = source
        .list("customer", "calls/", None)
        .try_collect::<Vec<_>>()
        .await
        .expect("list");
    let mut want: Vec<_> = keys.iter().map(|k| k.to_string()).collect();
    want.sort();
    let got: Vec<_> = listed.iter().map(|m| m.key.clone()).collect();
    assert_eq!(got, want, "every key listed as written, in key order");

    for (i, key) in keys.iter().enumerate() {
        let body = source
            .read("customer", key, None, None, 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("read {key:?}: {e}"));
        assert_eq!(body, format!("recording {i}").into_bytes(), "{key:?}");
        let head = source.head("customer", key, None).await.expect("head");
        assert_eq!(head.key, *key);
        assert_eq!(head.uri(), format!("s3://customer/{key}"));
        let from_list = listed.iter().find(|m| m.key == *key).expect("listed");
        assert_eq!(from_list.etag, head.etag, "list and head agree on the ETag");
        assert_eq!(from_list.size, head.size);
    }

    // `//` is not `/`: the prefix `calls//` finds only the double-slash key.
    let doubled: Vec<_> = source
        .list("customer", "calls//", None)
        .map_ok(|m| m.key)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(doubled, ["calls//double//slash.wav"]);
}

#[tokio::test]
async fn a_long_listing_arrives_complete_and_in_order_across_pages() {
    const N: usize = 2_500;
    let moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "many").await;
    let keys: Vec<String> = (0..N)
        .map(|i| format!("day/{:05}.wav", i * 7 % N))
        .collect();
    futures::stream::iter(keys.iter())
        .for_each_concurrent(16, |key| {
            let s3 = s3.clone();
            async move {
                put(&s3, "many", key, vec![1]).await;
            }
        })
        .await;
    put(&s3, "many", "elsewhere/x.wav", vec![1]).await;

    let started = Instant::now();
    let source = S3Recordings::new(s3).with_page_size(250);
    let listed: Vec<String> = source
        .list("many", "day/", None)
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .expect("list");
    let mut want = keys.clone();
    want.sort();
    assert_eq!(listed.len(), N, "every object, none twice");
    assert_eq!(listed, want, "in key order");
    eprintln!("listed {N} objects in 10 pages in {:?}", started.elapsed());

    // The stream is lazy: taking a few items and dropping it is fine (and costs one page).
    let first: Vec<_> = source.list("many", "day/", None).take(3).collect().await;
    assert_eq!(first.len(), 3);
    assert_eq!(first[0].as_ref().unwrap().key, "day/00000.wav");

    // Resuming after a key lists exactly what follows it, across pages.
    let after = want[N / 2].clone();
    let rest: Vec<String> = source
        .list("many", "day/", Some(after))
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .expect("list after a key");
    assert_eq!(rest, want[N / 2 + 1..], "start_after resumes after the key");
}

#[tokio::test]
async fn a_read_stops_after_limit_plus_one_bytes() {
    let moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "big").await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    put(&s3, "big", "call.wav", body.clone()).await;
    let source = S3Recordings::new(s3);

    let capped = source
        .read("big", "call.wav", None, None, 1000)
        .await
        .unwrap();
    assert_eq!(
        capped,
        body[..1001],
        "limit + 1 bytes: the caller knows it is too large"
    );
    let exact = source
        .read("big", "call.wav", None, None, body.len() as u64)
        .await
        .unwrap();
    assert_eq!(exact, body, "an object of exactly the limit comes whole");
    let roomy = source
        .read("big", "call.wav", None, None, u64::MAX)
        .await
        .unwrap();
    assert_eq!(roomy.len(), body.len());
    let zero = source.read("big", "call.wav", None, None, 0).await.unwrap();
    assert_eq!(zero.len(), 1);
}

#[tokio::test]
async fn ranged_reads_return_the_bytes_asked_for() {
    let moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "ranges").await;
    let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    put(&s3, "ranges", "r.wav", body.clone()).await;
    let source = S3Recordings::new(s3);
    let range = |r: std::ops::Range<u64>| source.read_range("ranges", "r.wav", None, r);

    assert_eq!(range(0..44).await.unwrap(), body[..44], "a header");
    assert_eq!(range(5000..5100).await.unwrap(), body[5000..5100]);
    assert_eq!(
        range(9_990..20_000).await.unwrap(),
        body[9_990..],
        "shorter at the end"
    );
    assert!(
        range(10_000..10_100).await.unwrap().is_empty(),
        "past the end"
    );
    assert!(range(7..7).await.unwrap().is_empty(), "an empty range");
    let missing = source
        .read_range("ranges", "nope.wav", None, 0..10)
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
}

#[tokio::test]
async fn an_older_version_can_be_read_by_its_id() {
    let moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "versioned").await;
    s3.put_bucket_versioning()
        .bucket("versioned")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("enable versioning");
    let key = "2024/call 1.wav";
    let v1 = put(&s3, "versioned", key, b"first take".to_vec())
        .await
        .expect("a version id");
    let v2 = put(&s3, "versioned", key, b"second, longer take".to_vec())
        .await
        .expect("a version id");
    assert_ne!(v1, v2);
    let source = S3Recordings::new(s3);

    let current = source.head("versioned", key, None).await.unwrap();
    assert_eq!(current.version.as_deref(), Some(v2.as_str()));
    assert_eq!(current.size, 19);
    let old = source.head("versioned", key, Some(&v1)).await.unwrap();
    assert_eq!(old.version.as_deref(), Some(v1.as_str()));
    assert_eq!(old.size, 10);
    assert_ne!(old.etag, current.etag);
    assert!(old
        .last_modified_ms
        .is_some_and(|ms| ms > 1_700_000_000_000));

    let body = source
        .read("versioned", key, Some(&v1), old.etag.as_deref(), 100)
        .await
        .unwrap();
    assert_eq!(body, b"first take");
    assert_eq!(
        source
            .read_range("versioned", key, Some(&v1), 6..10)
            .await
            .unwrap(),
        b"take"
    );
    assert_eq!(
        source
            .read("versioned", key, None, None, 100)
            .await
            .unwrap(),
        b"second, longer take"
    );

    let gone = source
        .head("versioned", key, Some("no-such-version"))
        .await
        .unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert!(
        gone.to_string().contains("s3://versioned/2024/call 1.wav"),
        "{gone}"
    );
}

#[tokio::test]
async fn a_stale_etag_reads_as_not_found() {
    let moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "etags").await;
    put(&s3, "etags", "c.wav", b"old".to_vec()).await;
    let source = S3Recordings::new(s3.clone());
    let old = source.head("etags", "c.wav", None).await.unwrap();
    let etag = old.etag.clone().expect("an ETag");
    assert!(!etag.contains('"'), "ETags come without quotes: {etag}");
    assert_eq!(
        source
            .read("etags", "c.wav", None, Some(&etag), 10)
            .await
            .unwrap(),
        b"old"
    );

    put(&s3, "etags", "c.wav", b"replaced".to_vec()).await;
    let stale = source
        .read("etags", "c.wav", None, Some(&etag), 10)
        .await
        .unwrap_err();
    assert!(stale.is_not_found(), "that revision is gone: {stale}");
    assert!(stale.to_string().contains("s3://etags/c.wav"), "{stale}");
}

#[tokio::test]
async fn missing_objects_and_buckets_are_told_apart() {
    let moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "present").await;
    let source = S3Recordings::new(s3.clone());

    for err in [
        source
            .head("present", "no/such.wav", None)
            .await
            .unwrap_err(),
        source
            .read("present", "no/such.wav", None, None, 10)
            .await
            .unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err}");
        assert!(
            err.to_string().contains("s3://present/no/such.wav"),
            "the error names the URI: {err}"
        );
    }

    let no_bucket = source
        .read("absent-bucket", "a.wav", None, None, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&no_bucket, StoreError::Failed { reason, .. } if reason.contains("no such bucket")),
        "{no_bucket}"
    );
    let store = S3ObjectStore::new(s3, "absent-bucket", "");
    let err = store.put("a", b"x".to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("no such bucket"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Permanent);
    let listing = source
        .list("absent-bucket", "", None)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(
        listing.len(),
        1,
        "a failed listing yields its error, then ends"
    );
    assert!(listing[0].is_err());
}

#[tokio::test]
async fn an_endpoint_that_is_down_fails_fast_and_transiently() {
    let mut moto = Moto::start();
    let s3 = moto.s3().await;
    create_bucket(&s3, "flaky").await;
    let store = S3ObjectStore::new(s3.clone(), "flaky", "");
    store.put("k", b"v".to_vec()).await.unwrap();

    moto.stop();
    let started = Instant::now();
    let err = store.get("k").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "a refused connection is Unavailable: {err}"
    );
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(
        took < Duration::from_secs(10),
        "retries are bounded: gave up after {took:?}"
    );
    eprintln!("gave up after {took:?}: {err}");
    let listing = S3Recordings::new(s3.clone())
        .list("flaky", "", None)
        .collect::<Vec<_>>()
        .await;
    assert!(matches!(
        listing.as_slice(),
        [Err(StoreError::Unavailable { .. })]
    ));

    // Back up (empty: moto keeps nothing across a restart), the same clients work again.
    moto.start_again();
    create_bucket(&s3, "flaky").await;
    store.put("k", b"again".to_vec()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), b"again");
}
