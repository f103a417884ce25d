//! What the front end keeps of a call: only the audio its speech segments need, sample for
//! sample as decoded, and never more than the call's memory budget.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use callpipe_common::ErrorKind;
use callpipe_ingest::frontend::segment_samples;
use callpipe_ingest::{process_bytes, process_file, CallAudio, FrontEndOptions, IngestError};

use common::options;

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

/// The stereo 8 kHz mu-law calls in `samples/`.
fn sample_calls() -> Vec<PathBuf> {
    let mut calls: Vec<PathBuf> = std::fs::read_dir(samples_dir())
        .expect("samples folder")
        .map(|e| e.expect("samples entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    calls.sort();
    assert!(calls.len() >= 4, "{calls:?}");
    calls
}

fn keeping() -> FrontEndOptions {
    let mut opts = options();
    opts.keep_audio = true;
    opts
}

/// A 16-bit PCM stereo 8 kHz WAV of `seconds` of near-silence (about -80 dBFS of noise,
/// different on each channel, as a quiet line carries).
fn quiet_wav(path: &Path, seconds: u32) {
    let rate = 8000u32;
    let frames = rate * seconds;
    let data_bytes = frames * 4;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(b"RIFF").unwrap();
    out.write_all(&(36 + data_bytes).to_le_bytes()).unwrap();
    out.write_all(b"WAVEfmt ").unwrap();
    out.write_all(&16u32.to_le_bytes()).unwrap();
    out.write_all(&1u16.to_le_bytes()).unwrap(); // PCM
    out.write_all(&2u16.to_le_bytes()).unwrap(); // stereo
    out.write_all(&rate.to_le_bytes()).unwrap();
    out.write_all(&(rate * 4).to_le_bytes()).unwrap();
    out.write_all(&4u16.to_le_bytes()).unwrap();
    out.write_all(&16u16.to_le_bytes()).unwrap();
    out.write_all(b"data").unwrap();
    out.write_all(&data_bytes.to_le_bytes()).unwrap();
    // One second of noise, repeated: cheap to make, and never digital silence.
    let mut state = 0x2545_f491u32;
    let second: Vec<u8> = (0..rate * 2)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            ((state % 7) as i16 - 3).to_le_bytes()
        })
        .collect();
    for _ in 0..seconds {
        out.write_all(&second).unwrap();
    }
    out.flush().unwrap();
}

fn assert_keeps_nothing(call: &CallAudio, seconds: f64) {
    assert!(
        (call.duration_s - seconds).abs() < 1e-6,
        "{}",
        call.duration_s
    );
    assert_eq!(call.channels.len(), 2);
    for ch in &call.channels {
        assert_eq!(ch.total_samples, (seconds * 16_000.0) as usize);
        assert!(ch.segments.is_empty(), "{:?}", ch.segments);
        assert_eq!(ch.kept_samples(), 0, "channel {}", ch.channel);
        assert!(ch.spans.is_empty());
    }
}

#[test]
fn an_hour_of_quiet_stereo_keeps_no_audio() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quiet-1h.wav");
    quiet_wav(&path, 3600);
    let call = process_file(&path, &keeping()).unwrap();
    assert_keeps_nothing(&call, 3600.0);

    // Held in memory, only the encoded bytes count: a budget just above them is enough.
    let bytes = std::fs::read(&path).unwrap();
    let mut opts = keeping();
    opts.max_call_bytes = bytes.len() as u64 + (1 << 20);
    let call = process_bytes(&path, bytes, &opts).unwrap();
    assert_keeps_nothing(&call, 3600.0);
}

fn assert_over_budget(result: Result<CallAudio, IngestError>, path: &Path) {
    let err = result.expect_err("the call is over its budget");
    assert!(
        matches!(err, IngestError::CallMemory { .. }),
        "wrong error: {err}"
    );
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(err.path(), path);
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("ingest.max_call_memory_mb"), "{message}");
}

#[test]
fn speech_over_the_budget_fails_naming_the_file_and_the_key() {
    let path = &sample_calls()[0];
    // About 16 s of one channel's audio: less than the call's speech.
    let mut opts = keeping();
    opts.max_call_bytes = 1 << 20;
    assert_over_budget(process_file(path, &opts), path);

    // Encoded bytes alone over the budget: refused before decoding.
    let bytes = std::fs::read(path).unwrap();
    opts.max_call_bytes = bytes.len() as u64 - 1;
    assert_over_budget(process_bytes(path, bytes.clone(), &opts), path);

    // The same budget is fine when no audio is kept (probing), and a budget that holds the
    // speech is fine when it is.
    let mut probe = options();
    probe.max_call_bytes = 1 << 20;
    process_file(path, &probe).unwrap();
    opts.max_call_bytes = 32 << 20;
    process_bytes(path, bytes, &opts).unwrap();
}

#[test]
fn kept_audio_is_what_the_whole_channel_holds_at_every_segment() {
    for path in sample_calls() {
        let call = process_file(&path, &keeping()).unwrap();
        let mut whole_opts = keeping();
        whole_opts.vad = None;
        let whole = process_file(&path, &whole_opts).unwrap();
        // Keeping audio changes nothing about the segments.
        let plain = process_file(&path, &options()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();

        for ((ch, full), plain) in call
            .channels
            .iter()
            .zip(&whole.channels)
            .zip(&plain.channels)
        {
            assert_eq!(ch.segments, plain.segments, "{name}");
            assert!(!ch.segments.is_empty(), "{name}: no speech found");
            // VAD off: the whole channel is one span.
            assert_eq!(full.spans.len(), 1, "{name}");
            assert_eq!(full.spans[0].start, 0);
            assert_eq!(full.spans[0].samples.len(), full.total_samples);
            assert_eq!(ch.total_samples, full.total_samples, "{name}");
            let full = &full.spans[0].samples;

            for w in ch.spans.windows(2) {
                assert!(w[0].end() < w[1].start, "{name}: spans overlap or touch");
            }
            for segment in &ch.segments {
                let (a, b) = segment_samples(segment, ch.total_samples);
                let kept = ch
                    .kept(a, b)
                    .unwrap_or_else(|| panic!("{name}: {segment:?} is not kept"));
                // Bit for bit: the transcription input is unchanged.
                assert!(
                    kept.iter()
                        .zip(&full[a..b])
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{name}: {segment:?} differs"
                );
            }
            // Nothing but the segments is kept: each span starts at a segment's first sample
            // and ends at one's last, and the pauses inside it are short ones that VAD left
            // out of its segments.
            let reach = callpipe_ingest::vad::speech_reach(&options().vad.unwrap());
            let ranges: Vec<(usize, usize)> = ch
                .segments
                .iter()
                .map(|s| segment_samples(s, ch.total_samples))
                .collect();
            for span in &ch.spans {
                let inside: Vec<&(usize, usize)> = ranges
                    .iter()
                    .filter(|&&(a, b)| a < span.end() && b > span.start)
                    .collect();
                assert_eq!(inside.first().map(|r| r.0), Some(span.start), "{name}");
                assert_eq!(inside.last().map(|r| r.1), Some(span.end()), "{name}");
                for pair in inside.windows(2) {
                    assert!(pair[1].0 <= pair[0].1 + 2 * reach, "{name}: {pair:?}");
                }
            }
            assert!(ch.kept_samples() < ch.total_samples, "{name}");
        }
    }
}
