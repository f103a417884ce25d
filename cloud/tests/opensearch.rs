//! `OpenSearchIndex` against `StrictAoss`, an emulator that behaves like an OpenSearch
//! Serverless vector collection (SigV4 checked with the test's secret, no custom ids or
//! refreshes, documents visible only after a delay): the vector and keyword conformance
//! suites, bulk items refused and resent, throttling, an outage, index set-up and readiness,
//! and the signature compared with botocore's.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use callpipe_cloud::opensearch::sign::{sign, SERVICE};
use callpipe_cloud::opensearch::{OpenSearchIndex, OpenSearchSettings};
use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::conformance::{self, KeywordLoader};
use callpipe_common::store::{
    CallRecord, KeywordIndex, KeywordQuery, SearchFilter, SegmentDoc, SegmentKey, StoreError,
    VectorDoc, VectorIndex,
};
use callpipe_common::Role;
use callpipe_testkit::{StrictAoss, StrictAossOptions};
use serde_json::{json, Value};

const ACCESS: &str = "AKIDCALLPIPETEST";
const SECRET: &str = "a-secret-that-signs-every-request";
const REGION: &str = "us-east-1";
const DIM: usize = 16;
const MODEL: &str = "test-minilm";
/// Serverless shows writes after about 60 s; the emulator after this.
const VISIBILITY: Duration = Duration::from_secs(1);
/// How long the suites wait for reads to catch up.
const CONSISTENCY: Duration = Duration::from_secs(10);

fn emulator() -> StrictAoss {
    StrictAoss::start(StrictAossOptions {
        visibility_delay: VISIBILITY,
        credentials: Some((ACCESS.into(), SECRET.into())),
        region: Some(REGION.into()),
        port: 0,
    })
    .expect("start the Serverless emulator")
}

fn sdk_config(secret: &str) -> SdkConfig {
    let creds = Credentials::new(ACCESS, secret, Some("a-session-token".into()), None, "test");
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(creds))
        .build()
}

fn client_with(
    server: &StrictAoss,
    index: &str,
    dim: usize,
    model: &str,
    secret: &str,
) -> OpenSearchIndex {
    let settings = OpenSearchSettings {
        endpoint: server.endpoint(),
        index: index.into(),
        region: None,
    };
    OpenSearchIndex::new(&settings, dim, model, &sdk_config(secret)).expect("client")
}

fn client(server: &StrictAoss, index: &str) -> OpenSearchIndex {
    client_with(server, index, DIM, MODEL, SECRET)
}

async fn ready_index(server: &StrictAoss, name: &str) -> OpenSearchIndex {
    let index = client(server, name);
    index.ensure_index().await.expect("ensure_index");
    index
}

fn unit(axis: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[axis % DIM] = 1.0;
    v
}

fn docs(call: &str, n: u32) -> Vec<VectorDoc> {
    (0..n)
        .map(|seq| VectorDoc {
            key: SegmentKey {
                call_id: CallId::from_stored(call),
                revision: Revision::new("r1"),
                channel: 0,
                seq,
            },
            role: Role::Agent,
            source: format!("s3://calls/{call}.wav"),
            recorded_at_ms: 1_704_067_200_000,
            call_duration_s: 60.0,
            text: format!("segment {seq}"),
            vector: unit(seq as usize),
        })
        .collect()
}

/// Waits until the index counts `n` documents (of `call`, or all).
async fn count_becomes(index: &OpenSearchIndex, call: Option<&str>, n: u64) {
    let call = call.map(CallId::from_stored);
    conformance::eventually(CONSISTENCY, "count", || async {
        let got = index
            .count(call.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        (got == n)
            .then_some(())
            .ok_or(format!("count {got}, want {n}"))
    })
    .await;
}

#[tokio::test]
async fn opensearch_passes_the_vector_conformance_suite() {
    let server = emulator();
    let index = ready_index(&server, "vectors").await;
    let started = Instant::now();
    conformance::vector_index(&index, CONSISTENCY).await;
    eprintln!("vector conformance: {:?}", started.elapsed());
    let counts = server.counts();
    assert_eq!(counts.refused_auth, 0, "{counts:?}");
    assert_eq!(counts.refused_unsupported, 0, "{counts:?}");
}

/// Loads segments as documents with a dummy vector: keyword search only reads their text.
struct Loader<'a>(&'a OpenSearchIndex);

