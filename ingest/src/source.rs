//! Local sources: the recordings `callpipe run` finds on disk, and the identity of each.
//!
//! A source's URI (`file:///abs/path`) is what the call id is derived from, so the same file
//! is the same call on every run, whatever relative path it was given as. When the call took
//! place comes from a timestamp in the file name if there is one (call recorders name files
//! like `2024-03-14T09-15-00_agent42.wav` or `20240314_091500.wav`), else from the file's
//! modification time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// A recording found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalSource {
    /// The canonical path.
    pub path: PathBuf,
    /// `file://` + the canonical path.
    pub uri: String,
    pub size: u64,
    /// When the call took place, ms since the Unix epoch (UTC).
    pub recorded_at_ms: i64,
}

impl LocalSource {
    /// The file as a pipeline source. A local file has no version or ETag (its revision is
    /// its content), and one process writes the data directory, so there is no late writer
    /// to order against with a modification time.
    pub fn source_ref(&self) -> callpipe_common::messages::SourceRef {
        callpipe_common::messages::SourceRef {
            uri: self.uri.clone(),
            version: None,
            etag: None,
            size: Some(self.size),
            recorded_at_ms: Some(self.recorded_at_ms),
            modified_ms: None,
        }
    }
}

/// A path that could not be used as a source, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceError {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl SourceError {
    /// A path that is missing, unreadable or not a recording: the input's fault.
    pub fn kind(&self) -> callpipe_common::ErrorKind {
        callpipe_common::ErrorKind::Permanent
    }
}

/// Expands files and directories into recordings, in a stable order (sorted by path within
/// each argument) with duplicates removed. A file named directly is taken whatever its
/// extension; a directory is walked recursively for files with one of `extensions`
/// (case-insensitive), skipping hidden files and folders.
pub fn discover(paths: &[PathBuf], extensions: &[String]) -> (Vec<LocalSource>, Vec<SourceError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let wanted = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
    };
    for arg in paths {
        let shown = arg.display().to_string();
        let meta = match std::fs::metadata(arg) {
            Ok(meta) => meta,
            Err(e) => {
                errors.push(SourceError {
                    path: shown,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let mut files = Vec::new();
        if meta.is_dir() {
            let walker = walkdir::WalkDir::new(arg)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| {
                    e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')
                });
            for entry in walker {
                match entry {
                    Ok(e) if e.file_type().is_file() && wanted(e.path()) => {
                        files.push(e.into_path())
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(SourceError {
                        path: e
                            .path()
                            .map_or_else(|| shown.clone(), |p| p.display().to_string()),
                        reason: e.to_string(),
                    }),
                }
            }
        } else {
            files.push(arg.clone());
        }
        for file in files {
            match local_source(&file) {
                Ok(source) => {
                    if seen.insert(source.path.clone()) {
                        found.push(source);
                    }
                }
                Err(reason) => errors.push(SourceError {
                    path: file.display().to_string(),
                    reason,
                }),
            }
        }
    }
    (found, errors)
}

fn local_source(path: &Path) -> Result<LocalSource, String> {
    let canonical = path.canonicalize().map_err(|e| e.to_string())?;
    let meta = std::fs::metadata(&canonical).map_err(|e| e.to_string())?;
    // A device, fifo or socket never ends (`/dev/zero`) or blocks the reader.
    if !meta.is_file() {
        return Err("not a regular file (a device, fifo or socket is not a recording)".into());
    }
    let from_name = canonical
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(timestamp_in_name);
    let recorded_at_ms = from_name.unwrap_or_else(|| {
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64)
    });
    Ok(LocalSource {
        uri: format!("file://{}", canonical.display()),
        path: canonical,
        size: meta.len(),
        recorded_at_ms,
    })
}

/// Finds `YYYY-MM-DD[(T|_| )HH(-|:)MM(-|:)SS]` or `YYYYMMDD[(T|_|-)HHMMSS]` in a file name
/// and returns it as ms since the epoch, read as UTC.
pub fn timestamp_in_name(name: &str) -> Option<i64> {
    let b = name.as_bytes();
    let num = |s: &[u8]| -> Option<u32> {
        if s.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(s).ok()?.parse().ok()
        } else {
            None
        }
    };
    for start in 0..b.len() {
        // A run of digits must start here (not in the middle of a longer number).
        if !b[start].is_ascii_digit() || (start > 0 && b[start - 1].is_ascii_digit()) {
            continue;
        }
        let rest = &b[start..];
        let (date, after) = if rest.len() >= 10 && rest[4] == b'-' && rest[7] == b'-' {
            (
                (num(&rest[0..4])?, num(&rest[5..7])?, num(&rest[8..10])?),
                &rest[10..],
            )
        } else if rest.len() >= 8
            && rest[..8].iter().all(u8::is_ascii_digit)
            && rest.get(8).is_none_or(|c| !c.is_ascii_digit())
        {
            (
                (num(&rest[0..4])?, num(&rest[4..6])?, num(&rest[6..8])?),
                &rest[8..],
            )
        } else {
            continue;
        };
        let (y, m, d) = date;
        if !(1900..=2200).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            continue;
        }
        let time = match after {
            [b'T' | b'_' | b' ' | b'-', h1, h2, s1, m1, m2, s2, c1, c2, ..]
                if matches!(s1, b'-' | b':') && s1 == s2 =>
            {
                num(&[*h1, *h2]).zip(num(&[*m1, *m2])).zip(num(&[*c1, *c2]))
            }
            [b'T' | b'_' | b'-', h1, h2, m1, m2, c1, c2, ..] => {
                num(&[*h1, *h2]).zip(num(&[*m1, *m2])).zip(num(&[*c1, *c2]))
            }
            _ => None,
        };
        let ((h, mi), s) = time
            .filter(|((h, mi), s)| *h < 24 && *mi < 60 && *s < 60)
            .unwrap_or(((0, 0), 0));
        let days = days_from_civil(i64::from(y), i64::from(m), i64::from(d));
        let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
        return Some(secs * 1000);
    }
    None
}

