//! `s3s-fs`, an S3 server that checks SigV4 signatures (moto accepts any): the binary is
//! `$CALLPIPE_S3S_FS`, or `s3s-fs` on `PATH` (`source scripts/env.sh && ensure_test_servers`
//! builds it). Its buckets are the folders of its data directory.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::Credentials;

pub const ACCESS: &str = "callpipe-test";
pub const SECRET: &str = "a-secret-that-signs-every-request";

pub struct S3sFs {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl S3sFs {
    pub fn start() -> S3sFs {
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

    pub async fn client(&self, secret: &str) -> aws_sdk_s3::Client {
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

impl S3sFs {
    /// The folder that holds its buckets.
    pub fn root(&self) -> &Path {
        self._dir.path()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
