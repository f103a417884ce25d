//! A real MongoDB-compatible server for one test: SecantusDB (the MongoDB wire protocol on
//! WiredTiger), started on a free loopback port with its own data directory, killed when
//! dropped.
//!
//! The binary is `$CALLPIPE_SECANTUSD` (`source scripts/env.sh && ensure_test_servers`
//! installs it and sets the variable), else the one in `ensure_test_servers`' venv, else
//! `secantusd-py` on `PATH`. A server that cannot start
//! panics the test with the reason: these tests never pass without the server they test
//! against.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections after its start (about 2 s when the
/// machine is idle, more for a new data directory while builds load the cores).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// `secantusd-py` in `ensure_test_servers`' venv, under `$HOME`.
const VENV_BINARY: &str = ".cache/callpipe/servers-venv/bin/secantusd-py";
/// How long a stop waits for a clean shutdown before it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server, or one stopped by [`MongoServer::stop`] that keeps its port and data.
#[derive(Debug)]
pub struct MongoServer {
    binary: PathBuf,
    port: u16,
    /// Kept across restarts, so what was written survives them.
    data: tempfile::TempDir,
    /// Whether the server requires SCRAM authentication.
    auth: bool,
    child: Option<Child>,
    /// The server's log, for the panic message when it does not come up.
    log: tempfile::NamedTempFile,
}

impl MongoServer {
    /// Starts a server without authentication and waits until it accepts connections.
    pub fn start() -> MongoServer {
        let binary = std::env::var_os("CALLPIPE_SECANTUSD")
            .map(PathBuf::from)
            .or_else(|| {
                // Where `ensure_test_servers` installs it, for a shell that did not run it.
                let venv = std::env::var_os("HOME")
                    .map(PathBuf::from)?
                    .join(VENV_BINARY);
                venv.is_file().then_some(venv)
            })
            .unwrap_or_else(|| PathBuf::from("secantusd-py"));
        let mut server = MongoServer {
            binary,
            port: super::free_port(),
            data: tempfile::tempdir().expect("a data directory for the server"),
            auth: false,
            child: None,
            log: tempfile::NamedTempFile::new().expect("a temp file for the server's log"),
        };
        server.start_again();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true`: the server calls itself a one-node
    /// replica set, which the driver would otherwise try to discover by its advertised name.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// [`MongoServer::uri`] with credentials.
    pub fn uri_with(&self, user: &str, password: &str) -> String {
        format!(
            "mongodb://{user}:{password}@127.0.0.1:{}/?directConnection=true&authSource=admin",
            self.port
        )
    }

    /// Restarts the server requiring authentication (create the users before).
    pub fn require_auth(&mut self) {
        self.auth = true;
        self.start_again();
    }

    /// Stops the server (cleanly if it can within [`STOP_TIMEOUT`], else killed); the port and
    /// the data directory stay this server's for [`MongoServer::start_again`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while terminated && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server (again) on the same port and data and waits until it accepts
    /// connections.
    pub fn start_again(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let data = self
            .data
            .path()
            .to_str()
            .expect("a UTF-8 temp dir")
            .to_owned();
        let mut args = vec![
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--storage-path",
            &data,
        ];
        if self.auth {
            args.push("--auth");
        }
        let child = super::Launch {
            name: "SecantusDB",
            env_var: "CALLPIPE_SECANTUSD",
            binary: &self.binary,
            args: &args,
            log: self.log.path(),
            port: self.port,
            timeout: START_TIMEOUT,
        }
        .start(accepts);
        self.child = Some(child);
    }

    pub fn log_tail(&self) -> String {
        super::log_tail(self.log.path())
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the port accepts a TCP connection (the server binds once it is ready to serve).
fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}
