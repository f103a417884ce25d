//! all-MiniLM-L6-v2 on the CPU: WordPiece with the `tokenizers` crate, BERT with candle, mean
//! pooling and L2 normalisation, matching what sentence-transformers computes.
//!
//! The model directory is the sentence-transformers layout (what `callpipe model install`
//! unpacks, and what the Hugging Face repo `sentence-transformers/all-MiniLM-L6-v2` holds):
//! `config.json`, `tokenizer.json`, `model.safetensors`, and optionally `1_Pooling/config.json`
//! and `sentence_bert_config.json`.
//!
//! # Padding
//! The packaged `tokenizer.json` pads every input to a fixed 128 tokens and truncates at 128.
//! Both are overridden: inputs are padded to the longest in their sub-batch
//! ([`PaddingStrategy::BatchLongest`]) and truncated at the model's `max_seq_length`. Padding
//! positions are masked out of attention and out of the mean, so a text's vector does not
//! depend on what it was batched with.
//!
//! # Threads
//! candle 0.9 runs all its CPU parallelism (gemm's split of each matrix product, its
//! row-parallel kernels) and `tokenizers` its batch encoding on the *current* rayon pool.
//! [`MiniLm`] owns a pool of exactly `threads` workers and runs every
//! [`embed`](Embedder::embed) inside it, so embedding never uses rayon's global pool (one thread
//! per core) and never uses more than `threads` cores, leaving the rest to the Whisper replicas.
//! gemm decides how many pieces to cut a product into from `RAYON_NUM_THREADS` or the core
//! count, not from the pool; with a smaller pool the extra pieces simply queue on it. Rayon's
//! idle workers spin briefly and then sleep, so an idle embedder costs no CPU.
//!
//! Measured on 2 cores (1000 call sentences of 5–25 words, `benches/benches/embed.rs`): about
//! 120 sentences/s on 1 thread and 165 on 2. Much of a forward pass at these lengths is small
//! products below gemm's threading threshold and sequential elementwise work, so a second
//! thread adds ~40%; one thread per embedder, beside the Whisper replicas, is the better use of
//! a core.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::utils::padding::{pad_encodings, PaddingParams, PaddingStrategy};
use tokenizers::utils::truncation::TruncationParams;
use tokenizers::{Encoding, Tokenizer};

use super::{EmbedError, Embedder};

/// Texts per forward pass. Larger batches amortise the matrix products better but pad more;
/// sorting by length (see [`MiniLm::embed`]) keeps the padding small at this size.
const BATCH: usize = 32;

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2, used when the directory has no
/// `sentence_bert_config.json`. It counts tokens including `[CLS]` and `[SEP]`, as
/// sentence-transformers does, so at most 254 word pieces of text are embedded; the rest of a
/// longer text is ignored, exactly as in Python.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// all-MiniLM-L6-v2 (or any BERT sentence-transformers model with mean pooling), ready to run.
pub struct MiniLm {
    name: String,
    dim: usize,
    max_tokens: usize,
    model: BertModel,
    tokenizer: Tokenizer,
    /// `PAD` id and token from `tokenizer.json`, with the strategy switched to longest-in-batch.
    padding: PaddingParams,
    pool: rayon::ThreadPool,
}

impl fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniLm")
            .field("name", &self.name)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .field("threads", &self.pool.current_num_threads())
            .finish_non_exhaustive()
    }
}

