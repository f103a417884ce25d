//! The AWS SDK configuration every client in this crate is built from.
//!
//! Everything comes the standard AWS way, so a worker runs unchanged on a laptop, in ECS or on
//! EC2: the default credential chain (environment, profile, web identity, container and
//! instance roles), the default region chain, and the SDK's own endpoint overrides:
//! `AWS_ENDPOINT_URL` for every service and `AWS_ENDPOINT_URL_<SERVICE>` (`..._S3`, `..._SQS`,
//! `..._SECRETS_MANAGER`) for one, the service-specific one winning. aws-config 1.13 and the
//! service crates honour both (each client's `From<&SdkConfig>` looks the service variable up
//! first), so nothing here re-implements them; `cloud/tests/sqs.rs` checks it.
//!
//! On top of that this module fixes the resilience settings (retries, timeouts, stalled
//! streams) in one place, so S3, SQS and Secrets Manager behave alike when AWS has a bad day.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};

/// The region used when none is configured but an endpoint override points at a local server
/// (moto, LocalStack): those accept any region, and requiring one there is only friction.
const LOCAL_DEFAULT_REGION: &str = "us-east-1";

/// How long a TCP (and TLS) connect may take. AWS endpoints answer in milliseconds; a connect
/// that takes longer is a network problem, and failing fast lets the retry try another host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one attempt of one call may take, from sending the request to having parsed the
/// response headers. SQS long polls wait at most 20 s, so 30 s bounds a receive with margin.
/// A streamed response body (S3 GetObject) is read *after* the attempt ends, so this never
/// cuts a large download short; [`StalledStreamProtectionConfig`] guards the body instead.
/// Uploads send their body inside the attempt, so `S3ObjectStore::put` scales its own limit
/// with the size (see [`put_attempt_timeout`]).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts per call, the first included. The SDK's standard retry mode retries throttling
/// (SlowDown, ThrottlingException, 429), 5xx, timeouts and connection failures with
/// exponential backoff and full jitter, and stops early when its retry quota is spent (a long
/// outage fails fast instead of multiplying load). With the backoffs below, a call against an
/// endpoint that refuses connections gives up after at most 0.5 + 1 + 2 + 4 = 7.5 s.
pub const MAX_ATTEMPTS: u32 = 5;
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The loader with this crate's retry, timeout and stalled-stream settings and the default
/// credential and region chains. `region` overrides the chain when given. Tests add an
/// endpoint and static credentials to it before loading.
pub fn config_loader(region: Option<&str>) -> ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(INITIAL_BACKOFF)
                .with_max_backoff(MAX_BACKOFF),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        // A body that stops flowing (upload or download) for the grace period fails the call
        // instead of hanging a worker on a dead connection. On by default for this behaviour
        // version; stated here because the download path relies on it.
        .stalled_stream_protection(StalledStreamProtectionConfig::enabled().build());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader
}

/// The SDK configuration for callpipe's clients: [`config_loader`] loaded, with
/// [`LOCAL_DEFAULT_REGION`] filled in when no region is configured anywhere but an endpoint
/// override is set. Without an override a missing region stays missing, and the first call
/// fails with the SDK's own error, because guessing a region for real AWS would silently
/// talk to the wrong one.
pub async fn sdk_config(region: Option<&str>) -> SdkConfig {
    let config = config_loader(region).load().await;
    if config.region().is_none() && (config.endpoint_url().is_some() || endpoint_override_in_env())
    {
        return config
            .to_builder()
            .region(Region::from_static(LOCAL_DEFAULT_REGION))
            .build();
    }
    config
}

/// Whether `AWS_ENDPOINT_URL` or a service-specific `AWS_ENDPOINT_URL_<SERVICE>` is set. The
/// service-specific ones are not visible on [`SdkConfig`] (each client resolves its own), so
/// the environment is asked directly.
fn endpoint_override_in_env() -> bool {
    std::env::vars_os().any(|(name, value)| {
        let is_override = name
            .to_str()
            .is_some_and(|n| n == "AWS_ENDPOINT_URL" || n.starts_with("AWS_ENDPOINT_URL_"));
        is_override && !value.is_empty()
    })
}

