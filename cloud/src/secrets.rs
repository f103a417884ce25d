//! Secrets named by ARN in AWS Secrets Manager: the Redis AUTH token, the MongoDB URI.
//!
//! Config holds the ARN, never the value; a worker reads the value once at start-up with
//! [`read_secret`]. A secret is either a plain string or, as the console and RDS rotation
//! store them, a JSON object of fields; [`secret_field`] takes one field out of either.
//! Errors name the ARN and never the value.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use callpipe_common::ErrorKind;

use crate::aws::{self, Cause};

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No secret by that ARN (or it is scheduled for deletion).
    #[error("secret {arn}: not found")]
    NotFound { arn: String },
    /// The worker's identity may not read it (IAM or the key policy of its KMS key), or the
    /// credentials are wrong.
    #[error("secret {arn}: access denied: {reason}")]
    AccessDenied { arn: String, reason: String },
    /// Throttled, a server error, or Secrets Manager could not be reached: retry later.
    #[error("secret {arn}: {reason} (retryable)")]
    Unavailable { arn: String, reason: String },
    /// Anything else: a binary-only secret, a KMS decryption failure, a request the service
    /// refuses, an SDK that could not be configured.
    #[error("secret {arn}: {reason}")]
    Failed { arn: String, reason: String },
}

impl SecretError {
    /// A secret that is missing or forbidden is the deployment's problem, not the input's, so
    /// it is [`ErrorKind::Environment`] like every other configuration failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SecretError::Unavailable { .. } => ErrorKind::Transient,
            SecretError::NotFound { .. }
            | SecretError::AccessDenied { .. }
            | SecretError::Failed { .. } => ErrorKind::Environment,
        }
    }
}

/// The current value (`AWSCURRENT`) of the secret `arn` (an ARN or a secret name), as a
/// string.
pub async fn read_secret(config: &SdkConfig, arn: &str) -> Result<String, SecretError> {
    let client = aws_sdk_secretsmanager::Client::new(config);
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| map_error(arn, &e))?;
    output.secret_string.ok_or_else(|| SecretError::Failed {
        arn: arn.to_owned(),
        reason: "the secret has no string value (only SecretBinary); store it as a string".into(),
    })
}

/// Field `field` of a secret stored as a JSON object (`{"password": "..."}`), or the whole
/// secret when it is not a JSON object (a plain token). `None` when it is an object without
/// that field. A field that is not a string (a port number) comes back as its JSON text.
pub fn secret_field(secret: &str, field: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(secret) {
        Ok(serde_json::Value::Object(fields)) => match fields.get(field)? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        },
        _ => Some(secret.to_owned()),
    }
}

fn map_error<E>(arn: &str, err: &SdkError<E>) -> SecretError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let arn = arn.to_owned();
    // The SDK's errors carry the service's message and the request, never the secret value
    // (a failed call returns none), so the detail is safe to log.
    let failure = aws::describe(err);
    match failure.cause {
        Cause::Service { code, status } => match code.as_str() {
            "ResourceNotFoundException" => SecretError::NotFound { arn },
            code if aws::is_access_error(code, status) => SecretError::AccessDenied {
                arn,
                reason: failure.detail,
            },
            code if aws::is_transient_service_error(code, status) => SecretError::Unavailable {
                arn,
                reason: failure.detail,
            },
            _ => SecretError::Failed {
                arn,
                reason: failure.detail,
            },
        },
        Cause::Transport => SecretError::Unavailable {
            arn,
            reason: failure.detail,
        },
        Cause::Config => SecretError::Failed {
            arn,
            reason: format!(
                "the request could not be made (region, credentials or endpoint): {}",
                failure.detail
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_comes_out_of_a_json_secret() {
        let secret = r#"{"username": "callpipe", "password": "p@ss\"word", "port": 6379}"#;
        assert_eq!(
            secret_field(secret, "password").as_deref(),
            Some("p@ss\"word")
        );
        assert_eq!(secret_field(secret, "port").as_deref(), Some("6379"));
        assert_eq!(secret_field(secret, "uri"), None);
    }

    #[test]
    fn a_plain_secret_is_its_own_field() {
        assert_eq!(
            secret_field("s3cr3t-token", "password").as_deref(),
            Some("s3cr3t-token")
        );
        assert_eq!(
            secret_field("mongodb://u:p@host/db", "uri").as_deref(),
            Some("mongodb://u:p@host/db")
        );
        // Valid JSON but not an object: still a plain secret.
        assert_eq!(secret_field("12345", "password").as_deref(), Some("12345"));
    }

    #[test]
    fn missing_and_forbidden_secrets_are_the_environments_problem() {
        let arn = "arn:aws:secretsmanager:us-east-1:123:secret:x".to_owned();
        assert_eq!(
            SecretError::NotFound { arn: arn.clone() }.kind(),
            ErrorKind::Environment
        );
        assert_eq!(
            SecretError::Unavailable {
                arn,
                reason: "throttled".into()
            }
            .kind(),
            ErrorKind::Transient
        );
    }
}
