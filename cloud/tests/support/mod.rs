//! Real local servers for the integration tests, one per backend: each starts on a free
//! loopback port and stops when dropped.

// Every test binary compiles all of this module but uses only its own server's part.
#![allow(dead_code)]

pub mod mongo;
pub mod moto;
pub mod redis;
pub mod s3s;

use std::net::TcpListener;
use std::path::Path;

/// A port nothing listens on right now: bind port 0, read what the OS chose, let it go. Another
/// process could take it before the server does; then the server fails to bind and the test
/// says so.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// The last 4000 bytes of a log file, for a failure message.
pub fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = log.len().saturating_sub(4000);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_owned()
}

/// One test server's process: `binary args`, its stdout and stderr appended to `log` (so a
/// restart's log follows the first run's), started and waited on until `ready(port)`. Panics,
/// naming the server, the variable that points at its binary and the log's tail, when it
/// cannot start, exits at start or is not ready within `timeout`: a test never runs without
/// the server it tests against.
pub struct Launch<'a> {
    /// The server's name in messages (`redis-server`, `moto`, `SecantusDB`).
    pub name: &'a str,
    /// The environment variable that names the binary, for the message.
    pub env_var: &'a str,
    pub binary: &'a Path,
    pub args: &'a [&'a str],
    pub log: &'a Path,
    pub port: u16,
    pub timeout: std::time::Duration,
}

impl Launch<'_> {
    pub fn start(&self, ready: impl Fn(u16) -> bool) -> std::process::Child {
        use std::process::{Command, Stdio};
        use std::time::Instant;
        let stdout = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log)
            .unwrap_or_else(|e| panic!("{}'s log {}: {e}", self.name, self.log.display()));
        let stderr = stdout.try_clone().expect("the server's log file");
        let mut child = Command::new(self.binary)
            .args(self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({}): {e}. Run `source scripts/env.sh && \
                     ensure_test_servers`, or set {} to its path",
                    self.name,
                    self.binary.display(),
                    self.env_var
                )
            });
        let deadline = Instant::now() + self.timeout;
        while !ready(self.port) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} ({}) exited at start on port {} with {status}:\n{}",
                    self.name,
                    self.binary.display(),
                    self.port,
                    log_tail(self.log)
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} on port {} was not ready within {:?}:\n{}",
                    self.name,
                    self.port,
                    self.timeout,
                    log_tail(self.log)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child
    }
}
