//! Provisioning the OpenSearch Serverless vector collection: `callpipe setup --provision`.
//!
//! Terraform (`terraform/modules/search`) is the normal way to create the collection; this
//! module does the same from the binary for deployments without Terraform (a sandbox account,
//! a first try). [`provision`] makes sure four resources exist, under the same names the
//! Terraform module gives them, so either tool finds what the other made:
//!
//! | resource | name | content |
//! |---|---|---|
//! | network security policy | `<collection>-net` | [`network_policy`] |
//! | encryption security policy | `<collection>-enc` | [`encryption_policy`] |
//! | data access policy | `<collection>-data` | [`data_access_policy`] (only with principals) |
//! | collection, type `VECTORSEARCH` | `<collection>` | |
//!
//! and then waits until the collection is `ACTIVE` and returns its data-plane endpoint.
//!
//! **Idempotent, and never overwriting.** Each resource is read first and created only when it
//! is missing; a `ConflictException` on create (another run got there first) is read again. A
//! policy that exists with other content is left as it is and reported with a `warn!`:
//! whoever wrote it (an operator, Terraform) owns it, and a setup run must never widen or
//! narrow access someone configured on purpose. The run's [`Step`]s say what was created,
//! found, found different or skipped.
//!
//! **Data access.** A collection nobody is granted data access to is useless, so with
//! principals the data access policy is created before the collection, and a failure there
//! stops the run before a billable collection exists; running again continues where it
//! stopped. With no principals the step is [`Outcome::Skipped`]: access is managed elsewhere,
//! exactly as the Terraform module skips its access policy when it is given no principals.
//! moto (the local test server) implements no access-policy API and answers those calls with
//! HTTP 500, so against moto provisioning works without principals and fails, naming the
//! policy and the call, with them.

use std::future::Future;
use std::time::Duration;

use aws_sdk_opensearchserverless::error::SdkError;
use aws_sdk_opensearchserverless::types::{
    AccessPolicyType, CollectionDetail, CollectionStatus, CollectionType, SecurityPolicyType,
    StandbyReplicas,
};
use aws_sdk_opensearchserverless::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::{Document, Number};
use callpipe_common::ErrorKind;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::aws::{self, Cause};

/// The longest collection name: AWS allows 32 characters for policy names too, and the
/// longest suffix ([`Resource::DataAccessPolicy`]'s `-data`) takes 5 of them. (The Terraform
/// module's `collection_name` validation allows 28, whose `-data` policy AWS would refuse.)
pub const MAX_COLLECTION_NAME: usize = 27;

/// The shortest name AWS accepts, for collections and policies alike.
pub const MIN_COLLECTION_NAME: usize = 3;

/// The first pause between two status polls; it doubles up to [`POLL_MAX`]. A new collection
/// takes a few minutes to become active, so polling faster only spends API quota.
const POLL_INITIAL: Duration = Duration::from_secs(1);
const POLL_MAX: Duration = Duration::from_secs(10);

/// What to provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSpec {
    /// The collection's name (the Terraform module's `collection_name`): 3–27 of `a-z`, `0-9`
    /// and `-`, starting with a letter.
    pub name: String,
    /// IAM role or user ARNs (or `saml/...` principals) granted data access: index and
    /// document permissions on `index/<name>/*` and read access to the collection's items.
    /// Empty: no data access policy is managed here (see the module docs).
    pub principals: Vec<String>,
    /// Where the collection's endpoint can be reached from.
    pub network: Network,
    /// The KMS key encrypting the collection; `None` uses an AWS-owned key (free, but its use
    /// is not visible in CloudTrail and it cannot be revoked).
    pub kms_key_arn: Option<String>,
    /// Redundant capacity in a second availability zone: production wants it, it doubles the
    /// minimum OCUs.
    pub standby_replicas: bool,
}

/// The network policy's access rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// The collection endpoint is reachable from the internet (still SigV4 and data access
    /// policies, but no network boundary).
    Public,
    /// Only through these OpenSearch Serverless VPC endpoints (`vpce-...`).
    Vpc { vpc_endpoint_ids: Vec<String> },
}

/// The provisioned collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub collection_id: String,
    pub arn: String,
    /// The data-plane endpoint, `https://<id>.<region>.aoss.amazonaws.com`: `[opensearch]
    /// endpoint` in callpipe.toml.
    pub endpoint: String,
    /// Every resource this run looked at, in the order it did, and what it found or did.
    pub steps: Vec<Step>,
}

impl Provisioned {
    /// The resources this run created (`encryption policy callpipe-dev-enc`), for the log.
    pub fn created(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| s.outcome == Outcome::Created)
            .map(|s| s.resource.describe(&s.name))
            .collect()
    }
}

/// One resource's step of a [`provision`] run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub resource: Resource,
    /// The resource's name in AWS.
    pub name: String,
    pub outcome: Outcome,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = match self.outcome {
            Outcome::Created => "created",
            Outcome::Existing => "exists",
            Outcome::Differs => "exists with other content, left as it is",
            Outcome::Skipped => "skipped (no principals: access is managed elsewhere)",
        };
        write!(f, "{}: {outcome}", self.resource.describe(&self.name))
    }
}

/// The resources [`provision`] manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    NetworkPolicy,
    EncryptionPolicy,
    DataAccessPolicy,
    Collection,
}

