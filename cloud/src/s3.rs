//! S3 behind two traits of `callpipe-common`:
//!
//! - [`S3ObjectStore`] is callpipe's own artifacts bucket ([`ObjectStore`]): normalized audio,
//!   transcripts, anything a stage hands the next by reference. Read-write, keys checked,
//!   optionally under a prefix so several deployments can share one bucket.
//! - [`S3Recordings`] reads customers' buckets ([`RecordingSource`]): read-only, keys exactly
//!   as written, version ids and ETags kept so a redelivered notification reads the revision
//!   it names, bodies streamed with a size cap, listings streamed a page at a time.
//!
//! Both map S3's errors into [`StoreError`] the same way ([`map_error`]): a missing key or
//! version is `NotFound` naming `s3://bucket/key`; throttling, 5xx, timeouts and connection
//! failures (already retried by the SDK, see [`crate::aws`]) are `Unavailable`; wrong
//! credentials, missing permissions and missing buckets are `Failed` with a reason that says
//! so, because no retry of the same request fixes them.

use std::ops::Range;

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use callpipe_common::store::{ObjectMeta, ObjectStore, RecordingMeta, RecordingSource, StoreError};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::aws::{self, Cause};

const BACKEND: &str = "s3";

/// The most bytes a body buffer reserves up front. Content-Length is the server's word, and a
/// wrong or hostile one must not make us allocate gigabytes before a byte arrives.
const MAX_PREALLOCATION: u64 = 16 << 20;

