//! SigV4 for OpenSearch Serverless's data plane, over a buffered request.
//!
//! Serverless checks the payload: every request must carry `x-amz-content-sha256` with the
//! SHA-256 of the exact body sent, and that header is signed. The body is therefore always
//! buffered before signing (no streaming, no `UNSIGNED-PAYLOAD`), and the `host` header is set
//! here from the URI, so the request that goes out is byte for byte the one that was signed.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign as sigv4_sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;

/// The signing name of OpenSearch Serverless.
pub const SERVICE: &str = "aoss";

/// Why a request could not be signed: a URI without a host, or header values that cannot be
/// signed. A bug or bad configuration, never a transient condition.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign {method} {uri}: {reason}")]
pub struct SignError {
    method: String,
    uri: String,
    reason: String,
}

/// Signs `request` in place with SigV4 for `service` in `region` at `time`: adds `host`,
/// `x-amz-date`, `x-amz-content-sha256` (of the buffered body), `x-amz-security-token` when
/// the credentials carry a session token, and `authorization`. Every header already on the
/// request is signed too, except the few the SDKs leave out because proxies rewrite them
/// (`user-agent`, `transfer-encoding`, `x-amzn-trace-id`).
///
/// Pure: no clock or environment is read, so a test can sign with fixed time and credentials
/// and compare with an independent implementation.
pub fn sign(
    request: &mut http::Request<Vec<u8>>,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), SignError> {
    let fail = |request: &http::Request<Vec<u8>>, reason: String| SignError {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        reason,
    };
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| fail(request, "the URI has no host".into()))?;
    // Default ports are not part of the Host header hyper sends, so they are not signed either.
    let host = match (request.uri().scheme_str(), request.uri().port_u16()) {
        (Some("https"), Some(443)) | (Some("http"), Some(80)) => {
            request.uri().host().map(str::to_owned).unwrap_or(authority)
        }
        _ => authority,
    };
    let host = http::HeaderValue::from_str(&host).map_err(|e| fail(request, e.to_string()))?;
    request.headers_mut().insert(http::header::HOST, host);

    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| fail(request, e.to_string()))?
        .into();

    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            value
                .to_str()
                .map(|v| (name.as_str(), v))
                .map_err(|_| format!("header `{name}` is not visible ASCII"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| fail(request, reason))?;
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri,
        headers.into_iter(),
        SignableBody::Bytes(request.body()),
    )
    .map_err(|e| fail(request, e.to_string()))?;
    let (instructions, _signature) = sigv4_sign(signable, &params)
        .map_err(|e| fail(request, e.to_string()))?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn request(body: &[u8]) -> http::Request<Vec<u8>> {
        http::Request::builder()
            .method("POST")
            .uri("https://abc123.us-east-1.aoss.amazonaws.com/segments/_bulk")
            .header("content-type", "application/x-ndjson")
            .body(body.to_vec())
            .unwrap()
    }

    #[test]
    fn the_payload_hash_is_the_bodys_and_is_signed() {
        let creds = Credentials::new("AKID", "secret", Some("token".into()), None, "test");
        let time = UNIX_EPOCH + Duration::from_secs(1_767_323_045);
        let mut req = request(b"{}\n");
        sign(&mut req, &creds, "us-east-1", SERVICE, time).unwrap();
        let h = |name: &str| req.headers()[name].to_str().unwrap().to_owned();
        // sha256("{}\n")
        assert_eq!(
            h("x-amz-content-sha256"),
            "ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356"
        );
        assert_eq!(h("host"), "abc123.us-east-1.aoss.amazonaws.com");
        assert_eq!(h("x-amz-date"), "20260102T030405Z");
        assert_eq!(h("x-amz-security-token"), "token");
        let auth = h("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20260102/us-east-1/aoss/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="),
            "{auth}"
        );

        // Another body, another hash and signature.
        let mut other = request(b"[]\n");
        sign(&mut other, &creds, "us-east-1", SERVICE, time).unwrap();
        assert_ne!(
            other.headers()["x-amz-content-sha256"],
            req.headers()["x-amz-content-sha256"]
        );
        assert_ne!(
            other.headers()["authorization"],
            req.headers()["authorization"]
        );
    }

    #[test]
    fn a_uri_without_a_host_is_refused() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        let mut req = http::Request::builder()
            .uri("/segments/_bulk")
            .body(Vec::new())
            .unwrap();
        let err = sign(&mut req, &creds, "us-east-1", SERVICE, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("no host"), "{err}");
    }
}
