//! One TLS crypto provider for the process.
//!
//! rustls picks its process-wide provider by itself only when exactly one is compiled in. The
//! AWS SDK and fred bring aws-lc-rs and the mongodb driver brings ring, so every client here
//! that builds a TLS configuration from the default (fred's `default_rustls`, reqwest) would
//! panic. Each one calls [`install_default_provider`] first; aws-lc-rs is the AWS SDK's own.

/// Installs aws-lc-rs as the process default, unless a provider is installed already.
pub fn install_default_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; either way a provider is installed.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}
