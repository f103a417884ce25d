//! Benchmarks for callpipe.
//!
//! - `benches/frontend.rs`: criterion benches of the audio front end (decode, resample, VAD).
//! - `compare_frontend.sh` / `compare_frontend.py`: the front end side by side with its peers,
//!   faster-whisper's front end (PyAV decode + Silero VAD) and ffmpeg, on the same call-length
//!   files and one core, reported as ratios.
//! - `benches/search.rs`: hybrid search latency (p50/p95/p99) over 100k synthetic segments.
//! - `benches/embed.rs`: criterion bench of MiniLM text embeddings (1000 call-transcript
//!   sentences, 1 and 2 threads).

/// Where `callpipe model install` put the model `name`: `$CALLPIPE_MODEL_DIR`, else
/// `$XDG_CACHE_HOME/callpipe/models`, else `~/.cache/callpipe/models`.
pub fn model_dir(name: &str) -> std::path::PathBuf {
    use std::path::PathBuf;
    let root = match std::env::var_os("CALLPIPE_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("callpipe")
            .join("models"),
    };
    root.join(name)
}