#[async_trait::async_trait]
impl KeywordLoader for Loader<'_> {
    async fn load(&self, call: &CallRecord, segments: &[SegmentDoc]) {
        let docs: Vec<VectorDoc> = segments
            .iter()
            .map(|s| VectorDoc {
                key: s.key.clone(),
                role: s.role,
                source: call.source.clone(),
                recorded_at_ms: call.recorded_at_ms,
                call_duration_s: call.duration_s,
                text: s.text.clone(),
                vector: unit(0),
            })
            .collect();
        let batch = format!("keywords-{}", call.call_id);
        self.0.insert(&batch, &docs).await.expect("load segments");
    }
}

#[tokio::test]
async fn opensearch_passes_the_keyword_conformance_suite() {
    let server = emulator();
    let index = ready_index(&server, "keywords").await;
    let started = Instant::now();
    conformance::keyword_index(&index, &Loader(&index), CONSISTENCY).await;
    eprintln!("keyword conformance: {:?}", started.elapsed());
    assert_eq!(server.counts().refused_unsupported, 0);
}

#[tokio::test]
async fn throttled_bulk_items_are_resent_and_the_insert_succeeds() {
    let server = emulator();
    let index = ready_index(&server, "throttled").await;
    server.reset_counts();
    server.fail_next_bulk_items(3, 429);
    let ids = index.insert("b1", &docs("c1", 10)).await.expect("insert");
    assert_eq!(ids.len(), 10);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 10, "one id per document");
    let counts = server.counts();
    assert_eq!(counts.injected_items, 3);
    assert_eq!(
        counts.bulk, 2,
        "one resend of the three refused items: {counts:?}"
    );
    assert_eq!(counts.bulk_items, 13);
    count_becomes(&index, Some("c1"), 10).await;
    let mut found = index.batch_ids("b1", 100).await.expect("batch ids");
    found.sort();
    assert_eq!(found, distinct, "the ids returned are the documents' ids");
}

#[tokio::test]
async fn items_refused_for_good_fail_the_insert_and_what_landed_is_deleted() {
    let server = emulator();
    let index = ready_index(&server, "refused").await;

    // Throttled on every attempt: 10 of 12 items in the first round (2 land), then the same
    // 10 in each of the 4 resends; the 2 that landed are deleted again.
    server.reset_counts();
    server.fail_next_bulk_items(50, 429);
    let err = index
        .insert("b1", &docs("c1", 12))
        .await
        .expect_err("insert");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("429"), "{err}");
    let counts = server.counts();
    assert_eq!(counts.injected_items, 50, "{counts:?}");
    assert_eq!(
        counts.bulk, 6,
        "5 rounds of inserts and one clean-up delete: {counts:?}"
    );

    // Refused for good (a 400 item): not resent.
    server.reset_counts();
    server.fail_next_bulk_items(1, 400);
    let err = index
        .insert("b2", &docs("c2", 5))
        .await
        .expect_err("insert");
    assert!(matches!(err, StoreError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("status 400"), "{err}");
    assert_eq!(
        server.counts().bulk,
        2,
        "one insert, one clean-up delete, no resend"
    );

    // The documents that landed were deleted again, so nothing of either batch remains.
    tokio::time::sleep(VISIBILITY * 2).await;
    count_becomes(&index, None, 0).await;
    assert!(index.batch_ids("b1", 100).await.expect("ids").is_empty());
    assert!(index.batch_ids("b2", 100).await.expect("ids").is_empty());
}

