//! Hostile model directories: each is a small valid model with one thing wrong, written by the
//! test. Import must refuse every one with an error naming the file at fault, leave the store
//! without it, and never panic: a model that imports must load.

use std::fs;
use std::path::Path;

use callpipe_transcribe::model::{ModelError, ModelStore};

/// A `model.bin` variable: name, shape, CTranslate2 dtype id, and the data (zeros of the
/// shape's size when `None`).
struct Var {
    name: &'static str,
    shape: Vec<u32>,
    dtype: u8,
    data: Option<Vec<u8>>,
}

fn var(name: &'static str, shape: &[u32]) -> Var {
    Var {
        name,
        shape: shape.to_vec(),
        dtype: 4, // float16
        data: None,
    }
}

fn model_bin(vars: &[Var]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&6u32.to_le_bytes());
    string(&mut out, "WhisperSpec");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for v in vars {
        string(&mut out, v.name);
        out.push(v.shape.len() as u8);
        for d in &v.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.push(v.dtype);
        let data = v.data.clone().unwrap_or_else(|| {
            let n: u64 = v.shape.iter().map(|&d| d as u64).product();
            vec![0; n as usize * 2]
        });
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// Text tokens, Whisper's special tokens in order, then the 1501 timestamps.
fn vocabulary(size: usize) -> Vec<String> {
    let specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ];
    let text = size - specials.len() - 1501;
    (0..text)
        .map(|i| format!("w{i}"))
        .chain(specials.iter().map(|s| (*s).to_owned()))
        .chain((0..1501).map(|i| format!("<|{:.2}|>", i as f64 * 0.02)))
        .collect()
}

const VOCAB: u32 = 1600;

fn whisper_vars(n_mels: u32) -> Vec<Var> {
    vec![
        var("encoder/conv1/weight", &[8, n_mels, 3]),
        var("encoder/layer_0/ffn/linear_0/weight", &[2, 8]),
        var("decoder/embeddings/weight", &[VOCAB, 8]),
        var("decoder/layer_0/ffn/linear_0/weight", &[2, 8]),
    ]
}

/// A Whisper directory that validates: 8-wide, one layer each side, 8 heads (the default).
fn whisper_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("config.json"),
        r#"{"suppress_ids": [1, 2], "suppress_ids_begin": [0], "lang_ids": [],
            "alignment_heads": [[0, 0], [0, 7]]}"#,
    )
    .unwrap();
    fs::write(
        dir.join("vocabulary.txt"),
        vocabulary(VOCAB as usize).join("\n"),
    )
    .unwrap();
    fs::write(
        dir.join("tokenizer.json"),
        r#"{"model": {"vocab": {"w0": 0}}}"#,
    )
    .unwrap();
    fs::write(dir.join("model.bin"), model_bin(&whisper_vars(80))).unwrap();
}

/// A safetensors file of zero-filled float32 tensors.
fn safetensors(tensors: &[(String, Vec<u64>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape) in tensors {
        // Wrapping, as a naive reader computes it: a hostile shape can claim 0 bytes.
        let bytes = shape.iter().fold(4u64, |n, &d| n.wrapping_mul(d));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.resize(out.len() + offset as usize, 0);
    out
}

fn bert_tensors() -> Vec<(String, Vec<u64>)> {
    let mut t: Vec<(String, Vec<u64>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![30, 8]),
        ("embeddings.position_embeddings.weight".into(), vec![16, 8]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, 8]),
        ("embeddings.LayerNorm.weight".into(), vec![8]),
        ("embeddings.LayerNorm.bias".into(), vec![8]),
    ];
    let l = "encoder.layer.0";
    for part in ["query", "key", "value"] {
        t.push((format!("{l}.attention.self.{part}.weight"), vec![8, 8]));
        t.push((format!("{l}.attention.self.{part}.bias"), vec![8]));
    }
    for (name, shape) in [
        ("attention.output.dense.weight", vec![8, 8]),
        ("attention.output.dense.bias", vec![8]),
        ("attention.output.LayerNorm.weight", vec![8]),
        ("attention.output.LayerNorm.bias", vec![8]),
        ("intermediate.dense.weight", vec![16, 8]),
        ("intermediate.dense.bias", vec![16]),
        ("output.dense.weight", vec![8, 16]),
        ("output.dense.bias", vec![8]),
        ("output.LayerNorm.weight", vec![8]),
        ("output.LayerNorm.bias", vec![8]),
    ] {
        t.push((format!("{l}.{name}"), shape));
    }
    t
}

const BERT_CONFIG: &str = r#"{"architectures": ["BertModel"], "model_type": "bert",
    "hidden_size": 8, "num_hidden_layers": 1, "max_position_embeddings": 16, "vocab_size": 30,
    "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "type_vocab_size": 2, "initializer_range": 0.02,
    "layer_norm_eps": 1e-12, "pad_token_id": 0}"#;