impl Resource {
    /// The resource's name for collection `collection`: the Terraform module's names.
    pub fn name_for(self, collection: &str) -> String {
        match self {
            Resource::NetworkPolicy => format!("{collection}-net"),
            Resource::EncryptionPolicy => format!("{collection}-enc"),
            Resource::DataAccessPolicy => format!("{collection}-data"),
            Resource::Collection => collection.to_owned(),
        }
    }

    /// `network policy callpipe-dev-net`: how errors and logs name it.
    pub fn describe(self, name: &str) -> String {
        let kind = match self {
            Resource::NetworkPolicy => "network policy",
            Resource::EncryptionPolicy => "encryption policy",
            Resource::DataAccessPolicy => "data access policy",
            Resource::Collection => "collection",
        };
        format!("{kind} {name}")
    }
}

/// What a step found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Missing, and created by this run.
    Created,
    /// Already there with the content this run would have given it.
    Existing,
    /// Already there with other content; left untouched (and logged with `warn!`).
    Differs,
    /// Not managed by this run: the data access policy when the spec names no principals.
    Skipped,
}

/// Why provisioning stopped. Every message names the resource, and AWS's error code where AWS
/// gave one.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The collection name breaks AWS's (and the Terraform module's) naming rules. Nothing was
    /// sent to AWS.
    #[error("collection name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// Another part of the spec cannot work: a VPC network without endpoints, an empty
    /// principal or key ARN. Nothing was sent to AWS.
    #[error("collection {name}: {reason}")]
    InvalidSpec { name: String, reason: String },
    /// The caller's identity may not make this call (IAM), or its credentials are wrong.
    #[error("{resource}: {operation}: access denied: {detail}")]
    AccessDenied {
        resource: String,
        operation: &'static str,
        code: String,
        detail: String,
    },
    /// An account quota (policies, collections, OCUs) is used up.
    #[error("{resource}: {operation}: quota exceeded: {detail}")]
    QuotaExceeded {
        resource: String,
        operation: &'static str,
        code: String,
        detail: String,
    },
    /// Throttled, a server error, a timeout or no connection, after the SDK's retries.
    #[error("{resource}: {operation} failed: {detail} (retryable)")]
    Unavailable {
        resource: String,
        operation: &'static str,
        /// Empty when there was no answer, or one without an error code.
        code: String,
        detail: String,
    },
    /// AWS refused the request (`ValidationException` and other client errors): retrying the
    /// same request fails the same way.
    #[error("{resource}: {operation} refused: {detail}")]
    Rejected {
        resource: String,
        operation: &'static str,
        code: String,
        detail: String,
    },
    /// The request could not be made at all: no region, no credentials, a bad endpoint URL.
    #[error("{resource}: {operation}: the request could not be made (region, credentials or endpoint): {detail}")]
    Client {
        resource: String,
        operation: &'static str,
        detail: String,
    },
    /// An answer without what every answer to this call carries (an id, an ARN): the endpoint
    /// is probably not OpenSearch Serverless.
    #[error("{resource}: {operation}: unexpected answer: {detail}")]
    Unexpected {
        resource: String,
        operation: &'static str,
        detail: String,
    },
    /// A collection by this name exists but is not a vector collection, so it cannot hold
    /// callpipe's index; it is not touched.
    #[error("collection {name} ({id}) exists with type {found}, not VECTORSEARCH; choose another name or delete it")]
    WrongType {
        name: String,
        id: String,
        found: String,
    },
    /// The collection's creation failed on AWS's side (`FAILED`, `UPDATE_FAILED`).
    #[error("collection {name} ({id}) is {status}: {reason}")]
    CollectionFailed {
        name: String,
        id: String,
        status: String,
        reason: String,
    },
    /// The collection is being deleted, or was deleted while this run waited for it.
    #[error("collection {name} ({id}) is {status}; run again once it is gone to create it anew")]
    CollectionGone {
        name: String,
        id: String,
        status: String,
    },
    /// The collection was not active within the wait. It keeps coming up; running again
    /// waits for it without creating anything.
    #[error("collection {name} ({id}) is still {status} after {waited:?}")]
    TimedOut {
        name: String,
        id: String,
        status: String,
        waited: Duration,
    },
}

impl ProvisionError {
    /// How `callpipe setup` (and anything retrying it) should treat the failure: a bad spec or
    /// a refused request is [`ErrorKind::Permanent`], AWS being busy or slow is
    /// [`ErrorKind::Transient`], and missing permissions, quotas or a broken collection are
    /// the deployment's to fix ([`ErrorKind::Environment`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProvisionError::InvalidName { .. }
            | ProvisionError::InvalidSpec { .. }
            | ProvisionError::Rejected { .. } => ErrorKind::Permanent,
            ProvisionError::Unavailable { .. }
            | ProvisionError::CollectionGone { .. }
            | ProvisionError::TimedOut { .. } => ErrorKind::Transient,
            ProvisionError::AccessDenied { .. }
            | ProvisionError::QuotaExceeded { .. }
            | ProvisionError::Client { .. }
            | ProvisionError::Unexpected { .. }
            | ProvisionError::WrongType { .. }
            | ProvisionError::CollectionFailed { .. } => ErrorKind::Environment,
        }
    }

    /// AWS's error code (`ValidationException`), when the failure is AWS's answer to a call.
    pub fn code(&self) -> Option<&str> {
        match self {
            ProvisionError::AccessDenied { code, .. }
            | ProvisionError::QuotaExceeded { code, .. }
            | ProvisionError::Unavailable { code, .. }
            | ProvisionError::Rejected { code, .. } => Some(code).filter(|c| !c.is_empty()),
            _ => None,
        }
        .map(String::as_str)
    }
}

