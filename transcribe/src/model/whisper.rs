//! Validation of a CTranslate2 Whisper directory.
//!
//! The rule is that a model that validates must load and decode: every number the engine will
//! trust (shapes, token ids, layer and head indices in `config.json`) is checked here against
//! the model itself, because CTranslate2 indexes with them unchecked, and a bad one is a crash
//! in the middle of a call rather than an error at import.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::ct2::{self, Ct2Header};
use super::{io, read_json, ModelError, ModelInfo};
use crate::mel::SUPPORTED_MEL_BINS;
use crate::tokenizer::{self, Tokenizer, MAX_TOKENS};

/// The newest Whisper spec revision the linked CTranslate2 reads.
const MAX_SPEC_REVISION: u32 = 3;
/// Decoder positions the engine may reach: its `max_length` (prompt plus output).
const DECODER_POSITIONS: u32 = 448;
/// Encoder positions of a 30 s window (3000 mel frames, halved by the second convolution).
const ENCODER_POSITIONS: u32 = 1500;
/// CTranslate2's default when a model does not store its head count.
const DEFAULT_HEADS: i64 = 8;
/// The English-only vocabulary's size; any other is multilingual.
const ENGLISH_VOCAB: u32 = 51864;

/// The numbers of the model's structure the rest of the checks need.
struct Structure {
    n_mels: u32,
    vocab_size: u32,
    decoder_layers: u64,
    decoder_heads: i64,
}

/// Checks a CTranslate2 Whisper directory and describes it.
pub fn validate(dir: &Path) -> Result<ModelInfo, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::Missing {
            path: dir.to_owned(),
            what: "model directory",
        });
    }
    let config_path = dir.join("config.json");
    let config = read_json(&config_path, "CTranslate2 config")?;

    let bin_path = dir.join("model.bin");
    let file = File::open(&bin_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: bin_path.clone(),
            what: "CTranslate2 weights",
        },
        _ => io(&bin_path)(e),
    })?;
    let len = file.metadata().map_err(io(&bin_path))?.len();
    let corrupt = |reason: String| ModelError::Corrupt {
        path: bin_path.clone(),
        reason,
    };
    let header = ct2::read_header(BufReader::new(file), len).map_err(corrupt)?;
    let structure = check_structure(&header).map_err(corrupt)?;
    check_config(&config, &structure).map_err(|reason| ModelError::Corrupt {
        path: config_path.clone(),
        reason,
    })?;

    let n_mels = structure.n_mels;
    let preprocessor = dir.join("preprocessor_config.json");
    if preprocessor.is_file() {
        let value = read_json(&preprocessor, "preprocessor config")?;
        if let Some(size) = value.get("feature_size") {
            if size.as_u64() != Some(n_mels as u64) {
                return Err(ModelError::Corrupt {
                    path: preprocessor,
                    reason: format!("feature_size {size} but the encoder takes {n_mels} mel bins"),
                });
            }
        }
    }
    // A Hugging Face config beside the CTranslate2 one may state the bin count too.
    if let Some(bins) = config.get("num_mel_bins") {
        if bins.as_u64() != Some(n_mels as u64) {
            return Err(ModelError::Corrupt {
                path: config_path,
                reason: format!("num_mel_bins {bins} but the encoder takes {n_mels} mel bins"),
            });
        }
    }

    // CTranslate2 reads only these two; without one the engine cannot start.
    let vocabulary = ["vocabulary.json", "vocabulary.txt"]
        .into_iter()
        .find(|name| dir.join(name).is_file())
        .ok_or_else(|| ModelError::Missing {
            path: dir.join("vocabulary.txt"),
            what: "CTranslate2 vocabulary (vocabulary.json or vocabulary.txt)",
        })?;
    let vocab_size = structure.vocab_size;
    let multilingual = vocab_size != ENGLISH_VOCAB;
    let tokens = Tokenizer::load(dir, multilingual)?;
    if tokens.len() != vocab_size as usize {
        return Err(ModelError::Corrupt {
            path: dir.join(vocabulary),
            reason: format!(
                "{} tokens, but the model's embeddings have {vocab_size} rows",
                tokens.len()
            ),
        });
    }
    let tokenizer_json = dir.join("tokenizer.json");
    if tokenizer_json.is_file() {
        tokenizer::check_tokenizer_json(&tokenizer_json, vocab_size as u64)?;
    }

    Ok(ModelInfo {
        spec: header.spec,
        spec_revision: header.spec_revision,
        n_mels,
        vocab_size,
        multilingual,
        tokenizer: vocabulary.to_owned(),
    })
}

