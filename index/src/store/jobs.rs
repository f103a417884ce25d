//! Backfill jobs in the embedded metadata store: one row per job (the record as JSON, with its
//! version and update time as columns), and the calls a pass tagged counted by status through
//! the `calls_by_backfill` index.

use async_trait::async_trait;
use callpipe_common::store::{BackfillJob, JobCalls, JobFailure, JobStore, StoreError};
use rusqlite::{params, OptionalExtension};

use super::metadata::SqliteMetadata;
use super::sqlite::json_error;

fn job_from_json(json: String) -> rusqlite::Result<BackfillJob> {
    serde_json::from_str(&json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

#[async_trait]
impl JobStore for SqliteMetadata {
    async fn get_job(&self, id: &str) -> Result<Option<BackfillJob>, StoreError> {
        let id = id.to_owned();
        self.db
            .run(move |conn| {
                conn.prepare_cached("SELECT job FROM backfill_jobs WHERE id = ?1")?
                    .query_row([&id], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(job_from_json)
                    .transpose()
            })
            .await
    }

    async fn put_job(&self, job: &BackfillJob, expected: Option<u64>) -> Result<bool, StoreError> {
        let mut job = job.clone();
        job.version = expected.unwrap_or(0) + 1;
        self.db
            .run(move |conn| {
                let json = serde_json::to_string(&job).map_err(json_error)?;
                let changed = match expected {
                    None => conn
                        .prepare_cached(
                            "INSERT INTO backfill_jobs (id, version, updated_at_ms, job)
                             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
                        )?
                        .execute(params![job.id, job.version as i64, job.updated_at_ms, json])?,
                    Some(expected) => conn
                        .prepare_cached(
                            "UPDATE backfill_jobs SET version = ?2, updated_at_ms = ?3, job = ?4
                             WHERE id = ?1 AND version = ?5",
                        )?
                        .execute(params![
                            job.id,
                            job.version as i64,
                            job.updated_at_ms,
                            json,
                            expected as i64
                        ])?,
                };
                Ok(changed == 1)
            })
            .await
    }

    async fn list_jobs(&self, limit: usize) -> Result<Vec<BackfillJob>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.db
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT job FROM backfill_jobs ORDER BY updated_at_ms DESC, id LIMIT ?1",
                )?;
                let rows = stmt.query_map([limit], |r| r.get::<_, String>(0))?;
                rows.map(|r| r.and_then(job_from_json)).collect()
            })
            .await
    }

    async fn job_calls(&self, tag: &str, failures: usize) -> Result<JobCalls, StoreError> {
        let tag = tag.to_owned();
        let failures = failures.min(i64::MAX as usize) as i64;
        self.db
            .run(move |conn| {
                let mut calls = JobCalls::default();
                let mut stmt = conn.prepare_cached(
                    "SELECT status, count(*), total(duration_s) FROM calls
                     WHERE backfill = ?1 GROUP BY status",
                )?;
                let mut rows = stmt.query([&tag])?;
                while let Some(row) = rows.next()? {
                    let status: String = row.get(0)?;
                    let n = row.get::<_, i64>(1)? as u64;
                    match status.as_str() {
                        "indexed" => {
                            calls.indexed = n;
                            calls.indexed_audio_s = row.get(2)?;
                        }
                        "failed" => calls.failed = n,
                        _ => calls.in_progress += n,
                    }
                }
                let mut stmt = conn.prepare_cached(
                    "SELECT source,
                            coalesce(json_extract(record, '$.error.stage'), ''),
                            coalesce(json_extract(record, '$.error.reason'), '')
                     FROM calls WHERE backfill = ?1 AND status = 'failed'
                     ORDER BY json_extract(record, '$.updated_at_ms') DESC LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![tag, failures], |r| {
                    Ok(JobFailure {
                        source: r.get(0)?,
                        stage: r.get(1)?,
                        reason: r.get(2)?,
                    })
                })?;
                calls.failures = rows.collect::<rusqlite::Result<_>>()?;
                Ok(calls)
            })
            .await
    }
}
