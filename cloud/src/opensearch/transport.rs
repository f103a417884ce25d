//! Signed HTTP requests to the collection, with timeouts, retries and error mapping.
//!
//! - Each attempt is signed afresh (the signature covers the time), with credentials from the
//!   SDK's provider, cached until five minutes before they expire.
//! - 429 and connection failures are retried for every request; 5xx, timeouts and broken
//!   connections only for requests that may be repeated ([`Repeat::Always`]). An insert is
//!   not: Serverless assigns the ids, so repeating a bulk insert whose response was lost
//!   would index the documents twice. Such an insert fails as `Unavailable` at once, and the
//!   caller's retry writes a fresh batch (the lost one, if it landed, is found by its tag).
//! - Backoff is exponential with jitter, honouring `Retry-After`, and bounded in attempts;
//!   then the call is `StoreError::Unavailable`.
//! - 401/403 are `Denied`; any other 4xx is `Failed`, naming the request and the server's
//!   error `type` and `reason`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::{error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use callpipe_common::store::StoreError;
use reqwest::Method;

use super::query::ErrorResponse;
use super::sign::{sign, SERVICE};
use super::BACKEND;

/// A TCP and TLS connect to a regional endpoint takes milliseconds; longer is a network fault.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt, request sent to response read. A 5 MB bulk or a filtered kNN over a large
/// index answers in well under this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Serverless closes idle connections; dropping ours first avoids writing into one it closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Credentials this close to expiry are refreshed before signing.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// How hard to retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// About 0.2 + 0.4 + 0.8 + 1.6 s of waiting at most before giving up.
    pub(crate) const DEFAULT: Backoff = Backoff {
        attempts: 5,
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
    };

    /// The wait before retry number `retry` (1 for the first): exponential, with the upper
    /// half jittered so that workers throttled together do not come back together.
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max);
        let half = exp / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in [0, 1) that differs between calls and processes.
fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a request may be sent again after an attempt whose effect is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Reads, and deletes by id: repeating them changes nothing.
    Always,
    /// Inserts: repeated only when the previous attempt surely did nothing (429, no
    /// connection).
    WhenNotApplied,
}

/// A response the caller reads: 2xx, or a 4xx other than 401, 403 and 429.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What one request is, for error messages: `index `x`: POST /x/_bulk`.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub method: Method,
    pub path: String,
    pub index: String,
}

impl Op {
    pub(crate) fn what(&self) -> String {
        format!("index `{}`: {} {}", self.index, self.method, self.path)
    }

    /// The reply as an error: the server's error `type` and `reason`, or its body's start.
    pub(crate) fn failed(&self, reply: &Reply) -> StoreError {
        StoreError::Failed {
            backend: BACKEND,
            what: self.what(),
            reason: format!(
                "HTTP {}: {}",
                reply.status,
                ErrorResponse::describe(&reply.body)
            ),
        }
    }

    pub(crate) fn broken(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Failed {
            backend: BACKEND,
            what: self.what(),
            reason: reason.into(),
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            backend: BACKEND,
            what: self.what(),
            reason: reason.into(),
        }
    }

    fn denied(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Denied {
            backend: BACKEND,
            what: self.what(),
            reason: reason.into(),
        }
    }
}

/// The signed client of one collection endpoint.
#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    /// `https://host[:port]`, no trailing slash.
    endpoint: String,
    region: String,
    provider: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
    pub backoff: Backoff,
}

