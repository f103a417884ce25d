//! Benchmarks for callpipe.
//!
//! - `benches/frontend.rs`: criterion benches of the audio front end (decode, resample, VAD).
//! - `compare_frontend.sh` / `compare_frontend.py`: the front end side by side with its peers,
//!   faster-whisper's front end (PyAV decode + Silero VAD) and ffmpeg, on the same call-length
//!   files and one core, reported as ratios.
//! - `benches/embed.rs`: criterion bench of MiniLM text embeddings (1000 call-transcript
//!   sentences, 1 and 2 threads).
