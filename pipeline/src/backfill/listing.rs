//! What a backfill lists: S3 prefixes (page by page, resumable after a key) and local
//! directories (walked in path order, resumable after a path), filtered to audio in the
//! job's recording-time window.

use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt as _};

use callpipe_common::messages::SourceRef;
use callpipe_common::store::{RecordingSource, StoreError};

/// One place a job lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    S3 { bucket: String, prefix: String },
    Dir(PathBuf),
}

impl Source {
    /// `s3://bucket/prefix` or a local directory (made absolute). A bucket alone lists all
    /// of it.
    pub fn parse(text: &str) -> Result<Source, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{text}: no bucket name"));
            }
            return Ok(Source::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        let path = std::path::absolute(text).map_err(|e| format!("{text}: {e}"))?;
        Ok(Source::Dir(path))
    }

    /// How the job record names it: `s3://bucket/prefix` or `file:///abs/dir`.
    pub fn uri(&self) -> String {
        match self {
            Source::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
            Source::Dir(path) => format!("file://{}", path.display()),
        }
    }

    pub fn from_uri(uri: &str) -> Result<Source, String> {
        match uri.strip_prefix("file://") {
            Some(path) => Ok(Source::Dir(PathBuf::from(path))),
            None => Source::parse(uri),
        }
    }
}

/// One listed object, before filtering.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key (S3) or the path (local) the cursor resumes after.
    pub position: String,
    pub source: SourceRef,
    pub size: u64,
}

/// Everything under `source` after `after`, in order. A local directory is walked whole
/// before the first item (its entries are paths, small beside any S3 listing); an S3 prefix
/// holds one page in memory at a time.
pub fn list(
    source: &Source,
    after: Option<String>,
    recordings: Option<&Arc<dyn RecordingSource>>,
    extensions: &[String],
) -> BoxStream<'static, Result<Listed, StoreError>> {
    match source {
        Source::S3 { bucket, prefix } => {
            let Some(recordings) = recordings else {
                let uri = source.uri();
                return stream::once(async move {
                    Err(StoreError::Failed {
                        backend: "backfill",
                        what: uri,
                        reason: "no S3 client configured".into(),
                    })
                })
                .boxed();
            };
            recordings
                .list(bucket, prefix, after)
                .map(|item| {
                    item.map(|meta| {
                        let recorded_at_ms = callpipe_ingest::source::timestamp_in_key(&meta.key)
                            .or(meta.last_modified_ms);
                        Listed {
                            position: meta.key.clone(),
                            size: meta.size,
                            source: SourceRef {
                                uri: meta.uri(),
                                version: meta.version,
                                etag: meta.etag,
                                size: Some(meta.size),
                                recorded_at_ms,
                                modified_ms: meta.last_modified_ms,
                            },
                        }
                    })
                })
                .boxed()
        }
        Source::Dir(dir) => {
            let (found, errors) =
                callpipe_ingest::source::discover(std::slice::from_ref(dir), extensions);
            if let Some(e) = errors.into_iter().next() {
                return stream::once(async move {
                    Err(StoreError::NotFound {
                        backend: "backfill",
                        what: format!("{}: {}", e.path, e.reason),
                    })
                })
                .boxed();
            }
            let items: Vec<Result<Listed, StoreError>> = found
                .into_iter()
                .map(|f| (f.path.display().to_string(), f))
                .filter(|(position, _)| after.as_ref().is_none_or(|a| position > a))
                .map(|(position, f)| {
                    Ok(Listed {
                        position,
                        size: f.size,
                        source: f.source_ref(),
                    })
                })
                .collect();
            stream::iter(items).boxed()
        }
    }
}

/// Whether a listed object is audio (by extension) recorded within `[since, until)`.
pub fn wanted(
    item: &Listed,
    extensions: &[String],
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> bool {
    let ext = item
        .position
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, e)| e);
    let audio = ext.is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)));
    let at = item.source.recorded_at_ms;
    let in_window = match (since_ms, until_ms, at) {
        (None, None, _) => true,
        (_, _, None) => false,
        (since, until, Some(at)) => since.is_none_or(|s| at >= s) && until.is_none_or(|u| at < u),
    };
    audio && in_window
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, at: Option<i64>) -> Listed {
        Listed {
            position: key.into(),
            size: 1,
            source: SourceRef {
                uri: format!("s3://b/{key}"),
                version: None,
                etag: None,
                size: Some(1),
                recorded_at_ms: at,
                modified_ms: None,
            },
        }
    }

    #[test]
    fn sources_parse_and_round_trip() {
        assert_eq!(
            Source::parse("s3://calls/2024/ a+b/").unwrap(),
            Source::S3 {
                bucket: "calls".into(),
                prefix: "2024/ a+b/".into()
            }
        );
        assert_eq!(
            Source::parse("s3://calls").unwrap(),
            Source::S3 {
                bucket: "calls".into(),
                prefix: String::new()
            }
        );
        assert!(Source::parse("s3:///x").is_err());
        let dir = Source::parse("/tmp/x y").unwrap();
        assert_eq!(Source::from_uri(&dir.uri()).unwrap(), dir);
        let s3 = Source::parse("s3://b/p/").unwrap();
        assert_eq!(Source::from_uri(&s3.uri()).unwrap(), s3);
    }

    #[test]
    fn the_window_and_the_extensions_filter() {
        let exts = vec!["wav".to_string()];
        assert!(wanted(&item("a/x.WAV", Some(5)), &exts, Some(5), Some(6)));
        assert!(!wanted(&item("a/x.wav", Some(6)), &exts, Some(5), Some(6)));
        assert!(!wanted(&item("a/x.wav", Some(4)), &exts, Some(5), None));
        assert!(!wanted(&item("a/x.txt", Some(5)), &exts, None, None));
        assert!(!wanted(&item("a.wav/x", Some(5)), &exts, None, None));
        assert!(wanted(&item("x.wav", None), &exts, None, None));
        assert!(!wanted(&item("x.wav", None), &exts, Some(0), None));
    }
}