/// A sentence-transformers BERT directory that validates: 8-wide, 2 heads, one layer.
fn embedding_dir(dir: &Path) {
    fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    fs::write(dir.join("config.json"), BERT_CONFIG).unwrap();
    fs::write(
        dir.join("tokenizer.json"),
        r#"{"model": {"type": "WordPiece", "unk_token": "[UNK]",
            "vocab": {"[PAD]": 0, "[UNK]": 1, "hello": 29}}}"#,
    )
    .unwrap();
    fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    fs::write(dir.join("model.safetensors"), safetensors(&bert_tensors())).unwrap();
}

/// Imports `dir` and expects a refusal whose message names `file` and says `what`.
fn assert_refused(store: &ModelStore, dir: &Path, file: &str, what: &str) -> ModelError {
    let err = store
        .import(dir, "hostile", "test")
        .expect_err(&format!("imported, but {file} is hostile ({what})"));
    let message = err.to_string();
    assert!(
        message.contains(file) && message.contains(what),
        "expected {file} and {what:?} in: {message}"
    );
    assert!(
        store.list().unwrap().is_empty(),
        "{file}: a refused model is listed"
    );
    err
}

fn config_with(key: &str, value: serde_json::Value) -> String {
    let mut config: serde_json::Value = serde_json::from_str(BERT_CONFIG).unwrap();
    config[key] = value;
    config.to_string()
}

#[test]
fn the_clean_fixtures_import() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::new(tmp.path().join("store"));
    whisper_dir(&tmp.path().join("w"));
    embedding_dir(&tmp.path().join("e"));
    store.import(&tmp.path().join("w"), "w", "test").unwrap();
    store.import(&tmp.path().join("e"), "e", "test").unwrap();
    assert_eq!(store.list().unwrap().len(), 2);
}

