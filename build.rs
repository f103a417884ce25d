//! Sets the `callpipe` binary's rpath to the upstream CTranslate2 library that the transcribe
//! crate links (see transcribe/build.rs), so it runs without `LD_LIBRARY_PATH`. `$ORIGIN/../lib`
//! comes second, for an install that ships the library beside the binary (`bin/` + `lib/`).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_CALLPIPE_CT2_LIB_DIR");
    if let Some(dir) = std::env::var_os("DEP_CALLPIPE_CT2_LIB_DIR") {
        let dir = dir.to_string_lossy();
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}:$ORIGIN/../lib");
    }
}
