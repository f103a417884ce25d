//! Points the link at the upstream CTranslate2 library (feature `engine-upstream`).
//!
//! `scripts/install-engine.sh` unpacks the pinned PyPI wheel's `libctranslate2` into
//! `$CALLPIPE_CT2_LIB_DIR` (default `~/.cache/callpipe/ctranslate2/4.8.4`). This script adds
//! that directory to the link search path and to the rpath of this crate's test binaries, and
//! hands it to the crates that link the final binaries as `DEP_CALLPIPE_CT2_LIB_DIR` (a build
//! script's link arguments reach only its own package's binaries).
//!
//! The other half of the link lives in `.cargo/config.toml`: ct2rs 0.10.3 in `system` mode asks
//! for `cpu_features` and static cuBLAS (`cublas_static`, `cublasLt_static`, `culibos`) although
//! the upstream library already contains them, and rustc bundles a static library into ct2rs's
//! rlib while compiling ct2rs, before any other build script can add a search path. So the empty
//! archives in `link-stubs/` are put on `LIBRARY_PATH`, which ct2rs's own build script reads.

use std::env;
use std::path::PathBuf;

const CT2_VERSION: &str = "4.8.4";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CALLPIPE_CT2_LIB_DIR");
    let upstream = env::var_os("CARGO_FEATURE_ENGINE_UPSTREAM").is_some();
    let source = env::var_os("CARGO_FEATURE_ENGINE_SOURCE").is_some();
    match (upstream, source) {
        (true, true) => panic!(
            "features `engine-upstream` and `engine-source` are exclusive: build from source with \
             `--no-default-features --features engine-source`"
        ),
        (false, false) => panic!(
            "no engine library chosen: enable `engine-upstream` (the default) or `engine-source`"
        ),
        (false, true) => return,
        (true, false) => {}
    }

    let dir = match env::var_os("CALLPIPE_CT2_LIB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = env::var_os("HOME").expect("HOME is not set; set CALLPIPE_CT2_LIB_DIR");
            PathBuf::from(home).join(format!(".cache/callpipe/ctranslate2/{CT2_VERSION}"))
        }
    };
    let lib = dir.join("libctranslate2.so");
    println!("cargo:rerun-if-changed={}", lib.display());
    if !lib.exists() {
        panic!(
            "the CTranslate2 {CT2_VERSION} library is not at {}: run scripts/install-engine.sh \
             (or set CALLPIPE_CT2_LIB_DIR to where it is installed)",
            lib.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    println!("cargo:lib_dir={}", dir.display());
}
