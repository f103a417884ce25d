//! `callpipe_cloud::provision` against a real moto server: a first run creates the policies and
//! the collection, a second creates nothing, a bad name never reaches AWS, a policy someone
//! else wrote is kept, and the data access policy (which moto does not implement) fails the run
//! before any collection exists.
//!
//! moto's quirks that shape these specs: `create_collection` reads the `KmsARN` of the
//! last-created policy naming the collection (HTTP 500 without one), so every spec here names a
//! KMS key; and every access-policy call answers HTTP 500 with an HTML page.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_opensearchserverless::config::retry::RetryConfig;
use aws_sdk_opensearchserverless::config::Credentials;
use aws_sdk_opensearchserverless::types::{CollectionType, SecurityPolicyType, StandbyReplicas};
use aws_sdk_opensearchserverless::Client;
use callpipe_cloud::provision::{
    encryption_policy, network_policy, provision, CollectionSpec, Network, Outcome, ProvisionError,
    Resource,
};
use callpipe_common::ErrorKind;
use serde_json::{json, Value};

use support::moto::Moto;

const KMS_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const WAIT: Duration = Duration::from_secs(30);

fn spec(name: &str, network: Network) -> CollectionSpec {
    CollectionSpec {
        name: name.into(),
        principals: vec![],
        network,
        kms_key_arn: Some(KMS_KEY.into()),
        standby_replicas: false,
    }
}

fn vpc() -> Network {
    Network::Vpc {
        vpc_endpoint_ids: vec!["vpce-0123456789abcdef0".into()],
    }
}

async fn client(moto: &Moto) -> Client {
    callpipe_cloud::aws::opensearchserverless_client(&moto.sdk_config().await)
}

fn outcomes(steps: &[callpipe_cloud::provision::Step]) -> Vec<(Resource, &str, Outcome)> {
    steps
        .iter()
        .map(|s| (s.resource, s.name.as_str(), s.outcome))
        .collect()
}

/// The policy document moto holds, as JSON.
async fn stored_policy(client: &Client, name: &str, kind: SecurityPolicyType) -> Value {
    let out = client
        .get_security_policy()
        .name(name)
        .r#type(kind)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get policy {name}: {e:?}"));
    let doc = out
        .security_policy_detail
        .and_then(|d| d.policy)
        .expect("a policy document");
    to_json(&doc)
}

fn to_json(doc: &aws_smithy_types::Document) -> Value {
    use aws_smithy_types::{Document, Number};
    match doc {
        Document::Object(fields) => fields
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Document::Array(items) => items.iter().map(to_json).collect(),
        Document::Number(Number::PosInt(n)) => (*n).into(),
        Document::Number(Number::NegInt(n)) => (*n).into(),
        Document::Number(Number::Float(f)) => (*f).into(),
        Document::String(s) => s.as_str().into(),
        Document::Bool(b) => (*b).into(),
        Document::Null => Value::Null,
    }
}

async fn collections_named(client: &Client, name: &str) -> usize {
    client
        .list_collections()
        .send()
        .await
        .expect("list collections")
        .collection_summaries()
        .iter()
        .filter(|c| c.name() == Some(name))
        .count()
}

#[tokio::test]
async fn provisioning_creates_the_policies_and_an_active_vector_collection() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let spec = spec("callpipe-test", Network::Public);

    let got = provision(&client, &spec, WAIT).await.expect("provision");

    assert_eq!(
        outcomes(&got.steps),
        [
            (
                Resource::NetworkPolicy,
                "callpipe-test-net",
                Outcome::Created
            ),
            (
                Resource::EncryptionPolicy,
                "callpipe-test-enc",
                Outcome::Created
            ),
            (
                Resource::DataAccessPolicy,
                "callpipe-test-data",
                Outcome::Skipped
            ),
            (Resource::Collection, "callpipe-test", Outcome::Created),
        ]
    );
    assert_eq!(
        got.created(),
        [
            "network policy callpipe-test-net",
            "encryption policy callpipe-test-enc",
            "collection callpipe-test",
        ]
    );
    assert!(!got.collection_id.is_empty());
    assert_eq!(
        got.endpoint,
        format!("https://{}.us-east-1.aoss.amazonaws.com", got.collection_id)
    );
    assert!(
        got.arn
            .ends_with(&format!("collection/{}", got.collection_id)),
        "{}",
        got.arn
    );

    // What AWS holds is what the module documents.
    assert_eq!(
        stored_policy(&client, "callpipe-test-enc", SecurityPolicyType::Encryption).await,
        encryption_policy(&spec)
    );
    assert_eq!(
        stored_policy(&client, "callpipe-test-net", SecurityPolicyType::Network).await,
        network_policy(&spec)
    );
    let detail = client
        .batch_get_collection()
        .ids(&got.collection_id)
        .send()
        .await
        .expect("batch get")
        .collection_details
        .unwrap_or_default()
        .pop()
        .expect("the collection");
    assert_eq!(detail.name(), Some("callpipe-test"));
    assert_eq!(detail.r#type(), Some(&CollectionType::Vectorsearch));
    assert_eq!(detail.standby_replicas(), Some(&StandbyReplicas::Disabled));
    assert_eq!(detail.kms_key_arn(), Some(KMS_KEY));
}