#[test]
fn hostile_whisper_models_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::new(tmp.path().join("store"));
    let dir = tmp.path().join("whisper");
    let fresh = || {
        let _ = fs::remove_dir_all(&dir);
        whisper_dir(&dir);
    };

    // A 65536^4 float32 tensor whose size wraps to 0 bytes.
    fresh();
    let mut vars = whisper_vars(80);
    vars.push(Var {
        name: "decoder/huge",
        shape: vec![65536; 4],
        dtype: 0,
        data: Some(Vec::new()),
    });
    fs::write(dir.join("model.bin"), model_bin(&vars)).unwrap();
    assert_refused(&store, &dir, "model.bin", "do not match shape");

    // A zero dimension.
    let mut vars = whisper_vars(80);
    vars.push(var("decoder/empty", &[0, 8]));
    fs::write(dir.join("model.bin"), model_bin(&vars)).unwrap();
    assert_refused(&store, &dir, "model.bin", "zero dimension");

    // Mel bins the log-mel cannot make (and that would size every feature buffer).
    for n_mels in [3, 65535] {
        fs::write(dir.join("model.bin"), model_bin(&whisper_vars(n_mels))).unwrap();
        assert_refused(&store, &dir, "model.bin", "mel bins");
    }

    // Token ids far outside the vocabulary: 2^40 used to size a table, u64::MAX to overflow.
    for id in ["1099511627776", "18446744073709551615"] {
        fresh();
        fs::write(
            dir.join("tokenizer.json"),
            format!(r#"{{"model": {{"vocab": {{"w0": 0, "w1": {id}}}}}}}"#),
        )
        .unwrap();
        assert_refused(&store, &dir, "tokenizer.json", "outside the vocabulary");
        // Without a vocabulary file beside it, the engine could not start at all.
        fs::remove_file(dir.join("vocabulary.txt")).unwrap();
        assert_refused(&store, &dir, "vocabulary.txt", "missing");
        let err = callpipe_transcribe::tokenizer::Tokenizer::load(&dir, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }

    // A special token the decoding loop needs is missing.
    fresh();
    let mut tokens = vocabulary(VOCAB as usize);
    tokens.retain(|t| t != "<|notimestamps|>");
    tokens.insert(0, "w-extra".into());
    fs::write(dir.join("vocabulary.txt"), tokens.join("\n")).unwrap();
    assert_refused(&store, &dir, "vocabulary.txt", "notimestamps");

    // A vocabulary larger than the model's embeddings: its ids would index past the logits.
    fs::write(
        dir.join("vocabulary.txt"),
        vocabulary(VOCAB as usize + 5).join("\n"),
    )
    .unwrap();
    assert_refused(&store, &dir, "vocabulary.txt", "rows");

    // Ids and indices in config.json that CTranslate2 uses unchecked.
    for (config, what) in [
        (
            r#"{"suppress_ids": [99999999], "alignment_heads": [[0, 0]]}"#,
            "suppress_ids",
        ),
        (
            r#"{"lang_ids": [-1], "alignment_heads": [[0, 0]]}"#,
            "lang_ids",
        ),
        (r#"{"alignment_heads": [[5, 0]]}"#, "alignment_heads"),
        (r#"{"alignment_heads": [[0, 8]]}"#, "alignment_heads"),
        (r#"{"suppress_ids": []}"#, "alignment_heads"),
        ("[1, 2, 3]", "not a JSON object"),
    ] {
        fresh();
        fs::write(dir.join("config.json"), config).unwrap();
        assert_refused(&store, &dir, "config.json", what);
    }

    // A preprocessor config that disagrees with the encoder.
    fresh();
    fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"feature_size": 128}"#,
    )
    .unwrap();
    assert_refused(&store, &dir, "preprocessor_config.json", "feature_size");
}

#[test]
fn hostile_embedding_models_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::new(tmp.path().join("store"));
    let dir = tmp.path().join("bert");
    let fresh = || {
        let _ = fs::remove_dir_all(&dir);
        embedding_dir(&dir);
    };

    for (key, value, what) in [
        ("num_attention_heads", serde_json::json!(0), "is 0"),
        (
            "num_attention_heads",
            serde_json::json!(3),
            "does not divide",
        ),
        ("hidden_size", serde_json::json!(0), "is 0"),
        ("vocab_size", serde_json::json!(-4), "vocab_size"),
        ("pad_token_id", serde_json::json!(30), "pad_token_id"),
        ("hidden_act", serde_json::json!("swish"), "hidden_act"),
    ] {
        fresh();
        fs::write(dir.join("config.json"), config_with(key, value)).unwrap();
        assert_refused(&store, &dir, "config.json", what);
    }

    // Pooling the embedder does not implement.
    fresh();
    fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    assert_refused(&store, &dir, "1_Pooling/config.json", "mean pooling");

    // A 2^32 x 2^32 tensor whose size wraps to 0 bytes.
    fresh();
    let mut tensors = bert_tensors();
    tensors.push(("huge".into(), vec![1 << 32, 1 << 32]));
    fs::write(dir.join("model.safetensors"), safetensors(&tensors)).unwrap();
    assert_refused(&store, &dir, "model.safetensors", "do not match shape");

    // A tensor BERT loads is missing, or of the wrong shape.
    let mut tensors = bert_tensors();
    tensors.retain(|(n, _)| n != "encoder.layer.0.output.dense.weight");
    fs::write(dir.join("model.safetensors"), safetensors(&tensors)).unwrap();
    assert_refused(&store, &dir, "model.safetensors", "output.dense.weight");
    let mut tensors = bert_tensors();
    tensors[0].1 = vec![31, 8];
    fs::write(dir.join("model.safetensors"), safetensors(&tensors)).unwrap();
    assert_refused(&store, &dir, "model.safetensors", "word_embeddings");

    // Token ids outside the embedding table.
    fresh();
    fs::write(
        dir.join("tokenizer.json"),
        r#"{"model": {"unk_token": "[UNK]", "vocab": {"[UNK]": 0, "far": 1099511627776}}}"#,
    )
    .unwrap();
    assert_refused(&store, &dir, "tokenizer.json", "outside");
}

#[cfg(unix)]
#[test]
fn links_inside_a_model_directory_are_refused_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::new(tmp.path().join("store"));
    let dir = tmp.path().join("whisper");
    whisper_dir(&dir);
    // Three links to `.` once made the copy recurse until it had 121 copies of model.bin.
    for name in ["a", "b", "c"] {
        std::os::unix::fs::symlink(".", dir.join(name)).unwrap();
    }
    assert_refused(&store, &dir, "whisper/a", "symbolic link");
    for name in ["a", "b", "c"] {
        fs::remove_file(dir.join(name)).unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    assert_refused(&store, &dir, "passwd", "symbolic link");
}

#[test]
fn corrupt_weights_are_refused_or_accepted_but_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("whisper");
    whisper_dir(&dir);
    let good = fs::read(dir.join("model.bin")).unwrap();
    // Every byte of the header and variable table, set to a few telling values.
    let header_end = good.len().min(400);
    for i in 0..header_end {
        for v in [0x00, 0xff, 0x80] {
            let mut bytes = good.clone();
            bytes[i] = v;
            fs::write(dir.join("model.bin"), &bytes).unwrap();
            if let Err(e) = callpipe_transcribe::model::validate_any(&dir) {
                assert!(e.to_string().contains("model.bin"), "byte {i} = {v}: {e}");
            }
        }
    }
}
