//! callpipe's cloud backends, behind the traits of `callpipe-common`:
//!
//! | trait | implementation | module |
//! |---|---|---|
//! | `ObjectStore` (callpipe's artifacts) | S3 | [`s3`] |
//! | `RecordingSource` (customers' buckets) | S3 | [`s3`] |
//! | `Queue` (stage messages) | SQS | [`sqs`] |
//! | `Coordination` (leases, markers, counters) | Redis / ElastiCache | [`redis`] |
//! | `MetadataStore` (calls, segments, vector batches) | MongoDB Atlas | [`mongo`] |
//! | `VectorIndex` and `KeywordIndex` (segment vectors, BM25 over their text) | OpenSearch Serverless | [`opensearch`] |
//!
//! [`aws`] builds the SDK configuration the AWS way (default credential chain, region, the
//! standard `AWS_ENDPOINT_URL*` overrides) and [`secrets`] reads secrets named by ARN.
//! [`provision`] creates the OpenSearch Serverless vector collection and its policies for
//! `callpipe setup --provision`, where Terraform does not. Only the pipeline and the binary link
//! this crate, so no stage crate compiles an SDK.

pub mod aws;
pub mod mongo;
pub mod opensearch;
pub mod provision;
pub mod redis;
pub mod s3;
pub mod secrets;
pub mod sqs;
pub mod tls;
