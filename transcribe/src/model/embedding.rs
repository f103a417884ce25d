//! Validation of a sentence-transformers BERT directory (the text-embedding model).
//!
//! The checks follow what the embedder's loader (`index::embed::minilm`, candle's BERT) needs,
//! so that a model that imports also loads: the config fields candle's `Config` requires, with
//! every size > 0 and the heads dividing the width; every tensor BERT loads, of its exact
//! shape; token ids within the embedding table; and plain mean pooling, the only pooling the
//! embedder implements.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::safetensors::{self, TensorEntry};
use super::{io, read_json, EmbeddingInfo, ModelError};

/// Activations candle's BERT implements (its `HiddenAct`, lower-cased).
const ACTIVATIONS: [&str; 3] = ["gelu", "geluapproximate", "relu"];
/// Dtypes the loader reads and converts to f32 for the weights.
const FLOAT_DTYPES: [&str; 4] = ["F32", "F16", "BF16", "F64"];
/// Dtypes candle can load at all; any other tensor in the file makes the whole load fail.
const LOADABLE_DTYPES: [&str; 11] = [
    "U8", "U16", "U32", "I16", "I32", "I64", "BF16", "F16", "F32", "F64", "F8_E4M3",
];
/// `[CLS]`, `[SEP]` and one word piece: the shortest input worth embedding.
const MIN_SEQ_LENGTH: u64 = 3;

/// The config sizes the tensors are checked against.
struct Sizes {
    vocab: u64,
    hidden: u64,
    layers: u64,
    intermediate: u64,
    positions: u64,
    type_vocab: u64,
}

/// Checks a sentence-transformers BERT directory (`config.json`, `tokenizer.json`,
/// `model.safetensors`, optional `1_Pooling/config.json` and `sentence_bert_config.json`) and
/// describes it. Every tensor's bytes are checked to be in the file, so a truncated download is
/// refused, naming the file.
pub fn validate_embedding(dir: &Path) -> Result<EmbeddingInfo, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::Missing {
            path: dir.to_owned(),
            what: "model directory",
        });
    }
    let config_path = dir.join("config.json");
    let config = read_json(&config_path, "model config")?;
    let corrupt_config = |reason: String| ModelError::Corrupt {
        path: config_path.clone(),
        reason,
    };
    let model_type = config.get("model_type").and_then(|v| v.as_str());
    let first_architecture = config
        .get("architectures")
        .and_then(|v| v.as_array())
        .and_then(|a| a.first())
        .and_then(|v| v.as_str());
    let architecture = match (model_type, first_architecture) {
        (Some(t), _) if t == "bert" => t.to_owned(),
        (None, Some(a)) if a.contains("Bert") => a.to_owned(),
        (t, a) => {
            return Err(corrupt_config(format!(
                "not a BERT model (model_type {t:?}, architectures {a:?})"
            )))
        }
    };
    let sizes = check_config(&config).map_err(corrupt_config)?;
    let as_u32 = |key: &str, v: u64| {
        u32::try_from(v).map_err(|_| corrupt_config(format!("`{key}` {v} is too large")))
    };
    let dim = as_u32("hidden_size", sizes.hidden)?;
    let num_hidden_layers = as_u32("num_hidden_layers", sizes.layers)?;
    let max_position_embeddings = as_u32("max_position_embeddings", sizes.positions)?;

    let tokenizer = dir.join("tokenizer.json");
    check_tokenizer(&tokenizer, sizes.vocab)?;

    let weights = dir.join("model.safetensors");
    let file = File::open(&weights).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: weights.clone(),
            what: "safetensors weights",
        },
        _ => io(&weights)(e),
    })?;
    let len = file.metadata().map_err(io(&weights))?.len();
    let corrupt_weights = |reason: String| ModelError::Corrupt {
        path: weights.clone(),
        reason,
    };
    let tensors = safetensors::read_header(BufReader::new(file), len).map_err(corrupt_weights)?;
    check_tensors(&tensors, model_type, &sizes).map_err(corrupt_weights)?;

    let pooling_path = dir.join("1_Pooling").join("config.json");
    if pooling_path.is_file() {
        check_pooling(&pooling_path, sizes.hidden)?;
    }
    let st_config = dir.join("sentence_bert_config.json");
    if st_config.is_file() {
        let value = read_json(&st_config, "sentence-transformers config")?;
        if let Some(n) = value.get("max_seq_length") {
            if n.as_u64().is_none_or(|n| n < MIN_SEQ_LENGTH) {
                return Err(ModelError::Corrupt {
                    path: st_config,
                    reason: format!(
                        "max_seq_length {n} is not a length of {MIN_SEQ_LENGTH} or more"
                    ),
                });
            }
        }
    }

    Ok(EmbeddingInfo {
        architecture,
        dim,
        num_hidden_layers,
        max_position_embeddings,
        // The only pooling the embedder implements, and what sentence-transformers assumes
        // for a plain BERT directory without a pooling config.
        pooling: "mean".to_owned(),
    })
}