impl CollectionSpec {
    /// Checks the spec without calling AWS: the collection name (and so every policy name),
    /// the network rule, the principals and the key.
    pub fn validate(&self) -> Result<(), ProvisionError> {
        validate_name(&self.name)?;
        let invalid = |reason: &str| ProvisionError::InvalidSpec {
            name: self.name.clone(),
            reason: reason.to_owned(),
        };
        if let Network::Vpc { vpc_endpoint_ids } = &self.network {
            if vpc_endpoint_ids.is_empty() {
                return Err(invalid(
                    "a VPC network needs at least one VPC endpoint id (vpce-...)",
                ));
            }
            if vpc_endpoint_ids.iter().any(|id| id.trim().is_empty()) {
                return Err(invalid("a VPC endpoint id is empty"));
            }
        }
        if let Some(principal) = self
            .principals
            .iter()
            .find(|p| !(p.starts_with("arn:") || p.starts_with("saml/")))
        {
            return Err(invalid(&format!(
                "principal {principal:?} is neither an IAM ARN (arn:...) nor a SAML principal \
                 (saml/...)"
            )));
        }
        if let Some(key) = &self.kms_key_arn {
            if !key.starts_with("arn:") {
                return Err(invalid(&format!(
                    "kms_key_arn {key:?} is not an ARN (arn:aws:kms:...)"
                )));
            }
        }
        Ok(())
    }
}

