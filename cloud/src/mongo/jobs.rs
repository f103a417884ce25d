//! Backfill jobs in MongoDB: `backfill_jobs` documents written by compare-and-set on their
//! `version`, and a pass's calls counted by status with one aggregation over the
//! `by_backfill_status` index.

use async_trait::async_trait;
use callpipe_common::store::{BackfillJob, JobCalls, JobFailure, JobStore, StoreError};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};

use super::docs::server_limit;
use super::error::{server_code, Failure, DUPLICATE_KEY};
use super::MongoMetadata;

/// The job as stored; the error is a message, so a closure that may run again can clone it.
fn job_document(job: &BackfillJob) -> Result<Document, String> {
    let mut doc = bson::to_document(job).map_err(|e| format!("job: {e}"))?;
    doc.insert("_id", job.id.as_str());
    Ok(doc)
}

fn job_from_document(mut doc: Document) -> Result<BackfillJob, Failure> {
    doc.remove("_id");
    bson::from_document(doc).map_err(|e| Failure::Malformed(format!("job document: {e}")))
}

fn number(doc: &Document, key: &str) -> f64 {
    match doc.get(key) {
        Some(Bson::Int32(n)) => f64::from(*n),
        Some(Bson::Int64(n)) => *n as f64,
        Some(Bson::Double(n)) => *n,
        _ => 0.0,
    }
}

#[async_trait]
impl JobStore for MongoMetadata {
    async fn get_job(&self, id: &str) -> Result<Option<BackfillJob>, StoreError> {
        self.run(&format!("read of backfill job {id}"), |h| async move {
            h.jobs
                .find_one(doc! { "_id": id })
                .await?
                .map(job_from_document)
                .transpose()
        })
        .await
    }

    async fn put_job(&self, job: &BackfillJob, expected: Option<u64>) -> Result<bool, StoreError> {
        let mut next = job.clone();
        next.version = expected.unwrap_or(0) + 1;
        let doc = job_document(&next);
        self.run(&format!("write of backfill job {}", job.id), |h| {
            let doc = doc.clone();
            async move {
                let doc = doc.map_err(Failure::Malformed)?;
                match expected {
                    None => match h.jobs.insert_one(doc).await {
                        Ok(_) => Ok(true),
                        Err(e) if server_code(&e) == Some(DUPLICATE_KEY) => Ok(false),
                        Err(e) => Err(e.into()),
                    },
                    Some(expected) => {
                        let expected = i64::try_from(expected).map_err(|_| {
                            Failure::Malformed(format!("job version {expected} is out of range"))
                        })?;
                        let id = doc.get_str("_id").unwrap_or_default().to_owned();
                        let replaced = h
                            .jobs
                            .replace_one(doc! { "_id": id, "version": expected }, doc)
                            .await?;
                        Ok(replaced.matched_count == 1)
                    }
                }
            }
        })
        .await
    }

    async fn list_jobs(&self, limit: usize) -> Result<Vec<BackfillJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run("listing of backfill jobs", |h| async move {
            let docs: Vec<Document> = h
                .jobs
                .find(doc! {})
                .sort(doc! { "updated_at_ms": -1, "_id": 1 })
                .limit(server_limit(limit))
                .await?
                .try_collect()
                .await?;
            docs.into_iter().map(job_from_document).collect()
        })
        .await
    }

    async fn job_calls(&self, tag: &str, failures: usize) -> Result<JobCalls, StoreError> {
        self.run(
            &format!("count of the calls of backfill {tag}"),
            |h| async move {
                let pipeline = [
                    doc! { "$match": { "backfill": tag } },
                    doc! { "$group": {
                        "_id": "$status",
                        "n": { "$sum": 1 },
                        "audio_s": { "$sum": "$duration_s" },
                    } },
                ];
                let groups: Vec<Document> =
                    h.calls.aggregate(pipeline).await?.try_collect().await?;
                let mut calls = JobCalls::default();
                for group in groups {
                    let n = number(&group, "n") as u64;
                    match group.get_str("_id").unwrap_or_default() {
                        "indexed" => {
                            calls.indexed = n;
                            calls.indexed_audio_s = number(&group, "audio_s");
                        }
                        "failed" => calls.failed = n,
                        _ => calls.in_progress += n,
                    }
                }
                if failures > 0 {
                    let failed: Vec<Document> = h
                        .calls
                        .find(doc! { "backfill": tag, "status": "failed" })
                        .projection(doc! { "source": 1, "error": 1, "updated_at_ms": 1 })
                        .sort(doc! { "updated_at_ms": -1 })
                        .limit(server_limit(failures))
                        .await?
                        .try_collect()
                        .await?;
                    calls.failures = failed
                        .iter()
                        .map(|d| {
                            let error = d.get_document("error").ok();
                            let field = |k: &str| {
                                error
                                    .and_then(|e| e.get_str(k).ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            JobFailure {
                                source: d.get_str("source").unwrap_or_default().to_owned(),
                                stage: field("stage"),
                                reason: field("reason"),
                            }
                        })
                        .collect();
                }
                Ok(calls)
            },
        )
        .await
    }
}