/// The fields candle's BERT `Config` requires, with the sizes > 0 and consistent.
fn check_config(config: &serde_json::Value) -> Result<Sizes, String> {
    let size = |key: &str| -> Result<u64, String> {
        match config.get(key).and_then(|v| v.as_u64()) {
            Some(n) if n > 0 => Ok(n),
            Some(_) => Err(format!("`{key}` is 0")),
            None => Err(format!("no `{key}` (a positive integer)")),
        }
    };
    let sizes = Sizes {
        vocab: size("vocab_size")?,
        hidden: size("hidden_size")?,
        layers: size("num_hidden_layers")?,
        intermediate: size("intermediate_size")?,
        positions: size("max_position_embeddings")?,
        type_vocab: size("type_vocab_size")?,
    };
    let heads = size("num_attention_heads")?;
    if !sizes.hidden.is_multiple_of(heads) {
        return Err(format!(
            "num_attention_heads {heads} does not divide hidden_size {}",
            sizes.hidden
        ));
    }
    // Each layer is a handful of tensors; far more layers than any BERT is a corrupt count.
    if sizes.layers > 1000 {
        return Err(format!("implausible num_hidden_layers {}", sizes.layers));
    }
    match config.get("pad_token_id").and_then(|v| v.as_u64()) {
        Some(id) if id < sizes.vocab => {}
        _ => {
            return Err(format!(
                "`pad_token_id` must be a token id below vocab_size {}",
                sizes.vocab
            ))
        }
    }
    for key in ["hidden_dropout_prob", "initializer_range", "layer_norm_eps"] {
        if !config.get(key).is_some_and(|v| v.is_number()) {
            return Err(format!("no `{key}` (a number)"));
        }
    }
    let act = config.get("hidden_act").and_then(|v| v.as_str());
    if !act.is_some_and(|a| ACTIVATIONS.contains(&a)) {
        return Err(format!(
            "hidden_act {act:?} is not one the embedder implements ({})",
            ACTIVATIONS.join(", ")
        ));
    }
    if let Some(kind) = config.get("position_embedding_type") {
        if kind.as_str() != Some("absolute") {
            return Err(format!(
                "position_embedding_type {kind} is not `absolute`, the only one the embedder \
                 implements"
            ));
        }
    }
    Ok(sizes)
}