/// The shapes and attributes of `model.bin` that the engine relies on.
fn check_structure(header: &Ct2Header) -> Result<Structure, String> {
    if !header.spec.contains("Whisper") {
        return Err(format!("spec `{}` is not a Whisper model", header.spec));
    }
    if header.spec_revision > MAX_SPEC_REVISION {
        return Err(format!(
            "spec revision {} is newer than this build reads ({MAX_SPEC_REVISION})",
            header.spec_revision
        ));
    }
    let var = |name: &str, rank: usize| -> Result<&[u32], String> {
        let shape = header
            .variables
            .get(name)
            .ok_or_else(|| format!("no {name} variable"))?;
        if shape.len() != rank {
            return Err(format!("{name} has shape {shape:?}, expected rank {rank}"));
        }
        Ok(shape)
    };
    let conv1 = var("encoder/conv1/weight", 3)?;
    let (d_model, n_mels) = (conv1[0], conv1[1]);
    if !SUPPORTED_MEL_BINS.contains(&(n_mels as usize)) {
        return Err(format!(
            "encoder/conv1/weight takes {n_mels} mel bins; Whisper models take 80 or 128"
        ));
    }
    let embeddings = var("decoder/embeddings/weight", 2)?;
    let vocab_size = embeddings[0];
    if vocab_size as usize > MAX_TOKENS {
        return Err(format!(
            "decoder/embeddings/weight has {vocab_size} rows, more than the {MAX_TOKENS} tokens \
             a vocabulary may hold"
        ));
    }
    if embeddings[1] != d_model {
        return Err(format!(
            "decoder/embeddings/weight is {}-wide but the encoder is {d_model}-wide",
            embeddings[1]
        ));
    }
    for (name, least) in [
        ("decoder/position_encodings/encodings", DECODER_POSITIONS),
        ("encoder/position_encodings/encodings", ENCODER_POSITIONS),
    ] {
        if let Some(shape) = header.variables.get(name) {
            if shape.len() != 2 || shape[0] < least || shape[1] != d_model {
                return Err(format!(
                    "{name} has shape {shape:?}, expected [{least} or more, {d_model}]"
                ));
            }
        }
    }
    let decoder_layers = layer_count(header, "decoder/layer_");
    if decoder_layers == 0 || layer_count(header, "encoder/layer_") == 0 {
        return Err("no encoder or decoder layers (encoder/layer_0, decoder/layer_0)".into());
    }
    let heads = |scope: &str| -> Result<i64, String> {
        let name = format!("{scope}/num_heads");
        let heads = header.scalars.get(&name).copied().unwrap_or(DEFAULT_HEADS);
        if heads <= 0 || d_model as i64 % heads != 0 {
            return Err(format!(
                "{name} is {heads}, which does not divide {d_model}"
            ));
        }
        Ok(heads)
    };
    heads("encoder")?;
    let decoder_heads = heads("decoder")?;
    let layers = decoder_layers as i64;
    if let Some(&layer) = header.scalars.get("decoder/alignment_layer") {
        if !(-layers..layers).contains(&layer) {
            return Err(format!(
                "decoder/alignment_layer is {layer}, the decoder has {layers} layers"
            ));
        }
    }
    if let Some(&n) = header.scalars.get("decoder/alignment_heads") {
        if !(0..=decoder_heads).contains(&n) {
            return Err(format!(
                "decoder/alignment_heads is {n}, the decoder has {decoder_heads} heads"
            ));
        }
    }
    Ok(Structure {
        n_mels,
        vocab_size,
        decoder_layers,
        decoder_heads,
    })
}

/// Layers CTranslate2 builds under `prefix`: `prefix0`, `prefix1`, ... up to the first gap.
fn layer_count(header: &Ct2Header, prefix: &str) -> u64 {
    let mut n = 0u64;
    while header
        .variables
        .range(format!("{prefix}{n}/")..)
        .next()
        .is_some_and(|(name, _)| name.starts_with(&format!("{prefix}{n}/")))
    {
        n += 1;
    }
    n
}

/// The ids and indices in CTranslate2's `config.json`, which the engine uses unchecked: token
/// lists index the logits, and alignment heads index the decoder's layers.
fn check_config(config: &serde_json::Value, s: &Structure) -> Result<(), String> {
    let config = config
        .as_object()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    for key in ["suppress_ids", "suppress_ids_begin", "lang_ids"] {
        let Some(value) = config.get(key) else {
            continue;
        };
        let ids = value
            .as_array()
            .ok_or_else(|| format!("`{key}` is not a list"))?;
        for id in ids {
            if id.as_u64().is_none_or(|id| id >= s.vocab_size as u64) {
                return Err(format!(
                    "`{key}` holds {id}, not a token id of the model (0 to {})",
                    s.vocab_size - 1
                ));
            }
        }
    }
    // Word timing (always on for windows that mix channels) needs the heads to align with.
    let heads = config
        .get("alignment_heads")
        .ok_or_else(|| "no `alignment_heads` (needed for word timestamps)".to_owned())?
        .as_array()
        .ok_or_else(|| "`alignment_heads` is not a list".to_owned())?;
    if heads.is_empty() {
        return Err("`alignment_heads` is empty".into());
    }
    for pair in heads {
        let indices = pair
            .as_array()
            .filter(|p| p.len() == 2)
            .and_then(|p| Some((p[0].as_u64()?, p[1].as_u64()?)));
        let in_range = indices
            .is_some_and(|(layer, head)| layer < s.decoder_layers && head < s.decoder_heads as u64);
        if !in_range {
            return Err(format!(
                "`alignment_heads` holds {pair}, not a [layer, head] of the decoder ({} layers, \
                 {} heads)",
                s.decoder_layers, s.decoder_heads
            ));
        }
    }
    Ok(())
}