/// AWS's rule for collection and policy names, `[a-z][a-z0-9-]{2,31}`, with the length capped
/// at [`MAX_COLLECTION_NAME`] so the derived policy names fit it too.
fn validate_name(name: &str) -> Result<(), ProvisionError> {
    let invalid = |reason: String| ProvisionError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let len = name.chars().count();
    if !(MIN_COLLECTION_NAME..=MAX_COLLECTION_NAME).contains(&len) {
        return Err(invalid(format!(
            "must be {MIN_COLLECTION_NAME}-{MAX_COLLECTION_NAME} characters (it is {len}), so \
             that its policy names ({}) stay within AWS's 32",
            Resource::DataAccessPolicy.name_for("<name>")
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("must start with a lowercase letter a-z".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return Err(invalid(format!("may hold only a-z, 0-9 and -, not {c:?}")));
    }
    Ok(())
}

/// The encryption policy: the collection (and only it) encrypted with the spec's KMS key, or
/// an AWS-owned key.
pub fn encryption_policy(spec: &CollectionSpec) -> Value {
    let rules = json!([{
        "ResourceType": "collection",
        "Resource": [format!("collection/{}", spec.name)],
    }]);
    match &spec.kms_key_arn {
        Some(key) => json!({ "Rules": rules, "AWSOwnedKey": false, "KmsARN": key }),
        None => json!({ "Rules": rules, "AWSOwnedKey": true }),
    }
}

/// The network policy: the collection endpoint from the internet or from the VPC endpoints
/// only. Dashboards get no rule at all (so no access): callpipe has no use for them, and the
/// Terraform module grants none either.
pub fn network_policy(spec: &CollectionSpec) -> Value {
    let rules = json!([{
        "ResourceType": "collection",
        "Resource": [format!("collection/{}", spec.name)],
    }]);
    match &spec.network {
        Network::Public => json!([{
            "Description": "Collection API from anywhere",
            "Rules": rules,
            "AllowFromPublic": true,
        }]),
        Network::Vpc { vpc_endpoint_ids } => json!([{
            "Description": "Collection API through the VPC endpoint only",
            "Rules": rules,
            "AllowFromPublic": false,
            "SourceVPCEs": vpc_endpoint_ids,
        }]),
    }
}

/// The index permissions: the Terraform module's index-stage rule. No `DeleteIndex`: callpipe
/// never drops an index, and a setup that could would be one typo away from losing every
/// vector.
const INDEX_PERMISSIONS: [&str; 5] = [
    "aoss:CreateIndex",
    "aoss:DescribeIndex",
    "aoss:UpdateIndex",
    "aoss:ReadDocument",
    "aoss:WriteDocument",
];

/// The collection permissions: read-only, since callpipe creates no index templates, aliases
/// or pipelines (the collection's "items").
const COLLECTION_PERMISSIONS: [&str; 1] = ["aoss:DescribeCollectionItems"];

/// The data access policy: the principals may create, describe and update the indexes of
/// this collection and read and write their documents, and describe the collection's items.
pub fn data_access_policy(spec: &CollectionSpec) -> Value {
    json!([{
        "Description": "callpipe: index and search segment vectors",
        "Rules": [
            {
                "ResourceType": "collection",
                "Resource": [format!("collection/{}", spec.name)],
                "Permission": COLLECTION_PERMISSIONS,
            },
            {
                "ResourceType": "index",
                "Resource": [format!("index/{}/*", spec.name)],
                "Permission": INDEX_PERMISSIONS,
            },
        ],
        "Principal": spec.principals,
    }])
}

/// Makes sure the collection of `spec` and its policies exist (see the module docs), then
/// waits up to `wait` for the collection to be `ACTIVE`.
///
/// The spec is validated before any call. Safe to run again after any failure, and
/// concurrently with another run: it never creates a second collection of the same name, and
/// never changes what exists.
pub async fn provision(
    client: &Client,
    spec: &CollectionSpec,
    wait: Duration,
) -> Result<Provisioned, ProvisionError> {
    spec.validate()?;
    let mut steps = Vec::with_capacity(4);
    // Each step is logged as it ends, so a run that fails later still says what it created.
    let mut record = |step: Step| {
        tracing::info!(collection = %spec.name, step = %step, "provisioning");
        steps.push(step);
    };
    // AWS does not care in which order the policies come, as long as both precede the
    // collection. The encryption policy goes last because moto takes the last-created policy
    // that names the collection as its encryption policy.
    record(
        ensure_security_policy(
            client,
            spec,
            Resource::NetworkPolicy,
            SecurityPolicyType::Network,
            network_policy(spec),
        )
        .await?,
    );
    record(
        ensure_security_policy(
            client,
            spec,
            Resource::EncryptionPolicy,
            SecurityPolicyType::Encryption,
            encryption_policy(spec),
        )
        .await?,
    );
    record(ensure_access_policy(client, spec).await?);
    let (id, outcome) = ensure_collection(client, spec).await?;
    record(Step {
        resource: Resource::Collection,
        name: spec.name.clone(),
        outcome,
    });

    let state = wait_until_active(&spec.name, &id, wait, Backoff::POLL, || {
        fetch_collection(client, &spec.name, &id)
    })
    .await?;
    let endpoint = match state.endpoint {
        Some(endpoint) => endpoint,
        None => derived_endpoint(client, &spec.name, &id)?,
    };
    tracing::info!(collection = %spec.name, id = %id, endpoint = %endpoint, "collection active");
    Ok(Provisioned {
        collection_id: id,
        arn: state.arn,
        endpoint,
        steps,
    })
}

/// A security policy (`kind` is its [`Resource`], `policy_type` its AWS type): read it, create
/// it when it is missing, compare it when it exists.
async fn ensure_security_policy(
    client: &Client,
    spec: &CollectionSpec,
    kind: Resource,
    policy_type: SecurityPolicyType,
    wanted: Value,
) -> Result<Step, ProvisionError> {
    let name = kind.name_for(&spec.name);
    let resource = kind.describe(&name);
    let step = |outcome| Step {
        resource: kind,
        name: name.clone(),
        outcome,
    };
    let get = || async {
        match client
            .get_security_policy()
            .name(&name)
            .r#type(policy_type.clone())
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.security_policy_detail
                    .and_then(|d| d.policy)
                    .map(|p| document_to_json(&p))
                    .unwrap_or(Value::Null),
            )),
            Err(e) if is_code(&e, "ResourceNotFoundException") => Ok(None),
            Err(e) => Err(call_error(&resource, "GetSecurityPolicy", &e)),
        }
    };
    let create = || {
        client
            .create_security_policy()
            .name(&name)
            .r#type(policy_type.clone())
            .description(format!("callpipe: {resource} of collection {}", spec.name))
            .policy(wanted.to_string())
            .send()
    };
    let outcome = read_or_create(&resource, "CreateSecurityPolicy", &wanted, get, create).await?;
    Ok(step(outcome))
}

/// The policy as it is, or created when missing: [`Outcome::Created`], or what [`compare`]
/// says of the existing one. A create that loses a race with another run
/// (`ConflictException`) reads the winner's policy instead.
async fn read_or_create<G, GF, C, CF, T, E>(
    resource: &str,
    operation: &'static str,
    wanted: &Value,
    get: G,
    create: C,
) -> Result<Outcome, ProvisionError>
where
    G: Fn() -> GF,
    GF: std::future::Future<Output = Result<Option<Value>, ProvisionError>>,
    C: FnOnce() -> CF,
    CF: std::future::Future<Output = Result<T, SdkError<E>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let Some(existing) = get().await? {
        return Ok(compare(resource, &existing, wanted));
    }
    match create().await {
        Ok(_) => Ok(Outcome::Created),
        Err(e) if is_code(&e, "ConflictException") => match get().await? {
            Some(existing) => Ok(compare(resource, &existing, wanted)),
            None => Err(call_error(resource, operation, &e)),
        },
        Err(e) => Err(call_error(resource, operation, &e)),
    }
}

/// The data access policy, the same way as [`ensure_security_policy`]; skipped without
/// principals.
async fn ensure_access_policy(
    client: &Client,
    spec: &CollectionSpec,
) -> Result<Step, ProvisionError> {
    let kind = Resource::DataAccessPolicy;
    let name = kind.name_for(&spec.name);
    let resource = kind.describe(&name);
    let step = |outcome| Step {
        resource: kind,
        name: name.clone(),
        outcome,
    };
    if spec.principals.is_empty() {
        return Ok(step(Outcome::Skipped));
    }
    let wanted = data_access_policy(spec);
    let get = || async {
        match client
            .get_access_policy()
            .name(&name)
            .r#type(AccessPolicyType::Data)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.access_policy_detail
                    .and_then(|d| d.policy)
                    .map(|p| document_to_json(&p))
                    .unwrap_or(Value::Null),
            )),
            Err(e) if is_code(&e, "ResourceNotFoundException") => Ok(None),
            Err(e) => Err(call_error(&resource, "GetAccessPolicy", &e)),
        }
    };
    let create = || {
        client
            .create_access_policy()
            .name(&name)
            .r#type(AccessPolicyType::Data)
            .description(format!("callpipe: data access to collection {}", spec.name))
            .policy(wanted.to_string())
            .send()
    };
    let outcome = read_or_create(&resource, "CreateAccessPolicy", &wanted, get, create).await?;
    Ok(step(outcome))
}

