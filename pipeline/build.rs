//! Sets the rpath of this crate's test binaries to the upstream CTranslate2 library that the
//! transcribe crate links (see transcribe/build.rs), as the root build.rs does for `callpipe`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_CALLPIPE_CT2_LIB_DIR");
    if let Some(dir) = std::env::var_os("DEP_CALLPIPE_CT2_LIB_DIR") {
        let dir = dir.to_string_lossy();
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