/// An S3 client. `force_path_style` addresses buckets as `endpoint/bucket/key` instead of
/// `bucket.endpoint/key`: local servers (moto, MinIO) need it, AWS does not.
pub fn s3_client(config: &SdkConfig, force_path_style: bool) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// An SQS client.
pub fn sqs_client(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// An OpenSearch Serverless control-plane client (collections and their policies), for
/// `callpipe setup --provision`. Retries and timeouts come from `config` like every other
/// client's; `AWS_ENDPOINT_URL_OPENSEARCHSERVERLESS` overrides the endpoint for it alone.
pub fn opensearchserverless_client(config: &SdkConfig) -> aws_sdk_opensearchserverless::Client {
    aws_sdk_opensearchserverless::Client::new(config)
}

/// The attempt timeout for uploading `bytes` in one request: [`ATTEMPT_TIMEOUT`] plus one
/// second per MiB, i.e. it assumes at least 1 MiB/s to S3, which any worker that can do its
/// job has. A fixed 30 s would fail a large artifact on a slow link on every retry.
pub(crate) fn put_attempt_timeout(bytes: u64) -> Duration {
    ATTEMPT_TIMEOUT + Duration::from_secs(bytes.div_ceil(1 << 20))
}

/// What went wrong with one SDK call, in the terms the per-service error mappings match on.
/// S3, SQS and Secrets Manager share one `SdkError` type (the service crates re-export the
/// same smithy type), so one description serves all three.
#[derive(Debug)]
pub(crate) struct CallFailure {
    pub cause: Cause,
    /// One line for the error message: the service's code and message, or the transport
    /// failure with its source chain.
    pub detail: String,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The service answered with an error. `code` is the last part of the error code
    /// (`AWS.SimpleQueueService.NonExistentQueue` and `com.amazonaws.sqs#QueueDoesNotExist`
    /// become `NonExistentQueue` and `QueueDoesNotExist`), empty when the response had none
    /// (S3 HeadObject's bodyless 404).
    Service { code: String, status: u16 },
    /// No usable answer: connection refused or reset, a timeout, a response that could not be
    /// read. The SDK has already retried these; a later try may still succeed.
    Transport,
    /// The request could not be built or sent as configured: no region, no credentials, a bad
    /// endpoint URL. Retrying changes nothing.
    Config,
}

pub(crate) fn describe<E>(err: &aws_sdk_s3::error::SdkError<E>) -> CallFailure
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::SdkError;

    let chain = || error_chain(err);
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let service = ctx.err();
            let code = service
                .code()
                .map(|c| c.rsplit(['.', '#']).next().unwrap_or(c).to_owned())
                .unwrap_or_default();
            let message = service.message().unwrap_or("no message");
            let detail = if code.is_empty() {
                format!("HTTP {status}: {message}")
            } else {
                format!("{code}: {message} (HTTP {status})")
            };
            CallFailure {
                cause: Cause::Service { code, status },
                detail,
            }
        }
        SdkError::DispatchFailure(dispatch) if dispatch.is_user() => CallFailure {
            cause: Cause::Config,
            detail: chain(),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            CallFailure {
                cause: Cause::Transport,
                detail: chain(),
            }
        }
        // ConstructionFailure, and whatever later SDK versions add.
        _ => CallFailure {
            cause: Cause::Config,
            detail: chain(),
        },
    }
}

/// An error and its sources on one line (`dispatch failure: io error: ... Connection
/// refused`), each message once. The SDK's own `DisplayErrorContext` appends the whole `Debug`
/// form as well, which makes log lines unreadable.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let message = e.to_string();
        if !message.is_empty() && !out.contains(&message) {
            out.push_str(": ");
            out.push_str(&message);
        }
        source = e.source();
    }
    out
}

/// Whether an HTTP status or error code means "too busy or broken right now": throttling and
/// server-side failures, which the SDK retried already and which a later try may get past.
pub(crate) fn is_transient_service_error(code: &str, status: u16) -> bool {
    status >= 500
        || status == 429
        || matches!(
            code,
            "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "ThrottledException"
                | "RequestThrottled"
                | "RequestThrottledException"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
                | "RequestTimeout"
                | "RequestTimeoutException"
                | "InternalError"
                | "InternalFailure"
                | "InternalServiceError"
                | "ServiceUnavailable"
                | "KmsThrottled"
        )
}

/// Whether an error code means the caller's identity is wrong or lacks permission: an
/// environment problem (the role, the keys, the policy), not one of the request.
pub(crate) fn is_access_error(code: &str, status: u16) -> bool {
    status == 403
        || matches!(
            code,
            "AccessDenied"
                | "AccessDeniedException"
                | "AllAccessDisabled"
                | "InvalidAccessKeyId"
                | "InvalidClientTokenId"
                | "UnrecognizedClientException"
                | "SignatureDoesNotMatch"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "InvalidSecurity"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "InvalidToken"
                | "MissingAuthenticationToken"
                | "KmsAccessDenied"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_timeout_grows_with_the_size() {
        assert_eq!(put_attempt_timeout(0), ATTEMPT_TIMEOUT);
        assert_eq!(
            put_attempt_timeout(1),
            ATTEMPT_TIMEOUT + Duration::from_secs(1)
        );
        assert_eq!(
            put_attempt_timeout(500 << 20),
            ATTEMPT_TIMEOUT + Duration::from_secs(500)
        );
    }
}