#[tokio::test]
async fn throttled_requests_are_retried() {
    let server = emulator();
    let index = ready_index(&server, "throttle").await;
    server.reset_counts();
    server.fail_next_requests(2, 429);
    assert_eq!(index.count(None).await.expect("count"), 0);
    assert_eq!(server.counts().injected, 2);

    // A throttled insert was not applied, so it is safe to send again.
    server.fail_next_requests(2, 429);
    let ids = index.insert("b1", &docs("c1", 3)).await.expect("insert");
    assert_eq!(ids.len(), 3);
    count_becomes(&index, None, 3).await;

    // Reads are retried after a 5xx too.
    server.fail_next_requests(2, 503);
    assert_eq!(index.count(None).await.expect("count"), 3);
}

#[tokio::test]
async fn an_insert_is_not_repeated_after_an_ambiguous_failure() {
    let server = emulator();
    let index = ready_index(&server, "ambiguous").await;
    server.reset_counts();
    server.fail_next_requests(1, 500);
    let err = index
        .insert("b1", &docs("c1", 3))
        .await
        .expect_err("insert");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("may have been applied"), "{err}");
    assert_eq!(server.counts().bulk, 1, "not sent twice");
}

#[tokio::test]
async fn a_collection_that_is_down_is_unavailable_and_then_back() {
    let server = emulator();
    let index = ready_index(&server, "down").await;
    server.pause();
    let started = Instant::now();
    let err = index.count(None).await.expect_err("count while down");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = index
        .insert("b1", &docs("c1", 2))
        .await
        .expect_err("insert while down");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    let err = index
        .knn(&unit(0), 3, &SearchFilter::default())
        .await
        .expect_err("knn while down");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(server.counts().while_paused > 0);
    server.resume();
    assert_eq!(index.count(None).await.expect("count once back"), 0);
}

#[tokio::test]
async fn ensure_index_is_idempotent_and_refuses_another_dimension_or_model() {
    let server = emulator();
    let index = ready_index(&server, "segments").await;
    index.ensure_index().await.expect("a second ensure_index");
    client(&server, "segments")
        .ensure_index()
        .await
        .expect("another client's ensure_index");

    let other_dim = client_with(&server, "segments", 8, MODEL, SECRET);
    let err = other_dim
        .ensure_index()
        .await
        .expect_err("another dimension");
    let text = err.to_string();
    assert!(
        text.contains("16 dimensions") && text.contains("8 dimensions"),
        "{text}"
    );
    let err = other_dim
        .check_ready()
        .await
        .expect_err("another dimension");
    assert!(err.to_string().contains("8 dimensions"), "{err}");

    let other_model = client_with(&server, "segments", DIM, "another-model", SECRET);
    let err = other_model.ensure_index().await.expect_err("another model");
    let text = err.to_string();
    assert!(
        text.contains(MODEL) && text.contains("another-model"),
        "{text}"
    );
}