impl MiniLm {
    /// Loads the model in `dir`, to be recorded as `name`, running on `threads` threads (`0`:
    /// one per available core).
    ///
    /// Checks what would otherwise give silently wrong vectors: the architecture must be BERT,
    /// and a `1_Pooling/config.json`, if present, must ask for mean pooling of vectors of the
    /// model's width.
    pub fn load(dir: &Path, name: &str, threads: usize) -> Result<MiniLm, EmbedError> {
        let config_path = dir.join("config.json");
        let config_value = read_json(&config_path, "model config")?;
        let corrupt_config = |reason: String| EmbedError::Corrupt {
            path: config_path.clone(),
            reason,
        };
        let is_bert = config_value.get("model_type").and_then(|v| v.as_str()) == Some("bert")
            || config_value
                .get("architectures")
                .and_then(|v| v.as_array())
                .is_some_and(|a| {
                    a.iter()
                        .any(|s| s.as_str().is_some_and(|s| s.contains("Bert")))
                });
        if !is_bert {
            return Err(corrupt_config(
                "not a BERT model (model_type is not `bert`)".into(),
            ));
        }
        let config: BertConfig = serde_json::from_value(config_value)
            .map_err(|e| corrupt_config(format!("not a BERT config: {e}")))?;
        check_sizes(&config).map_err(corrupt_config)?;
        let dim = config.hidden_size;

        let pooling_path = dir.join("1_Pooling").join("config.json");
        if pooling_path.is_file() {
            check_pooling(&pooling_path, dim)?;
        }

        let mut max_tokens = DEFAULT_MAX_TOKENS;
        let st_config = dir.join("sentence_bert_config.json");
        if st_config.is_file() {
            if let Some(n) =
                read_json(&st_config, "sentence-transformers config")?.get("max_seq_length")
            {
                // Room for [CLS], [SEP] and one word piece; truncating shorter cannot work.
                max_tokens = n
                    .as_u64()
                    .filter(|&n| n >= 3)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| EmbedError::Corrupt {
                        path: st_config.clone(),
                        reason: format!("max_seq_length {n} is not a length of 3 or more"),
                    })?;
            }
        }
        max_tokens = max_tokens.min(config.max_position_embeddings);

        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(EmbedError::Missing {
                path: tokenizer_path,
                what: "tokenizer",
            });
        }
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| EmbedError::Corrupt {
                path: tokenizer_path.clone(),
                reason: e.to_string(),
            })?;
        // The packaged padding (fixed at 128) would change every vector: keep its PAD id and
        // token, pad each sub-batch to its longest text ourselves.
        let padding = PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..tokenizer.get_padding().cloned().unwrap_or_default()
        };
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| EmbedError::Corrupt {
                path: tokenizer_path.clone(),
                reason: e.to_string(),
            })?;

        let weights_path = dir.join("model.safetensors");
        if !weights_path.is_file() {
            return Err(EmbedError::Missing {
                path: weights_path,
                what: "safetensors weights",
            });
        }
        let corrupt_weights = |e: candle_core::Error| EmbedError::Corrupt {
            path: weights_path.clone(),
            reason: e.to_string(),
        };
        let device = Device::Cpu;
        let tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load(&weights_path, &device).map_err(corrupt_weights)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(corrupt_weights)?;

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("callpipe-embed-{i}"))
            .build()
            .map_err(|e| EmbedError::Inference(format!("could not start threads: {e}")))?;
        tracing::debug!(
            model = name,
            dim,
            max_tokens,
            threads = pool.current_num_threads(),
            "embedding model loaded"
        );
        Ok(MiniLm {
            name: name.to_owned(),
            dim,
            max_tokens,
            model,
            tokenizer,
            padding,
            pool,
        })
    }

    /// Tokens a text is cut to, `[CLS]` and `[SEP]` included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Threads [`embed`](Embedder::embed) runs on.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Tokenizes everything, then runs sub-batches of [`BATCH`] texts of similar length, so a
    /// long text does not make the short ones beside it pay for its padding.
    fn embed_all(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| EmbedError::Inference(format!("tokenizer: {e}")))?;
        for encoding in &mut encodings {
            // What truncation cut off; never embedded.
            encoding.take_overflowing();
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());

        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            let mut batch: Vec<Encoding> = chunk.iter().map(|&i| encodings[i].clone()).collect();
            pad_encodings(&mut batch, &self.padding)
                .map_err(|e| EmbedError::Inference(format!("padding: {e}")))?;
            for (vector, &i) in self.forward(&batch)?.into_iter().zip(chunk) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    /// One forward pass over equally long encodings: BERT, then the mean of the last hidden
    /// state over the real tokens, then L2 normalisation.
    fn forward(&self, batch: &[Encoding]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inference = |e: candle_core::Error| EmbedError::Inference(e.to_string());
        let rows = batch.len();
        let len = batch[0].len();
        let mut ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for encoding in batch {
            ids.extend_from_slice(encoding.get_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        let device = &self.model.device;
        let ids_t = Tensor::from_vec(ids, (rows, len), device).map_err(inference)?;
        let mask_t = Tensor::from_vec(mask.clone(), (rows, len), device).map_err(inference)?;
        let type_ids = ids_t.zeros_like().map_err(inference)?;
        let hidden = self
            .model
            .forward(&ids_t, &type_ids, Some(&mask_t))
            .map_err(inference)?;
        let hidden: Vec<f32> = hidden
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(inference)?;

        let dim = self.dim;
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let mut sum = vec![0f64; dim];
            let mut count = 0f64;
            for pos in 0..len {
                if mask[row * len + pos] == 0 {
                    continue;
                }
                count += 1.0;
                let offset = (row * len + pos) * dim;
                for (s, &h) in sum.iter_mut().zip(&hidden[offset..offset + dim]) {
                    *s += h as f64;
                }
            }
            // As sentence-transformers: the count is clamped at 1e-9, the norm at 1e-12.
            let count = count.max(1e-9);
            let norm = sum.iter().map(|s| (s / count).powi(2)).sum::<f64>().sqrt();
            let scale = 1.0 / (count * norm.max(1e-12));
            out.push(sum.iter().map(|s| (s * scale) as f32).collect());
        }
        Ok(out)
    }
}

