//! A real moto server (S3, SQS, Secrets Manager) for one test: started on a free loopback
//! port, killed when dropped.
//!
//! The binary is `$CALLPIPE_MOTO_SERVER`, or `moto_server` on `PATH`
//! (`source scripts/env.sh && ensure_test_servers` installs it and sets the variable). A
//! server that cannot start panics the test with the reason: these tests never pass without
//! the server they test against.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::config::Credentials;

/// How long moto may take to answer after its start (about 1 s when the machine is idle; much
/// more while other builds load both cores).
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running moto server, or one stopped by [`Moto::stop`] that keeps its port.
#[derive(Debug)]
pub struct Moto {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
    /// moto's request log, for the panic message when it does not come up.
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts a server and waits until it answers HTTP.
    pub fn start() -> Moto {
        let binary = std::env::var_os("CALLPIPE_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("moto_server"));
        let port = super::free_port();
        let log = tempfile::NamedTempFile::new().expect("a temp file for moto's log");
        let mut moto = Moto {
            binary,
            port,
            child: None,
            log,
        };
        moto.start_again();
        moto
    }

    /// `http://127.0.0.1:PORT`, the endpoint for every service.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The SDK configuration a deployment would have (callpipe's retries and timeouts), pointed
    /// at this server with static test credentials in us-east-1.
    pub async fn sdk_config(&self) -> SdkConfig {
        callpipe_cloud::aws::config_loader(Some("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
            .load()
            .await
    }

    /// A path-style S3 client (moto needs it).
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        callpipe_cloud::aws::s3_client(&self.sdk_config().await, true)
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        callpipe_cloud::aws::sqs_client(&self.sdk_config().await)
    }

    /// Kills the server; the port stays this server's for [`Moto::start_again`]. moto keeps
    /// everything in memory, so buckets and queues are gone after a restart.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub fn start_again(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let child = super::Launch {
            name: "moto",
            env_var: "CALLPIPE_MOTO_SERVER",
            binary: &self.binary,
            args: &["-H", "127.0.0.1", "-p", &port],
            log: self.log.path(),
            port: self.port,
            timeout: START_TIMEOUT,
        }
        .start(answers_http);
        self.child = Some(child);
    }

    fn log_tail(&self) -> String {
        super::log_tail(self.log.path())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether an HTTP request to the port gets an HTTP response (moto's own API answers any GET).
fn answers_http(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        "GET /moto-api/data.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
