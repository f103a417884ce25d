//! The S3 object store against `s3s-fs`, a server that checks SigV4 signatures (moto accepts
//! any): with the right secret every request is signed correctly, streamed reads included;
//! with a wrong one the error says the credentials are refused.
//!
//! The binary is `$CALLPIPE_S3S_FS`, or `s3s-fs` on `PATH` (`source scripts/env.sh &&
//! ensure_test_servers` builds it). A server that cannot start fails the test.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::Credentials;

use callpipe_cloud::s3::{S3ObjectStore, S3Recordings};
use callpipe_common::store::{ObjectStore as _, RecordingSource as _};

const ACCESS: &str = "callpipe-test";
const SECRET: &str = "a-secret-that-signs-every-request";

struct S3sFs {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl S3sFs {
    fn start() -> S3sFs {
        let binary = std::env::var_os("CALLPIPE_S3S_FS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("s3s-fs"));
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS, "--secret-key", SECRET])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run `source scripts/env.sh && ensure_test_servers`",
                    binary.display()
                )
            });
        let until = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "s3s-fs did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3sFs {
            child,
            port,
            _dir: dir,
        }
    }

    async fn client(&self, secret: &str) -> aws_sdk_s3::Client {
        let config = callpipe_cloud::aws::config_loader(Some("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", self.port))
            .credentials_provider(Credentials::new(ACCESS, secret, None, None, "test"))
            .load()
            .await;
        callpipe_cloud::aws::s3_client(&config, true)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