#[tokio::test]
async fn running_it_twice_creates_nothing_new() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let spec = spec("callpipe-twice", vpc());

    let first = provision(&client, &spec, WAIT).await.expect("first run");
    let second = provision(&client, &spec, WAIT).await.expect("second run");

    assert_eq!(second.collection_id, first.collection_id);
    assert_eq!(second.arn, first.arn);
    assert_eq!(second.endpoint, first.endpoint);
    assert!(second.created().is_empty(), "{:?}", second.created());
    assert_eq!(
        outcomes(&second.steps),
        [
            (
                Resource::NetworkPolicy,
                "callpipe-twice-net",
                Outcome::Existing
            ),
            (
                Resource::EncryptionPolicy,
                "callpipe-twice-enc",
                Outcome::Existing
            ),
            (
                Resource::DataAccessPolicy,
                "callpipe-twice-data",
                Outcome::Skipped
            ),
            (Resource::Collection, "callpipe-twice", Outcome::Existing),
        ]
    );
    assert_eq!(collections_named(&client, "callpipe-twice").await, 1);
}

#[tokio::test]
async fn an_invalid_name_is_refused_before_any_call() {
    // Nothing listens on this port: a call would fail with a connection error after the SDK's
    // retries (seconds), not with InvalidName at once.
    let config = callpipe_cloud::aws::config_loader(Some("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{}", support::free_port()))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .load()
        .await;
    let client = callpipe_cloud::aws::opensearchserverless_client(&config);
    let too_long = "a".repeat(28);
    for name in [
        "Callpipe",
        "cp",
        "1callpipe",
        "call_pipe",
        "",
        too_long.as_str(),
    ] {
        let started = Instant::now();
        let err = provision(&client, &spec(name, Network::Public), WAIT)
            .await
            .expect_err(name);
        assert!(
            matches!(err, ProvisionError::InvalidName { .. }),
            "{name:?}: {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
        assert!(started.elapsed() < Duration::from_millis(200), "{name:?}");
    }

    let no_endpoints = spec(
        "callpipe-ok",
        Network::Vpc {
            vpc_endpoint_ids: vec![],
        },
    );
    let err = provision(&client, &no_endpoints, WAIT).await.unwrap_err();
    assert!(matches!(err, ProvisionError::InvalidSpec { .. }), "{err}");
}

#[tokio::test]
async fn a_policy_that_exists_with_other_content_is_kept() {
    let moto = Moto::start();
    let client = client(&moto).await;
    let spec = spec("callpipe-kept", vpc());
    // An operator opened the collection to the internet by hand.
    let by_hand = json!([{
        "Rules": [{"ResourceType": "collection", "Resource": ["collection/callpipe-kept"]}],
        "AllowFromPublic": true,
    }]);
    client
        .create_security_policy()
        .name("callpipe-kept-net")
        .r#type(SecurityPolicyType::Network)
        .policy(by_hand.to_string())
        .send()
        .await
        .expect("create the hand-made policy");

    let got = provision(&client, &spec, WAIT).await.expect("provision");

    assert_eq!(
        outcomes(&got.steps),
        [
            (
                Resource::NetworkPolicy,
                "callpipe-kept-net",
                Outcome::Differs
            ),
            (
                Resource::EncryptionPolicy,
                "callpipe-kept-enc",
                Outcome::Created
            ),
            (
                Resource::DataAccessPolicy,
                "callpipe-kept-data",
                Outcome::Skipped
            ),
            (Resource::Collection, "callpipe-kept", Outcome::Created),
        ]
    );
    assert_eq!(
        stored_policy(&client, "callpipe-kept-net", SecurityPolicyType::Network).await,
        by_hand
    );
    assert_eq!(
        got.steps[0].to_string(),
        "network policy callpipe-kept-net: exists with other content, left as it is"
    );
}

#[tokio::test]
async fn principals_make_the_data_access_policy_a_step_that_stops_the_run_when_it_fails() {
    let moto = Moto::start();
    // moto answers the access-policy calls with HTTP 500, which the production client retries
    // for seconds as it should against AWS; one attempt shows the same outcome.
    let config = aws_sdk_opensearchserverless::config::Builder::from(&moto.sdk_config().await)
        .retry_config(RetryConfig::disabled())
        .build();
    let client = Client::from_conf(config);
    let mut spec = spec("callpipe-data", vpc());
    spec.principals = vec!["arn:aws:iam::123456789012:role/callpipe-index".into()];

    let err = provision(&client, &spec, WAIT).await.unwrap_err();

    let message = err.to_string();
    assert!(
        matches!(
            &err,
            ProvisionError::Unavailable { resource, operation: "GetAccessPolicy", .. }
                if resource == "data access policy callpipe-data-data"
        ),
        "{message}"
    );
    assert!(message.contains("HTTP 500"), "{message}");
    assert_eq!(err.kind(), ErrorKind::Transient);
    // The policies before it exist; the collection was never created.
    stored_policy(&client, "callpipe-data-net", SecurityPolicyType::Network).await;
    stored_policy(&client, "callpipe-data-enc", SecurityPolicyType::Encryption).await;
    assert_eq!(collections_named(&client, "callpipe-data").await, 0);

    // The same deployment with access managed elsewhere (Terraform) goes through.
    spec.principals.clear();
    let got = provision(&client, &spec, WAIT)
        .await
        .expect("without principals");
    assert_eq!(got.created(), ["collection callpipe-data"]);
}
