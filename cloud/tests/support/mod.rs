//! Real local servers for the integration tests, one per backend: each starts on a free
//! loopback port and stops when dropped.

// Every test binary compiles all of this module but uses only its own server's part.
#![allow(dead_code)]

pub mod mongo;
pub mod moto;
pub mod redis;

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
