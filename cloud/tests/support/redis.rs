//! A real redis-server for one test: started in the foreground on a free loopback port, with no
//! persistence, killed when dropped.
//!
//! The binary is `$CALLPIPE_REDIS_SERVER`, or `redis-server` on `PATH`
//! (`source scripts/env.sh && ensure_test_servers` installs it). A server that cannot start
//! panics the test with the reason: these tests never pass without the server they test against.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

/// How long redis-server may take to answer after its start (milliseconds when the machine is
/// idle; the bound leaves room for two cores busy compiling).
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// A running redis-server, or one stopped by [`RedisServer::stop`] that keeps its port.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    password: Option<String>,
    child: Option<Child>,
    /// redis-server's log, for the panic message when it does not come up.
    log: tempfile::NamedTempFile,
}

impl RedisServer {
    /// Starts a server without a password and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(None)
    }

    /// Starts a server that requires `password` (`--requirepass`).
    pub fn start_with_password(password: &str) -> RedisServer {
        Self::start_with(Some(password.to_owned()))
    }

    fn start_with(password: Option<String>) -> RedisServer {
        let binary = std::env::var_os("CALLPIPE_REDIS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let log = tempfile::NamedTempFile::new().expect("a temp file for redis-server's log");
        let mut server = RedisServer {
            binary,
            port: super::free_port(),
            password,
            child: None,
            log,
        };
        server.start_again();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, without the password.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server; the port stays this server's for [`RedisServer::start_again`]. Nothing
    /// is persisted, so every key (fence counters included) and every loaded script is gone
    /// after a restart.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and waits until it answers PING.
    pub fn start_again(&mut self) {
        self.stop();
        let dir = std::env::temp_dir();
        let port = self.port.to_string();
        let mut args = vec![
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            dir.to_str().expect("a UTF-8 temp dir"),
        ];
        if let Some(password) = &self.password {
            args.extend(["--requirepass", password]);
        }
        let child = super::Launch {
            name: "redis-server",
            env_var: "CALLPIPE_REDIS_SERVER",
            binary: &self.binary,
            args: &args,
            log: self.log.path(),
            port: self.port,
            timeout: START_TIMEOUT,
        }
        .start(answers_ping);
        self.child = Some(child);
    }

    fn log_tail(&self) -> String {
        super::log_tail(self.log.path())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the port answers a PING the way Redis does: `+PONG`, or `-NOAUTH` when a password
/// is required. A bare TCP accept is not enough, since Redis may still be loading.
fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok()
        && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
}
