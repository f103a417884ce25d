//! Helpers shared by the ingest integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use callpipe_common::config::IngestConfig;
use callpipe_ingest::FrontEndOptions;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn eval_dir() -> PathBuf {
    fixtures().join("eval")
}

pub fn manifest() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(eval_dir().join("manifest.json")).expect("eval manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

pub fn options() -> FrontEndOptions {
    FrontEndOptions::from_config(&IngestConfig::default())
}
