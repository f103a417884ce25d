//! The `callpipe` binary: command-line wiring only. Each subcommand lives in `cli/`.

mod cli;

use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    prefer_onednn();
    let args = cli::Cli::parse();
    cli::init_tracing(args.verbose);
    match cli::run(args) {
        Ok(code) => code,
        // `callpipe search … | head`: the reader had all it wanted, which is how a pipeline
        // ends, not a failure.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the engine run its CPU matrix products on oneDNN rather than Intel MKL, unless
/// `CT2_USE_MKL` is set.
///
/// The upstream CTranslate2 library carries both and picks MKL on Intel CPUs, and there MKL's
/// int8 GEMM (`gemm_s8u8s32`) dies with SIGFPE on the virtualised Xeons of the development and
/// CI machines; oneDNN is also what the from-source build links and what the benchmarks
/// measure. The library reads the variable in a static initializer, when it is loaded, before
/// `main` runs, so the process starts itself again with the variable set. That costs a few
/// milliseconds, once.
fn prefer_onednn() {
    if std::env::var_os("CT2_USE_MKL").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("CT2_USE_MKL", "0")
        .exec();
    // `exec` returns only when it failed; the engine then runs on its default kernels.
    eprintln!(
        "warning: could not restart {} with CT2_USE_MKL=0: {err}",
        exe.display()
    );
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| cause.downcast_ref::<serde_json::Error>()?.io_error_kind());
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}
