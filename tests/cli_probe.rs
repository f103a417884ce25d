//! End to end: the `callpipe probe` binary on real recordings.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn callpipe() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callpipe"));
    cmd.env_remove("CALLPIPE_CONFIG").env("NO_COLOR", "1");
    cmd
}

#[test]
fn json_probe_of_the_eval_set() {
    let manifest: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("eval/manifest.json")).unwrap(),
    )
    .unwrap();
    let files: Vec<PathBuf> = manifest
        .iter()
        .map(|e| fixtures().join("eval").join(e["file"].as_str().unwrap()))
        .collect();
    let output = callpipe()
        .arg("probe")
        .arg("--json")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "broken files make the exit status non-zero"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");

    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), files.len(), "one line per file, in order");
    for (entry, line) in manifest.iter().zip(&lines) {
        let file = entry["file"].as_str().unwrap();
        assert!(
            line["file"].as_str().unwrap().ends_with(file),
            "order: {file}"
        );
        let fields = [
            "container",
            "codec",
            "sample_rate",
            "channels",
            "duration_s",
            "truncated",
            "error",
            "tracks",
        ];
        for field in fields {
            assert!(line.get(field).is_some(), "{file}: no `{field}`");
        }
        let raw = entry["container"] == "s16le";
        if entry["kind"] == "broken" || raw {
            // Raw PCM needs --raw; broken files error or decode up to where they end.
            if line["error"].is_null() {
                assert_eq!(line["truncated"], true, "{file}");
            } else {
                let error = line["error"].as_str().unwrap();
                assert!(
                    error.contains(file.trim_start_matches("audio/")),
                    "{file}: {error}"
                );
                assert!(stderr.contains(error), "{file}: error also goes to stderr");
            }
            continue;
        }
        assert!(line["error"].is_null(), "{file}: {}", line["error"]);
        assert_eq!(line["sample_rate"], entry["sample_rate"], "{file}");
        assert_eq!(line["channels"], entry["channels"], "{file}");
        let tracks = line["tracks"].as_array().unwrap();
        assert_eq!(
            tracks.len() as u64,
            entry["channels"].as_u64().unwrap(),
            "{file}"
        );
        for track in tracks {
            let segments = track["segments"].as_array().unwrap();
            let total: f64 = segments
                .iter()
                .map(|s| s[1].as_f64().unwrap() - s[0].as_f64().unwrap())
                .sum();
            assert!(
                (total - track["speech_s"].as_f64().unwrap()).abs() < 0.01,
                "{file}"
            );
        }
        let roles: Vec<&str> = tracks.iter().map(|t| t["role"].as_str().unwrap()).collect();
        match entry["channels"].as_u64().unwrap() {
            1 => assert_eq!(roles, ["mixed"], "{file}"),
            _ => assert_eq!(roles, ["agent", "customer"], "{file}"),
        }
    }
}

#[test]
fn raw_pcm_with_an_explicit_format() {
    let file = fixtures().join("eval/audio/ps_goforward_s16le_16k.raw");
    let output = callpipe()
        .args(["probe", "--json", "--raw", "s16le:16000:1"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success());
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["codec"], "pcm_s16le");
    assert!((line["duration_s"].as_f64().unwrap() - 2.786).abs() < 0.01);
    assert!(line["tracks"][0]["speech_s"].as_f64().unwrap() > 1.0);
}

#[test]
fn no_vad_and_text_output() {
    let file = fixtures().join("calls/call_00.wav");
    let output = callpipe()
        .args(["probe", "--json", "--no-vad"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success());
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["tracks"][0]["segments"].as_array().unwrap().len(), 0);
    assert_eq!(line["codec"], "pcm_mulaw");

    let output = callpipe().arg("probe").arg(&file).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("pcm_mulaw, 8000 Hz, 2 ch"), "{text}");
    assert!(
        text.contains("ch0 agent") && text.contains("ch1 customer"),
        "{text}"
    );
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("callpipe.toml");
    std::fs::write(
        &config,
        "[ingest]\nstereo_roles = [\"agent\", \"caller\"]\n",
    )
    .unwrap();
    let output = callpipe()
        .arg("--config")
        .arg(&config)
        .arg("probe")
        .arg(fixtures().join("calls/call_00.wav"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("stereo_roles") || stderr.contains("caller"),
        "{stderr}"
    );
}