/// The recording time an object key tells: a timestamp in its file name
/// ([`timestamp_in_name`]), else a date in its folders (`2024/03/05/…`, `2024-03-05/…`, or
/// Hive style `year=2024/month=03/day=05/…`), read as UTC midnight.
pub fn timestamp_in_key(key: &str) -> Option<i64> {
    let (folders, name) = key.rsplit_once('/').unwrap_or(("", key));
    if let Some(t) = timestamp_in_name(name) {
        return Some(t);
    }
    let parts: Vec<&str> = folders
        .split('/')
        .map(|p| p.rsplit_once('=').map_or(p, |(_, v)| v))
        .collect();
    let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    for w in parts.windows(3) {
        if digits(w[0], 4..=4) && digits(w[1], 1..=2) && digits(w[2], 1..=2) {
            let joined = format!("{}-{:0>2}-{:0>2}", w[0], w[1], w[2]);
            if let Some(t) = timestamp_in_name(&joined) {
                return Some(t);
            }
        }
    }
    parts.iter().rev().find_map(|p| timestamp_in_name(p))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_recorder_file_names() {
        // 2026-03-02T09:14:05Z
        let t = 1_772_442_845_000;
        assert_eq!(
            timestamp_in_name("2026-03-02T09-14-05_billing.wav"),
            Some(t)
        );
        assert_eq!(timestamp_in_name("call 2026-03-02 09:14:05.wav"), Some(t));
        assert_eq!(timestamp_in_name("agent7_20260302_091405.mp3"), Some(t));
        assert_eq!(timestamp_in_name("20260302T091405.wav"), Some(t));
        assert_eq!(timestamp_in_name("2026-03-02.wav"), Some(1_772_409_600_000));
        assert_eq!(timestamp_in_name("1970-01-01_x.wav"), Some(0));
        assert_eq!(timestamp_in_name("call_00.wav"), None);
        assert_eq!(timestamp_in_name("id-123456789.wav"), None);
        assert_eq!(timestamp_in_name("2026-13-02.wav"), None);
    }

    #[test]
    fn timestamps_in_object_keys() {
        let day = 1_772_409_600_000; // 2026-03-02
        assert_eq!(timestamp_in_key("calls/2026/03/02/agent7.wav"), Some(day));
        assert_eq!(timestamp_in_key("calls/2026/3/2/a.wav"), Some(day));
        assert_eq!(
            timestamp_in_key("year=2026/month=03/day=02/a.wav"),
            Some(day)
        );
        assert_eq!(timestamp_in_key("2026-03-02/x/a.wav"), Some(day));
        assert_eq!(
            timestamp_in_key("2025/01/01/20260302T091405.wav"),
            Some(1_772_442_845_000),
            "the file name wins over the folders"
        );
        assert_eq!(timestamp_in_key("calls/a b+c.wav"), None);
        assert_eq!(timestamp_in_key("1234/56/78/a.wav"), None);
    }

    #[test]
    fn discovers_audio_recursively_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        for f in [
            "a/one.WAV",
            "a/b/two.mp3",
            "a/notes.txt",
            ".hidden/x.wav",
            "z.flac",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let exts: Vec<String> = ["wav", "mp3", "flac"].map(String::from).to_vec();
        let (found, errors) = discover(
            &[
                root.to_owned(),
                root.join("a/one.WAV"),
                root.join("missing.wav"),
            ],
            &exts,
        );
        let names: Vec<String> = found
            .iter()
            .map(|s| {
                s.path
                    .strip_prefix(root.canonicalize().unwrap())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["a/b/two.mp3", "a/one.WAV", "z.flac"]);
        assert!(found.iter().all(|s| s.uri.starts_with("file:///")));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].path.ends_with("missing.wav"), "{:?}", errors[0]);
    }

    #[test]
    fn devices_are_refused_by_name() {
        let (found, errors) = discover(&[PathBuf::from("/dev/zero")], &["wav".into()]);
        assert!(found.is_empty());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "/dev/zero");
        assert!(
            errors[0].reason.contains("not a regular file"),
            "{:?}",
            errors[0]
        );
    }
}