impl Transport {
    pub(crate) fn new(
        endpoint: String,
        region: String,
        provider: SharedCredentialsProvider,
    ) -> Result<Self, String> {
        crate::tls::install_default_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Transport {
            http,
            endpoint,
            region,
            provider,
            cached: tokio::sync::Mutex::new(None),
            backoff: Backoff::DEFAULT,
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn credentials(&self, op: &Op) -> Result<Credentials, StoreError> {
        let mut cached = self.cached.lock().await;
        if let Some(creds) = cached.as_ref() {
            let fresh = creds
                .expiry()
                .is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE_EXPIRY);
            if fresh {
                return Ok(creds.clone());
            }
        }
        let creds = self.provider.provide_credentials().await.map_err(|e| {
            let reason = format!("no AWS credentials: {}", crate::aws::error_chain(&e));
            match e {
                CredentialsError::ProviderTimedOut(_) => op.unavailable(reason),
                _ => op.denied(reason),
            }
        })?;
        *cached = Some(creds.clone());
        Ok(creds)
    }

    /// Sends `body` (buffered, so its hash can be signed), retrying as the module docs say.
    pub(crate) async fn send(
        &self,
        op: &Op,
        body: Vec<u8>,
        content_type: &str,
        repeat: Repeat,
    ) -> Result<Reply, StoreError> {
        let url = format!("{}{}", self.endpoint, op.path);
        let mut retry = 0;
        loop {
            let attempt = self.attempt(op, &url, &body, content_type).await?;
            let (why, applied_maybe, after) = match attempt {
                Attempt::Reply(reply) => match reply.status {
                    401 | 403 => {
                        // Expired or rotated credentials are reloaded by the next call.
                        *self.cached.lock().await = None;
                        return Err(op.denied(format!(
                            "HTTP {}: {}",
                            reply.status,
                            ErrorResponse::describe(&reply.body)
                        )));
                    }
                    429 => (
                        format!("HTTP 429: {}", ErrorResponse::describe(&reply.body)),
                        false,
                        reply.retry_after,
                    ),
                    s if s >= 500 => (
                        format!("HTTP {s}: {}", ErrorResponse::describe(&reply.body)),
                        true,
                        reply.retry_after,
                    ),
                    status => {
                        return Ok(Reply {
                            status,
                            body: reply.body,
                        })
                    }
                },
                Attempt::NotSent(why) => (why, false, None),
                Attempt::Lost(why) => (why, true, None),
            };
            retry += 1;
            if applied_maybe && repeat == Repeat::WhenNotApplied {
                return Err(op.unavailable(format!(
                    "{why}; not repeated, since the request may have been applied"
                )));
            }
            if retry >= self.backoff.attempts {
                return Err(op.unavailable(format!("{why} (after {retry} attempts)")));
            }
            let wait = self
                .backoff
                .delay(retry)
                .max(after.unwrap_or_default().min(self.backoff.max));
            tracing::debug!(request = %op.what(), %why, retry, wait_ms = wait.as_millis() as u64, "opensearch: retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        op: &Op,
        url: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<Attempt, StoreError> {
        let creds = self.credentials(op).await?;
        let mut request = http::Request::builder()
            .method(op.method.as_str())
            .uri(url)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body.to_vec())
            .map_err(|e| op.broken(format!("cannot build the request: {e}")))?;
        sign(
            &mut request,
            &creds,
            &self.region,
            SERVICE,
            SystemTime::now(),
        )
        .map_err(|e| op.broken(e.to_string()))?;
        let request = reqwest::Request::try_from(request)
            .map_err(|e| op.broken(format!("cannot build the request: {e}")))?;
        let response = match self.http.execute(request).await {
            Ok(response) => response,
            Err(e) if e.is_connect() => {
                return Ok(Attempt::NotSent(format!(
                    "cannot connect to {}: {}",
                    self.endpoint,
                    crate::aws::error_chain(&e)
                )))
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                return Ok(Attempt::Lost(format!(
                    "request {kind}: {}",
                    crate::aws::error_chain(&e)
                )));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match response.bytes().await {
            Ok(body) => Ok(Attempt::Reply(RawReply {
                status,
                body: body.to_vec(),
                retry_after,
            })),
            Err(e) => Ok(Attempt::Lost(format!(
                "HTTP {status}, reading the response failed: {}",
                crate::aws::error_chain(&e)
            ))),
        }
    }
}

enum Attempt {
    Reply(RawReply),
    /// Nothing reached the server.
    NotSent(String),
    /// The request may have been applied; the response was lost.
    Lost(String),
}

struct RawReply {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let b = Backoff {
            attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for (retry, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let d = b.delay(retry).as_millis() as u64;
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d} ms");
        }
        let spread: std::collections::HashSet<u128> =
            (0..20).map(|_| b.delay(5).as_micros()).collect();
        assert!(spread.len() > 1, "jitter varies");
    }
}