/// callpipe's artifacts in one S3 bucket, optionally under a key prefix.
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`: prepended to every key and stripped from listed ones.
    prefix: String,
}

impl S3ObjectStore {
    /// A store over `bucket`, keeping every object under `prefix` (`""` for the bucket root;
    /// `callpipe/prod` and `callpipe/prod/` are the same prefix).
    pub fn new(client: Client, bucket: impl Into<String>, prefix: impl AsRef<str>) -> Self {
        let trimmed = prefix.as_ref().trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        S3ObjectStore {
            client,
            bucket: bucket.into(),
            prefix,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn uri(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        check_key(key)?;
        let size = bytes.len() as u64;
        // The upload happens inside the attempt, so its timeout scales with the size
        // (crate::aws::ATTEMPT_TIMEOUT is sized for small requests).
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(aws::CONNECT_TIMEOUT)
            .operation_attempt_timeout(aws::put_attempt_timeout(size))
            .build();
        // A single PutObject is atomic: readers see the old object or the new one, never part.
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(size as i64)
            .body(ByteStream::from(bytes))
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| map_error(&e, self.uri(key)))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        check_key(key)?;
        let uri = self.uri(key);
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| map_error(&e, uri.clone()))?;
        read_body(output.body, output.content_length, u64::MAX, &uri).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        check_key(key)?;
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: size_of(output.content_length),
            })),
            Err(e) => match map_error(&e, self.uri(key)) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        // S3 answers 204 for a missing key too, so a retried delete succeeds.
        let result = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        match result.map_err(|e| map_error(&e, self.uri(key))) {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let full_prefix = self.full_key(prefix);
        let uri = self.uri(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| map_error(&e, uri.clone()))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                // Only keys under our prefix are listed, so the strip always succeeds.
                let Some(ours) = key.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: ours.to_owned(),
                    size: size_of(object.size),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated().unwrap_or(false) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        // S3 lists in UTF-8 byte order already; sorting makes the contract independent of
        // any S3-compatible server that does not.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// The same key rules as the local-directory store, so an artifact key valid on one backend is
/// valid on the other.
fn check_key(key: &str) -> Result<(), StoreError> {
    callpipe_common::store::check_key(BACKEND, key)
}

/// Customers' recordings, read where they are. One client serves every bucket it has access
/// to; the bucket is named per call.
#[derive(Debug, Clone)]
pub struct S3Recordings {
    client: Client,
    /// Keys per ListObjectsV2 page; `None` is S3's default (and maximum) of 1,000.
    page_size: Option<i32>,
}

impl S3Recordings {
    pub fn new(client: Client) -> Self {
        S3Recordings {
            client,
            page_size: None,
        }
    }

    /// Lists `page_size` keys per request (1 to 1,000) instead of 1,000: smaller pages mean
    /// less memory per listing and, in tests, many pages from few objects.
    pub fn with_page_size(mut self, page_size: u16) -> Self {
        self.page_size = Some(i32::from(page_size.clamp(1, 1000)));
        self
    }
}

#[async_trait]
impl RecordingSource for S3Recordings {
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<RecordingMeta, StoreError> {
        let output = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
            .map_err(|e| map_error(&e, recording_uri(bucket, key, version)))?;
        Ok(RecordingMeta {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: size_of(output.content_length),
            etag: output.e_tag().map(unquote),
            version: output.version_id().map(str::to_owned),
            last_modified_ms: output.last_modified().and_then(|t| t.to_millis().ok()),
        })
    }

    async fn read(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        if_match: Option<&str>,
        limit: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let uri = recording_uri(bucket, key, version);
        let output = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .set_if_match(if_match.map(quote))
            .send()
            .await
            .map_err(|e| map_error(&e, uri.clone()))?;
        read_body(output.body, output.content_length, limit, &uri).await
    }

    async fn read_range(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Vec<u8>, StoreError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let uri = recording_uri(bucket, key, version);
        let result = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            // HTTP ranges are inclusive at both ends.
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            // A range that starts at or past the end: the "shorter result at its end" is empty.
            Err(e) if is_invalid_range(&e) => return Ok(Vec::new()),
            Err(e) => return Err(map_error(&e, uri)),
        };
        // A server that ignores Range sends the whole object; never keep more than asked.
        let wanted = range.end - range.start;
        let mut bytes = read_body(output.body, output.content_length, wanted, &uri).await?;
        bytes.truncate(wanted as usize);
        Ok(bytes)
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<String>,
    ) -> BoxStream<'static, Result<RecordingMeta, StoreError>> {
        /// Where the listing is: the next page's token, or the end.
        enum Cursor {
            Start,
            Next(String),
            Done,
        }
        // The stream owns a clone of the client (cheap: an Arc inside) and of the names, so it
        // can outlive `self`. One page is fetched each time the previous page's objects have
        // all been yielded, so memory holds one page whatever the bucket's size.
        let client = self.client.clone();
        let page_size = self.page_size;
        let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
        stream::try_unfold(Cursor::Start, move |cursor| {
            let (client, bucket, prefix) = (client.clone(), bucket.clone(), prefix.clone());
            let start_after = start_after.clone();
            async move {
                // StartAfter applies to the first request; the token carries it on.
                let (token, start_after) = match cursor {
                    Cursor::Start => (None, start_after),
                    Cursor::Next(token) => (Some(token), None),
                    Cursor::Done => return Ok(None),
                };
                let (objects, next) =
                    list_page(&client, &bucket, &prefix, page_size, token, start_after).await?;
                let cursor = next.map_or(Cursor::Done, Cursor::Next);
                Ok(Some((objects, cursor)))
            }
        })
        .map_ok(|objects| stream::iter(objects.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }
}

/// One ListObjectsV2 page: its objects and the token for the next, if any.
async fn list_page(
    client: &Client,
    bucket: &str,
    prefix: &str,
    page_size: Option<i32>,
    token: Option<String>,
    start_after: Option<String>,
) -> Result<(Vec<RecordingMeta>, Option<String>), StoreError> {
    let page = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .set_max_keys(page_size)
        .set_continuation_token(token)
        .set_start_after(start_after)
        .send()
        .await
        .map_err(|e| map_error(&e, format!("s3://{bucket}/{prefix}")))?;
    let objects = page
        .contents()
        .iter()
        .filter_map(|object| {
            Some(RecordingMeta {
                bucket: bucket.to_owned(),
                key: object.key()?.to_owned(),
                size: size_of(object.size),
                etag: object.e_tag().map(unquote),
                // ListObjectsV2 names no versions: the current one is what it lists.
                version: None,
                last_modified_ms: object.last_modified().and_then(|t| t.to_millis().ok()),
            })
        })
        .collect();
    let next = match page.next_continuation_token() {
        Some(next) if page.is_truncated().unwrap_or(false) => Some(next.to_owned()),
        _ => None,
    };
    Ok((objects, next))
}

fn recording_uri(bucket: &str, key: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("s3://{bucket}/{key} (version {v})"),
        None => format!("s3://{bucket}/{key}"),
    }
}

/// Reads a streamed body chunk by chunk, keeping at most `limit + 1` bytes: once more than
/// `limit` have arrived the rest is never read (dropping the body closes the connection), so
/// an oversized object costs `limit + 1` bytes of memory, not its size.
async fn read_body(
    mut body: ByteStream,
    content_length: Option<i64>,
    limit: u64,
    uri: &str,
) -> Result<Vec<u8>, StoreError> {
    let keep = limit.saturating_add(1);
    let expected = size_of(content_length).min(keep).min(MAX_PREALLOCATION);
    let mut out = Vec::with_capacity(expected as usize);
    while let Some(chunk) = body.try_next().await.map_err(|e| StoreError::Unavailable {
        backend: BACKEND,
        what: uri.to_owned(),
        reason: format!(
            "reading the body failed after {} bytes: {}",
            out.len(),
            aws::error_chain(&e)
        ),
    })? {
        let room = (keep - out.len() as u64).min(chunk.len() as u64) as usize;
        out.extend_from_slice(&chunk[..room]);
        if out.len() as u64 >= keep {
            break;
        }
    }
    Ok(out)
}

fn size_of(content_length: Option<i64>) -> u64 {
    content_length
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// S3 quotes ETags (`"9b2cf535f27731c974343645a3985328"`); callers compare them bare.
fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// If-Match wants the quoted form; a caller may hold either.
fn quote(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

fn is_invalid_range<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    matches!(err, SdkError::ServiceError(ctx)
        if ctx.err().code() == Some("InvalidRange") || ctx.raw().status().as_u16() == 416)
}

/// S3's errors in [`StoreError`]'s terms; `what` names the object (`s3://bucket/key`).
fn map_error<E>(err: &SdkError<E>, what: String) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let failure = aws::describe(err);
    match failure.cause {
        Cause::Service { code, status } => match code.as_str() {
            // A failed If-Match means the revision asked for is gone: NotFound, per the trait.
            "NoSuchKey" | "NoSuchVersion" | "NotFound" | "PreconditionFailed" => {
                StoreError::NotFound {
                    backend: BACKEND,
                    what,
                }
            }
            "NoSuchBucket" => StoreError::Failed {
                backend: BACKEND,
                what,
                reason: format!("no such bucket: {}", failure.detail),
            },
            // HeadObject's errors have no body, so only the status tells.
            "" if status == 404 => StoreError::NotFound {
                backend: BACKEND,
                what,
            },
            "" if status == 412 => StoreError::NotFound {
                backend: BACKEND,
                what,
            },
            code if aws::is_access_error(code, status) => StoreError::Denied {
                backend: BACKEND,
                what,
                reason: format!(
                    "access denied (check the credentials and the bucket policy): {}",
                    failure.detail
                ),
            },
            code if aws::is_transient_service_error(code, status) => StoreError::Unavailable {
                backend: BACKEND,
                what,
                reason: failure.detail,
            },
            _ => StoreError::Failed {
                backend: BACKEND,
                what,
                reason: failure.detail,
            },
        },
        Cause::Transport => StoreError::Unavailable {
            backend: BACKEND,
            what,
            reason: failure.detail,
        },
        Cause::Config => StoreError::Denied {
            backend: BACKEND,
            what,
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
    fn etags_are_compared_bare_and_sent_quoted() {
        assert_eq!(unquote("\"abc\""), "abc");
        assert_eq!(unquote("abc"), "abc");
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote("\"abc\""), "\"abc\"");
    }

    #[test]
    fn the_prefix_is_normalized() {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .build();
        let client = Client::from_conf(config);
        for (given, want) in [("", ""), ("/", ""), ("a/b", "a/b/"), ("/a/b/", "a/b/")] {
            let store = S3ObjectStore::new(client.clone(), "bucket", given);
            assert_eq!(store.prefix, want, "prefix {given:?}");
        }
        let store = S3ObjectStore::new(client, "bucket", "p");
        assert_eq!(store.uri("x/y"), "s3://bucket/p/x/y");
    }

    #[test]
    fn bad_keys_are_refused_before_any_request() {
        for bad in ["", "/abs", "a/../b", "a//b", "dir/", "a/./b", "a\\b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        check_key("transcripts/a/r1.json").expect("a normal key");
    }
}