/// [`Outcome::Existing`] when `existing` grants what `wanted` does, else [`Outcome::Differs`]
/// with a warning that shows both.
fn compare(resource: &str, existing: &Value, wanted: &Value) -> Outcome {
    if same_policy(existing, wanted) {
        return Outcome::Existing;
    }
    tracing::warn!(
        resource,
        existing = %existing,
        wanted = %wanted,
        "the policy exists with other content; left as it is (update it where it is managed)"
    );
    Outcome::Differs
}

/// Whether two policy documents mean the same: descriptions ignored, and the order of every
/// list (rules, resources, permissions, principals, endpoints) too, since AWS gives it no
/// meaning.
fn same_policy(a: &Value, b: &Value) -> bool {
    fn normalize(value: &Value) -> Value {
        match value {
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .filter(|(k, _)| k.as_str() != "Description")
                    .map(|(k, v)| (k.clone(), normalize(v)))
                    .collect(),
            ),
            Value::Array(items) => {
                let mut items: Vec<Value> = items.iter().map(normalize).collect();
                items.sort_by_cached_key(|v| v.to_string());
                Value::Array(items)
            }
            other => other.clone(),
        }
    }
    normalize(a) == normalize(b)
}

/// The collection: found by name, or created. Returns its id.
async fn ensure_collection(
    client: &Client,
    spec: &CollectionSpec,
) -> Result<(String, Outcome), ProvisionError> {
    let resource = Resource::Collection.describe(&spec.name);
    if let Some(detail) = find_collection(client, spec).await? {
        return Ok((checked_id(spec, &detail)?, Outcome::Existing));
    }
    let standby = if spec.standby_replicas {
        StandbyReplicas::Enabled
    } else {
        StandbyReplicas::Disabled
    };
    let created = client
        .create_collection()
        .name(&spec.name)
        .r#type(CollectionType::Vectorsearch)
        .description("callpipe segment vectors")
        .standby_replicas(standby)
        .send()
        .await;
    match created {
        Ok(out) => {
            let id = out
                .create_collection_detail
                .and_then(|d| d.id)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| ProvisionError::Unexpected {
                    resource: resource.clone(),
                    operation: "CreateCollection",
                    detail: "the answer carries no collection id".into(),
                })?;
            Ok((id, Outcome::Created))
        }
        // Another run created it between the lookup and the create.
        Err(e) if is_code(&e, "ConflictException") => match find_collection(client, spec).await? {
            Some(detail) => Ok((checked_id(spec, &detail)?, Outcome::Existing)),
            None => Err(call_error(&resource, "CreateCollection", &e)),
        },
        Err(e) => Err(call_error(&resource, "CreateCollection", &e)),
    }
}

/// The collection named `spec.name`, if there is one. Matched on the name in the answer
/// rather than trusting the answer to hold only that one.
async fn find_collection(
    client: &Client,
    spec: &CollectionSpec,
) -> Result<Option<CollectionDetail>, ProvisionError> {
    let out = client
        .batch_get_collection()
        .names(&spec.name)
        .send()
        .await
        .map_err(|e| {
            call_error(
                &Resource::Collection.describe(&spec.name),
                "BatchGetCollection",
                &e,
            )
        })?;
    Ok(out
        .collection_details
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.name() == Some(spec.name.as_str())))
}

/// The id of an existing collection, after checking that it can hold vectors.
fn checked_id(spec: &CollectionSpec, detail: &CollectionDetail) -> Result<String, ProvisionError> {
    let id = detail
        .id()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ProvisionError::Unexpected {
            resource: Resource::Collection.describe(&spec.name),
            operation: "BatchGetCollection",
            detail: "the collection has no id".into(),
        })?
        .to_owned();
    match detail.r#type() {
        Some(CollectionType::Vectorsearch) | None => Ok(id),
        Some(other) => Err(ProvisionError::WrongType {
            name: spec.name.clone(),
            id,
            found: other.as_str().to_owned(),
        }),
    }
}

/// What a status poll learns about the collection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CollectionState {
    status: CollectionStatus,
    arn: String,
    endpoint: Option<String>,
    /// AWS's failure code and message, for a failed collection.
    failure: Option<String>,
}

/// The collection with id `id`, by `batch_get_collection`.
async fn fetch_collection(
    client: &Client,
    name: &str,
    id: &str,
) -> Result<CollectionState, ProvisionError> {
    let resource = Resource::Collection.describe(name);
    let out = client
        .batch_get_collection()
        .ids(id)
        .send()
        .await
        .map_err(|e| call_error(&resource, "BatchGetCollection", &e))?;
    let Some(detail) = out
        .collection_details
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.id() == Some(id))
    else {
        // Deleted since it was found or created.
        return Err(ProvisionError::CollectionGone {
            name: name.to_owned(),
            id: id.to_owned(),
            status: "not found".into(),
        });
    };
    let failure = match (detail.failure_code(), detail.failure_message()) {
        (None, None) => None,
        (code, message) => Some(format!(
            "{}: {}",
            code.unwrap_or("no code"),
            message.unwrap_or("no message")
        )),
    };
    Ok(CollectionState {
        status: detail
            .status
            .unwrap_or_else(|| CollectionStatus::from("UNKNOWN")),
        arn: detail.arn.unwrap_or_default(),
        endpoint: detail.collection_endpoint.filter(|e| !e.is_empty()),
        failure,
    })
}

