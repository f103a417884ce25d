//! The `callpipe` binary: command-line wiring only. Each subcommand lives in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    tune_allocator();
    let args = cli::Cli::parse();
    cli::init_tracing(args.verbose, args.log_format);
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

/// Keeps freed memory in the process instead of handing it back to the kernel.
///
/// The engine allocates and frees buffers of tens to hundreds of megabytes on every batch
/// (the encoder's attention scores alone are 54 MB per window). glibc serves any allocation
/// above 32 MB with a fresh `mmap` and unmaps it on free, so every batch page-faulted the same
/// memory in again: 6 of 33 CPU seconds went to the kernel on the transcription benchmark.
/// With `mmap` off for the heap, one arena, and no trimming, the memory is reused and the
/// kernel share drops to under 2%. Peak RSS stays what the largest batch needs; it is not
/// given back between batches. Set before any thread starts, so that every allocation sees it.
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; nothing has been allocated concurrently
    // yet, as no other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
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
