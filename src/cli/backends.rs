//! Building the backends `[storage]`, `[queue]` and `[redis]` name: the embedded ones under the
//! data directory, or the cloud ones (S3, SQS, Redis) with the AWS SDK's configuration.

use std::sync::Arc;

use anyhow::Context as _;

use callpipe_cloud::redis::{RedisCoordination, RedisSettings};
use callpipe_cloud::s3::{S3ObjectStore, S3Recordings};
use callpipe_cloud::sqs::SqsQueue;
use callpipe_common::config::ObjectStoreKind;
use callpipe_common::coord::{Coordination, InProcessCoordination};
use callpipe_common::messages::Stage;
use callpipe_common::queue::Queue;
use callpipe_common::store::{LocalDirStore, ObjectStore, RecordingSource};
use callpipe_ingest::FrontEndOptions;
use callpipe_pipeline::Stages;
use callpipe_transcribe::Transcriber;

use super::data::Writer;
use super::Context;

impl Context {
    /// The AWS SDK configuration: the default credential chain and region, and the standard
    /// `AWS_ENDPOINT_URL*` overrides, built once.
    pub async fn aws(&self) -> &aws_config::SdkConfig {
        self.aws
            .get_or_init(|| callpipe_cloud::aws::sdk_config(None))
            .await
    }

    /// callpipe's own objects (plans, transcripts): `<data dir>/objects`, or the artifacts
    /// bucket.
    pub async fn artifacts(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let storage = &self.config.storage;
        match storage.object_store {
            ObjectStoreKind::Local => {
                let store = LocalDirStore::open(self.data_dir().join("objects"))?;
                let sweep = store.clone();
                let removed = tokio::task::spawn_blocking(move || sweep.remove_leftovers())
                    .await
                    .context("clearing leftovers")??;
                if removed > 0 {
                    tracing::info!(removed, "removed temporary files of interrupted writes");
                }
                Ok(Arc::new(store))
            }
            ObjectStoreKind::S3 => {
                let client =
                    callpipe_cloud::aws::s3_client(self.aws().await, storage.s3_force_path_style);
                Ok(Arc::new(S3ObjectStore::new(
                    client,
                    storage.artifacts_bucket.clone(),
                    storage.artifacts_prefix.clone(),
                )))
            }
        }
    }

    /// Customers' recordings in S3.
    pub async fn recordings(&self) -> anyhow::Result<Arc<dyn RecordingSource>> {
        let client = callpipe_cloud::aws::s3_client(
            self.aws().await,
            self.config.storage.s3_force_path_style,
        );
        Ok(Arc::new(S3Recordings::new(client)))
    }

    /// The SQS queue a stage reads, or `None` when `[queue]` names none (in-process).
    pub async fn stage_queue(&self, stage: Stage) -> Option<Arc<dyn Queue>> {
        let q = &self.config.queue;
        let url = match stage {
            Stage::Ingest => &q.ingest_url,
            Stage::Transcribe => &q.transcribe_url,
            Stage::Index => &q.index_url,
        };
        self.sqs_queue(url).await
    }

    /// The backfill lane's SQS queue (`[queue] backfill_url`), if configured.
    pub async fn backfill_queue(&self) -> Option<Arc<dyn Queue>> {
        self.sqs_queue(&self.config.queue.backfill_url).await
    }

    async fn sqs_queue(&self, url: &str) -> Option<Arc<dyn Queue>> {
        if url.is_empty() {
            return None;
        }
        let client = callpipe_cloud::aws::sqs_client(self.aws().await);
        Some(Arc::new(SqsQueue::new(client, url.to_owned())))
    }

    /// Redis when `[redis]` names one, else in-process (one process only).
    pub async fn coordination(&self) -> anyhow::Result<Arc<dyn Coordination>> {
        let r = &self.config.redis;
        if r.url.is_empty() && r.endpoint.is_empty() {
            return Ok(Arc::new(InProcessCoordination::new()));
        }
        // The AUTH token is read with the task's role at start-up and never logged.
        let password = if r.auth_secret_arn.is_empty() {
            None
        } else {
            let secret = callpipe_cloud::secrets::read_secret(self.aws().await, &r.auth_secret_arn)
                .await
                .context("reading the Redis AUTH token ([redis] auth_secret_arn)")?;
            Some(
                callpipe_cloud::secrets::secret_field(&secret, "password")
                    .or_else(|| callpipe_cloud::secrets::secret_field(&secret, "token"))
                    .unwrap_or(secret),
            )
        };
        let settings = RedisSettings {
            url: (!r.url.is_empty()).then(|| r.url.clone()),
            endpoint: r.endpoint.clone(),
            port: r.port,
            tls: r.tls,
            password,
            key_prefix: r.key_prefix.clone(),
        };
        let coord = RedisCoordination::connect(settings)
            .await
            .context("connecting to Redis ([redis])")?;
        Ok(Arc::new(coord))
    }

    /// The front end's settings: decode, resample, VAD, and the per-call limits.
    pub fn front_end(&self) -> FrontEndOptions {
        let mut front_end = FrontEndOptions::from_config(&self.config.ingest);
        front_end.keep_audio = true;
        front_end
    }

    /// The stages, with whatever this process runs of them.
    pub fn stages(
        &self,
        front_end: Arc<FrontEndOptions>,
        transcriber: Option<Arc<Transcriber>>,
        artifacts: Arc<dyn ObjectStore>,
        recordings: Option<Arc<dyn RecordingSource>>,
        writer: Option<&Writer>,
    ) -> Stages {
        Stages {
            pool: self.pool.clone(),
            artifacts,
            recordings,
            front_end,
            max_file_bytes: self.config.ingest.max_file_bytes,
            transcriber,
            indexer: writer.map(|w| w.indexer.clone()),
            metadata: writer.map(|w| w.metadata.clone()),
        }
    }
}