impl Embedder for MiniLm {
    fn model(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// Runs on the embedder's own thread pool; the calling thread blocks until it is done.
    /// An empty text is embedded as `[CLS] [SEP]`, as sentence-transformers does.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.pool.install(|| self.embed_all(texts))
    }
}

/// The sizes candle's BERT divides by or allocates from: each must be > 0, and the heads must
/// divide the width (candle computes `hidden_size / num_attention_heads` unchecked).
fn check_sizes(config: &BertConfig) -> Result<(), String> {
    for (key, value) in [
        ("vocab_size", config.vocab_size),
        ("hidden_size", config.hidden_size),
        ("num_hidden_layers", config.num_hidden_layers),
        ("num_attention_heads", config.num_attention_heads),
        ("intermediate_size", config.intermediate_size),
        ("max_position_embeddings", config.max_position_embeddings),
        ("type_vocab_size", config.type_vocab_size),
    ] {
        if value == 0 {
            return Err(format!("`{key}` is 0"));
        }
    }
    if !config
        .hidden_size
        .is_multiple_of(config.num_attention_heads)
    {
        return Err(format!(
            "num_attention_heads {} does not divide hidden_size {}",
            config.num_attention_heads, config.hidden_size
        ));
    }
    if config.pad_token_id >= config.vocab_size {
        return Err(format!(
            "pad_token_id {} is not below vocab_size {}",
            config.pad_token_id, config.vocab_size
        ));
    }
    Ok(())
}

/// sentence-transformers' pooling module: only mean pooling is implemented, so anything else
/// is refused instead of producing vectors the rest of the world would not recognise.
fn check_pooling(path: &Path, dim: usize) -> Result<(), EmbedError> {
    let value = read_json(path, "pooling config")?;
    let flag = |key: &str| value.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    let corrupt = |reason: String| EmbedError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let others = [
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ];
    if !flag("pooling_mode_mean_tokens") || others.iter().any(|k| flag(k)) {
        return Err(corrupt(
            "pooling is not plain mean pooling (pooling_mode_mean_tokens alone)".into(),
        ));
    }
    if let Some(width) = value
        .get("word_embedding_dimension")
        .and_then(|v| v.as_u64())
    {
        if width as usize != dim {
            return Err(corrupt(format!(
                "word_embedding_dimension {width} but the model's hidden_size is {dim}"
            )));
        }
    }
    Ok(())
}

fn read_json(path: &Path, what: &'static str) -> Result<serde_json::Value, EmbedError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => EmbedError::Missing {
            path: path.to_owned(),
            what,
        },
        _ => EmbedError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    })?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::Corrupt {
        path: path.to_owned(),
        reason: format!("not JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_other_than_mean_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.json");
        std::fs::write(
            &path,
            br#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true,
                "pooling_mode_mean_tokens": false}"#,
        )
        .unwrap();
        let err = check_pooling(&path, 384).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("mean"), "{err}");

        std::fs::write(
            &path,
            br#"{"word_embedding_dimension": 768, "pooling_mode_mean_tokens": true}"#,
        )
        .unwrap();
        let err = check_pooling(&path, 384).unwrap_err().to_string();
        assert!(err.contains("768"), "{err}");

        std::fs::write(
            &path,
            br#"{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}"#,
        )
        .unwrap();
        check_pooling(&path, 384).unwrap();
    }

    #[test]
    fn zero_or_inconsistent_sizes_are_refused_naming_config_json() {
        let tmp = tempfile::tempdir().unwrap();
        let config = |heads: u32, hidden: u32| {
            format!(
                r#"{{"model_type": "bert", "vocab_size": 30, "hidden_size": {hidden},
                "num_hidden_layers": 1, "num_attention_heads": {heads}, "intermediate_size": 16,
                "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "max_position_embeddings": 16,
                "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
                "pad_token_id": 0}}"#
            )
        };
        for (heads, hidden, expect) in [(0, 8, "is 0"), (3, 8, "does not divide"), (2, 0, "is 0")] {
            std::fs::write(tmp.path().join("config.json"), config(heads, hidden)).unwrap();
            let err = MiniLm::load(tmp.path(), "x", 1).unwrap_err().to_string();
            assert!(err.contains("config.json") && err.contains(expect), "{err}");
        }
    }

    #[test]
    fn a_missing_model_directory_names_config_json() {
        let err = MiniLm::load(Path::new("/nonexistent/minilm"), "x", 1).unwrap_err();
        assert!(matches!(err, EmbedError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
