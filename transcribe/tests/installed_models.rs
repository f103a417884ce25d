//! The models `callpipe model install` puts in the store pass the import checks, and what
//! passes them loads: the checks are strict enough to refuse hostile files (see
//! `hostile_models.rs`) but must not refuse the real thing.
//!
//! Needs the default models installed (`callpipe model install`; scripts/test.sh does it).

use std::path::PathBuf;

use callpipe_common::config::TranscribeConfig;
use callpipe_transcribe::model::{self, ModelStore};
use callpipe_transcribe::Engine;

fn installed(name: &str) -> PathBuf {
    let store = ModelStore::new(ModelStore::default_root());
    store
        .verify(name)
        .unwrap_or_else(|e| panic!("{name} is needed: run `callpipe model install` ({e})"));
    store.path_of(name).unwrap()
}

#[test]
fn the_installed_whisper_model_validates_and_loads() {
    let dir = installed("whisper-tiny.en");
    let info = model::validate(&dir).unwrap();
    assert_eq!((info.n_mels, info.vocab_size), (80, 51864));
    assert_eq!(info.tokenizer, "vocabulary.txt");
    let engine = Engine::load(&dir, &TranscribeConfig::default(), 1).unwrap();
    assert_eq!(engine.info(), &info);
}

#[test]
fn the_installed_embedding_model_validates() {
    let dir = installed("all-minilm-l6-v2");
    let info = model::validate_embedding(&dir).unwrap();
    assert_eq!((info.dim, info.num_hidden_layers), (384, 6));
    assert_eq!(info.pooling, "mean");
}