#[tokio::test]
async fn check_ready_says_to_run_setup_until_the_index_exists() {
    let server = emulator();
    let index = client(&server, "later");
    let err = index.check_ready().await.expect_err("no index yet");
    assert!(matches!(err, StoreError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("callpipe setup"), "{err}");
    index.ensure_index().await.expect("setup");
    index.check_ready().await.expect("ready after setup");
}

#[tokio::test]
async fn a_wrong_secret_is_denied() {
    let server = emulator();
    let good = ready_index(&server, "denied").await;
    let bad = client_with(&server, "denied", DIM, MODEL, "not-the-secret");
    let err = bad.count(None).await.expect_err("wrong secret");
    assert!(matches!(err, StoreError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("signature"), "{err}");
    assert_eq!(good.count(None).await.expect("count"), 0);
}

#[tokio::test]
async fn small_calls_need_no_request() {
    let server = emulator();
    let index = ready_index(&server, "noop").await;
    server.reset_counts();
    assert!(index.insert("b", &[]).await.expect("insert").is_empty());
    index.delete(&[]).await.expect("delete");
    assert!(index
        .knn(&unit(0), 0, &SearchFilter::default())
        .await
        .expect("knn")
        .is_empty());
    assert!(index
        .keyword_search(&KeywordQuery::any_of("?!"), &SearchFilter::default(), 10)
        .await
        .expect("search")
        .hits
        .is_empty());
    assert!(index.batch_ids("b", 0).await.expect("ids").is_empty());
    let counts = server.counts();
    assert_eq!(counts.bulk + counts.search + counts.count, 0, "{counts:?}");
}

/// The Python next to moto's server (botocore comes with moto).
fn python() -> PathBuf {
    let moto = std::env::var_os("CALLPIPE_MOTO_SERVER").unwrap_or_else(|| {
        panic!(
            "CALLPIPE_MOTO_SERVER is not set: run `source scripts/env.sh && ensure_test_servers` \
             (the SigV4 test runs botocore from that venv)"
        )
    });
    let python = PathBuf::from(moto).with_file_name("python");
    assert!(
        python.exists(),
        "{} not found: run `source scripts/env.sh && ensure_test_servers`",
        python.display()
    );
    python
}

/// Signs with botocore's `SigV4Auth` at a frozen clock; returns the request's headers.
fn botocore_sign(url: &str, content_type: &str, body: &[u8], token: &str, time: &str) -> Value {
    const SCRIPT: &str = r#"
import base64, datetime, hashlib, json, sys
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

spec = json.load(sys.stdin)
fixed = datetime.datetime.strptime(spec["time"], "%Y%m%dT%H%M%SZ")
botocore.auth.get_current_datetime = lambda *args, **kwargs: fixed
body = base64.b64decode(spec["body"])
request = AWSRequest(
    method=spec["method"],
    url=spec["url"],
    data=body,
    headers={
        "Content-Type": spec["content_type"],
        "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
    },
)
creds = Credentials(spec["access"], spec["secret"], spec["token"])
botocore.auth.SigV4Auth(creds, spec["service"], spec["region"]).add_auth(request)
json.dump({k.lower(): v for k, v in request.headers.items()}, sys.stdout)
"#;
    let spec = json!({
        "method": "POST",
        "url": url,
        "content_type": content_type,
        "body": base64(body),
        "access": ACCESS,
        "secret": SECRET,
        "token": token,
        "service": SERVICE,
        "region": REGION,
        "time": time,
    });
    let python = python();
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "botocore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("botocore's headers")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn sigv4_matches_botocore() {
    let url = "https://abc123def456.us-east-1.aoss.amazonaws.com/callpipe-segments/_search?timeout=30s&size=10";
    let body = br#"{"size":3,"query":{"match":{"text":{"query":"refund"}}}}"#;
    let content_type = "application/json";
    let token = "FwoGZXIvYXdzEXAMPLE//session+token=";
    // 2026-01-02T03:04:05Z
    let time = UNIX_EPOCH + Duration::from_secs(1_767_323_045);
    let creds = Credentials::new(ACCESS, SECRET, Some(token.into()), None, "test");
    let mut request = http::Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", content_type)
        .body(body.to_vec())
        .unwrap();
    sign(&mut request, &creds, REGION, SERVICE, time).expect("sign");
    let ours = |name: &str| {
        request
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };

    let theirs = botocore_sign(url, content_type, body, token, "20260102T030405Z");
    let theirs = |name: &str| {
        theirs[name]
            .as_str()
            .unwrap_or_else(|| panic!("botocore set no {name}: {theirs}"))
            .to_owned()
    };
    assert_eq!(ours("x-amz-date"), "20260102T030405Z");
    for name in [
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
    ] {
        assert_eq!(ours(name), theirs(name), "header {name}");
    }
}