/// How long to pause between polls: `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    const POLL: Backoff = Backoff {
        initial: POLL_INITIAL,
        max: POLL_MAX,
    };
}

/// Polls `fetch` until the collection is `ACTIVE`, pausing with `backoff` between polls and
/// never past `wait` (the last poll happens at the deadline). A failed, deleting or vanished
/// collection ends the wait at once.
async fn wait_until_active<F, Fut>(
    name: &str,
    id: &str,
    wait: Duration,
    backoff: Backoff,
    mut fetch: F,
) -> Result<CollectionState, ProvisionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<CollectionState, ProvisionError>>,
{
    let started = Instant::now();
    let deadline = started + wait;
    let mut pause = backoff.initial;
    loop {
        let state = fetch().await?;
        match &state.status {
            CollectionStatus::Active => return Ok(state),
            CollectionStatus::Failed | CollectionStatus::UpdateFailed => {
                return Err(ProvisionError::CollectionFailed {
                    name: name.to_owned(),
                    id: id.to_owned(),
                    status: state.status.as_str().to_owned(),
                    reason: state
                        .failure
                        .unwrap_or_else(|| "AWS gave no reason".to_owned()),
                })
            }
            CollectionStatus::Deleting => {
                return Err(ProvisionError::CollectionGone {
                    name: name.to_owned(),
                    id: id.to_owned(),
                    status: state.status.as_str().to_owned(),
                })
            }
            // CREATING, UPDATING, or a status this SDK does not know yet: keep waiting.
            _ => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ProvisionError::TimedOut {
                name: name.to_owned(),
                id: id.to_owned(),
                status: state.status.as_str().to_owned(),
                waited: now - started,
            });
        }
        tracing::debug!(collection = %name, status = state.status.as_str(), "waiting for the collection");
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(backoff.max);
    }
}

/// `https://<id>.<region>.aoss.amazonaws.com`, for an answer that did not carry the endpoint.
fn derived_endpoint(client: &Client, name: &str, id: &str) -> Result<String, ProvisionError> {
    let region = client
        .config()
        .region()
        .ok_or_else(|| ProvisionError::Unexpected {
            resource: Resource::Collection.describe(name),
            operation: "BatchGetCollection",
            detail: "no collection endpoint in the answer, and no region to derive it from".into(),
        })?;
    Ok(format!("https://{id}.{region}.aoss.amazonaws.com"))
}

/// Whether the call failed with service error `code`.
fn is_code<E>(err: &SdkError<E>, code: &str) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    matches!(aws::describe(err).cause, Cause::Service { code: c, .. } if c == code)
}

/// A failed call as a [`ProvisionError`] naming `resource` and `operation`.
fn call_error<E>(resource: &str, operation: &'static str, err: &SdkError<E>) -> ProvisionError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let failure = aws::describe(err);
    let resource = resource.to_owned();
    let detail = failure.detail;
    match failure.cause {
        Cause::Service { code, status } => {
            if aws::is_access_error(&code, status) {
                ProvisionError::AccessDenied {
                    resource,
                    operation,
                    code,
                    detail,
                }
            } else if is_quota_error(&code) {
                ProvisionError::QuotaExceeded {
                    resource,
                    operation,
                    code,
                    detail,
                }
            } else if aws::is_transient_service_error(&code, status) {
                ProvisionError::Unavailable {
                    resource,
                    operation,
                    code,
                    detail,
                }
            } else {
                ProvisionError::Rejected {
                    resource,
                    operation,
                    code,
                    detail,
                }
            }
        }
        Cause::Transport => ProvisionError::Unavailable {
            resource,
            operation,
            code: String::new(),
            detail,
        },
        Cause::Config => ProvisionError::Client {
            resource,
            operation,
            detail,
        },
    }
}

/// OpenSearch Serverless's quota errors: too many policies or collections in the account, or
/// the account's OCU limit reached by a new collection.
fn is_quota_error(code: &str) -> bool {
    matches!(
        code,
        "ServiceQuotaExceededException" | "OcuLimitExceededException"
    )
}

