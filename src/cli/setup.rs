//! `callpipe setup`: creates what the cloud stores need before the first worker starts, and
//! optionally the OpenSearch Serverless collection itself. Every step is idempotent, so it is
//! safe to run on each deploy.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use callpipe_cloud::provision::{self, CollectionSpec, Network};
use callpipe_common::config::{MetadataKind, VectorIndexKind};

use super::Context;

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Also create the OpenSearch Serverless collection (type VECTORSEARCH) with its
    /// encryption, network and data access policies, and wait until it is active. For
    /// deployments without the Terraform in terraform/, which creates the same resources.
    #[arg(long)]
    provision: bool,
    /// The collection's name (as the Terraform's `collection_name`).
    #[arg(long, default_value = "callpipe", requires = "provision")]
    collection: String,
    /// An IAM role or user ARN given data access to the collection's index (repeat it for
    /// several). None: no data access policy is created.
    #[arg(long = "principal", value_name = "ARN", requires = "provision")]
    principals: Vec<String>,
    /// Reach the collection only through this OpenSearch Serverless VPC endpoint (repeat it
    /// for several); without one the endpoint is public (still signed and policy-checked).
    #[arg(long = "vpc-endpoint", value_name = "ID", requires = "provision")]
    vpc_endpoints: Vec<String>,
    /// A customer-managed KMS key for the collection (default: an AWS-owned key).
    #[arg(long, value_name = "ARN", requires = "provision")]
    kms_key: Option<String>,
    /// Standby replicas in a second availability zone (production; doubles the minimum OCUs).
    #[arg(long, requires = "provision")]
    standby_replicas: bool,
    /// How long to wait for a new collection to become active, in seconds.
    #[arg(long, default_value_t = 900, value_name = "S", requires = "provision")]
    wait_s: u64,
}

pub async fn run(ctx: &Context, args: SetupArgs) -> anyhow::Result<ExitCode> {
    let storage = &ctx.config.storage;
    let mut endpoint = ctx.config.opensearch.endpoint.clone();
    if args.provision {
        let spec = CollectionSpec {
            name: args.collection.clone(),
            principals: args.principals.clone(),
            network: if args.vpc_endpoints.is_empty() {
                Network::Public
            } else {
                Network::Vpc {
                    vpc_endpoint_ids: args.vpc_endpoints.clone(),
                }
            },
            kms_key_arn: args.kms_key.clone(),
            standby_replicas: args.standby_replicas,
        };
        let client = callpipe_cloud::aws::opensearchserverless_client(ctx.aws().await);
        let done = provision::provision(&client, &spec, Duration::from_secs(args.wait_s))
            .await
            .with_context(|| format!("provisioning the collection `{}`", spec.name))?;
        for step in &done.steps {
            println!("{}: {:?}", step.resource.describe(&step.name), step.outcome);
        }
        println!(
            "collection {} is active: {}",
            args.collection, done.endpoint
        );
        if endpoint.is_empty() {
            println!(
                "set [opensearch] endpoint = \"{}\" (or CALLPIPE_OPENSEARCH__ENDPOINT)",
                done.endpoint
            );
            endpoint = done.endpoint.clone();
        } else if endpoint.trim_end_matches('/') != done.endpoint.trim_end_matches('/') {
            eprintln!(
                "warning: [opensearch] endpoint is {endpoint}, not the provisioned collection's \
                 {}; the index is created at the configured one",
                done.endpoint
            );
        }
    }

    let mut did = Vec::new();
    if storage.metadata == MetadataKind::Mongodb {
        let store = ctx.mongo().await?;
        store
            .ensure_indexes()
            .await
            .context("creating the MongoDB indexes")?;
        did.push(format!(
            "MongoDB indexes in database `{}`",
            ctx.config.mongodb.database
        ));
    }
    if storage.vector_index == VectorIndexKind::Opensearch || args.provision {
        if endpoint.is_empty() {
            anyhow::bail!("[opensearch] endpoint is not set (or pass --provision)");
        }
        let embedder = ctx.load_embedder()?;
        let index = ctx.opensearch_at(&endpoint, embedder.as_ref()).await?;
        index
            .ensure_index()
            .await
            .context("creating the OpenSearch index")?;
        did.push(format!(
            "OpenSearch index `{}` ({} dimensions, {})",
            ctx.config.opensearch.index,
            embedder.dim(),
            embedder.model()
        ));
    }
    if did.is_empty() {
        println!(
            "the embedded stores need no setup: `callpipe run` creates them under {}",
            ctx.data_dir().display()
        );
    }
    for line in did {
        println!("ready: {line}");
    }
    Ok(ExitCode::SUCCESS)
}