/// Every tensor candle's BERT loads, of its exact shape, under the prefix it will find them.
fn check_tensors(
    tensors: &std::collections::BTreeMap<String, TensorEntry>,
    model_type: Option<&str>,
    s: &Sizes,
) -> Result<(), String> {
    if let Some((name, t)) = tensors
        .iter()
        .find(|(_, t)| !LOADABLE_DTYPES.contains(&t.dtype.as_str()))
    {
        return Err(format!(
            "tensor {name} is {}, a dtype the embedder cannot load",
            t.dtype
        ));
    }
    // candle tries the bare names first, then `{model_type}.`.
    let word = "embeddings.word_embeddings.weight";
    let prefix = match model_type {
        Some(t) if !tensors.contains_key(word) && tensors.contains_key(&format!("{t}.{word}")) => {
            format!("{t}.")
        }
        _ => String::new(),
    };
    let (h, i) = (s.hidden, s.intermediate);
    let mut expected: Vec<(String, Vec<u64>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![s.vocab, h]),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![s.positions, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![s.type_vocab, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for layer in 0..s.layers {
        let l = format!("encoder.layer.{layer}");
        for part in ["query", "key", "value"] {
            expected.push((format!("{l}.attention.self.{part}.weight"), vec![h, h]));
            expected.push((format!("{l}.attention.self.{part}.bias"), vec![h]));
        }
        expected.extend([
            (format!("{l}.attention.output.dense.weight"), vec![h, h]),
            (format!("{l}.attention.output.dense.bias"), vec![h]),
            (format!("{l}.attention.output.LayerNorm.weight"), vec![h]),
            (format!("{l}.attention.output.LayerNorm.bias"), vec![h]),
            (format!("{l}.intermediate.dense.weight"), vec![i, h]),
            (format!("{l}.intermediate.dense.bias"), vec![i]),
            (format!("{l}.output.dense.weight"), vec![h, i]),
            (format!("{l}.output.dense.bias"), vec![h]),
            (format!("{l}.output.LayerNorm.weight"), vec![h]),
            (format!("{l}.output.LayerNorm.bias"), vec![h]),
        ]);
    }
    for (name, shape) in expected {
        let name = format!("{prefix}{name}");
        let t = tensors
            .get(&name)
            .ok_or_else(|| format!("no {name} tensor"))?;
        if t.shape != shape {
            return Err(format!(
                "tensor {name} has shape {:?}, but config.json implies {shape:?}",
                t.shape
            ));
        }
        if !FLOAT_DTYPES.contains(&t.dtype.as_str()) {
            return Err(format!("tensor {name} is {}, not a float dtype", t.dtype));
        }
    }
    Ok(())
}

/// The tokenizer's ids must all be rows of the embedding table, and its unknown-word token one
/// of its words.
fn check_tokenizer(path: &Path, vocab_size: u64) -> Result<(), ModelError> {
    let value = read_json(path, "tokenizer")?;
    let corrupt = |reason: String| ModelError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    // `model.vocab` and `added_tokens`, as the Whisper tokenizer's are checked.
    crate::tokenizer::tokenizer_json_entries(path, &value, vocab_size)?;
    if let Some(pad) = value.pointer("/padding/pad_id") {
        if pad.as_u64().is_none_or(|id| id >= vocab_size) {
            return Err(corrupt(format!(
                "padding.pad_id is {pad}, outside the model's {vocab_size} embeddings"
            )));
        }
    }
    let model = value
        .get("model")
        .ok_or_else(|| corrupt("no `model` section".into()))?;
    let vocab = model
        .get("vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| corrupt("no model.vocab table".into()))?;
    if let Some(unk) = model.get("unk_token").and_then(|v| v.as_str()) {
        if !vocab.contains_key(unk) {
            return Err(corrupt(format!(
                "the unknown-word token {unk:?} is not in the vocabulary"
            )));
        }
    }
    Ok(())
}

/// sentence-transformers' pooling module: the embedder implements plain mean pooling only, of
/// vectors of the model's width.
fn check_pooling(path: &Path, hidden: u64) -> Result<(), ModelError> {
    let value = read_json(path, "pooling config")?;
    let corrupt = |reason: String| ModelError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let flag = |key: &str| value.get(key).and_then(|v| v.as_bool()) == Some(true);
    let others = [
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ];
    if !flag("pooling_mode_mean_tokens") || others.iter().any(|k| flag(k)) {
        return Err(corrupt(
            "pooling is not plain mean pooling (pooling_mode_mean_tokens alone), the only one \
             the embedder implements"
                .into(),
        ));
    }
    if let Some(width) = value.get("word_embedding_dimension") {
        if width.as_u64() != Some(hidden) {
            return Err(corrupt(format!(
                "word_embedding_dimension {width} but the model's hidden_size is {hidden}"
            )));
        }
    }
    Ok(())
}