/// A policy as AWS returns it (a smithy document) in JSON, to compare with what this module
/// would write.
fn document_to_json(doc: &Document) -> Value {
    match doc {
        Document::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), document_to_json(v)))
                .collect(),
        ),
        Document::Array(items) => Value::Array(items.iter().map(document_to_json).collect()),
        Document::Number(Number::PosInt(n)) => Value::from(*n),
        Document::Number(Number::NegInt(n)) => Value::from(*n),
        Document::Number(Number::Float(f)) => Value::from(*f),
        Document::String(s) => Value::String(s.clone()),
        Document::Bool(b) => Value::Bool(*b),
        Document::Null => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn spec(name: &str) -> CollectionSpec {
        CollectionSpec {
            name: name.into(),
            principals: vec!["arn:aws:iam::123456789012:role/callpipe-index".into()],
            network: Network::Vpc {
                vpc_endpoint_ids: vec!["vpce-0123456789abcdef0".into()],
            },
            kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/abcd".into()),
            standby_replicas: true,
        }
    }

    #[test]
    fn names_follow_aws_rules_with_room_for_the_policy_suffixes() {
        for good in [
            "abc",
            "callpipe-dev",
            "c0-1",
            &"a".repeat(MAX_COLLECTION_NAME),
        ] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "Callpipe",
            "1callpipe",
            "-callpipe",
            "call_pipe",
            "call.pipe",
            "callpipé",
            &"a".repeat(MAX_COLLECTION_NAME + 1),
        ] {
            let err = validate_name(bad).expect_err(bad);
            assert!(matches!(err, ProvisionError::InvalidName { .. }), "{bad}");
            assert_eq!(err.kind(), ErrorKind::Permanent);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let longest = "a".repeat(MAX_COLLECTION_NAME);
        for kind in [
            Resource::NetworkPolicy,
            Resource::EncryptionPolicy,
            Resource::DataAccessPolicy,
        ] {
            assert!(kind.name_for(&longest).len() <= 32);
        }
    }

    #[test]
    fn a_spec_that_cannot_work_is_refused() {
        let mut s = spec("callpipe-dev");
        assert!(s.validate().is_ok());
        s.network = Network::Vpc {
            vpc_endpoint_ids: vec![],
        };
        assert!(matches!(
            s.validate(),
            Err(ProvisionError::InvalidSpec { .. })
        ));
        let mut s = spec("callpipe-dev");
        s.principals.push("callpipe-index".into());
        let err = s.validate().unwrap_err();
        assert!(err.to_string().contains("callpipe-index"), "{err}");
        let mut s = spec("callpipe-dev");
        s.kms_key_arn = Some("alias/callpipe".into());
        assert!(matches!(
            s.validate(),
            Err(ProvisionError::InvalidSpec { .. })
        ));
    }

    #[test]
    fn the_encryption_policy_names_the_key_or_the_aws_owned_one() {
        let mut s = spec("callpipe-dev");
        assert_eq!(
            encryption_policy(&s),
            json!({
                "Rules": [{"ResourceType": "collection", "Resource": ["collection/callpipe-dev"]}],
                "AWSOwnedKey": false,
                "KmsARN": "arn:aws:kms:us-east-1:123456789012:key/abcd",
            })
        );
        s.kms_key_arn = None;
        assert_eq!(
            encryption_policy(&s),
            json!({
                "Rules": [{"ResourceType": "collection", "Resource": ["collection/callpipe-dev"]}],
                "AWSOwnedKey": true,
            })
        );
    }

    #[test]
    fn the_network_policy_is_public_or_vpc_only() {
        let mut s = spec("callpipe-dev");
        assert_eq!(
            network_policy(&s),
            json!([{
                "Description": "Collection API through the VPC endpoint only",
                "Rules": [{"ResourceType": "collection", "Resource": ["collection/callpipe-dev"]}],
                "AllowFromPublic": false,
                "SourceVPCEs": ["vpce-0123456789abcdef0"],
            }])
        );
        s.network = Network::Public;
        let public = network_policy(&s);
        assert_eq!(public[0]["AllowFromPublic"], json!(true));
        assert!(public[0].get("SourceVPCEs").is_none());
    }

    #[test]
    fn the_data_access_policy_grants_index_and_document_permissions() {
        let policy = data_access_policy(&spec("callpipe-dev"));
        assert_eq!(
            policy[0]["Principal"],
            json!(["arn:aws:iam::123456789012:role/callpipe-index"])
        );
        let rules = policy[0]["Rules"].as_array().unwrap();
        assert_eq!(rules[0]["Resource"], json!(["collection/callpipe-dev"]));
        assert_eq!(rules[1]["Resource"], json!(["index/callpipe-dev/*"]));
        let index: Vec<&str> = rules[1]["Permission"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(index.contains(&"aoss:WriteDocument") && index.contains(&"aoss:CreateIndex"));
        assert!(!index.contains(&"aoss:DeleteIndex"));
    }

    #[test]
    fn policies_compare_without_descriptions_and_order() {
        let s = spec("callpipe-dev");
        let wanted = network_policy(&s);
        let mut reordered = json!([{
            "SourceVPCEs": ["vpce-0123456789abcdef0"],
            "AllowFromPublic": false,
            "Rules": [{"Resource": ["collection/callpipe-dev"], "ResourceType": "collection"}],
            "Description": "written by hand",
        }]);
        assert!(same_policy(&reordered, &wanted));
        reordered[0]["AllowFromPublic"] = json!(true);
        assert!(!same_policy(&reordered, &wanted));
        assert_eq!(
            compare("network policy x", &reordered, &wanted),
            Outcome::Differs
        );
    }

    #[test]
    fn a_document_becomes_the_same_json() {
        let doc = Document::Object(HashMap::from([
            ("AWSOwnedKey".to_owned(), Document::Bool(true)),
            (
                "Rules".to_owned(),
                Document::Array(vec![Document::String("x".into()), Document::Null]),
            ),
            ("n".to_owned(), Document::Number(Number::NegInt(-2))),
            ("f".to_owned(), Document::Number(Number::Float(0.5))),
            ("p".to_owned(), Document::Number(Number::PosInt(7))),
        ]));
        assert_eq!(
            document_to_json(&doc),
            json!({"AWSOwnedKey": true, "Rules": ["x", null], "n": -2, "f": 0.5, "p": 7})
        );
    }

    fn state(status: &str) -> CollectionState {
        CollectionState {
            status: CollectionStatus::from(status),
            arn: "arn:aws:aoss:us-east-1:123:collection/abc".into(),
            endpoint: Some("https://abc.us-east-1.aoss.amazonaws.com".into()),
            failure: None,
        }
    }

    const FAST: Backoff = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
    };

    /// A fetch that answers `script` in turn (repeating the last answer) and counts its calls.
    fn scripted(
        script: Vec<CollectionState>,
    ) -> (
        Arc<Mutex<usize>>,
        impl FnMut() -> std::future::Ready<Result<CollectionState, ProvisionError>>,
    ) {
        let calls = Arc::new(Mutex::new(0));
        let counter = calls.clone();
        let fetch = move || {
            let mut n = counter.lock().unwrap();
            let answer = script[(*n).min(script.len() - 1)].clone();
            *n += 1;
            std::future::ready(Ok(answer))
        };
        (calls, fetch)
    }

    #[tokio::test]
    async fn waiting_ends_when_the_collection_is_active() {
        let (calls, fetch) = scripted(vec![state("CREATING"), state("CREATING"), state("ACTIVE")]);
        let got = wait_until_active("c", "abc", Duration::from_secs(5), FAST, fetch)
            .await
            .unwrap();
        assert_eq!(got.status, CollectionStatus::Active);
        assert_eq!(*calls.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn a_failed_collection_ends_the_wait_with_aws_reason() {
        let mut failed = state("FAILED");
        failed.failure = Some("InternalError: capacity".into());
        let (calls, fetch) = scripted(vec![state("CREATING"), failed]);
        let err = wait_until_active("c", "abc", Duration::from_secs(5), FAST, fetch)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProvisionError::CollectionFailed { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("InternalError: capacity"), "{err}");
        assert_eq!(err.kind(), ErrorKind::Environment);
        assert_eq!(*calls.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_deleting_collection_ends_the_wait() {
        let (_, fetch) = scripted(vec![state("DELETING")]);
        let err = wait_until_active("c", "abc", Duration::from_secs(5), FAST, fetch)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProvisionError::CollectionGone { .. }),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Transient);
    }

    #[tokio::test]
    async fn the_wait_is_bounded() {
        let (calls, fetch) = scripted(vec![state("CREATING")]);
        let started = std::time::Instant::now();
        let err = wait_until_active("c", "abc", Duration::from_millis(100), FAST, fetch)
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, ProvisionError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("CREATING"), "{err}");
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // 5, 10, 20, 20, ... ms pauses, the last cut at the deadline, and a final poll there.
        assert!(*calls.lock().unwrap() >= 4, "{}", calls.lock().unwrap());

        // No wait at all: one poll, then the verdict.
        let (calls, fetch) = scripted(vec![state("CREATING")]);
        let err = wait_until_active("c", "abc", Duration::ZERO, FAST, fetch)
            .await
            .unwrap_err();
        assert!(matches!(err, ProvisionError::TimedOut { .. }));
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[test]
    fn error_kinds_follow_the_cause() {
        let aws = |code: &str| ProvisionError::Rejected {
            resource: "collection c".into(),
            operation: "CreateCollection",
            code: code.into(),
            detail: format!("{code}: no (HTTP 400)"),
        };
        assert_eq!(aws("ValidationException").kind(), ErrorKind::Permanent);
        assert_eq!(
            aws("ValidationException").code(),
            Some("ValidationException")
        );
        let unavailable = ProvisionError::Unavailable {
            resource: "data access policy c-data".into(),
            operation: "GetAccessPolicy",
            code: String::new(),
            detail: "HTTP 500: no message".into(),
        };
        assert_eq!(unavailable.kind(), ErrorKind::Transient);
        assert_eq!(unavailable.code(), None);
        assert_eq!(
            unavailable.to_string(),
            "data access policy c-data: GetAccessPolicy failed: HTTP 500: no message (retryable)"
        );
        assert_eq!(
            ProvisionError::AccessDenied {
                resource: "network policy c-net".into(),
                operation: "CreateSecurityPolicy",
                code: "AccessDeniedException".into(),
                detail: "AccessDeniedException: User is not authorized (HTTP 403)".into(),
            }
            .kind(),
            ErrorKind::Environment
        );
        assert!(is_quota_error("ServiceQuotaExceededException"));
        assert!(is_quota_error("OcuLimitExceededException"));
    }

    #[test]
    fn the_log_lists_what_was_created() {
        let provisioned = Provisioned {
            collection_id: "abc".into(),
            arn: "arn".into(),
            endpoint: "https://abc.us-east-1.aoss.amazonaws.com".into(),
            steps: vec![
                Step {
                    resource: Resource::NetworkPolicy,
                    name: "c-net".into(),
                    outcome: Outcome::Existing,
                },
                Step {
                    resource: Resource::EncryptionPolicy,
                    name: "c-enc".into(),
                    outcome: Outcome::Created,
                },
                Step {
                    resource: Resource::Collection,
                    name: "c".into(),
                    outcome: Outcome::Created,
                },
            ],
        };
        assert_eq!(
            provisioned.created(),
            ["encryption policy c-enc", "collection c"]
        );
        assert_eq!(
            provisioned.steps[0].to_string(),
            "network policy c-net: exists"
        );
    }
}
