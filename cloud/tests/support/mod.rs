//! Real local servers for the integration tests, one per backend: each starts on a free
//! loopback port and stops when dropped.

// Every test binary compiles all of this module but uses only its own server's part.
#![allow(dead_code)]

pub mod moto;
pub mod redis;
