//! The SDK configuration and Secrets Manager against real moto servers: the standard
//! `AWS_ENDPOINT_URL*` overrides as a deployment sets them, and secrets read back by ARN.
//!
//! Environment variables are process-wide, so the override test sets them only in a child
//! process: the test binary re-runs itself, filtered to that one test, with the variables set.

mod support;

use std::process::Command;

use aws_sdk_s3::config::Region;
use callpipe_cloud::aws;
use callpipe_cloud::secrets::{read_secret, secret_field, SecretError};
use callpipe_common::ErrorKind;

use support::moto::Moto;

/// Set in the child, holding the name of the check it runs.
const CHILD: &str = "CALLPIPE_TEST_ENDPOINT_CHILD";

#[tokio::test]
async fn a_secret_is_read_back_by_its_arn() {
    let moto = Moto::start();
    let config = moto.sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let value = r#"{"username":"callpipe","password":"hunter2 \"quoted\""}"#;
    let arn = client
        .create_secret()
        .name("callpipe/redis-auth")
        .secret_string(value)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("an ARN");
    assert!(
        arn.starts_with("arn:aws:secretsmanager:us-east-1:"),
        "{arn}"
    );

    let secret = read_secret(&config, &arn).await.expect("read by ARN");
    assert_eq!(secret, value);
    assert_eq!(
        secret_field(&secret, "password").as_deref(),
        Some("hunter2 \"quoted\"")
    );
    let by_name = read_secret(&config, "callpipe/redis-auth").await.unwrap();
    assert_eq!(by_name, value, "a name works as well as an ARN");

    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string("plain-token")
        .send()
        .await
        .expect("rotate");
    let rotated = read_secret(&config, &arn).await.unwrap();
    assert_eq!(
        secret_field(&rotated, "password").as_deref(),
        Some("plain-token")
    );

    let missing_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent-AbCdEf";
    let err = read_secret(&config, missing_arn).await.unwrap_err();
    assert!(matches!(err, SecretError::NotFound { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Environment);
    assert!(
        err.to_string().contains(missing_arn),
        "names the ARN: {err}"
    );
}

#[tokio::test]
async fn a_secret_error_never_shows_the_value() {
    let moto = Moto::start();
    let config = moto.sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let arn = client
        .create_secret()
        .name("binary-only")
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(
            b"s3cr3t-bytes".to_vec(),
        ))
        .send()
        .await
        .expect("create secret")
        .arn
        .unwrap();
    let err = read_secret(&config, &arn).await.unwrap_err();
    assert!(matches!(err, SecretError::Failed { .. }), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    assert!(err.to_string().contains(&arn));
}

/// `AWS_ENDPOINT_URL` sends every service to one server, `AWS_ENDPOINT_URL_S3` and
/// `AWS_ENDPOINT_URL_SQS` send theirs to another, and with an override set and no region
/// anywhere, us-east-1 is filled in. The child does the calls; the parent checks, with
/// explicitly configured clients, which server each call reached.
#[tokio::test]
async fn endpoint_overrides_come_from_the_environment() {
    if std::env::var_os(CHILD).is_some() {
        return child_calls_through_the_environment().await;
    }
    let global = Moto::start();
    let specific = Moto::start();

    let mut child = Command::new(std::env::current_exe().expect("the test binary"));
    child.args([
        "endpoint_overrides_come_from_the_environment",
        "--exact",
        "--nocapture",
    ]);
    // Nothing from this machine's AWS setup may leak in: no profile, no region, no IMDS.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            child.env_remove(name);
        }
    }
    child
        .env(CHILD, "1")
        .env("AWS_ENDPOINT_URL", global.endpoint())
        .env("AWS_ENDPOINT_URL_S3", specific.endpoint())
        .env("AWS_ENDPOINT_URL_SQS", specific.endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let output = child.output().expect("run the child test");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the child failed:\n{log}");
    assert!(
        log.contains("1 passed"),
        "the child ran the test, not nothing:\n{log}"
    );

    let on = |moto: &Moto| {
        let endpoint = moto.endpoint();
        async move {
            let config = aws::config_loader(Some("us-east-1"))
                .endpoint_url(endpoint)
                .credentials_provider(aws_sdk_s3::config::Credentials::new(
                    "test", "test", None, None, "moto",
                ))
                .load()
                .await;
            let s3 = aws::s3_client(&config, true);
            let buckets: Vec<String> = s3
                .list_buckets()
                .send()
                .await
                .unwrap()
                .buckets()
                .iter()
                .filter_map(|b| b.name().map(str::to_owned))
                .collect();
            let queues = aws::sqs_client(&config)
                .list_queues()
                .send()
                .await
                .unwrap()
                .queue_urls()
                .len();
            let secrets = aws_sdk_secretsmanager::Client::new(&config)
                .list_secrets()
                .send()
                .await
                .unwrap()
                .secret_list()
                .len();
            (buckets, queues, secrets)
        }
    };
    assert_eq!(
        on(&specific).await,
        (vec!["from-env".to_owned()], 1, 0),
        "S3 and SQS went to their service-specific endpoint"
    );
    assert_eq!(
        on(&global).await,
        (vec![], 0, 1),
        "Secrets Manager, with no variable of its own, went to AWS_ENDPOINT_URL"
    );
}

async fn child_calls_through_the_environment() {
    let config = aws::sdk_config(None).await;
    assert_eq!(
        config.region(),
        Some(&Region::from_static("us-east-1")),
        "no region configured, but an endpoint override: the local default"
    );
    aws::s3_client(&config, true)
        .create_bucket()
        .bucket("from-env")
        .send()
        .await
        .expect("create a bucket");
    aws::sqs_client(&config)
        .create_queue()
        .queue_name("from-env")
        .send()
        .await
        .expect("create a queue");
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name("from-env")
        .secret_string("x")
        .send()
        .await
        .expect("create a secret");
    assert_eq!(read_secret(&config, "from-env").await.unwrap(), "x");
}
