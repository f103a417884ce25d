//! The S3 object store against `s3s-fs`, a server that checks SigV4 signatures (moto accepts
//! any): with the right secret every request is signed correctly, streamed reads included;
//! with a wrong one the error says the credentials are refused.
//!
//! The binary is `$CALLPIPE_S3S_FS`, or `s3s-fs` on `PATH` (`source scripts/env.sh &&
//! ensure_test_servers` builds it). A server that cannot start fails the test.

mod support;

use callpipe_cloud::s3::{S3ObjectStore, S3Recordings};
use callpipe_common::store::{ObjectStore as _, RecordingSource as _};
use support::s3s::{S3sFs, SECRET};

#[tokio::test]
async fn requests_are_signed_and_a_wrong_secret_is_refused() {
    let server = S3sFs::start();
    let client = server.client(SECRET).await;
    client
        .create_bucket()
        .bucket("artifacts")
        .send()
        .await
        .expect("a signed CreateBucket is accepted");

    let store = S3ObjectStore::new(client.clone(), "artifacts", "");
    callpipe_common::store::conformance::object_store(&store).await;

    // The recordings reader's streamed and ranged reads are signed too.
    store
        .put("calls/a b+c.wav", vec![7u8; 300_000])
        .await
        .unwrap();
    let recordings = S3Recordings::new(client);
    let bytes = recordings
        .read("artifacts", "calls/a b+c.wav", None, None, 1 << 20)
        .await
        .expect("a signed streamed read");
    assert_eq!(bytes.len(), 300_000);
    let range = recordings
        .read_range("artifacts", "calls/a b+c.wav", None, 10..20)
        .await
        .expect("a signed ranged read");
    assert_eq!(range, vec![7u8; 10]);

    let wrong = S3ObjectStore::new(server.client("not-the-secret").await, "artifacts", "");
    let err = wrong
        .get("calls/a b+c.wav")
        .await
        .expect_err("a wrong secret must be refused");
    let text = err.to_string();
    assert!(
        text.contains("access denied") || text.contains("credentials"),
        "the error says the credentials were refused: {text}"
    );
    // The worker's fault, not the call's: released untouched, never recorded as the call's.
    assert_eq!(
        err.kind(),
        callpipe_common::ErrorKind::Environment,
        "{text}"
    );
}
